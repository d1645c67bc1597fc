//! Test peers and load generator for callgate, used strictly as a black box.
//!
//! - [`browser`]: a simulated browser — one WebSocket speaking the [`signaling`] protocol and,
//!   per call, a full-ICE str0m peer on its own loopback UDP socket that sends numbered G.711
//!   frames and checks what comes back.
//! - [`media`]: the frame format, the checker and the statistics, free of IO so they are unit
//!   tested on their own.
//! - [`trunk`]: the builtin SIP trunk, a minimal UAS over UDP that answers calls and echoes
//!   their RTP ([`trunk::BuiltinTrunk::start`]).
//! - [`run`]: a load run — simulated agents placing calls at a rate up to a concurrency —
//!   and its [`report::Report`] ([`run::run`]).
//! - [`soak`]: many call cycles with registration churn, callgate's descriptors, threads,
//!   gauges and memory read before and after ([`soak::soak`]).
//! - [`idle`]: many idle, registered agents and callgate's RSS per agent.
//! - [`config`] and [`cli`]: the run's validated parameters and the `loadtest` command line.
//! - [`procfs`]: CPU and memory of callgate and of the generator from `/proc`; [`scrape`]:
//!   callgate's own counters from its `/metrics`.
//!
//! Nothing here depends on the `gateway` crate: the gateway's integration tests use this crate
//! as a dev-dependency and drive the real server through its public `/ws` endpoint.

pub mod browser;
pub mod chart;
pub mod cli;
mod clock;
pub mod config;
mod error;
pub mod idle;
pub mod media;
pub mod procfs;
pub mod report;
pub mod run;
pub mod scrape;
pub mod soak;
pub mod tls;
pub mod trunk;

pub use browser::{CallEvent, CallOptions, Codecs, SimBrowser, SimCall};
pub use config::{Rate, RunConfig, WsUrl};
pub use error::{Error, Result};
pub use media::{G711, MediaEnd, MediaStats, RttHistogram};
pub use report::Report;
