//! Integration tests of the simulated browser against a fake gateway on loopback.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod browser;
mod fake_gateway;
