//! The one place that reads the clock (design.md §2.2). Edges call [`now`] once per event or
//! loop iteration and pass the value into pure code; `clippy.toml` bans `Instant::now`
//! everywhere else.

use std::time::Instant;

/// The current monotonic time.
#[allow(clippy::disallowed_methods, reason = "this module is the clock")]
pub fn now() -> Instant {
    Instant::now()
}
