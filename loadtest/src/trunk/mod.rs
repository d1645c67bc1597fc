//! The builtin SIP trunk: a minimal UAS over UDP that answers every INVITE and echoes each
//! call's RTP back from a socket of its own, so a load run needs no PBX.
//!
//! Shape: one task owns the SIP socket and every dialog (a `HashMap` by Call-ID) plus a timer
//! heap for 2xx retransmissions and forgetting ended dialogs; one small task per call owns
//! that call's RTP socket and echoes datagrams to their source, untouched (symmetric RTP).
//!
//! Behaviour, by Request-URI user: `busy` gets `486 Busy Here`; anything else gets
//! `100 Trying` and at once `200 OK` with an SDP answer (the offerer's first PCMU/PCMA, plus
//! telephone-event when offered). The 200 is retransmitted (T1 doubling to T2) until the ACK.
//! BYE ends the echo; CANCEL is answered 200 (the INVITE was already answered, so the caller
//! BYEs); OPTIONS, REGISTER, INFO, UPDATE, NOTIFY and MESSAGE get 200; other methods 501.
//! RTCP (the gateway's sender reports) is absorbed, not echoed.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
//! let trunk = loadtest::trunk::BuiltinTrunk::start(addr).await?;
//! println!("point callgate at --sip-proxy {}", trunk.sip_addr());
//! # trunk.shutdown().await;
//! # Ok(()) }
//! ```

pub mod sdp;
pub mod sip;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock;
use sip::{Message, Response, StartLine};

/// RFC 3261 T1: first 2xx retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: longest retransmission interval.
const T2: Duration = Duration::from_secs(4);
/// 64·T1: how long a 2xx is retransmitted without ACK, and how long an ended dialog is kept
/// to answer retransmitted BYEs.
const TIMER_H: Duration = Duration::from_secs(32);
/// An echo that hears nothing for this long ends by itself (its BYE was lost, or the gateway
/// died), so no call lingers.
const RTP_INACTIVITY: Duration = Duration::from_secs(60);
/// RTP receive buffer, above any G.711 packet.
const RTP_BUFFER: usize = 2048;
/// Methods we answer, for `Allow`.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, NOTIFY, MESSAGE";
/// What we call ourselves in `Server` and `Contact`.
const SERVER: &str = concat!("callgate-loadtest-trunk/", env!("CARGO_PKG_VERSION"));

/// Counters of a running trunk, read with [`BuiltinTrunk::stats`].
#[derive(Debug, Default)]
struct Counters {
    invites: AtomicU64,
    answered: AtomicU64,
    rejected: AtomicU64,
    reinvites: AtomicU64,
    acks: AtomicU64,
    byes: AtomicU64,
    cancels: AtomicU64,
    retransmissions: AtomicU64,
    malformed: AtomicU64,
    other_requests: AtomicU64,
    active_calls: AtomicU64,
    rtp_echoed: AtomicU64,
    rtcp_absorbed: AtomicU64,
    inactive_ends: AtomicU64,
}

/// What the trunk has done so far; part of the load report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrunkStats {
    /// New INVITEs (not retransmissions or re-INVITEs).
    pub invites: u64,
    /// INVITEs answered 200 with an echo.
    pub answered: u64,
    /// INVITEs refused (486 for `busy`, 488 for an unusable offer, 503 without a port).
    pub rejected: u64,
    /// re-INVITEs answered (session refreshes, hold).
    pub reinvites: u64,
    /// ACKs of our 2xx.
    pub acks: u64,
    /// BYEs that ended a call.
    pub byes: u64,
    /// CANCELs received.
    pub cancels: u64,
    /// Responses sent again: 2xx retransmissions and answers to retransmitted requests.
    pub retransmissions: u64,
    /// Datagrams that were not SIP we could answer.
    pub malformed: u64,
    /// Other requests answered (OPTIONS, REGISTER, INFO, ...).
    pub other_requests: u64,
    /// Calls answered and not yet ended.
    pub active_calls: u64,
    /// RTP packets echoed.
    pub rtp_echoed: u64,
    /// RTCP packets received and dropped.
    pub rtcp_absorbed: u64,
    /// Calls whose echo ended for lack of RTP rather than by BYE.
    pub inactive_ends: u64,
}

/// A running builtin trunk; dropping it stops it (echoes included).
pub struct BuiltinTrunk {
    sip_addr: SocketAddr,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for BuiltinTrunk {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl BuiltinTrunk {
    /// Binds the SIP socket on `addr` (port 0 picks one) and starts answering. Call sockets
    /// are bound on the same IP (127.0.0.1 when `addr` is a wildcard).
    pub async fn start(addr: SocketAddr) -> io::Result<BuiltinTrunk> {
        let socket = UdpSocket::bind(addr).await?;
        let sip_addr = socket.local_addr()?;
        let media_ip = if sip_addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            sip_addr.ip()
        };
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let core = Core {
            socket,
            contact: format!("<sip:trunk@{}>", advertised(sip_addr, media_ip)),
            media_ip,
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            counters: counters.clone(),
            ended_tx,
            session_ids: rand::random::<u32>().into(),
        };
        let task = tokio::spawn(core.run(cancel.clone(), ended_rx));
        Ok(BuiltinTrunk {
            sip_addr,
            counters,
            cancel,
            task: Some(task),
        })
    }

    /// The address callgate must use as its SIP proxy (`--sip-proxy`).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TrunkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrunkStats {
            invites: get(&c.invites),
            answered: get(&c.answered),
            rejected: get(&c.rejected),
            reinvites: get(&c.reinvites),
            acks: get(&c.acks),
            byes: get(&c.byes),
            cancels: get(&c.cancels),
            retransmissions: get(&c.retransmissions),
            malformed: get(&c.malformed),
            other_requests: get(&c.other_requests),
            active_calls: get(&c.active_calls),
            rtp_echoed: get(&c.rtp_echoed),
            rtcp_absorbed: get(&c.rtcp_absorbed),
            inactive_ends: get(&c.inactive_ends),
        }
    }

    /// Stops answering, ends every echo and waits for the trunk's task to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The address to put in Contact: the SIP address, with a wildcard IP replaced.
fn advertised(sip_addr: SocketAddr, media_ip: IpAddr) -> SocketAddr {
    if sip_addr.ip().is_unspecified() {
        SocketAddr::new(media_ip, sip_addr.port())
    } else {
        sip_addr
    }
}

/// A 2xx waiting for its ACK.
#[derive(Debug)]
struct Unacked {
    cseq: u32,
    next_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

/// One call, from its INVITE until it is forgotten 32 s after it ended.
struct Dialog {
    to_tag: String,
    /// Where its requests come from; responses and retransmissions go there.
    peer: SocketAddr,
    /// CSeq of the latest INVITE and the final response we gave it.
    invite_cseq: u32,
    final_response: Vec<u8>,
    unacked: Option<Unacked>,
    /// Our SDP answer parts, for re-INVITEs: (offer, RTP address, session id, version).
    media: Option<(sdp::Offer, SocketAddr, u64, u64)>,
    echo: Option<JoinHandle<()>>,
    /// When it ended (BYE, inactivity) or was refused; forgotten `TIMER_H` later.
    ended_at: Option<Instant>,
}

impl Dialog {
    fn end(&mut self, now: Instant, counters: &Counters) {
        if self.ended_at.is_some() {
            return;
        }
        self.ended_at = Some(now);
        self.unacked = None;
        if let Some(echo) = self.echo.take() {
            echo.abort();
            counters.active_calls.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The task owning the SIP socket and the dialogs.
struct Core {
    socket: UdpSocket,
    contact: String,
    media_ip: IpAddr,
    dialogs: HashMap<String, Dialog>,
    /// (due, Call-ID): look at that dialog then (retransmit, or forget).
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    counters: Arc<Counters>,
    /// Echo tasks that stopped for inactivity report their Call-ID here.
    ended_tx: mpsc::UnboundedSender<String>,
    session_ids: u64,
}

impl Core {
    async fn run(
        mut self,
        cancel: CancellationToken,
        mut ended_rx: mpsc::UnboundedReceiver<String>,
    ) {
        let mut buf = vec![0u8; sip::MAX_MESSAGE];
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => {
                        let now = clock::now();
                        let datagram = buf.get(..len).unwrap_or_default();
                        self.on_datagram(datagram, source, now).await;
                    }
                    // ICMP errors from earlier sends surface here on Linux; not fatal.
                    Err(e) => tracing::debug!(error = %e, "trunk SIP receive error"),
                },
                Some(call_id) = ended_rx.recv() => {
                    let now = clock::now();
                    if let Some(dialog) = self.dialogs.get_mut(&call_id)
                        && dialog.ended_at.is_none()
                    {
                        self.counters.inactive_ends.fetch_add(1, Ordering::Relaxed);
                        dialog.end(now, &self.counters);
                        self.timers.push(Reverse((now + TIMER_H, call_id)));
                    }
                }
                () = sleep => self.on_timers(clock::now()).await,
            }
        }
        for dialog in self.dialogs.values_mut() {
            dialog.end(clock::now(), &self.counters);
        }
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            tracing::debug!(error = %e, %to, "trunk SIP send failed");
        }
    }

    async fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, call_id))) = self.timers.pop() else {
                break;
            };
            let Some(dialog) = self.dialogs.get_mut(&call_id) else {
                continue;
            };
            if let Some(ended) = dialog.ended_at {
                if now >= ended + TIMER_H {
                    self.dialogs.remove(&call_id);
                }
                continue;
            }
            let Some(unacked) = dialog.unacked.as_mut() else {
                continue;
            };
            if now >= unacked.give_up_at {
                // No ACK within 64·T1: the caller is gone; end the call (RFC 3261 §13.3.1.4).
                dialog.end(now, &self.counters);
                self.timers.push(Reverse((now + TIMER_H, call_id)));
                continue;
            }
            if now < unacked.next_at {
                let due = unacked.next_at;
                self.timers.push(Reverse((due, call_id)));
                continue;
            }
            unacked.interval = (unacked.interval * 2).min(T2);
            unacked.next_at = now + unacked.interval;
            let due = unacked.next_at;
            let (bytes, peer) = (dialog.final_response.clone(), dialog.peer);
            self.timers.push(Reverse((due, call_id)));
            self.counters
                .retransmissions
                .fetch_add(1, Ordering::Relaxed);
            self.send(&bytes, peer).await;
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) {
        // Keep-alives (CRLF) and stray bytes are ignored without a word.
        if datagram.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message = match sip::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, %source, "trunk: malformed SIP");
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let StartLine::Request { method, .. } = message.start else {
            // We send no requests, so responses are strays.
            return;
        };
        if !message.answerable() {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match method {
            "INVITE" => self.on_invite(&message, source, now).await,
            "ACK" => self.on_ack(&message),
            "BYE" => self.on_bye(&message, source, now).await,
            "CANCEL" => {
                self.counters.cancels.fetch_add(1, Ordering::Relaxed);
                let known = message
                    .call_id()
                    .is_some_and(|id| self.dialogs.contains_key(id));
                let (code, reason) = if known {
                    (200, "OK")
                } else {
                    (481, "Call/Transaction Does Not Exist")
                };
                self.reply(&message, source, code, reason).await;
            }
            "OPTIONS" | "REGISTER" | "INFO" | "UPDATE" | "NOTIFY" | "MESSAGE" => {
                self.counters.other_requests.fetch_add(1, Ordering::Relaxed);
                self.on_other(&message, method, source).await;
            }
            _ => {
                self.counters.other_requests.fetch_add(1, Ordering::Relaxed);
                self.reply(&message, source, 501, "Not Implemented").await;
            }
        }
    }

    /// A response with nothing but the copied headers (and our tag when in a dialog).
    async fn reply(&self, request: &Message<'_>, to: SocketAddr, code: u16, reason: &str) {
        let tag = request
            .call_id()
            .and_then(|id| self.dialogs.get(id))
            .map(|d| d.to_tag.as_str());
        let response = Response {
            code,
            reason,
            to_tag: tag,
            headers: vec![("Server", SERVER.to_string())],
            body: None,
        };
        self.send(&sip::write_response(request, &response), to)
            .await;
    }

    async fn on_other(&self, request: &Message<'_>, method: &str, source: SocketAddr) {
        let in_dialog = request.to_has_tag();
        let known = request
            .call_id()
            .is_some_and(|id| self.dialogs.contains_key(id));
        if in_dialog && !known && method != "OPTIONS" {
            self.reply(request, source, 481, "Call/Transaction Does Not Exist")
                .await;
            return;
        }
        let mut headers = vec![("Server", SERVER.to_string()), ("Allow", ALLOW.to_string())];
        if method == "REGISTER"
            && let Some(contact) = request.header("Contact")
        {
            headers.push(("Contact", contact.to_string()));
            headers.push((
                "Expires",
                request.header("Expires").unwrap_or("3600").to_string(),
            ));
        }
        let tag = format!("{:x}", rand::random::<u64>());
        let response = Response {
            code: 200,
            reason: "OK",
            to_tag: (!in_dialog).then_some(tag.as_str()),
            headers,
            body: None,
        };
        self.send(&sip::write_response(request, &response), source)
            .await;
    }

    async fn on_invite(&mut self, request: &Message<'_>, source: SocketAddr, now: Instant) {
        let (Some(call_id), Some((cseq, _))) = (request.call_id(), request.cseq()) else {
            return;
        };
        if let Some(dialog) = self.dialogs.get_mut(call_id) {
            if cseq == dialog.invite_cseq {
                // A retransmitted INVITE: the same final answer again.
                self.counters
                    .retransmissions
                    .fetch_add(1, Ordering::Relaxed);
                let bytes = dialog.final_response.clone();
                self.send(&bytes, source).await;
                return;
            }
            if cseq > dialog.invite_cseq && dialog.ended_at.is_none() {
                self.on_reinvite(call_id, request, cseq, source, now).await;
                return;
            }
            self.reply(request, source, 481, "Call/Transaction Does Not Exist")
                .await;
            return;
        }
        if request.to_has_tag() {
            self.reply(request, source, 481, "Call/Transaction Does Not Exist")
                .await;
            return;
        }
        self.counters.invites.fetch_add(1, Ordering::Relaxed);
        let to_tag = format!("{:x}", rand::random::<u64>());
        let trying = Response {
            code: 100,
            reason: "Trying",
            headers: vec![("Server", SERVER.to_string())],
            ..Response::default()
        };
        self.send(&sip::write_response(request, &trying), source)
            .await;

        let mut dialog = Dialog {
            to_tag,
            peer: source,
            invite_cseq: cseq,
            final_response: Vec::new(),
            unacked: None,
            media: None,
            echo: None,
            ended_at: None,
        };
        let refusal = if request.uri_user() == Some("busy") {
            Some((486, "Busy Here"))
        } else {
            match sdp::read_offer(request.body) {
                Err(e) => {
                    tracing::debug!(%call_id, error = %e, "trunk: unusable offer");
                    Some((488, "Not Acceptable Here"))
                }
                Ok(offer) => match UdpSocket::bind((self.media_ip, 0)).await {
                    Err(e) => {
                        tracing::warn!(%call_id, error = %e, "trunk: no RTP port");
                        Some((503, "Service Unavailable"))
                    }
                    Ok(rtp) => {
                        self.answer(&mut dialog, request, call_id, offer, rtp, now);
                        None
                    }
                },
            }
        };
        if let Some((code, reason)) = refusal {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            let response = Response {
                code,
                reason,
                to_tag: Some(&dialog.to_tag),
                headers: vec![("Server", SERVER.to_string())],
                body: None,
            };
            dialog.final_response = sip::write_response(request, &response);
            // Kept (ended) so its ACK and retransmissions are recognised, then forgotten.
            dialog.ended_at = Some(now);
            self.timers
                .push(Reverse((now + TIMER_H, call_id.to_string())));
        }
        let bytes = dialog.final_response.clone();
        self.dialogs.insert(call_id.to_string(), dialog);
        self.send(&bytes, source).await;
    }

    /// Starts the echo and writes the 200 into `dialog`.
    fn answer(
        &mut self,
        dialog: &mut Dialog,
        request: &Message<'_>,
        call_id: &str,
        offer: sdp::Offer,
        rtp: UdpSocket,
        now: Instant,
    ) {
        let local = match rtp.local_addr() {
            Ok(addr) => addr,
            Err(_) => SocketAddr::new(self.media_ip, 0),
        };
        self.session_ids = self.session_ids.wrapping_add(1);
        let session_id = self.session_ids;
        let body = sdp::answer(&offer, local, session_id, 1);
        dialog.final_response = self.ok_with_sdp(request, &dialog.to_tag, &body);
        dialog.media = Some((offer, local, session_id, 1));
        dialog.unacked = Some(Unacked {
            cseq: dialog.invite_cseq,
            next_at: now + T1,
            interval: T1,
            give_up_at: now + TIMER_H,
        });
        dialog.echo = Some(tokio::spawn(echo(
            rtp,
            call_id.to_string(),
            self.counters.clone(),
            self.ended_tx.clone(),
        )));
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
        self.counters.active_calls.fetch_add(1, Ordering::Relaxed);
        self.timers.push(Reverse((now + T1, call_id.to_string())));
    }

    fn ok_with_sdp(&self, request: &Message<'_>, to_tag: &str, body: &str) -> Vec<u8> {
        let response = Response {
            code: 200,
            reason: "OK",
            to_tag: Some(to_tag),
            headers: vec![
                ("Server", SERVER.to_string()),
                ("Contact", self.contact.clone()),
                ("Allow", ALLOW.to_string()),
            ],
            body: Some(("application/sdp", body)),
        };
        sip::write_response(request, &response)
    }

    /// A re-INVITE (session refresh, hold): the same media, a new SDP version.
    async fn on_reinvite(
        &mut self,
        call_id: &str,
        request: &Message<'_>,
        cseq: u32,
        source: SocketAddr,
        now: Instant,
    ) {
        let Some(dialog) = self.dialogs.get_mut(call_id) else {
            return;
        };
        let Some((offer, local, session_id, version)) = dialog.media.as_mut() else {
            return;
        };
        *version += 1;
        let body = sdp::answer(offer, *local, *session_id, *version);
        let to_tag = dialog.to_tag.clone();
        let response = self.ok_with_sdp(request, &to_tag, &body);
        let Some(dialog) = self.dialogs.get_mut(call_id) else {
            return;
        };
        dialog.invite_cseq = cseq;
        dialog.final_response = response.clone();
        dialog.unacked = Some(Unacked {
            cseq,
            next_at: now + T1,
            interval: T1,
            give_up_at: now + TIMER_H,
        });
        self.counters.reinvites.fetch_add(1, Ordering::Relaxed);
        self.timers.push(Reverse((now + T1, call_id.to_string())));
        self.send(&response, source).await;
    }

    fn on_ack(&mut self, request: &Message<'_>) {
        let (Some(call_id), Some((cseq, _))) = (request.call_id(), request.cseq()) else {
            return;
        };
        if let Some(dialog) = self.dialogs.get_mut(call_id)
            && dialog.unacked.as_ref().is_some_and(|u| u.cseq == cseq)
        {
            dialog.unacked = None;
            self.counters.acks.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn on_bye(&mut self, request: &Message<'_>, source: SocketAddr, now: Instant) {
        let Some(call_id) = request.call_id() else {
            return;
        };
        let Some(dialog) = self.dialogs.get_mut(call_id) else {
            self.reply(request, source, 481, "Call/Transaction Does Not Exist")
                .await;
            return;
        };
        if dialog.ended_at.is_none() {
            self.counters.byes.fetch_add(1, Ordering::Relaxed);
            dialog.end(now, &self.counters);
            self.timers
                .push(Reverse((now + TIMER_H, call_id.to_string())));
        } else {
            self.counters
                .retransmissions
                .fetch_add(1, Ordering::Relaxed);
        }
        self.reply(request, source, 200, "OK").await;
    }
}

/// Whether a datagram is RTCP (RFC 5761 §4: second byte 192-223 on a muxed port; SR/RR/SDES/
/// BYE/APP are 200-204).
fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet.get(1), Some(192..=223))
}

/// Echoes one call's RTP to its source until aborted, or until `RTP_INACTIVITY` of silence
/// (then reports the Call-ID so the dialog ends).
async fn echo(
    socket: UdpSocket,
    call_id: String,
    counters: Arc<Counters>,
    ended: mpsc::UnboundedSender<String>,
) {
    let mut buf = vec![0u8; RTP_BUFFER];
    loop {
        let received = tokio::time::timeout(RTP_INACTIVITY, socket.recv_from(&mut buf)).await;
        let (len, source) = match received {
            Err(_) => break,
            Ok(Ok(r)) => r,
            // ICMP port unreachable from an earlier send; the peer may come back.
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Ok(Err(e)) => {
                tracing::debug!(%call_id, error = %e, "trunk RTP receive failed");
                break;
            }
        };
        let packet = buf.get(..len).unwrap_or_default();
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            continue;
        }
        if is_rtcp(packet) {
            counters.rtcp_absorbed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if socket.send_to(packet, source).await.is_ok() {
            counters.rtp_echoed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ended.send(call_id);
}
