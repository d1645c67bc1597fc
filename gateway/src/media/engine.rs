//! Media workers: plain OS threads, one per core, each owning one WebRTC UDP socket (shared
//! by all its browsers), its bridges' SIP-leg sockets, and nothing else. The loop reads the
//! clock once per iteration and never blocks on anything but `epoll`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::{Input, Output};
use tracing::{debug, info, warn};

use super::batch::{Flushed, RecvBatch, SendBatch, enable_arrival_timestamps};
use super::bridge::{
    ActiveTone, Bridge, DirectOutcome, Egress, SipLegSocket, SipSocket, TONE_GAP, TONE_STEP,
    TONE_TICK,
};
use super::quality;
use super::relay_delay::{PublishedDelay, RelayDelay};
use super::rtp::{self, PacketKind};
use super::sip_routes::{Resolved, SipRoutes};
use super::{BridgeKey, MediaCommand, MediaEventKind, Negotiated, NewBridge, SipLegPorts, stun};
use crate::clock;

const WEBRTC_TOKEN: Token = Token(0);
const WAKER_TOKEN: Token = Token(1);
const SHARED_RTP_TOKEN: Token = Token(2);
const SHARED_RTCP_TOKEN: Token = Token(3);
const FIRST_BRIDGE_TOKEN: usize = 4;
const HOUSEKEEPING: Duration = Duration::from_millis(250);
const DATAGRAM: usize = 2048;
/// Datagrams one `recvmmsg` reads from a socket, and one `sendmmsg` sends, at most. A
/// socket that fills a batch is read again after the worker's other ready sockets had
/// theirs, so under overload both directions keep flowing; and what a batch's datagrams
/// produce is sent before the next batch is read, so no packet waits longer than one batch
/// (32 packets, ~0.3–0.6 ms of work on this project's test machine when saturated).
const BATCH: usize = 32;
/// RTCP sender reports on the SIP leg (so the PBX's receiver reports give us a round trip).
pub(super) const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// How often each bridge reports its quality to its session.
pub(super) const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

/// Index of a media worker.
pub type WorkerId = usize;

/// Settings for the media workers.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bind address of worker 0's WebRTC socket; worker `i` binds port + `i` (or port 0).
    pub webrtc_bind: SocketAddr,
    /// IP advertised in ICE candidates.
    pub advertised_ip: std::net::IpAddr,
    /// Number of workers.
    pub workers: usize,
    /// A leg silent this long is reported inactive.
    pub inactivity_timeout: Duration,
    /// With shared SIP-leg sockets, worker 0's RTP address (even port); worker `i` binds
    /// port + 2`i` and its RTCP companion one above. `None`: every call has its own pair.
    pub shared_rtp: Option<SocketAddr>,
    /// SCHED_FIFO priority of the worker threads (`webrtc.realtime_priority`); 0 = normal.
    pub realtime_priority: u8,
    /// How long a worker keeps polling without sleeping after its last datagram
    /// (`webrtc.busy_poll_us`); zero = it sleeps as soon as nothing is ready.
    pub busy_poll: Duration,
    /// While datagrams keep coming, a worker reads its sockets on this interval instead of
    /// waking for each one (`webrtc.drain_interval_us`); zero = it wakes on readiness.
    pub drain_interval: Duration,
    /// Workers protect and unprotect the browser's RTP themselves with the keys of its DTLS
    /// handshake (`webrtc.direct_srtp`); false = every packet goes through str0m.
    pub direct_srtp: bool,
}

impl EngineConfig {
    /// One worker on loopback at an OS-chosen port, per-call SIP-leg pairs, normal
    /// scheduling: a media engine for tests and tools that need a real worker and nothing
    /// else.
    pub fn one_loopback_worker() -> EngineConfig {
        EngineConfig {
            webrtc_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            workers: 1,
            inactivity_timeout: Duration::from_secs(30),
            shared_rtp: None,
            realtime_priority: 0,
            busy_poll: Duration::ZERO,
            drain_interval: Duration::ZERO,
            direct_srtp: true,
        }
    }
}

/// Control-plane handle to the workers.
pub struct MediaEngine {
    workers: Vec<WorkerHandle>,
    next_key: AtomicU64,
}

struct WorkerHandle {
    commands: Sender<Control>,
    waker: Arc<Waker>,
    candidate: SocketAddr,
    shared_rtp: Option<SocketAddr>,
    published: Arc<Published>,
    thread: Option<JoinHandle<()>>,
}

enum Control {
    Command(MediaCommand),
    Stop,
}

/// Counter kinds a worker keeps; the index into its error array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(super) enum MediaError {
    /// Not STUN, DTLS, RTP or RTCP.
    UnknownPacket,
    /// From an address no bridge knows.
    UnknownSource,
    /// str0m refused a datagram or a write.
    Str0m,
    /// The kernel refused a send.
    SendFailed,
    /// Media arrived before the other leg could take it (no PBX target, DTLS not up).
    NoTarget,
    /// A payload type the plan does not map.
    PayloadType,
    /// An RTP header that does not parse.
    MalformedRtp,
    /// An SRTP/SRTCP packet (from the PBX, or the browser once its keys are the worker's)
    /// whose authentication tag is wrong (tampered, forged or another key).
    SrtpAuth,
    /// An SRTP/SRTCP packet (PBX or browser, as above) already received or older than the
    /// replay window.
    SrtpReplay,
    /// Protecting a packet for the PBX failed (never expected).
    SrtpFailed,
    /// On the shared socket, a packet from a PBX RTP address that several calls share whose
    /// SSRC matched none of them (dropped rather than risk crossed audio).
    SipSourceAmbiguous,
    /// A STUN Binding request on a leg the worker keeps whose credentials are wrong or
    /// missing (answered 400/401).
    StunRefused,
    /// From a browser or PBX address whose call ended less than [`AFTER_END_GRACE`] ago:
    /// packets that were in flight, harmless (kept apart so `unknown_source` means traffic
    /// no call ever expected).
    AfterEnd,
}

/// How long after a call ends packets from its peers' addresses are still expected.
const AFTER_END_GRACE: Duration = Duration::from_secs(2);

const ERROR_KINDS: [(MediaError, &str); 13] = [
    (MediaError::UnknownPacket, "unknown_packet"),
    (MediaError::UnknownSource, "unknown_source"),
    (MediaError::Str0m, "webrtc_rejected"),
    (MediaError::SendFailed, "send_failed"),
    (MediaError::NoTarget, "no_target"),
    (MediaError::PayloadType, "payload_type"),
    (MediaError::MalformedRtp, "malformed_rtp"),
    (MediaError::SrtpAuth, "srtp_auth"),
    (MediaError::SrtpReplay, "srtp_replay"),
    (MediaError::SrtpFailed, "srtp_failed"),
    (MediaError::SipSourceAmbiguous, "sip_source_ambiguous"),
    (MediaError::StunRefused, "stun_refused"),
    (MediaError::AfterEnd, "after_end"),
];

/// Plain counters owned by one worker thread.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub webrtc_in: u64,
    pub webrtc_out: u64,
    pub sip_in: u64,
    pub sip_out: u64,
    pub rtcp_in: u64,
    /// The browser's RTP packets relayed to the PBX around str0m (`webrtc.direct_srtp`).
    pub direct_in: u64,
    /// RTP packets sealed for the browser around str0m.
    pub direct_out: u64,
    /// On legs the worker keeps (str0m let go): the browser's SRTCP reports opened, ours
    /// sent, and its consent checks answered.
    pub kept_rtcp_in: u64,
    pub kept_rtcp_out: u64,
    pub kept_consent_answers: u64,
    /// Passes over the sockets: one per wake-up (or per drain interval while draining).
    pub passes: u64,
    /// Receive system calls that returned datagrams, and how many they returned: their
    /// ratio is the batching the worker gets (`webrtc.drain_interval_us`).
    pub receive_calls: u64,
    pub datagrams_received: u64,
    pub errors: [u64; ERROR_KINDS.len()],
}

impl Counters {
    pub fn error(&mut self, kind: MediaError) {
        self.errors[kind as usize] += 1;
    }

    /// Books datagrams that were counted as sent when queued but that the kernel refused
    /// when their batch went out.
    fn refused(&mut self, to_browser: u64, to_pbx: u64) {
        self.webrtc_out = self.webrtc_out.saturating_sub(to_browser);
        self.sip_out = self.sip_out.saturating_sub(to_pbx);
        self.errors[MediaError::SendFailed as usize] += to_browser + to_pbx;
    }
}

/// The non-zero error counts of `counters` by metric kind.
pub(super) fn error_counts(counters: &Counters) -> Vec<(&'static str, u64)> {
    ERROR_KINDS
        .iter()
        .map(|(kind, name)| (*name, counters.errors[*kind as usize]))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The worker's counters as last published (read at scrape time).
#[derive(Debug, Default)]
struct Published {
    webrtc_in: AtomicU64,
    webrtc_out: AtomicU64,
    sip_in: AtomicU64,
    sip_out: AtomicU64,
    rtcp_in: AtomicU64,
    direct_in: AtomicU64,
    direct_out: AtomicU64,
    kept_rtcp_in: AtomicU64,
    kept_rtcp_out: AtomicU64,
    kept_consent_answers: AtomicU64,
    passes: AtomicU64,
    receive_calls: AtomicU64,
    datagrams_received: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    bridges: AtomicUsize,
    /// Sizes of the routing tables (leak checks): browser addresses, ICE ufrags, timers,
    /// PBX source addresses on the shared socket, bridges still holding an `Rtc`.
    tables: [AtomicUsize; 5],
    relay_delay: PublishedDelay,
}

/// A worker's counters at one moment, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Datagrams received on the WebRTC socket.
    pub webrtc_in: u64,
    /// Datagrams sent on the WebRTC socket.
    pub webrtc_out: u64,
    /// RTP packets received from the PBX.
    pub sip_in: u64,
    /// RTP packets sent to the PBX.
    pub sip_out: u64,
    /// RTCP packets received (and consumed) from the PBX.
    pub rtcp_in: u64,
    /// The browser's RTP packets callgate opened itself (around str0m).
    pub direct_in: u64,
    /// RTP packets for the browser callgate sealed itself (around str0m).
    pub direct_out: u64,
    /// The browser's RTCP reports opened by the worker on legs it keeps.
    pub kept_rtcp_in: u64,
    /// RTCP reports the worker sent to browsers on legs it keeps.
    pub kept_rtcp_out: u64,
    /// Browsers' ICE consent checks the worker answered on legs it keeps.
    pub kept_consent_answers: u64,
    /// Passes over the sockets (wake-ups, or drain intervals while draining).
    pub passes: u64,
    /// Receive system calls that returned datagrams.
    pub receive_calls: u64,
    /// Datagrams those calls returned.
    pub datagrams_received: u64,
    /// `(kind, count)` of dropped or refused packets.
    pub errors: Vec<(&'static str, u64)>,
    /// Bridges currently owned.
    pub bridges: usize,
    /// Browser addresses routed to a bridge.
    pub routed_addresses: usize,
    /// ICE ufrags routed to a bridge.
    pub routed_ufrags: usize,
    /// Pending timer entries (stale ones included until they expire).
    pub timers: usize,
    /// PBX RTP addresses routed to a bridge on the shared SIP-leg socket.
    pub routed_sip_sources: usize,
    /// Bridges whose browser leg still has its str0m instance.
    pub str0m_legs: usize,
    /// How long the worker held the RTP packets it relayed.
    pub relay_delay: RelayDelay,
}

impl MediaEngine {
    /// Binds every worker's WebRTC socket and starts the threads.
    pub fn start(config: EngineConfig) -> io::Result<MediaEngine> {
        let mut workers = Vec::with_capacity(config.workers.max(1));
        for index in 0..config.workers.max(1) {
            let mut bind = config.webrtc_bind;
            if bind.port() != 0 {
                let port = u16::try_from(usize::from(bind.port()) + index)
                    .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "WebRTC port overflow"))?;
                bind.set_port(port);
            }
            let socket = std::net::UdpSocket::bind(bind)?;
            socket.set_nonblocking(true)?;
            enlarge_buffers(&socket);
            stamp_arrivals(&socket);
            let local = socket.local_addr()?;
            let candidate = SocketAddr::new(config.advertised_ip, local.port());
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
            let (commands, receiver) = mpsc::channel();
            let published = Arc::new(Published::default());
            let shared = config
                .shared_rtp
                .map(|base| SharedSip::bind(base, index, poll.registry()))
                .transpose()?;
            let shared_rtp = shared.as_ref().map(|s| s.rtp_addr);
            let mut worker = Worker::new(
                poll,
                UdpSocket::from_std(socket),
                candidate,
                receiver,
                published.clone(),
                config.inactivity_timeout,
                shared,
            )?;
            worker.busy_poll = config.busy_poll;
            worker.drain_interval = config.drain_interval;
            worker.direct_srtp = config.direct_srtp;
            let priority = config.realtime_priority;
            let thread = std::thread::Builder::new()
                .name(format!("media-{index}"))
                .spawn(move || {
                    if priority > 0 {
                        match super::realtime::make_current_thread_realtime(priority) {
                            Ok(()) => {
                                info!(worker = index, priority, "media worker runs SCHED_FIFO")
                            }
                            Err(e) => warn!(
                                worker = index,
                                priority,
                                error = %e,
                                "webrtc.realtime_priority not applied (needs CAP_SYS_NICE or \
                                 RLIMIT_RTPRIO): the media worker runs with normal scheduling"
                            ),
                        }
                    }
                    worker.run()
                })?;
            info!(worker = index, %local, %candidate, sip_rtp = ?shared_rtp, "media worker started");
            workers.push(WorkerHandle {
                commands,
                waker,
                candidate,
                shared_rtp,
                published,
                thread: Some(thread),
            });
        }
        Ok(MediaEngine {
            workers,
            next_key: AtomicU64::new(1),
        })
    }

    /// A fresh bridge key.
    pub fn new_key(&self) -> BridgeKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The worker with the fewest bridges.
    pub fn pick_worker(&self) -> WorkerId {
        (0..self.workers.len())
            .min_by_key(|&i| self.workers[i].published.bridges.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The ICE candidate address browsers of this worker must reach.
    pub fn candidate(&self, worker: WorkerId) -> SocketAddr {
        self.workers[worker % self.workers.len()].candidate
    }

    /// The SIP-leg ports for a new call on `worker`: its shared pair, or a pair leased from
    /// `pool` with per-call sockets (fails when the range is exhausted). `pbx_media` is the
    /// PBX's RTP address when its offer came first: when that is one of callgate's own shared
    /// sockets (two agents of this callgate calling each other through a proxy that relays
    /// only SIP), this leg takes a pair of its own, or both legs would send from and to one
    /// address and hear themselves.
    pub fn sip_leg_ports(
        &self,
        worker: WorkerId,
        pool: &super::PortPool,
        pbx_media: Option<SocketAddr>,
    ) -> io::Result<super::SipLegPorts> {
        let loops_back = pbx_media.is_some_and(|media| {
            self.workers
                .iter()
                .any(|w| w.shared_rtp.is_some_and(|own| same_socket(own, media)))
        });
        match self.workers[worker % self.workers.len()].shared_rtp {
            Some(addr) if !loops_back => Ok(super::SipLegPorts::Shared(addr)),
            _ => pool.allocate().map(super::SipLegPorts::PerCall),
        }
    }

    /// Hands a command to a worker; false if the worker is gone.
    pub fn send(&self, worker: WorkerId, command: MediaCommand) -> bool {
        let handle = &self.workers[worker % self.workers.len()];
        if handle.commands.send(Control::Command(command)).is_err() {
            return false;
        }
        handle.waker.wake().is_ok()
    }

    /// Queues a command without waking the worker: what a command posted while the worker
    /// is already past its look at the waker looks like (tests of that race).
    #[cfg(test)]
    fn post_unwoken(&self, worker: WorkerId, command: MediaCommand) {
        let handle = &self.workers[worker % self.workers.len()];
        let _ = handle.commands.send(Control::Command(command));
    }

    /// Every worker's counters, for the metrics endpoint.
    pub fn snapshots(&self) -> Vec<WorkerSnapshot> {
        self.workers
            .iter()
            .map(|w| {
                let p = &w.published;
                WorkerSnapshot {
                    webrtc_in: p.webrtc_in.load(Ordering::Relaxed),
                    webrtc_out: p.webrtc_out.load(Ordering::Relaxed),
                    sip_in: p.sip_in.load(Ordering::Relaxed),
                    sip_out: p.sip_out.load(Ordering::Relaxed),
                    rtcp_in: p.rtcp_in.load(Ordering::Relaxed),
                    direct_in: p.direct_in.load(Ordering::Relaxed),
                    direct_out: p.direct_out.load(Ordering::Relaxed),
                    kept_rtcp_in: p.kept_rtcp_in.load(Ordering::Relaxed),
                    kept_rtcp_out: p.kept_rtcp_out.load(Ordering::Relaxed),
                    kept_consent_answers: p.kept_consent_answers.load(Ordering::Relaxed),
                    passes: p.passes.load(Ordering::Relaxed),
                    receive_calls: p.receive_calls.load(Ordering::Relaxed),
                    datagrams_received: p.datagrams_received.load(Ordering::Relaxed),
                    errors: ERROR_KINDS
                        .iter()
                        .map(|(kind, name)| {
                            (*name, p.errors[*kind as usize].load(Ordering::Relaxed))
                        })
                        .collect(),
                    bridges: p.bridges.load(Ordering::Relaxed),
                    routed_addresses: p.tables[0].load(Ordering::Relaxed),
                    routed_ufrags: p.tables[1].load(Ordering::Relaxed),
                    timers: p.tables[2].load(Ordering::Relaxed),
                    routed_sip_sources: p.tables[3].load(Ordering::Relaxed),
                    str0m_legs: p.tables[4].load(Ordering::Relaxed),
                    relay_delay: p.relay_delay.load(),
                }
            })
            .collect()
    }

    /// Tells every worker to stop (their bridges and sockets are dropped, ports released)
    /// without waiting: for an owner that cannot get the engine mutably, such as a gateway
    /// being dropped while tasks still hold its services.
    pub fn stop(&self) {
        for w in &self.workers {
            let _ = w.commands.send(Control::Stop);
            let _ = w.waker.wake();
        }
    }

    /// Stops every worker (their bridges are dropped, ports released) and joins them.
    pub fn shutdown(&mut self) {
        self.stop();
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take()
                && thread.join().is_err()
            {
                warn!("a media worker panicked");
            }
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A worker's shared SIP-leg RTP/RTCP sockets (`rtp.sockets = "shared"`).
struct SharedSip {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    rtp_addr: SocketAddr,
}

impl SharedSip {
    /// Binds worker `index`'s pair (`base` + 2`index` and the port above) and registers it
    /// with that worker's poll.
    fn bind(base: SocketAddr, index: usize, registry: &mio::Registry) -> io::Result<SharedSip> {
        let port = u16::try_from(usize::from(base.port()) + 2 * index)
            .ok()
            .filter(|p| *p < u16::MAX)
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "shared RTP port overflow"))?;
        let bind = |port: u16| {
            let addr = SocketAddr::new(base.ip(), port);
            let socket = std::net::UdpSocket::bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("shared SIP-leg socket {addr}: {e}"))
            })?;
            socket.set_nonblocking(true)?;
            enlarge_buffers(&socket);
            stamp_arrivals(&socket);
            Ok::<_, io::Error>(UdpSocket::from_std(socket))
        };
        let mut rtp = bind(port)?;
        let mut rtcp = bind(port + 1)?;
        registry.register(&mut rtp, SHARED_RTP_TOKEN, Interest::READABLE)?;
        registry.register(&mut rtcp, SHARED_RTCP_TOKEN, Interest::READABLE)?;
        Ok(SharedSip {
            rtp_addr: rtp.local_addr()?,
            rtp: Arc::new(rtp),
            rtcp: Arc::new(rtcp),
        })
    }
}

/// Which socket a batch was read from, and so which handler its datagrams go to.
#[derive(Debug, Clone, Copy)]
enum BatchSource {
    Browser,
    SharedSip {
        rtcp: bool,
    },
    OwnSip {
        slot: usize,
        rtcp: bool,
        generation: u32,
    },
}

/// What a worker sends on its WebRTC socket and its shared SIP-leg RTP socket, queued while a
/// batch of received datagrams is handled and then sent with one `sendmmsg` per socket.
/// Per-call SIP-leg sockets send at once: each carries one call, whose batch would hold one
/// datagram.
struct Outbox {
    /// The worker's WebRTC socket (owned by the worker, open as long as it runs).
    webrtc_fd: RawFd,
    to_browser: SendBatch,
    /// The worker's shared SIP-leg RTP socket, when calls share one.
    shared_rtp_fd: Option<RawFd>,
    to_pbx: SendBatch,
    /// What the flushes since [`Outbox::take_refused`] did, per socket.
    browser: Flushed,
    pbx: Flushed,
}

impl Outbox {
    /// Sends everything queued.
    fn flush(&mut self) {
        if !self.to_browser.is_empty() {
            self.browser.add(self.to_browser.flush(self.webrtc_fd));
        }
        if let Some(fd) = self.shared_rtp_fd
            && !self.to_pbx.is_empty()
        {
            self.pbx.add(self.to_pbx.flush(fd));
        }
    }

    /// Datagrams the kernel refused since the last call, (to browsers, to the PBX).
    fn take_refused(&mut self) -> (u64, u64) {
        let refused = (self.browser.failed, self.pbx.failed);
        self.browser = Flushed::default();
        self.pbx = Flushed::default();
        refused
    }
}

/// An error for a datagram that does not fit a batch slot (never expected: str0m and the
/// relay write at most [`DATAGRAM`] bytes).
fn oversized() -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, "datagram larger than a batch slot")
}

impl Egress<SipLegSocket> for Outbox {
    fn to_browser(&mut self, contents: &[u8], to: SocketAddr) -> io::Result<()> {
        if self.to_browser.is_full() {
            self.browser.add(self.to_browser.flush(self.webrtc_fd));
        }
        if self.to_browser.push(contents, to) {
            Ok(())
        } else {
            Err(oversized())
        }
    }

    fn to_pbx(
        &mut self,
        socket: &mut SipLegSocket,
        contents: &[u8],
        to: SocketAddr,
    ) -> io::Result<()> {
        // A bridge's shared socket is always its worker's (checked when it is added).
        let (SipLegSocket::Shared(_), Some(fd)) = (&*socket, self.shared_rtp_fd) else {
            return socket.send_to(contents, to).map(drop);
        };
        if self.to_pbx.is_full() {
            self.pbx.add(self.to_pbx.flush(fd));
        }
        if self.to_pbx.push(contents, to) {
            Ok(())
        } else {
            Err(oversized())
        }
    }
}

struct Worker {
    poll: Poll,
    webrtc: UdpSocket,
    /// The shared SIP-leg pair, when calls share one.
    shared: Option<SharedSip>,
    /// Which bridge a datagram on the shared pair belongs to.
    routes: SipRoutes,
    /// Bridges still holding an `Rtc`, as last counted by the housekeeping.
    str0m_legs: usize,
    candidate: SocketAddr,
    commands: Receiver<Control>,
    published: Arc<Published>,
    inactivity_timeout: Duration,
    slots: Vec<Option<Bridge>>,
    free_slots: Vec<usize>,
    generation: u32,
    by_key: HashMap<BridgeKey, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    counters: Counters,
    /// Where one `recvmmsg` puts its datagrams.
    rx: RecvBatch,
    /// What the datagrams being handled send, until the batch is done.
    outbox: Outbox,
    /// Sockets whose last batch came back full: read again next pass, before sleeping.
    backlog: Vec<Token>,
    /// The sockets to read in the current pass (kept to reuse its allocation).
    ready: Vec<Token>,
    /// How long relayed RTP packets were held.
    relay_delay: RelayDelay,
    /// Peer addresses of calls ended in the last [`AFTER_END_GRACE`], with when that ends:
    /// consulted only for packets no bridge takes; purged by housekeeping.
    recently_ended: HashMap<SocketAddr, Instant>,
    out: Box<[u8; DATAGRAM]>,
    next_housekeeping: Instant,
    /// A `Stop` was read while catching up on commands in the middle of a pass.
    stop_requested: bool,
    /// `webrtc.busy_poll_us`: after a pass that read datagrams, poll without sleeping for
    /// this long (zero: off).
    busy_poll: Duration,
    /// Until when the worker polls without sleeping (the last datagram + `busy_poll`).
    spin_until: Instant,
    /// `webrtc.drain_interval_us`: while passes find datagrams, the next pass starts this
    /// long after the last one (the worker sleeps in between) instead of at the next
    /// datagram's arrival (zero: off).
    drain_interval: Duration,
    /// When the next pass reads the sockets, while draining on the interval.
    next_drain: Option<Instant>,
    /// `webrtc.direct_srtp`: bridges relay the browser's RTP themselves once keyed.
    direct_srtp: bool,
    /// Wall-clock time at `clock_base`, for RTCP NTP timestamps.
    unix_base: Duration,
    clock_base: Instant,
}

impl Worker {
    fn new(
        poll: Poll,
        mut webrtc: UdpSocket,
        candidate: SocketAddr,
        commands: Receiver<Control>,
        published: Arc<Published>,
        inactivity_timeout: Duration,
        shared: Option<SharedSip>,
    ) -> io::Result<Worker> {
        poll.registry()
            .register(&mut webrtc, WEBRTC_TOKEN, Interest::READABLE)?;
        let outbox = Outbox {
            webrtc_fd: webrtc.as_raw_fd(),
            to_browser: SendBatch::new(BATCH),
            shared_rtp_fd: shared.as_ref().map(|s| s.rtp.as_raw_fd()),
            to_pbx: SendBatch::new(BATCH),
            browser: Flushed::default(),
            pbx: Flushed::default(),
        };
        Ok(Worker {
            poll,
            webrtc,
            routes: SipRoutes::new(shared.as_ref().map(|s| s.rtp_addr)),
            str0m_legs: 0,
            shared,
            candidate,
            commands,
            published,
            inactivity_timeout,
            slots: Vec::new(),
            free_slots: Vec::new(),
            generation: 0,
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            counters: Counters::default(),
            rx: RecvBatch::new(BATCH),
            outbox,
            backlog: Vec::new(),
            ready: Vec::new(),
            relay_delay: RelayDelay::default(),
            recently_ended: HashMap::new(),
            out: Box::new([0; DATAGRAM]),
            next_housekeeping: clock::now(),
            stop_requested: false,
            busy_poll: Duration::ZERO,
            spin_until: clock::now(),
            drain_interval: Duration::ZERO,
            next_drain: None,
            direct_srtp: true,
            unix_base: clock::since_unix_epoch(),
            clock_base: clock::now(),
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = clock::now();
            let mut deadline = self.next_housekeeping;
            if let Some(Reverse((at, _, _))) = self.timers.peek() {
                deadline = deadline.min(*at);
            }
            // Sockets left with datagrams are read again at once, after a look at what else
            // became ready; while busy polling, every socket is looked at again at once.
            let mut wait = if self.backlog.is_empty() && now >= self.spin_until {
                deadline.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            // Draining on an interval: sleep to the next pass (or the next timer) without
            // waking for each datagram, then take whatever became ready meanwhile.
            if let Some(at) = self.next_drain
                && self.backlog.is_empty()
            {
                let until = at.min(deadline);
                if until > now {
                    std::thread::sleep(until - now);
                }
                wait = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(error = %e, "media poll failed");
                }
                continue;
            }
            let now = clock::now();
            // Commands first: a bridge's Add or Connect and the first packet for it often
            // arrive in the same wake-up, and that packet must find its bridge.
            if events.iter().any(|e| e.token() == WAKER_TOKEN) && !self.apply_commands(now) {
                self.teardown_all(now);
                return;
            }
            self.counters.passes += 1;
            // The sockets left with datagrams by the last pass, then the newly readable.
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.append(&mut self.backlog);
            let carried = ready.len();
            for event in events.iter() {
                let token = event.token();
                if token != WAKER_TOKEN && !ready[..carried].contains(&token) {
                    ready.push(token);
                }
            }
            let mut read_any = false;
            for &token in &ready {
                if self.read_batch(token, now) {
                    self.backlog.push(token);
                }
                read_any |= !self.rx.is_empty();
                self.flush();
                self.record_relay_delays();
                if self.stop_requested {
                    self.teardown_all(now);
                    return;
                }
            }
            self.ready = ready;
            if read_any && !self.busy_poll.is_zero() {
                self.spin_until = now + self.busy_poll;
            }
            self.next_drain = self.next_pass(read_any, now);
            self.expire_timers(now);
            if now >= self.next_housekeeping {
                self.housekeeping(now);
                self.next_housekeeping = now + HOUSEKEEPING;
            }
            self.flush();
        }
    }

    /// When the pass after one that started at `now` reads the sockets, while draining on
    /// the interval: on a steady cadence (not drifting by each pass's own length), and not
    /// at all after a pass that found nothing (an idle worker waits for readiness again).
    fn next_pass(&self, read_any: bool, now: Instant) -> Option<Instant> {
        // Busy polling, when also asked for, replaces the interval (`Settings::drain_interval`).
        if !read_any || self.drain_interval.is_zero() || !self.busy_poll.is_zero() {
            return None;
        }
        let cadence = self.next_drain.map(|at| at + self.drain_interval);
        Some(
            cadence
                .filter(|&at| at > now)
                .unwrap_or(now + self.drain_interval),
        )
    }

    /// Books how long each RTP packet of the batch just handled was held: from its arrival
    /// in the socket to now, when what it produced has been sent (str0m's due timeouts run
    /// inline, so a packet for the browser leaves with its batch too).
    fn record_relay_delays(&mut self) {
        if self.rx.is_empty() {
            return;
        }
        let sent = clock::since_unix_epoch();
        for i in 0..self.rx.len() {
            let (Some(arrived), Some((packet, _))) = (self.rx.arrival(i), self.rx.get(i)) else {
                continue;
            };
            if rtp::classify(packet) == PacketKind::Rtp {
                self.relay_delay.observe(sent.saturating_sub(arrived));
            }
        }
    }

    /// Sends what the outbox holds and books the datagrams the kernel refused.
    fn flush(&mut self) {
        self.outbox.flush();
        let (to_browser, to_pbx) = self.outbox.take_refused();
        if to_browser + to_pbx > 0 {
            self.counters.refused(to_browser, to_pbx);
        }
    }

    /// Applies the commands queued since this pass began, before a packet meets a bridge that
    /// has no PBX target yet. The session posts `Connect` and only then tells the browser the
    /// call is answered, so the browser's first frame can arrive while this pass (woken by a
    /// timer or another socket) has not seen the command: without this it would be dropped.
    /// Rare (only bridges still waiting for their target) and cheap (one `try_recv`).
    fn catch_up_commands(&mut self, now: Instant) {
        if !self.stop_requested && !self.apply_commands(now) {
            self.stop_requested = true;
        }
    }

    /// Applies queued commands; false when told to stop.
    fn apply_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Control::Command(MediaCommand::Add(new))) => self.add(*new, now),
                Ok(Control::Command(MediaCommand::Connect { key, target })) => {
                    if let Some(&slot) = self.by_key.get(&key)
                        && let Some(bridge) = self.slots[slot].as_mut()
                    {
                        bridge.connect(target, now);
                        debug!(key, remote = %target.remote, "bridge connected to the PBX leg");
                        self.reroute(slot);
                    }
                }
                Ok(Control::Command(MediaCommand::Forward { key, to_sip })) => {
                    if let Some(bridge) =
                        self.by_key.get(&key).and_then(|&s| self.slots[s].as_mut())
                    {
                        bridge.forward_to_sip = to_sip;
                    }
                }
                Ok(Control::Command(MediaCommand::Dtmf {
                    key,
                    events,
                    duration,
                })) => {
                    if let Some(&slot) = self.by_key.get(&key)
                        && let Some(bridge) = self.slots[slot].as_mut()
                    {
                        let samples = u32::try_from(duration.as_millis() * 8).unwrap_or(u32::MAX);
                        bridge.dtmf.duration_samples = samples.clamp(TONE_STEP * 2, 8000 * 6);
                        bridge.dtmf.queue.extend(events);
                        if bridge.dtmf.next_at.is_none() {
                            bridge.dtmf.next_at = Some(now);
                            self.timers.push(Reverse((now, slot, bridge.generation)));
                        }
                    }
                }
                Ok(Control::Command(MediaCommand::BrowserAway { key })) => {
                    if let Some(bridge) =
                        self.by_key.get(&key).and_then(|&s| self.slots[s].as_mut())
                    {
                        debug!(key, "browser away: its leg may fail until it is replaced");
                        bridge.browser_away = true;
                    }
                }
                Ok(Control::Command(MediaCommand::ReplaceBrowser { key, webrtc })) => {
                    if let Some(&slot) = self.by_key.get(&key) {
                        self.replace_browser(slot, *webrtc, now);
                    }
                }
                Ok(Control::Command(MediaCommand::Remove { key })) => {
                    if let Some(&slot) = self.by_key.get(&key) {
                        self.remove(slot, now);
                    }
                }
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, new: NewBridge, now: Instant) {
        let NewBridge {
            key,
            webrtc,
            rtp,
            events,
            keep_on_browser_failure,
        } = new;
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let (rtp, rtcp, lease, registered) = match rtp {
            SipLegPorts::PerCall(pair) => {
                let (rtp_std, rtcp_std, lease) = pair.into_parts();
                stamp_arrivals(&rtp_std);
                let mut rtp = UdpSocket::from_std(rtp_std);
                let mut rtcp = UdpSocket::from_std(rtcp_std);
                let registry = self.poll.registry();
                let registered = registry
                    .register(
                        &mut rtp,
                        Token(FIRST_BRIDGE_TOKEN + 2 * slot),
                        Interest::READABLE,
                    )
                    .and_then(|()| {
                        registry.register(
                            &mut rtcp,
                            Token(FIRST_BRIDGE_TOKEN + 2 * slot + 1),
                            Interest::READABLE,
                        )
                    });
                (
                    SipLegSocket::Own(rtp),
                    SipLegSocket::Own(rtcp),
                    Some(lease),
                    registered,
                )
            }
            SipLegPorts::Shared(addr) => match &self.shared {
                Some(shared) if shared.rtp_addr == addr => (
                    SipLegSocket::Shared(shared.rtp.clone()),
                    SipLegSocket::Shared(shared.rtcp.clone()),
                    None,
                    Ok(()),
                ),
                _ => {
                    // The control plane asked for the shared pair of another worker (never
                    // expected): fail the call rather than relay from the wrong port.
                    let mut events = events;
                    events(super::MediaEvent {
                        key,
                        kind: MediaEventKind::Failed {
                            reason: format!("{addr} is not this media worker's shared RTP socket"),
                        },
                    });
                    self.free_slots.push(slot);
                    return;
                }
            },
        };
        self.generation = self.generation.wrapping_add(1);
        let mut bridge = Bridge::new(key, self.generation, webrtc, rtp, rtcp, lease, events, now);
        if !self.direct_srtp {
            bridge.key_tap = None;
        }
        bridge.keep_on_browser_failure = keep_on_browser_failure;
        if let Err(e) = registered {
            warn!(key, error = %e, "cannot register SIP-leg sockets");
            bridge.emit(MediaEventKind::Failed {
                reason: format!("socket registration: {e}"),
            });
            deregister(self.poll.registry(), &mut bridge);
            self.free_slots.push(slot);
            return;
        }
        self.by_key.insert(key, slot);
        self.by_ufrag.insert(bridge.local_ufrag.clone(), slot);
        self.slots[slot] = Some(bridge);
        self.published
            .bridges
            .store(self.by_key.len(), Ordering::Relaxed);
        self.drain(slot, now);
    }

    /// Swaps in a resumed browser's new leg: new ufrag and addresses, a fresh `Rtc`, the same
    /// SIP leg (ports, latch, outgoing numbering, so the PBX sees one continuous stream).
    fn replace_browser(&mut self, slot: usize, webrtc: Negotiated, now: Instant) {
        let Some(bridge) = self.slots[slot].as_mut() else {
            return;
        };
        self.by_ufrag.remove(&bridge.local_ufrag);
        for addr in bridge.browser_addrs.drain(..) {
            self.by_addr.remove(&addr);
        }
        if let Some(mut old) = bridge.rtc.replace(Box::new(webrtc.rtc)) {
            old.disconnect();
        }
        bridge.str0m_rtcp_sent = 0;
        bridge.mid = webrtc.mid;
        bridge.local_ufrag = webrtc.local_ufrag;
        // The new leg has its own handshake and keys.
        bridge.direct = None;
        bridge.key_tap = self.direct_srtp.then_some(webrtc.srtp_keys);
        bridge.browser_telephone_event = webrtc.browser_telephone_event;
        bridge.remap(now);
        bridge.browser_away = false;
        bridge.connected_reported = false;
        bridge.inactivity_reported = false;
        bridge.next_timeout = None;
        bridge.last_webrtc_rx = Some(now);
        bridge.webrtc_rx = Default::default();
        bridge.webrtc_rtt_ms = None;
        self.by_ufrag.insert(bridge.local_ufrag.clone(), slot);
        debug!(key = bridge.key, "browser leg replaced");
        self.drain(slot, now);
    }

    fn remove(&mut self, slot: usize, now: Instant) {
        let Some(mut bridge) = self.slots[slot].take() else {
            return;
        };
        deregister(self.poll.registry(), &mut bridge);
        self.routes.forget(slot, bridge.sip_route);
        let until = now + AFTER_END_GRACE;
        if bridge.rtp.is_shared()
            && let Some(pbx) = bridge.sip_route.or(bridge.sip_remote)
        {
            self.recently_ended.insert(pbx, until);
        }
        for addr in &bridge.browser_addrs {
            self.recently_ended.insert(*addr, until);
        }
        self.by_key.remove(&bridge.key);
        self.by_ufrag.remove(&bridge.local_ufrag);
        for addr in &bridge.browser_addrs {
            self.by_addr.remove(addr);
        }
        if let Some(rtc) = bridge.rtc.as_mut() {
            // Tell the browser the DTLS session is over, best effort.
            rtc.disconnect();
            while let Ok(output) = rtc.poll_output() {
                match output {
                    Output::Transmit(t) => {
                        let _ = self.webrtc.send_to(&t.contents, t.destination);
                    }
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
        } else {
            // A kept leg has no DTLS session of ours left to close: a last report ending in
            // an RTCP BYE says the stream is over instead, best effort.
            let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
            bridge.kept_leg_duties(
                now,
                since_unix,
                true,
                &mut self.out[..],
                &mut self.counters,
                &mut self.outbox,
            );
        }
        let stats = bridge.stats;
        let quality = bridge.connected_reported.then(|| bridge.quality());
        bridge.emit(MediaEventKind::Removed { stats, quality });
        debug!(key = bridge.key, ?stats, alive_for = ?now - bridge.created_at, "bridge removed");
        self.free_slots.push(slot);
        self.published
            .bridges
            .store(self.by_key.len(), Ordering::Relaxed);
    }

    fn teardown_all(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            self.remove(slot, now);
        }
    }

    /// Reads one batch from the socket behind `token` and hands each datagram on. True when
    /// the batch came back full: the socket may hold more, to read next pass (after the
    /// other ready sockets had their turn).
    fn read_batch(&mut self, token: Token, now: Instant) -> bool {
        // The batch leaves the worker while its datagrams go through the worker's handlers
        // (an empty batch takes its place: no allocation).
        let mut rx = std::mem::take(&mut self.rx);
        let more = self.read_batch_from(&mut rx, token, now);
        self.rx = rx;
        more
    }

    fn read_batch_from(&mut self, rx: &mut RecvBatch, token: Token, now: Instant) -> bool {
        let (fd, from) = match token {
            WEBRTC_TOKEN => (self.webrtc.as_raw_fd(), BatchSource::Browser),
            SHARED_RTP_TOKEN | SHARED_RTCP_TOKEN => {
                let Some(shared) = &self.shared else {
                    return false;
                };
                let rtcp = token == SHARED_RTCP_TOKEN;
                let socket = if rtcp { &shared.rtcp } else { &shared.rtp };
                (socket.as_raw_fd(), BatchSource::SharedSip { rtcp })
            }
            Token(t) => {
                let slot = (t - FIRST_BRIDGE_TOKEN) / 2;
                let rtcp = (t - FIRST_BRIDGE_TOKEN) % 2 == 1;
                let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                    return false;
                };
                let generation = bridge.generation;
                let socket = if rtcp {
                    bridge.rtcp.own_mut()
                } else {
                    bridge.rtp.own_mut()
                };
                let Some(socket) = socket else {
                    return false;
                };
                let from = BatchSource::OwnSip {
                    slot,
                    rtcp,
                    generation,
                };
                (socket.as_raw_fd(), from)
            }
        };
        let received = loop {
            match rx.recv(fd) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on Linux; they concern one peer only and are
                    // cleared by being reported: read again next pass.
                    debug!(error = %e, ?token, "media socket receive error");
                    return true;
                }
            }
        };
        self.counters.receive_calls += 1;
        self.counters.datagrams_received += received as u64;
        for i in 0..received {
            let Some((packet, source)) = rx.get_mut(i) else {
                continue;
            };
            match from {
                BatchSource::Browser => self.on_webrtc_datagram(packet, source, now),
                BatchSource::SharedSip { rtcp } => {
                    self.on_shared_sip_datagram(packet, source, rtcp, now)
                }
                BatchSource::OwnSip {
                    slot,
                    rtcp,
                    generation,
                } => {
                    // The bridge may have gone (and its slot been reused) within the batch.
                    let same = self
                        .slots
                        .get(slot)
                        .and_then(Option::as_ref)
                        .map(|b| b.generation);
                    if same != Some(generation) {
                        return false;
                    }
                    self.on_sip_datagram(slot, rtcp, packet, source, now);
                }
            }
            if self.stop_requested {
                return false;
            }
        }
        received == rx.capacity()
    }

    /// Hands one datagram from a browser (STUN, DTLS, SRTP, SRTCP) to its bridge, found by
    /// source address or, for a first STUN request, by ICE ufrag.
    fn on_webrtc_datagram(&mut self, packet: &mut [u8], source: SocketAddr, now: Instant) {
        self.counters.webrtc_in += 1;
        let kind = rtp::classify(packet);
        if kind == PacketKind::Unknown {
            self.counters.error(MediaError::UnknownPacket);
            return;
        }
        let mut routed = self.by_addr.get(&source).copied();
        if kind == PacketKind::Rtp
            && let Some(slot) = routed
            && self.slots[slot]
                .as_ref()
                .is_some_and(|b| b.sip_remote.is_none())
        {
            self.catch_up_commands(now);
            if self.stop_requested {
                return;
            }
            routed = self.by_addr.get(&source).copied();
        }
        let slot = match routed {
            Some(slot) => slot,
            None => {
                let ufrag = (kind == PacketKind::Stun)
                    .then(|| stun::binding_request_local_ufrag(packet))
                    .flatten();
                let mut found = ufrag.and_then(|ufrag| self.by_ufrag.get(ufrag).copied());
                if found.is_none()
                    && let Some(ufrag) = ufrag
                {
                    // The browser's first check can come in the pass before the one that
                    // sees its bridge's `Add` (posted before the answer went out): apply the
                    // queued commands rather than drop it and wait for its retransmission.
                    self.catch_up_commands(now);
                    if self.stop_requested {
                        return;
                    }
                    found = self.by_ufrag.get(ufrag).copied();
                }
                let Some(slot) = found else {
                    self.count_unrouted(source, now);
                    return;
                };
                self.by_addr.insert(source, slot);
                if let Some(bridge) = self.slots[slot].as_mut() {
                    bridge.browser_addrs.push(source);
                }
                slot
            }
        };
        let Some(bridge) = self.slots[slot].as_mut() else {
            self.count_unrouted(source, now);
            return;
        };
        if kind == PacketKind::Rtp
            && bridge.direct.is_some()
            && bridge.relay_browser_rtp(
                packet,
                source,
                now,
                &mut self.out[..],
                &mut self.counters,
                &mut self.outbox,
            ) == DirectOutcome::Done
        {
            return;
        }
        if bridge.is_kept() {
            let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
            bridge.receive_kept(
                packet,
                source,
                now,
                since_unix,
                &mut self.out[..],
                &mut self.counters,
                &mut self.outbox,
            );
            if bridge.doomed {
                self.remove(slot, now);
            }
            return;
        }
        bridge.receive_webrtc(packet, source, self.candidate, now, &mut self.counters);
        self.drain(slot, now);
    }

    /// Hands one datagram from the worker's shared SIP-leg socket to the bridge its source
    /// (and, if several calls share the source, its SSRC) belongs to.
    fn on_shared_sip_datagram(
        &mut self,
        packet: &mut [u8],
        source: SocketAddr,
        rtcp_socket: bool,
        now: Instant,
    ) {
        let rtcp = rtcp_socket || rtp::classify(packet) == PacketKind::Rtcp;
        // RTP carries its SSRC at bytes 8..12, RTCP its sender's at 4..8.
        let at = if rtcp { 4 } else { 8 };
        let ssrc = packet
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let Some((slot, alone)) = self.shared_route(source, rtcp_socket, ssrc, now) else {
            return;
        };
        let Some(bridge) = self.slots[slot].as_mut() else {
            return;
        };
        let was_latched = bridge.latched;
        if !rtcp && (alone || bridge.pbx_ssrc.is_none()) {
            bridge.pbx_ssrc = ssrc;
        }
        self.on_sip_datagram(slot, rtcp_socket, packet, source, now);
        if !was_latched {
            self.reroute(slot);
        }
    }

    /// The bridge a datagram on the shared socket belongs to, and whether it is alone on its
    /// PBX address (see [`SipRoutes::lookup`]); when the source is not routed, pending
    /// commands are applied (the PBX may send before `Connect` is applied) before a latch
    /// candidate is sought. Unknown or ambiguous sources are counted and get `None`.
    fn shared_route(
        &mut self,
        source: SocketAddr,
        rtcp_socket: bool,
        ssrc: Option<u32>,
        now: Instant,
    ) -> Option<(usize, bool)> {
        let resolved = match self.routes.lookup(&self.slots, source, rtcp_socket, ssrc) {
            Some(resolved) => resolved,
            None => {
                self.catch_up_commands(now);
                if self.stop_requested {
                    return None;
                }
                match self.routes.lookup(&self.slots, source, rtcp_socket, ssrc) {
                    Some(resolved) => resolved,
                    None => self
                        .routes
                        .latch_candidate(&self.slots, source, rtcp_socket),
                }
            }
        };
        match resolved {
            Resolved::Bridge { slot, alone } => Some((slot, alone)),
            Resolved::Unknown => {
                self.count_unrouted(source, now);
                None
            }
            Resolved::Ambiguous => {
                self.counters.error(MediaError::SipSourceAmbiguous);
                None
            }
        }
    }

    /// Counts a packet no bridge takes: `after_end` from the address of a call that has just
    /// ended (or, on the shared RTCP socket, from the port above one), `unknown_source`
    /// otherwise.
    fn count_unrouted(&mut self, source: SocketAddr, now: Instant) {
        let rtp_port = SocketAddr::new(source.ip(), source.port().wrapping_sub(1));
        let recent = |addr: &SocketAddr| {
            self.recently_ended
                .get(addr)
                .is_some_and(|&until| now < until)
        };
        if recent(&source) || recent(&rtp_port) {
            self.counters.error(MediaError::AfterEnd);
        } else {
            self.counters.error(MediaError::UnknownSource);
        }
    }

    /// Brings a shared-socket bridge's route in line with its PBX address (after a connect
    /// or a latch).
    fn reroute(&mut self, slot: usize) {
        self.routes.reroute(&mut self.slots, slot);
    }

    /// Handles one datagram from the PBX for the bridge in `slot`: RTCP is consumed, RTP
    /// relayed to the browser.
    fn on_sip_datagram(
        &mut self,
        slot: usize,
        rtcp_socket: bool,
        packet: &mut [u8],
        source: SocketAddr,
        now: Instant,
    ) {
        let kind = rtp::classify(packet);
        let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !rtcp_socket && kind == PacketKind::Rtp && bridge.sip_remote.is_none() {
            // The PBX may send right after its 200 OK, before `Connect` is applied.
            let generation = bridge.generation;
            self.catch_up_commands(now);
            if self.stop_requested {
                return;
            }
            // The commands may have removed this bridge (and reused its slot).
            if self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .map(|b| b.generation)
                != Some(generation)
            {
                return;
            }
        }
        let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if rtcp_socket || kind == PacketKind::Rtcp {
            // RTCP from the PBX is consumed (str0m reports for the browser leg itself); its
            // report about our stream gives the SIP leg's round trip.
            self.counters.rtcp_in += 1;
            let Some(plain) = bridge.open_sip_rtcp(packet, &mut self.counters) else {
                return;
            };
            if let Some(block) = quality::report_block_for(&packet[..plain], bridge.sip_ssrc) {
                let now_ntp = quality::ntp_middle32(
                    self.unix_base + now.saturating_duration_since(self.clock_base),
                );
                if let Some(rtt) = quality::rtt_from_report(&block, now_ntp) {
                    bridge.sip_rtt_ms = Some(rtt);
                }
            }
            return;
        }
        self.counters.sip_in += 1;
        if bridge.receive_sip_rtp(
            packet,
            kind,
            source,
            now,
            &mut self.out[..],
            &mut self.counters,
            &mut self.outbox,
        ) {
            self.drain(slot, now);
        }
    }

    /// Polls one bridge's `Rtc` until it asks to be woken later (str0m's drain rule).
    fn drain(&mut self, slot: usize, now: Instant) {
        let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Some(at) =
            bridge.poll_rtc(now, &mut self.out[..], &mut self.counters, &mut self.outbox)
        {
            self.timers.push(Reverse((at, slot, bridge.generation)));
        }
        if bridge.doomed {
            self.remove(slot, now);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if bridge.generation != generation {
                continue;
            }
            if bridge.dtmf.next_at == Some(at) {
                self.tone_tick(slot, now);
            }
            let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if bridge.next_timeout != Some(at) {
                continue;
            }
            bridge.next_timeout = None;
            let Some(rtc) = bridge.rtc.as_mut() else {
                continue;
            };
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                debug!(key = bridge.key, error = %e, "str0m timeout handling failed");
                self.counters.error(MediaError::Str0m);
            }
            self.drain(slot, now);
        }
    }

    /// Sends the next RFC 4733 packet of the injected digits, or starts the next digit.
    fn tone_tick(&mut self, slot: usize, now: Instant) {
        let Some(bridge) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        bridge.dtmf.next_at = None;
        let (Some(remote), Some(pt)) = (bridge.sip_remote, bridge.sip_telephone_event) else {
            bridge.dtmf.queue.clear();
            bridge.dtmf.active = None;
            return;
        };
        let mut tone = match bridge.dtmf.active {
            Some(tone) => tone,
            None => {
                let Some(event) = bridge.dtmf.queue.pop_front() else {
                    return;
                };
                let start = bridge.to_sip.inject();
                ActiveTone {
                    event,
                    timestamp: start.timestamp,
                    elapsed: 0,
                    ends_sent: 0,
                }
            }
        };
        let first = tone.elapsed == 0;
        tone.elapsed = (tone.elapsed + TONE_STEP).min(bridge.dtmf.duration_samples);
        let end = tone.elapsed >= bridge.dtmf.duration_samples;
        let payload = rtp::TelephoneEvent {
            event: tone.event,
            end,
            volume: 10,
            duration: u16::try_from(tone.elapsed).unwrap_or(u16::MAX),
        }
        .to_bytes();
        // Three end packets back to back (RFC 4733 §2.5.1.4) share one sequence step each.
        let repeats = if end { 3 } else { 1 };
        for _ in 0..repeats {
            let seq = if first {
                bridge.to_sip.peek_sequence()
            } else {
                bridge.to_sip.inject().sequence
            };
            let Some(len) = rtp::write_rtp(
                &mut self.out[..],
                first,
                pt,
                seq as u16,
                tone.timestamp,
                bridge.sip_ssrc,
                &payload,
            ) else {
                break;
            };
            bridge.send_sip_rtp(
                &mut self.out[..],
                len,
                remote,
                &mut self.counters,
                &mut self.outbox,
            );
        }
        if end {
            tone.ends_sent = 3;
            bridge.to_sip.advance(tone.elapsed);
            bridge.dtmf.active = None;
            if !bridge.dtmf.queue.is_empty() {
                let at = now + TONE_GAP;
                bridge.dtmf.next_at = Some(at);
                self.timers.push(Reverse((at, slot, bridge.generation)));
            }
        } else {
            bridge.dtmf.active = Some(tone);
            let at = now + TONE_TICK;
            bridge.dtmf.next_at = Some(at);
            self.timers.push(Reverse((at, slot, bridge.generation)));
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let timeout = self.inactivity_timeout;
        let mut doomed = Vec::new();
        let mut str0m_legs = 0;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(bridge) = entry.as_mut() else {
                continue;
            };
            if !bridge.inactivity_reported {
                let webrtc_since = bridge.last_webrtc_rx.unwrap_or(bridge.created_at);
                let sip_since = bridge.last_sip_rx.or(bridge.sip_connected_at);
                let silent_leg = if !bridge.browser_away
                    && now.saturating_duration_since(webrtc_since) > timeout
                {
                    Some(super::leg::WEBRTC)
                } else if sip_since.is_some_and(|t| now.saturating_duration_since(t) > timeout) {
                    Some(super::leg::SIP)
                } else {
                    None
                };
                if let Some(leg) = silent_leg {
                    bridge.inactivity_reported = true;
                    info!(key = bridge.key, leg, "media inactivity");
                    bridge.emit(MediaEventKind::Inactive { leg });
                }
            }
            if let Some(remote) = bridge.sip_remote
                && now >= bridge.next_sender_report
            {
                bridge.next_sender_report = now + SENDER_REPORT_INTERVAL;
                let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
                let packets = u32::try_from(bridge.stats.to_sip).unwrap_or(u32::MAX);
                let report = quality::write_sender_report(
                    &mut self.out[..],
                    bridge.sip_ssrc,
                    since_unix,
                    bridge.to_sip.current_timestamp(),
                    packets,
                    packets.saturating_mul(160),
                );
                if let Some(len) = report {
                    let rtcp_to =
                        std::net::SocketAddr::new(remote.ip(), remote.port().wrapping_add(1));
                    bridge.send_sip_rtcp(&mut self.out[..], len, rtcp_to, &mut self.counters);
                }
            }
            if !bridge.is_kept() {
                str0m_legs += 1;
            } else {
                let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
                bridge.kept_leg_duties(
                    now,
                    since_unix,
                    false,
                    &mut self.out[..],
                    &mut self.counters,
                    &mut self.outbox,
                );
            }
            if now >= bridge.next_quality && bridge.connected_reported {
                bridge.next_quality = now + QUALITY_INTERVAL;
                let (webrtc, sip) = bridge.quality();
                bridge.emit(MediaEventKind::Quality { webrtc, sip });
            }
            if bridge.doomed {
                doomed.push(slot);
            }
        }
        for slot in doomed {
            self.remove(slot, now);
        }
        self.recently_ended.retain(|_, until| now < *until);
        self.str0m_legs = str0m_legs;
        self.publish();
    }

    fn publish(&self) {
        let c = &self.counters;
        let p = &self.published;
        p.webrtc_in.store(c.webrtc_in, Ordering::Relaxed);
        p.webrtc_out.store(c.webrtc_out, Ordering::Relaxed);
        p.sip_in.store(c.sip_in, Ordering::Relaxed);
        p.sip_out.store(c.sip_out, Ordering::Relaxed);
        p.rtcp_in.store(c.rtcp_in, Ordering::Relaxed);
        p.direct_in.store(c.direct_in, Ordering::Relaxed);
        p.direct_out.store(c.direct_out, Ordering::Relaxed);
        p.kept_rtcp_in.store(c.kept_rtcp_in, Ordering::Relaxed);
        p.kept_rtcp_out.store(c.kept_rtcp_out, Ordering::Relaxed);
        p.kept_consent_answers
            .store(c.kept_consent_answers, Ordering::Relaxed);
        p.passes.store(c.passes, Ordering::Relaxed);
        p.receive_calls.store(c.receive_calls, Ordering::Relaxed);
        p.datagrams_received
            .store(c.datagrams_received, Ordering::Relaxed);
        for (i, value) in c.errors.iter().enumerate() {
            p.errors[i].store(*value, Ordering::Relaxed);
        }
        p.tables[0].store(self.by_addr.len(), Ordering::Relaxed);
        p.tables[1].store(self.by_ufrag.len(), Ordering::Relaxed);
        p.tables[2].store(self.timers.len(), Ordering::Relaxed);
        p.tables[3].store(self.routes.len(), Ordering::Relaxed);
        p.tables[4].store(self.str0m_legs, Ordering::Relaxed);
        p.relay_delay.store(&self.relay_delay);
    }
}

/// Socket buffer requested for a worker's shared sockets: one socket carries every call of
/// the worker (2,000 calls are 100,000 packets a second), where the default (~208 KiB) holds
/// a few milliseconds. The kernel caps it at `net.core.rmem_max`/`wmem_max`.
const SHARED_SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`SHARED_SOCKET_BUFFER`] each way; best effort, the outcome is logged once.
fn enlarge_buffers(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(SHARED_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SHARED_SOCKET_BUFFER);
    let (recv, send) = (socket.recv_buffer_size(), socket.send_buffer_size());
    if let (Ok(recv), Ok(send)) = (recv, send) {
        // Linux reports twice the usable size (bookkeeping included).
        if recv < SHARED_SOCKET_BUFFER {
            warn!(
                recv_kib = recv / 1024,
                wanted_kib = SHARED_SOCKET_BUFFER / 1024,
                "a media socket's receive buffer is capped by net.core.rmem_max: raise it for \
                 thousands of calls per worker (docs/scaling.md)"
            );
        } else {
            debug!(
                recv_kib = recv / 1024,
                send_kib = send / 1024,
                "media socket buffers"
            );
        }
    }
}

/// Asks for the kernel's arrival timestamps on a socket the worker reads (the relay delay's
/// start); best effort: without them the delay is not measured.
fn stamp_arrivals(socket: &std::net::UdpSocket) {
    if let Err(e) = enable_arrival_timestamps(socket.as_raw_fd()) {
        debug!(error = %e, "no arrival timestamps on a media socket: relay delay not measured");
    }
}

/// Whether `media` (an address from SDP) reaches our socket bound at `own`: the same port on
/// the same IP, or on any local IP when we bound the unspecified address.
fn same_socket(own: SocketAddr, media: SocketAddr) -> bool {
    own.port() == media.port() && (own.ip() == media.ip() || own.ip().is_unspecified())
}

/// Takes a bridge's per-call sockets out of the poll (shared sockets stay registered).
fn deregister(registry: &mio::Registry, bridge: &mut Bridge) {
    if let Some(rtp) = bridge.rtp.own_mut() {
        let _ = registry.deregister(rtp);
    }
    if let Some(rtcp) = bridge.rtcp.own_mut() {
        let _ = registry.deregister(rtcp);
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket as StdUdpSocket;

    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Rtc};

    use super::*;
    use crate::media::ports::PortPool;
    use crate::media::{NewBridge, SipLegPorts, WebRtcFactory};
    use crate::sdp::G711;

    /// A browser's first connectivity check can reach the worker in a pass that has not seen
    /// its bridge's `Add` (posted, but the waker not yet read): the worker applies the queued
    /// commands and answers the check instead of dropping it until a retransmission.
    #[test]
    fn a_first_stun_check_finds_a_bridge_whose_add_is_still_queued() {
        let mut engine = MediaEngine::start(EngineConfig::one_loopback_worker()).expect("engine");
        let candidate = engine.candidate(0);
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("browser socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let local = socket.local_addr().expect("addr");
        let now = clock::now();
        let mut browser = Rtc::builder()
            .clear_codecs()
            .enable_pcmu(true, false)
            .build(now);
        browser.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
        let mut api = browser.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let negotiated = WebRtcFactory::new()
            .expect("certificate")
            .accept_offer(&offer.to_sdp_string(), G711::Pcmu, candidate, now)
            .expect("callgate accepts the offer");
        let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer_sdp)
            .expect("answer parses");
        browser
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the browser accepts the answer");
        let pool = PortPool::new("127.0.0.1".parse().expect("ip"), 47000, 47999);
        let pair = pool.allocate().expect("an RTP pair");
        engine.post_unwoken(
            0,
            MediaCommand::Add(Box::new(NewBridge {
                key: engine.new_key(),
                webrtc: negotiated,
                rtp: SipLegPorts::PerCall(pair),
                events: Box::new(|_| true),
                keep_on_browser_failure: false,
            })),
        );
        // The browser's first check goes out; nothing else wakes the worker.
        let mut sent = 0;
        browser
            .handle_input(str0m::Input::Timeout(clock::now()))
            .expect("timeout");
        while let Ok(output) = browser.poll_output() {
            match output {
                str0m::Output::Transmit(t) => {
                    socket
                        .send_to(&t.contents, t.destination)
                        .expect("send the check");
                    sent += 1;
                    break;
                }
                str0m::Output::Timeout(_) => break,
                str0m::Output::Event(_) => {}
            }
        }
        assert_eq!(sent, 1, "the browser sent its first check");
        let mut buf = [0u8; 2048];
        let (n, from) = socket
            .recv_from(&mut buf)
            .expect("callgate answers the first check");
        assert_eq!(from, candidate);
        let response = browser.handle_input(str0m::Input::Receive(
            clock::now(),
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: local,
                contents: buf[..n].try_into().expect("a STUN datagram"),
            },
        ));
        assert!(
            response.is_ok(),
            "the browser takes the answer: {response:?}"
        );
        let unknown = engine.snapshots()[0]
            .errors
            .iter()
            .find(|(kind, _)| *kind == "unknown_source")
            .map_or(0, |(_, n)| *n);
        assert_eq!(unknown, 0, "the check was not dropped");
        engine.shutdown();
    }
}
