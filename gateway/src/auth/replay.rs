//! Single-use login tokens (`auth.single_use_tokens`): every accepted token's `jti` is
//! remembered until the token could no longer be accepted anyway (`exp` plus leeway), and a
//! second use is refused. Time is an argument (Unix seconds); the map is per node.

use std::collections::HashMap;
use std::sync::Mutex;

/// Longest `jti` kept; longer ones are refused as malformed claims.
pub const MAX_JTI_BYTES: usize = 256;

/// Why a token's `jti` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The token has no `jti` (or an unusable one): with single use on, every token needs one.
    Missing,
    /// This `jti` was accepted before.
    Replayed,
}

/// The `jti`s of accepted tokens, each until its token's `exp` plus leeway.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    until: HashMap<String, u64>,
    /// Entries are purged when the map has grown past this since the last purge.
    purge_at: usize,
}

impl ReplayCache {
    /// Accepts `jti` once at `now`; remembered until `forget_after` (Unix seconds).
    pub fn consume(
        &self,
        jti: Option<&str>,
        forget_after: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let jti = jti
            .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_BYTES)
            .ok_or(ReplayError::Missing)?;
        let Ok(mut seen) = self.seen.lock() else {
            // A poisoned lock means a panic elsewhere; refusing is the safe answer.
            return Err(ReplayError::Replayed);
        };
        if seen.until.len() >= seen.purge_at {
            seen.until.retain(|_, until| *until > now);
            seen.purge_at = (seen.until.len() * 2).max(1024);
        }
        match seen.until.get(jti) {
            Some(until) if *until > now => Err(ReplayError::Replayed),
            _ => {
                seen.until.insert(jti.to_string(), forget_after);
                Ok(())
            }
        }
    }

    /// Entries held, for tests and the table-size metric.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|seen| seen.until.len()).unwrap_or(0)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_until_it_could_expire() {
        let cache = ReplayCache::default();
        assert_eq!(cache.consume(Some("a"), 100, 10), Ok(()));
        assert_eq!(
            cache.consume(Some("a"), 100, 50),
            Err(ReplayError::Replayed)
        );
        assert_eq!(cache.consume(Some("b"), 100, 50), Ok(()));
        assert_eq!(cache.consume(None, 100, 50), Err(ReplayError::Missing));
        assert_eq!(cache.consume(Some(""), 100, 50), Err(ReplayError::Missing));
        let long = "x".repeat(MAX_JTI_BYTES + 1);
        assert_eq!(
            cache.consume(Some(&long), 100, 50),
            Err(ReplayError::Missing)
        );
        // After its token's expiry the entry is dead (such a token is refused as expired).
        assert_eq!(cache.consume(Some("a"), 300, 100), Ok(()));
    }

    #[test]
    fn expired_entries_are_purged_as_the_map_grows() {
        let cache = ReplayCache::default();
        for i in 0..5000 {
            assert_eq!(cache.consume(Some(&format!("j{i}")), 10, 0), Ok(()));
        }
        assert_eq!(cache.len(), 5000, "none has expired yet");
        // Later, once the map has doubled past its last purge, the dead entries go.
        for i in 0..4000 {
            assert_eq!(cache.consume(Some(&format!("k{i}")), 100, 20), Ok(()));
        }
        assert_eq!(cache.len(), 4000, "only the live entries are left");
    }
}
