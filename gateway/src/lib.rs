//! callgate: a WebRTC-to-SIP gateway in front of an unmodified PBX.
//!
//! Module map and invariants: see `ARCHITECTURE.md` at the repository root.

pub mod app;
pub mod auth;
pub mod call;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dialplan;
pub mod http;
pub mod http_client;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod redact;
pub mod reload;
pub mod sdp;
pub mod session;
pub mod sip;
pub mod tls;
pub mod webhooks;
