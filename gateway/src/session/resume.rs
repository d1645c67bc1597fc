//! Keeping a session across a WebSocket drop or a page reload: the registry of sessions a
//! resuming browser may take over, resume tokens, and the hand-over of the new socket to the
//! task that kept the calls (the session task itself stays the one owner of its calls).

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use super::{Conn, TokenGrant};

/// The channel into a kept session's task.
/// Boxed: each session's attach channel allocates a block of 32 messages up front.
pub(crate) type AttachSender = mpsc::UnboundedSender<Box<Attach>>;

/// Sessions that may be resumed, by resume token. A session is listed from its welcome
/// until its task ends (also while its socket is still up, so a browser that reconnects
/// before callgate noticed the old socket die takes the session over at once).
#[derive(Default)]
pub struct Resumable {
    sessions: DashMap<String, AttachSender>,
}

impl Resumable {
    /// Sessions listed (attached or kept), for tests and the soak's map-size check.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is listed.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub(crate) fn insert(&self, token: String, attach: AttachSender) {
        self.sessions.insert(token, attach);
    }

    pub(crate) fn remove(&self, token: &str) {
        self.sessions.remove(token);
    }

    pub(crate) fn get(&self, token: &str) -> Option<AttachSender> {
        self.sessions.get(token).map(|entry| entry.value().clone())
    }
}

/// A fresh resume token: the node's name (so a load balancer can route on it) and 128
/// random bits.
pub(crate) fn new_token(node: &str) -> String {
    format!("{node}.{:032x}", rand::random::<u128>())
}

/// Who a hello authenticated as; a session is only handed to the same agent.
#[derive(Clone)]
pub(crate) struct Identity {
    pub extension: String,
    pub secret: String,
}

impl Identity {
    /// Compares in time independent of where the secrets differ.
    pub fn same_as(&self, other: &Identity) -> bool {
        let a = self.secret.as_bytes();
        let b = other.secret.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (x, y) in a.iter().zip(b.iter()) {
            diff |= usize::from(x ^ y);
        }
        diff == 0 && self.extension == other.extension
    }
}

/// A resuming browser's socket on its way to the session that kept its calls.
pub struct Attach {
    pub(super) conn: Conn,
    pub(super) request_id: u64,
    pub(super) identity: Identity,
    pub(super) user_agent: Option<String>,
    /// The resuming hello's token (its expiry and `dial` claim), adopted by the kept
    /// session unless that one's token already expired; `None` for a password hello.
    pub(super) token: Option<TokenGrant>,
    /// `Ok` once the kept session owns the socket; `Err` gives it back (another agent, or
    /// the session is ending) and the new task opens a fresh session on it.
    pub(super) reply: oneshot::Sender<Result<(), Conn>>,
}

impl Attach {
    /// Gives the socket back to the task that received it.
    pub(super) fn refuse(self) {
        let _ = self.reply.send(Err(self.conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(extension: &str, secret: &str) -> Identity {
        Identity {
            extension: extension.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn identities_match_only_on_both_fields() {
        assert!(id("1001", "pw").same_as(&id("1001", "pw")));
        assert!(!id("1001", "pw").same_as(&id("1002", "pw")));
        assert!(!id("1001", "pw").same_as(&id("1001", "pW")));
        assert!(!id("1001", "pw").same_as(&id("1001", "pw2")));
        assert!(!id("1001", "").same_as(&id("1001", "x")));
    }

    #[test]
    fn tokens_carry_the_node_and_are_unpredictable() {
        let a = new_token("node-a");
        let b = new_token("node-a");
        assert!(a.starts_with("node-a."));
        assert_eq!(a.len(), "node-a.".len() + 32);
        assert_ne!(a, b);
    }
}
