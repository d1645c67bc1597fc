//! callgate: a WebRTC-to-SIP gateway in front of an unmodified PBX.
//!
//! Module map and invariants: see `ARCHITECTURE.md` at the repository root.

pub mod call;
pub mod config;
pub mod demo;
pub mod sdp;
