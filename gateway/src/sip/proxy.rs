//! Which proxy new requests go to: the primary while it answers the OPTIONS keepalive, the
//! secondary (`sip.secondary_proxy`) while only the secondary does, and the primary again as
//! soon as it answers. Established dialogs stay where they are (their route set is fixed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

/// One of the configured proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRole {
    /// `sip.proxy`.
    Primary,
    /// `sip.secondary_proxy`.
    Secondary,
}

impl ProxyRole {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ProxyRole::Primary => "primary",
            ProxyRole::Secondary => "secondary",
        }
    }
}

/// The keepalive's view of the proxies, as a plain value: what it decides is testable alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reachability {
    /// The primary answers OPTIONS.
    pub primary: bool,
    /// The secondary answers OPTIONS; `None` without a secondary.
    pub secondary: Option<bool>,
}

impl Reachability {
    /// The secondary only while the primary is silent and the secondary answers; with both
    /// silent the primary (nothing better is known, and it is the one the PBX admin watches).
    pub fn active(self) -> ProxyRole {
        if !self.primary && self.secondary == Some(true) {
            ProxyRole::Secondary
        } else {
            ProxyRole::Primary
        }
    }

    /// Whether any proxy answers (`/readyz`).
    pub fn any(self) -> bool {
        self.primary || self.secondary == Some(true)
    }
}

/// The proxies' shared health: written by the keepalive tasks, read by every new request.
pub struct ProxyHealth {
    primary: SocketAddr,
    secondary: Option<SocketAddr>,
    primary_up: AtomicBool,
    secondary_up: AtomicBool,
    failovers: AtomicU64,
    active: watch::Sender<SocketAddr>,
}

/// A snapshot for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Who answers.
    pub reachability: Reachability,
    /// Where new requests go.
    pub active: ProxyRole,
    /// Switches from the primary to the secondary so far.
    pub failovers: u64,
}

impl ProxyHealth {
    /// Both proxies are assumed up until the keepalive says otherwise.
    pub fn new(primary: SocketAddr, secondary: Option<SocketAddr>) -> ProxyHealth {
        ProxyHealth {
            primary,
            secondary,
            primary_up: AtomicBool::new(true),
            secondary_up: AtomicBool::new(true),
            failovers: AtomicU64::new(0),
            active: watch::Sender::new(primary),
        }
    }

    /// The configured address of `role` (the primary when no secondary is configured).
    pub fn address(&self, role: ProxyRole) -> SocketAddr {
        match role {
            ProxyRole::Secondary => self.secondary.unwrap_or(self.primary),
            ProxyRole::Primary => self.primary,
        }
    }

    /// Who answers now.
    pub fn reachability(&self) -> Reachability {
        Reachability {
            primary: self.primary_up.load(Ordering::Relaxed),
            secondary: self
                .secondary
                .map(|_| self.secondary_up.load(Ordering::Relaxed)),
        }
    }

    /// Where a new INVITE, REGISTER or MESSAGE goes.
    pub fn active(&self) -> SocketAddr {
        self.address(self.reachability().active())
    }

    /// Tells when the active proxy changes (registrations re-register through the new one).
    pub fn subscribe(&self) -> watch::Receiver<SocketAddr> {
        self.active.subscribe()
    }

    /// Records a keepalive result; returns the previous reachability of `role`.
    pub fn set_reachable(&self, role: ProxyRole, up: bool) -> bool {
        let before = self.reachability().active();
        let flag = match role {
            ProxyRole::Primary => &self.primary_up,
            ProxyRole::Secondary => &self.secondary_up,
        };
        let was = flag.swap(up, Ordering::Relaxed);
        let after = self.reachability().active();
        if before != after {
            if after == ProxyRole::Secondary {
                self.failovers.fetch_add(1, Ordering::Relaxed);
            }
            self.active.send_replace(self.address(after));
        }
        was
    }

    /// A snapshot for `/metrics`.
    pub fn status(&self) -> ProxyStatus {
        let reachability = self.reachability();
        ProxyStatus {
            reachability,
            active: reachability.active(),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secondary_is_used_only_while_the_primary_is_silent_and_it_answers() {
        let r = |primary, secondary| Reachability { primary, secondary }.active();
        assert_eq!(r(true, None), ProxyRole::Primary);
        assert_eq!(r(false, None), ProxyRole::Primary);
        assert_eq!(r(true, Some(true)), ProxyRole::Primary);
        assert_eq!(r(false, Some(true)), ProxyRole::Secondary);
        assert_eq!(r(false, Some(false)), ProxyRole::Primary);
        assert!(
            !Reachability {
                primary: false,
                secondary: Some(false)
            }
            .any()
        );
        assert!(
            Reachability {
                primary: false,
                secondary: Some(true)
            }
            .any()
        );
    }

    #[test]
    fn failover_and_failback_move_the_active_address_and_count_once() {
        let primary: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let secondary: SocketAddr = "127.0.0.2:5060".parse().expect("addr");
        let health = ProxyHealth::new(primary, Some(secondary));
        let mut changes = health.subscribe();
        assert_eq!(health.active(), primary);
        assert!(health.set_reachable(ProxyRole::Primary, false));
        assert_eq!(health.active(), secondary);
        assert!(changes.has_changed().expect("sender alive"));
        assert_eq!(*changes.borrow_and_update(), secondary);
        assert!(!health.set_reachable(ProxyRole::Primary, false));
        assert_eq!(health.status().failovers, 1);
        health.set_reachable(ProxyRole::Primary, true);
        assert_eq!(health.active(), primary);
        assert_eq!(*changes.borrow_and_update(), primary);
        assert_eq!(health.status().failovers, 1);
    }

    #[test]
    fn without_a_secondary_the_primary_stays_active() {
        let primary: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let health = ProxyHealth::new(primary, None);
        health.set_reachable(ProxyRole::Primary, false);
        assert_eq!(health.active(), primary);
        assert!(!health.reachability().any());
        assert_eq!(health.status().failovers, 0);
    }
}
