//! The gateway's integration tests: one test binary, one module per area.

mod agents_demo;
mod agents_sipp;
mod bad_input;
mod binary;
mod calls_demo;
mod calls_sipp;
mod interop_kamailio;
mod kamailio;
mod kamailio_selftest;
mod keepalive;
mod limits;
mod loadtest_smoke;
mod messages;
mod midcall_demo;
mod references;
mod sipp;
mod sipp_selftest;
mod sipp_selftest_agent;
mod soak;
mod support;
mod tidy;
mod transfer;
mod webhooks;
