//! The one place that reads the clock (design.md §2.2). Edges call [`now`] once per event or
//! loop iteration and pass the value into pure code; `clippy.toml` bans `Instant::now`
//! everywhere else.

use std::time::Instant;

/// The current monotonic time.
#[allow(clippy::disallowed_methods, reason = "this module is the clock")]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time since the Unix epoch, for protocol timestamps (RTCP NTP time, CDRs).
pub fn since_unix_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
