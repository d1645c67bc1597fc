//! callgate's own stream connection to each configured proxy (`sip.transport` tcp or tls),
//! kept open for the gateway's life: dialled at start, dialled again when it closes.
//!
//! rsipstack would dial on first use, but with Nagle on and, for TLS, from an ephemeral port
//! the PBX cannot reach back. Connections dialled here are handed to rsipstack, which finds
//! them in its cache and sends on them. While one is down (a second or more after it closed)
//! rsipstack's own dial stands in.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{tcp, tls};

/// How long one dial (TCP connect, plus the TLS handshake) may take.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait between failed dials (doubling from one second).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one proxy is dialled.
pub(super) enum Dialer {
    /// Plain TCP with Nagle off.
    Tcp(tcp::Dialer),
    /// TLS from the listen address.
    Tls(tls::Dialer),
}

impl Dialer {
    fn proxy(&self) -> SocketAddr {
        match self {
            Dialer::Tcp(dialer) => dialer.proxy(),
            Dialer::Tls(dialer) => dialer.proxy(),
        }
    }

    fn transport(&self) -> &'static str {
        match self {
            Dialer::Tcp(_) => "TCP",
            Dialer::Tls(_) => "TLS",
        }
    }

    /// Dials and hands the connection to rsipstack, which finds it in its cache and sends
    /// on it. Returns the connection's token, cancelled when rsipstack retires it.
    async fn connect(
        &self,
        endpoint: &rsipstack::transaction::endpoint::EndpointInnerRef,
        cancel: &CancellationToken,
    ) -> Result<CancellationToken, String> {
        let token = cancel.child_token();
        let connection = match self {
            Dialer::Tcp(dialer) => dialer.open(token.clone()).await,
            Dialer::Tls(dialer) => dialer.open(token.clone()).await,
        }?;
        let local = connection.get_addr().to_string();
        endpoint.transport_layer.add_connection(connection);
        info!(%local, proxy = %self.proxy(), transport = self.transport(), "SIP connection to the PBX up");
        Ok(token)
    }
}

/// Connects once (so the gateway starts with its connection up when the PBX is), then keeps
/// the connection open in a task until `cancel`: re-dials when it closes, with back-off.
pub(super) async fn keep(
    dialer: Dialer,
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    cancel: CancellationToken,
) {
    let first = dialer.connect(&endpoint, &cancel).await;
    tokio::spawn(async move {
        let (proxy, transport) = (dialer.proxy(), dialer.transport());
        let mut current = first;
        let mut backoff = Duration::from_secs(1);
        loop {
            match current {
                Ok(token) => {
                    backoff = Duration::from_secs(1);
                    token.cancelled().await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    info!(%proxy, transport, "SIP connection to the PBX closed; dialling again");
                    // A PBX that accepts and closes at once is not dialled in a tight loop.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(error) => {
                    warn!(%proxy, transport, %error, retry_in_secs = backoff.as_secs(), "cannot open the SIP connection to the PBX");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            current = dialer.connect(&endpoint, &cancel).await;
        }
    });
}
