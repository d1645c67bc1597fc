//! A token session's clock: when the page is warned that the token runs out, and when it has
//! run out. Pure (time is an argument, design.md §2.2); the session task turns its events
//! into `token_expiring` / `token_expired` and stops accepting new activity.

use std::time::{Duration, Instant};

/// The token a session currently runs on, seen as deadlines.
#[derive(Debug, Clone)]
pub(super) struct TokenClock {
    /// The token's `exp` (Unix seconds), as told to the page.
    pub expires_at: u64,
    /// When `token_expiring` is due; `None` once sent.
    warn_at: Option<Instant>,
    /// `exp` plus the configured leeway (the tolerance a login gets too): from then on the
    /// session accepts no new activity.
    expire_at: Instant,
    expired: bool,
}

/// What a deadline of the clock means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenEvent {
    /// Tell the page to refresh.
    Expiring,
    /// No refresh came: the token has run out.
    Expired,
}

impl TokenClock {
    /// The clock of a token with `exp` = `expires_at`, accepted at `now` (`now_unix` in Unix
    /// seconds). The warning comes `warning_secs` before `exp`, but at most half the
    /// remaining lifetime before it, so a token of a few seconds is warned too.
    pub fn new(
        expires_at: u64,
        now: Instant,
        now_unix: u64,
        leeway_secs: u64,
        warning_secs: u64,
    ) -> TokenClock {
        let remaining = expires_at.saturating_sub(now_unix);
        let lead = warning_secs.min(remaining / 2);
        TokenClock {
            expires_at,
            warn_at: Some(now + Duration::from_secs(remaining - lead)),
            expire_at: now
                + Duration::from_secs(
                    expires_at
                        .saturating_add(leeway_secs)
                        .saturating_sub(now_unix),
                ),
            expired: false,
        }
    }

    /// Whether the token has run out (final: a session never gets back to life).
    pub fn expired(&self) -> bool {
        self.expired
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        Some(match self.warn_at {
            Some(warn_at) => warn_at.min(self.expire_at),
            None => self.expire_at,
        })
    }

    /// The event due at `now`, if any; call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<TokenEvent> {
        if self.expired {
            return None;
        }
        if self.warn_at.is_some_and(|at| at <= now) {
            self.warn_at = None;
            return Some(TokenEvent::Expiring);
        }
        if self.expire_at <= now {
            self.expired = true;
            self.warn_at = None;
            return Some(TokenEvent::Expired);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_five_minute_token_warns_a_minute_ahead_then_expires_after_the_leeway() {
        let t0 = crate::clock::now();
        let mut clock = TokenClock::new(1_000_300, t0, 1_000_000, 30, 60);
        assert_eq!(clock.poll_timeout(), Some(t0 + Duration::from_secs(240)));
        assert_eq!(clock.poll(t0 + Duration::from_secs(239)), None);
        assert_eq!(
            clock.poll(t0 + Duration::from_secs(240)),
            Some(TokenEvent::Expiring)
        );
        assert_eq!(clock.poll(t0 + Duration::from_secs(241)), None);
        assert_eq!(clock.poll_timeout(), Some(t0 + Duration::from_secs(330)));
        assert!(!clock.expired());
        assert_eq!(
            clock.poll(t0 + Duration::from_secs(330)),
            Some(TokenEvent::Expired)
        );
        assert!(clock.expired());
        assert_eq!(clock.poll_timeout(), None);
        assert_eq!(clock.poll(t0 + Duration::from_secs(9999)), None);
    }

    #[test]
    fn a_short_token_is_warned_at_half_its_life_and_a_late_check_gives_both_events() {
        let t0 = crate::clock::now();
        let mut clock = TokenClock::new(1_000_004, t0, 1_000_000, 0, 60);
        assert_eq!(clock.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        let late = t0 + Duration::from_secs(10);
        assert_eq!(clock.poll(late), Some(TokenEvent::Expiring));
        assert_eq!(clock.poll(late), Some(TokenEvent::Expired));
        assert_eq!(clock.poll(late), None);
    }

    #[test]
    fn a_token_accepted_within_its_leeway_expires_after_the_rest_of_it() {
        let t0 = crate::clock::now();
        let mut clock = TokenClock::new(999_990, t0, 1_000_000, 30, 60);
        assert_eq!(clock.poll(t0), Some(TokenEvent::Expiring));
        assert_eq!(clock.poll_timeout(), Some(t0 + Duration::from_secs(20)));
    }
}
