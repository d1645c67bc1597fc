//! The demo PBX's SIP UDP socket, wrapped to vet datagrams before rsipstack
//! sees them.
//!
//! rsipstack's UDP loop silently drops a datagram it cannot parse, and its
//! parser rejects any method outside its closed `Method` enum, so a peer
//! sending a broken request never learns why it gets no answer. This wrapper
//! parses first and answers request-shaped garbage that carries a Via:
//! `501 Not Implemented` for an unknown method (RFC 3261 §8.2.1),
//! `505 Version Not Supported` for another SIP version, else
//! `400 Bad Request`; then it drops the datagram. The parse runs under
//! `catch_unwind`, so a datagram that would panic the parser is dropped here
//! instead of killing rsipstack's receive task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use rsipstack::sip::SipMessage;
use tracing::debug;

/// A tokio UDP socket that answers unparseable requests with 400.
pub(crate) struct GuardedUdpSocket {
    socket: tokio::net::UdpSocket,
}

impl GuardedUdpSocket {
    pub(crate) fn new(socket: tokio::net::UdpSocket) -> Self {
        Self { socket }
    }
}

/// What to do with one received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to rsipstack.
    Pass,
    /// Drop it silently (garbage with nothing to answer, or a panicking parse).
    Drop,
    /// Drop it and send this response to its source.
    Reply(Vec<u8>),
}

/// Decide on a datagram. Pure; never panics.
pub(crate) fn vet(packet: &[u8]) -> Verdict {
    // Keepalives and blank datagrams are rsipstack's business.
    if packet.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Pass;
    }
    let parsed = std::panic::catch_unwind(|| SipMessage::try_from(packet).is_ok());
    match parsed {
        Ok(true) => Verdict::Pass,
        Ok(false) => bad_request(packet).map_or(Verdict::Drop, Verdict::Reply),
        Err(_) => Verdict::Drop,
    }
}

/// The error response for an unparseable request, built textually from its
/// Via/From/To/Call-ID/CSeq lines: 501 for a method rsipstack does not know
/// (RFC 3261 §8.2.1), 505 for another SIP version, else 400. None when it
/// does not look like a request (responses, ACKs and Via-less junk are never
/// answered).
fn bad_request(packet: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(packet).ok()?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next()?;
    let mut parts = request_line.split_ascii_whitespace();
    let method = parts.next()?;
    let _uri = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("SIP/") {
        return None;
    }
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) || method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let status = if version != "SIP/2.0" {
        "505 Version Not Supported"
    } else if method.parse::<rsipstack::sip::Method>().is_err() {
        "501 Not Implemented"
    } else {
        "400 Bad Request"
    };
    let mut out = format!("SIP/2.0 {status}\r\n");
    let mut has_via = false;
    for line in lines.take(100) {
        if line.is_empty() {
            break;
        }
        let Some((name, _)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let keep = matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        );
        if keep
            && line.len() <= 1024
            && line
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            has_via |= name == "via" || name == "v";
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !has_via {
        return None;
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// rsipstack declares this trait with `#[async_trait]`; the signatures below
// are that macro's expansion, written out to avoid another dependency.
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    fn recv_from<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 mut [u8],
    ) -> BoxFuture<'async_trait, rsipstack::Result<(usize, SocketAddr)>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            loop {
                let (len, peer) = self.socket.recv_from(buf).await?;
                match vet(&buf[..len]) {
                    Verdict::Pass => return Ok((len, peer)),
                    Verdict::Drop => debug!(%peer, len, "dropped unparseable SIP datagram"),
                    Verdict::Reply(resp) => {
                        debug!(%peer, len, "answered unparseable SIP request with 400");
                        if let Err(e) = self.socket.send_to(&resp, peer).await {
                            debug!(%peer, error = %e, "could not send 400");
                        }
                    }
                }
            }
        })
    }

    fn send_to<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 [u8],
        addr: SocketAddr,
    ) -> BoxFuture<'async_trait, rsipstack::Result<usize>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { Ok(self.socket.send_to(buf, addr).await?) })
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}
