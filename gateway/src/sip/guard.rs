//! Answers malformed SIP requests with `400 Bad Request` (RFC 3261 §8.2, RFC 4475) instead
//! of letting them vanish, and keeps them away from the stack. rsipstack drops unparseable
//! datagrams silently, so callgate owns its UDP socket and checks each datagram first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rsipstack::platform::net::UdpSocket as StackUdpSocket;
use tracing::debug;

/// What to do with one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A well-formed message (or keepalive): hand it to the stack.
    Pass,
    /// Malformed request: send this 400 back to the source.
    Reject(Vec<u8>),
    /// Malformed and unanswerable (a response, an ACK, no Via): drop it.
    Drop,
}

/// Judges one datagram. Never panics, whatever the bytes.
pub fn judge(datagram: &[u8]) -> Verdict {
    if datagram.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Pass; // CRLF keepalives (RFC 5626) are the stack's business
    }
    match rsipstack::sip::SipMessage::try_from(datagram) {
        // rsipstack parses header values lazily: check the ones every transaction relies on.
        Ok(rsipstack::sip::SipMessage::Request(request)) if request_is_sane(&request) => {
            return Verdict::Pass;
        }
        Ok(rsipstack::sip::SipMessage::Response(_)) => return Verdict::Pass,
        _ => {}
    }
    match bad_request_for(datagram) {
        Some(reply) => Verdict::Reject(reply),
        None => Verdict::Drop,
    }
}

/// True when the headers RFC 3261 §8.1.1 makes mandatory are present and readable: Via,
/// From, To (with valid URIs), Call-ID, a numeric CSeq naming the request's method, and a
/// numeric Max-Forwards when present.
fn request_is_sane(request: &rsipstack::sip::Request) -> bool {
    use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
    let checks = || -> Result<bool, rsipstack::sip::Error> {
        request.top_via_header()?.typed()?;
        request.from_header()?.typed()?;
        request.to_header()?.typed()?;
        let call_id_ok = !request.call_id_header()?.value().trim().is_empty();
        let cseq = request.cseq_header()?;
        cseq.seq()?;
        let method_ok = cseq.method()? == request.method;
        let max_forwards_ok = match request.max_forwards_header() {
            Ok(header) => header.value().trim().parse::<u8>().is_ok(),
            Err(_) => true,
        };
        Ok(call_id_ok && method_ok && max_forwards_ok)
    };
    checks().unwrap_or(false)
}

/// Builds `400 Bad Request` from whatever header lines can be read, as RFC 3261 §8.2.6 asks:
/// Via, From, To, Call-ID and CSeq copied from the request. `None` when the datagram is not
/// a request or carries no Via to route the answer by.
pub fn bad_request_for(datagram: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(datagram);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next()?;
    let method = request_line.split(' ').next()?;
    let is_token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    if !is_token
        || method == "SIP/2.0"
        || method.eq_ignore_ascii_case("ACK")
        || !request_line.contains("SIP/")
    {
        return None;
    }
    let mut copied = Vec::new();
    let mut has_via = false;
    let mut to_line: Option<String> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let canonical = match name.to_ascii_lowercase().as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        let value = value.trim();
        if value.bytes().any(|b| b.is_ascii_control()) {
            continue;
        }
        if canonical == "Via" {
            has_via = true;
        }
        if canonical == "To" {
            to_line = Some(value.to_string());
            continue;
        }
        copied.push(format!("{canonical}: {value}"));
    }
    if !has_via {
        return None;
    }
    let mut reply = String::from("SIP/2.0 400 Bad Request\r\n");
    for line in copied {
        reply.push_str(&line);
        reply.push_str("\r\n");
    }
    if let Some(to) = to_line {
        let tagged = if to.contains(";tag=") {
            to
        } else {
            format!("{to};tag=cg400")
        };
        reply.push_str(&format!("To: {tagged}\r\n"));
    }
    reply.push_str("Server: callgate\r\nContent-Length: 0\r\n\r\n");
    Some(reply.into_bytes())
}

/// A UDP socket for rsipstack that filters what it receives through [`judge`].
pub struct GuardedUdpSocket {
    inner: tokio::net::UdpSocket,
    rejected: Arc<AtomicU64>,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket; `rejected` counts malformed datagrams (answered or dropped).
    pub fn new(inner: tokio::net::UdpSocket, rejected: Arc<AtomicU64>) -> GuardedUdpSocket {
        GuardedUdpSocket { inner, rejected }
    }
}

#[async_trait::async_trait]
impl StackUdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, source) = self.inner.recv_from(buf).await?;
            match judge(&buf[..len]) {
                Verdict::Pass => return Ok((len, source)),
                Verdict::Reject(reply) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(%source, len, "malformed SIP request answered 400");
                    let _ = self.inner.send_to(&reply, source).await;
                }
                Verdict::Drop => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(%source, len, "malformed SIP datagram dropped");
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.inner.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GOOD: &str = "OPTIONS sip:callgate@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\nTo: <sip:callgate@127.0.0.1>\r\n\
        From: <sip:probe@127.0.0.1>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\n\
        CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn well_formed_requests_pass() {
        assert_eq!(judge(GOOD.as_bytes()), Verdict::Pass);
        assert_eq!(judge(b"\r\n\r\n"), Verdict::Pass);
    }

    #[test]
    fn malformed_request_gets_400_with_copied_headers() {
        let bad = GOOD
            .replace("CSeq: 63104 OPTIONS", "CSeq: not-a-number OPTIONS")
            .replace("Max-Forwards: 70", "Max-Forwards: seventy");
        let Verdict::Reject(reply) = judge(bad.as_bytes()) else {
            panic!("expected a 400")
        };
        let reply = String::from_utf8(reply).expect("text");
        assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds\r\n"));
        assert!(reply.contains("Call-ID: a84b4c76e66710\r\n"));
        assert!(reply.contains("To: <sip:callgate@127.0.0.1>;tag=cg400\r\n"));
        assert!(reply.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn unanswerable_garbage_is_dropped() {
        assert_eq!(judge(b"\x00\x01\x02 garbage"), Verdict::Drop);
        assert_eq!(
            judge(b"SIP/2.0 200 OK\r\nbroken"),
            Verdict::Drop,
            "responses are never answered"
        );
        assert_eq!(
            judge(b"INVITE sip:x SIP/2.0\r\nFrom: a\r\n\r\n"),
            Verdict::Drop,
            "no Via"
        );
        assert_eq!(
            judge(b"ACK sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nbad\r\n"),
            Verdict::Drop
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = judge(&bytes);
        }

        #[test]
        fn never_panics_on_sip_shaped_text(
            method in "[A-Z]{1,8}",
            lines in proptest::collection::vec("[A-Za-z-]{1,10}: ?[ -~]{0,40}", 0..10),
        ) {
            let text = format!("{method} sip:a@b SIP/2.0\r\n{}\r\n\r\n", lines.join("\r\n"));
            let _ = judge(text.as_bytes());
        }
    }
}
