//! The one place this crate reads the wall clock (design.md §2.2: time is read at the edge).
//!
//! Everything else takes an `Instant` argument, so a workspace-wide ban on `Instant::now`
//! needs a single exemption here.

use std::time::Instant;

/// Reads the monotonic clock; str0m wants `std::time::Instant`, so we use that everywhere.
#[allow(clippy::disallowed_methods, reason = "this module is the clock")]
pub(crate) fn now() -> Instant {
    Instant::now()
}
