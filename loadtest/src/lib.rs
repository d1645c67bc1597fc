//! Test peers and load generator for callgate, used strictly as a black box.
//!
//! - [`browser`]: a simulated browser — one WebSocket speaking the [`signaling`] protocol and,
//!   per call, a full-ICE str0m peer on its own loopback UDP socket that sends numbered G.711
//!   frames and checks what comes back.
//! - [`media`]: the frame format, the checker and the statistics, free of IO so they are unit
//!   tested on their own.
//!
//! Nothing here depends on the `gateway` crate: the gateway's integration tests use this crate
//! as a dev-dependency and drive the real server through its public `/ws` endpoint.

pub mod browser;
mod clock;
mod error;
pub mod media;

pub use browser::{CallEvent, CallOptions, Codecs, SimBrowser, SimCall};
pub use error::{Error, Result};
pub use media::{G711, MediaEnd, MediaStats, RttHistogram};
