//! SIP over plain TCP with Nagle off on every connection (`sip.transport = "tcp"`, and the TCP
//! side of `sip.listen` in UDP mode, where a PBX may connect for large messages).
//!
//! rsipstack dials and accepts TCP itself and leaves Nagle on, so a second small message sent
//! right after another (an ACK and a BYE, the 200 to an INFO and a BYE, a 100 Trying and a
//! 180) waits for the PBX's delayed ACK, up to 40 ms on Linux. callgate therefore accepts the
//! connections itself and keeps its own connection to each proxy open ([`super::link`]), both
//! with `TCP_NODELAY`, and hands them to rsipstack, which reads and writes them as its own.
//!
//! Owning the accept loop also bounds what strangers can hold open: rsipstack keeps a stream
//! until its peer closes it, so connections from outside `sip.trusted_sources` get at most
//! [`MAX_UNTRUSTED_CONNECTIONS`] slots (the PBX's never wait for one), and the rest are closed
//! at once and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::link::DIAL_TIMEOUT;

/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Most connections from outside `sip.trusted_sources` open at once. A PBX outside the list
/// (it then gets 403 for INVITEs anyway) or an OPTIONS monitor needs a handful; an attacker
/// holding idle connections would otherwise run the process out of file descriptors, which
/// the browsers' WebSockets need too.
pub const MAX_UNTRUSTED_CONNECTIONS: usize = 64;

/// The slots for connections from untrusted addresses.
#[derive(Debug, Clone)]
pub(super) struct UntrustedSlots {
    open: Arc<AtomicUsize>,
    limit: usize,
}

/// One untrusted connection's slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl UntrustedSlots {
    pub(super) fn new(limit: usize) -> UntrustedSlots {
        UntrustedSlots {
            open: Arc::default(),
            limit,
        }
    }

    /// A slot, or `None` when all are taken.
    pub(super) fn take(&self) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.limit).then_some(open + 1)
            });
        taken.ok().map(|_| Slot(self.open.clone()))
    }
}

/// Who may hold a connection open: trusted addresses always, the rest while slots last.
pub(super) struct Admission {
    /// `sip.trusted_sources` (the proxies' addresses by default).
    pub trusted: Vec<IpAddr>,
    /// Slots for everyone else.
    pub slots: UntrustedSlots,
    /// Connections closed for want of a slot.
    pub refused: Arc<AtomicU64>,
}

/// A connection's address as rsipstack keys it.
fn sip_addr(addr: SocketAddr) -> SipAddr {
    SipAddr {
        r#type: Some(rsipstack::sip::transport::Transport::Tcp),
        addr: addr.into(),
    }
}

/// Binds the TCP listener on `local` (SO_REUSEADDR, so a restart is not refused while old
/// connections sit in TIME_WAIT). Binding before the endpoint starts reports a busy port
/// at start-up instead of in a background task.
pub(super) fn bind(local: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match local {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(local)?;
    socket.listen(1024)
}

/// Accepts connections until `cancel`, each with Nagle off and served by rsipstack.
pub(super) fn serve(
    listener: TcpListener,
    admission: Admission,
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let local = match listener.local_addr() {
            Ok(local) => local,
            Err(error) => {
                warn!(%error, "SIP TCP listener has no address; not accepting");
                return;
            }
        };
        while let Some((stream, peer)) = accept(&listener, &cancel).await {
            let slot = if admission.trusted.contains(&peer.ip()) {
                None
            } else {
                match admission.slots.take() {
                    Some(slot) => Some(slot),
                    None => {
                        admission.refused.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "SIP TCP connection refused: untrusted slots full");
                        continue;
                    }
                }
            };
            let token = cancel.child_token();
            match TcpConnection::from_stream(stream, sip_addr(local), Some(token.clone())) {
                Ok(connection) => {
                    debug!(%peer, "SIP TCP connection accepted");
                    endpoint
                        .transport_layer
                        .add_connection(SipConnection::Tcp(connection));
                    if let Some(slot) = slot {
                        // rsipstack fires the token when it retires the connection.
                        tokio::spawn(async move {
                            token.cancelled().await;
                            drop(slot);
                        });
                    }
                }
                Err(error) => debug!(%error, "accepted SIP TCP connection unusable"),
            }
        }
    });
}

/// The next connection, with Nagle off; `None` once `cancel` fires.
async fn accept(
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                without_nagle(&stream);
                return Some((stream, peer));
            }
            Err(error) => {
                warn!(%error, "SIP TCP accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Turns Nagle off; a socket where that fails still carries SIP, only slower.
fn without_nagle(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        warn!(%error, "TCP_NODELAY not set on a SIP TCP connection");
    }
}

/// Opens plain TCP connections to one proxy, from an ephemeral port as rsipstack would: the
/// listen address is taken by the listener, and the PBX reaches callgate back either on
/// this connection (Via `alias`) or on that listener.
pub(super) struct Dialer {
    proxy: SocketAddr,
}

impl Dialer {
    /// A dialer for `proxy`.
    pub(super) fn new(proxy: SocketAddr) -> Dialer {
        Dialer { proxy }
    }

    /// The proxy this dialer connects to.
    pub(super) fn proxy(&self) -> SocketAddr {
        self.proxy
    }

    async fn dial(&self) -> Result<TcpStream, String> {
        let stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(self.proxy))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        without_nagle(&stream);
        Ok(stream)
    }

    /// Dials a connection for rsipstack, which reads it and sends on it until `token` fires
    /// (rsipstack fires it when it retires the connection).
    pub(super) async fn open(&self, token: CancellationToken) -> Result<SipConnection, String> {
        let stream = self.dial().await?;
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let connection = TcpConnection::from_stream(stream, sip_addr(local), Some(token))
            .map_err(|e| e.to_string())?;
        Ok(SipConnection::Tcp(connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections callgate dials have Nagle off.
    #[tokio::test]
    async fn dialled_connections_have_nagle_off() {
        let pbx = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy = pbx.local_addr().expect("address");
        let accept = tokio::spawn(async move { pbx.accept().await.map(|(s, _)| s) });
        let stream = Dialer::new(proxy).dial().await.expect("dialled");
        assert!(stream.nodelay().expect("read TCP_NODELAY"));
        accept.await.expect("pbx task").expect("accepted");
    }

    /// Connections callgate accepts have Nagle off, and accepting stops on cancel.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let local = listener.local_addr().expect("address");
        let cancel = CancellationToken::new();
        let pbx = tokio::spawn(TcpStream::connect(local));
        let (stream, _) = accept(&listener, &cancel).await.expect("accepted");
        assert!(stream.nodelay().expect("read TCP_NODELAY"));
        let _pbx_side = pbx.await.expect("pbx task").expect("connected");
        cancel.cancel();
        assert!(accept(&listener, &cancel).await.is_none());
    }

    /// Untrusted connections take slots up to the limit; a closed one gives its slot back.
    #[test]
    fn slots_run_out_and_come_back() {
        let slots = UntrustedSlots::new(2);
        let first = slots.take().expect("a slot");
        let _second = slots.take().expect("a slot");
        assert!(slots.take().is_none());
        drop(first);
        assert!(slots.take().is_some());
    }

    /// A dial to a port nobody listens on fails with the reason, not a hang.
    #[tokio::test]
    async fn a_refused_dial_says_so() {
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let error = Dialer::new(free).dial().await.expect_err("nobody listens");
        assert!(error.starts_with("connect:"), "{error}");
    }
}
