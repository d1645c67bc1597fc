//! The embedded demo PBX behind `callgate demo`.
//!
//! A real SIP registrar and UAS (rsipstack, UDP and TCP on one loopback port)
//! so that newcomers and tests have a SIP peer without installing a PBX. The
//! request-URI user selects the behaviour: `echo`, `early`, `busy`,
//! `noanswer`, `callback`; anything else is 404. An answered call accepts a
//! REFER (202, then NOTIFY sipfrag `100 Trying` and `200 OK`, or `486 Busy
//! Here` when the Refer-To user is `busy`) and then expects the
//! transferor's BYE. See `server.rs` for the call flows, `transfer.rs` for
//! REFER, `auth.rs` for digest, `sdp.rs` / `rtp.rs` for media.
//!
//! This is an edge module: it owns sockets and tokio tasks. Every task it
//! spawns is tracked and stops on the PBX's cancellation token, so dropping
//! the handle or calling [`DemoPbx::shutdown`] leaves nothing running.

mod auth;
mod rtp;
mod sdp;
mod server;
mod transfer;
mod udp_guard;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rsipstack::transport::transport_layer::TransportLayerInner;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of the demo PBX; `Default` is what `callgate demo` uses.
#[derive(Clone)]
pub struct DemoPbxConfig {
    /// SIP listen address (UDP, and TCP on the same port); port 0 picks a free
    /// port, which tests use so they can run in parallel.
    pub sip_addr: SocketAddr,
    /// Address RTP sockets bind to as `(rtp_ip, 0)` and that SDP advertises.
    pub rtp_ip: IpAddr,
    /// Where `callback` calls go when the caller never registered (the
    /// gateway's SIP address), since the demo has no other way to find it.
    pub gateway_addr: Option<SocketAddr>,
    /// Digest password for every extension. `None` accepts any password (the
    /// Authorization must still be well formed and name our nonce); `Some`
    /// verifies it and answers a wrong one with 403.
    pub password: Option<String>,
    /// How long `noanswer` rings before 480, so tests can shorten it.
    pub ring_time: Duration,
    /// How long `early` plays early media (183 + echo) before its 200.
    pub early_media_time: Duration,
    /// Pause between `callback` hanging up and calling the caller back.
    pub callback_delay: Duration,
}

impl Default for DemoPbxConfig {
    fn default() -> Self {
        Self {
            sip_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5080),
            rtp_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            gateway_addr: None,
            password: None,
            ring_time: Duration::from_secs(10),
            early_media_time: Duration::from_secs(2),
            callback_delay: Duration::from_secs(3),
        }
    }
}

/// Hand-written so that the password never reaches a log line.
impl fmt::Debug for DemoPbxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoPbxConfig")
            .field("sip_addr", &self.sip_addr)
            .field("rtp_ip", &self.rtp_ip)
            .field("gateway_addr", &self.gateway_addr)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ring_time", &self.ring_time)
            .field("early_media_time", &self.early_media_time)
            .field("callback_delay", &self.callback_delay)
            .finish()
    }
}

/// Why the demo PBX could not start; the caller reports it and exits.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The SIP socket could not be bound (port in use, bad address).
    #[error("cannot bind demo PBX SIP socket on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// rsipstack refused to set up the endpoint.
    #[error("demo PBX SIP stack setup failed: {0}")]
    Sip(#[from] rsipstack::Error),
}

/// Handle on a running demo PBX; dropping it or calling
/// [`shutdown`](Self::shutdown) stops every task and closes every socket.
pub struct DemoPbx {
    shared: Arc<server::Shared>,
    tracker: TaskTracker,
    sip_addr: SocketAddr,
    transport: Weak<TransportLayerInner>,
    stop: StopOnDrop,
}

/// Cancels the PBX when the handle goes away without `shutdown`.
struct StopOnDrop {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

/// How long `shutdown` waits for rsipstack's own transport tasks (UDP
/// receive loop, TCP accept loop) to notice the cancellation and let go of
/// the listening sockets.
const TRANSPORT_EXIT_WAIT: Duration = Duration::from_secs(2);

impl DemoPbx {
    /// Bind the SIP socket and start serving. Cancelling `cancel` (or a parent
    /// of it) stops the PBX just like [`shutdown`](Self::shutdown).
    pub async fn start(
        config: DemoPbxConfig,
        cancel: CancellationToken,
    ) -> Result<DemoPbx, DemoError> {
        let cancel = cancel.child_token();
        let tracker = TaskTracker::new();
        let started = server::start(config, cancel.clone(), tracker.clone()).await?;
        Ok(DemoPbx {
            shared: started.shared,
            tracker: tracker.clone(),
            sip_addr: started.sip_addr,
            transport: started.transport,
            stop: StopOnDrop { cancel, tracker },
        })
    }

    /// The address actually bound (resolves port 0), for tests and the
    /// gateway's trunk configuration.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Calls currently in progress (ringing, early or answered, both
    /// directions), so tests can assert that nothing leaks after hang-up.
    pub fn active_calls(&self) -> usize {
        self.shared.active_calls()
    }

    /// Current bindings as `(extension, contact URI)`, so tests and the
    /// demo UI can see who registered.
    pub fn registrations(&self) -> Vec<(String, String)> {
        self.shared.registrations()
    }

    /// RFC 4733 digits seen in answered calls as `(Call-ID, digit)`, in
    /// arrival order, so browser tests can check DTMF end to end.
    pub fn received_dtmf(&self) -> Vec<(String, char)> {
        self.shared.received_dtmf()
    }

    /// REFERs accepted (answered 202) in answered calls as `(Call-ID,
    /// Refer-To)`, in arrival order, so tests can check that a transfer
    /// reached the PBX. Refer-To is the URI as received, without angle
    /// brackets or header parameters (`?Replaces=…` of an attended transfer
    /// is kept verbatim). Every accepted REFER is listed, whatever its
    /// outcome (the `busy` target's final NOTIFY reports 486); malformed
    /// ones (answered 400) are not. The oldest entries are dropped beyond
    /// 1024.
    pub fn transfers(&self) -> Vec<(String, String)> {
        self.shared.transfers()
    }

    /// Stop everything and wait until every task has finished and the SIP
    /// and RTP sockets are closed, so the ports can be bound again at once.
    pub async fn shutdown(self) {
        let DemoPbx {
            shared,
            tracker,
            transport,
            stop,
            ..
        } = self;
        stop.cancel.cancel();
        tracker.close();
        tracker.wait().await;
        drop(shared);
        let deadline = crate::clock::now() + TRANSPORT_EXIT_WAIT;
        while transport.strong_count() > 0 && crate::clock::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if transport.strong_count() > 0 {
            tracing::warn!("demo PBX: SIP transport still referenced after shutdown");
        }
    }
}
