//! The UDP guard's judgement ([`super::guard`]) for requests rsipstack read from a TCP or TLS
//! connection, where callgate does not own the socket. rsipstack keys a server transaction
//! by the request's Via branch, From tag, Call-ID and CSeq, and drops a request it cannot
//! key with only a log line: the PBX would wait out its INVITE timer (32 s) for an answer
//! that never comes. Such a request is judged as a datagram would be: an RFC 2543 request
//! without a From tag gets the tag the UDP guard gives it (RFC 4475 §3.4.1) and goes on; a
//! malformed one is answered (400) on its own connection; an unanswerable one is dropped.
//! Requests the stack can key (every well-formed one) pass untouched and unserialized.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rsipstack::sip::SipMessage;
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::TransportEvent;
use tracing::debug;

use super::guard::{Verdict, judge};

/// Judges what rsipstack could not key; see the module documentation.
pub struct StreamGuard {
    /// Malformed requests answered or dropped (shared with the UDP guard's count).
    rejected: Arc<AtomicU64>,
}

impl StreamGuard {
    /// `rejected` is the counter the UDP guard also counts into.
    pub fn new(rejected: Arc<AtomicU64>) -> StreamGuard {
        StreamGuard { rejected }
    }
}

#[async_trait::async_trait]
impl TransportEventInspector for StreamGuard {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(SipMessage::Request(request), connection, from) = event else {
            return Some(event);
        };
        if TransactionKey::from_request(&request, TransactionRole::Server).is_ok() {
            return Some(TransportEvent::Incoming(
                SipMessage::Request(request),
                connection,
                from,
            ));
        }
        let bytes = SipMessage::Request(request).to_string().into_bytes();
        let answer = match judge(&bytes) {
            Verdict::Normalized(repaired) => match SipMessage::try_from(repaired.as_slice()) {
                Ok(SipMessage::Request(repaired))
                    if TransactionKey::from_request(&repaired, TransactionRole::Server).is_ok() =>
                {
                    debug!(%from, "SIP request without From tag: tagged as RFC 2543 asks");
                    return Some(TransportEvent::Incoming(
                        SipMessage::Request(repaired),
                        connection,
                        from,
                    ));
                }
                _ => None,
            },
            Verdict::Reject(reply) | Verdict::Unsupported(reply) => Some(reply),
            // The guard found nothing to repair or answer, yet the stack cannot key it.
            Verdict::Pass | Verdict::Drop => None,
        };
        self.rejected.fetch_add(1, Ordering::Relaxed);
        match answer.map(|reply| SipMessage::try_from(reply.as_slice())) {
            Some(Ok(reply)) => {
                debug!(%from, "malformed SIP request on a connection answered");
                if let Err(e) = connection.send(reply, None).await {
                    debug!(%from, error = %e, "could not answer a malformed SIP request");
                }
            }
            _ => debug!(%from, "malformed SIP request on a connection dropped"),
        }
        None
    }
}
