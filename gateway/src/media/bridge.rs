//! One call's relay state inside a worker: the browser's `Rtc` (until the worker keeps the
//! leg itself, see [`KeptLeg`]), the SIP-leg sockets and the forwarding plan. Owned by
//! exactly one worker; never shared.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite};
use str0m::{Event, Input, Output, Rtc};
use tracing::{debug, info, warn};

use super::browser_srtp::{self, BrowserSrtp};
use super::engine::{Counters, MediaError, QUALITY_INTERVAL, SENDER_REPORT_INTERVAL};
use super::ports::PortLease;
use super::quality::{self, OutgoingBlock, SenderInfo};
use super::rtp::{self, PacketKind, PayloadMap, StreamRewriter};
use super::srtp::{SrtpError, SrtpReceiver, SrtpSender};
use super::stun::{self, ConsentCheck};
use super::webrtc::Negotiated;
use super::{BridgeKey, BridgeStats, EventSink, MediaEvent, MediaEventKind, SipTarget};

/// The SIP leg's send side: the worker's UDP sockets, or memory in the in-memory bridge of
/// the benchmark (so the per-packet path runs the same code with or without sockets).
pub(super) trait SipSocket {
    /// Sends one datagram to the PBX.
    fn send_to(&mut self, buf: &[u8], target: SocketAddr) -> io::Result<usize>;
}

/// Due str0m timeouts one [`Bridge::poll_rtc`] runs itself before it leaves the rest to the
/// worker's timer heap (a bound, should str0m keep reporting a deadline already passed).
const INLINE_TIMEOUTS: u32 = 4;

/// Where a bridge's outgoing datagrams go: the worker's send batches (one `sendmmsg` per
/// batch instead of a system call per datagram), or memory in the in-memory bridge. A datagram
/// accepted here may still be refused by the kernel when its batch is sent; the worker
/// counts those.
pub(super) trait Egress<S> {
    /// A datagram for the browser, from the worker's WebRTC socket.
    fn to_browser(&mut self, contents: &[u8], to: SocketAddr) -> io::Result<()>;
    /// An RTP datagram for the PBX, from the bridge's SIP-leg RTP socket `socket`.
    fn to_pbx(&mut self, socket: &mut S, contents: &[u8], to: SocketAddr) -> io::Result<()>;
}

/// A bridge's SIP-leg socket in a worker: a per-call socket the bridge owns (and the worker
/// polls for it), or the worker's shared socket, which the worker polls and demultiplexes.
pub(super) enum SipLegSocket {
    Own(UdpSocket),
    Shared(Arc<UdpSocket>),
}

impl SipLegSocket {
    /// The per-call socket, to register, read and deregister; `None` when shared.
    pub fn own_mut(&mut self) -> Option<&mut UdpSocket> {
        match self {
            SipLegSocket::Own(socket) => Some(socket),
            SipLegSocket::Shared(_) => None,
        }
    }

    /// True for the worker's shared socket.
    pub fn is_shared(&self) -> bool {
        matches!(self, SipLegSocket::Shared(_))
    }
}

impl SipSocket for SipLegSocket {
    fn send_to(&mut self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        match self {
            SipLegSocket::Own(socket) => socket.send_to(buf, target),
            SipLegSocket::Shared(socket) => socket.send_to(buf, target),
        }
    }
}

/// The forwarding plan and state of one call.
pub(super) struct Bridge<S = SipLegSocket> {
    pub key: BridgeKey,
    /// Bumped when the slot is reused, so stale timer entries are recognised.
    pub generation: u32,
    /// The browser leg's str0m instance: ICE, DTLS, and RTP until the direct path takes
    /// over. `None` once the worker keeps the leg itself ([`KeptLeg`]): a connected `Rtc`
    /// holds ~55 KiB per call that a relayed call no longer needs.
    pub rtc: Option<Box<Rtc>>,
    /// SRTCP packets str0m sent on this leg: where our own SRTCP indices continue.
    pub str0m_rtcp_sent: u32,
    /// Payload octets relayed to the browser (our sender reports' octet count).
    pub octets_to_browser: u64,
    pub mid: Mid,
    pub local_ufrag: String,
    pub codec_pt: u8,
    pub browser_telephone_event: Option<u8>,
    pub rtp: S,
    pub rtcp: S,
    /// The per-call port pair's place in the range (`None` on shared sockets).
    pub _lease: Option<PortLease>,
    /// With shared sockets, the PBX source address this bridge is routed by in its worker
    /// (`sip_remote` once the worker has caught up with a connect or a latch).
    pub sip_route: Option<SocketAddr>,
    /// With shared sockets, the SSRC of the PBX's stream as last routed here: tells this
    /// call apart from others the PBX sends from the same address.
    pub pbx_ssrc: Option<u32>,
    /// Browser addresses routed to this bridge (removed from the worker's map on teardown).
    pub browser_addrs: Vec<SocketAddr>,
    /// The PBX's RTP endpoint; `None` until its SDP arrives.
    pub sip_remote: Option<SocketAddr>,
    /// True once the first packet from the PBX fixed `sip_remote` (symmetric RTP).
    pub latched: bool,
    pub to_sip_map: PayloadMap,
    pub to_browser_map: PayloadMap,
    pub to_sip: StreamRewriter,
    pub to_browser: StreamRewriter,
    pub sip_ssrc: u32,
    pub created_at: Instant,
    pub last_webrtc_rx: Option<Instant>,
    pub last_sip_rx: Option<Instant>,
    pub sip_connected_at: Option<Instant>,
    /// Inactivity already reported; the control plane will remove the bridge.
    pub inactivity_reported: bool,
    pub connected_reported: bool,
    pub next_timeout: Option<Instant>,
    pub stats: BridgeStats,
    /// Browser audio goes to the PBX (false while held or muted).
    pub forward_to_sip: bool,
    /// The PBX's telephone-event payload type.
    pub sip_telephone_event: Option<u8>,
    /// Timestamp of the last PBX DTMF event reported (its end packets repeat).
    pub last_dtmf_timestamp: Option<u32>,
    /// RFC 4733 events being injected towards the PBX.
    pub dtmf: DtmfInjector,
    /// Loss and jitter of what the browser sends.
    pub webrtc_rx: super::quality::ReceiveStats,
    /// Loss and jitter of what the PBX sends.
    pub sip_rx: super::quality::ReceiveStats,
    /// Browser-leg round trip (str0m, from RTCP).
    pub webrtc_rtt_ms: Option<f64>,
    /// SIP-leg round trip from the PBX's receiver reports on our sender reports.
    pub sip_rtt_ms: Option<f64>,
    /// When the next RTCP sender report goes to the PBX.
    pub next_sender_report: Instant,
    /// When the next quality event goes to the session.
    pub next_quality: Instant,
    pub events: EventSink,
    /// Set when the event sink is gone or the Rtc failed: the worker removes the bridge.
    pub doomed: bool,
    /// The browser's WebSocket is gone and a new leg may come (resume): a failing or silent
    /// browser leg is not reported, and PBX audio is not written into it.
    pub browser_away: bool,
    /// A failed browser leg is reported and the bridge kept for a replacement.
    pub keep_on_browser_failure: bool,
    /// SDES keys of the SIP leg as last applied (`None`: plain RTP).
    pub sip_srtp: Option<crate::sdp::SrtpKeys>,
    /// Protects what goes to the PBX when SDES keyed the SIP leg.
    pub srtp_tx: Option<Box<SrtpSender>>,
    /// Checks and decrypts what the PBX sends when SDES keyed the SIP leg.
    pub srtp_rx: Option<Box<SrtpReceiver>>,
    /// Where the browser leg's DTLS handshake leaves its SRTP keys; `None` once they are
    /// taken, or when RTP always goes through str0m (`webrtc.direct_srtp` off).
    pub key_tap: Option<shared_dtls::KeyTap>,
    /// The browser's RTP relayed by callgate itself (see [`DirectRtp`]).
    pub direct: Option<Box<DirectRtp>>,
}

/// A browser leg whose RTP the worker protects and unprotects itself with the keys of the
/// leg's DTLS handshake, so that relayed audio skips str0m's RTP stack (its per-packet
/// bookkeeping, send queue and timer pass were most of the relay's CPU). str0m keeps ICE,
/// DTLS and RTCP. Until the browser's first RTP packet authenticates with these keys,
/// everything still goes through str0m: keys that do not match fall back to it.
pub(super) struct DirectRtp {
    rx: BrowserSrtp,
    tx: BrowserSrtp,
    /// Where the browser's authenticated RTP last came from: where ours goes.
    browser: Option<SocketAddr>,
    /// The SSRC of the browser's stream whose packet passed first: the one these contexts
    /// track (rollover counter, replay window). Another SSRC goes to str0m, which keeps a
    /// context per SSRC.
    browser_ssrc: Option<u32>,
    /// The SSRC str0m announced for our stream (its send stream's), so the browser's
    /// demultiplexing and str0m's RTCP reports describe the stream we send.
    ssrc: u32,
    /// The MID header extension str0m would write: its id and the MID.
    mid_extension: Option<(u8, Mid)>,
    /// Browser packets that failed these keys before one passed.
    failed_before_verified: u8,
    /// What the worker keeps once str0m is let go (`None` until then).
    kept: Option<KeptLeg>,
}

/// The browser leg after str0m is let go: once the handshake is done and the browser's RTP
/// passes the exported keys, what str0m still did for the leg is small — answer the
/// browser's ICE consent checks (RFC 7675) as an ICE-lite agent and exchange RTCP reports
/// — and the worker does it here, so a call no longer carries str0m's per-connection state
/// (its stream registers, RTCP queues, DTLS and ICE state: ~55 KiB per call measured).
pub(super) struct KeptLeg {
    /// Our ICE password: consent checks are verified and answered with it.
    ice_password: String,
    /// Our CNAME as str0m announced it, for the SDES of our reports.
    cname: String,
    /// When the browser's last authentic consent check came.
    last_consent: Instant,
    /// The browser's last sender report: the middle 32 bits of its NTP time, and when it
    /// came (our report block echoes both).
    browser_sr: Option<(u32, Instant)>,
    /// When our next RTCP report goes to the browser.
    next_report: Instant,
}

/// RFC 7675 §5.1: consent expires 30 s after the last authentic check was answered; a leg
/// whose browser stopped checking (closed, gone) is over.
pub(super) const CONSENT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the worker reports RTCP to the browser on a kept leg (RFC 3550's 5 s minimum,
/// the interval browsers use for audio).
pub(super) const BROWSER_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl DirectRtp {
    /// True once one of the browser's packets passed these keys.
    pub fn verified(&self) -> bool {
        self.browser.is_some()
    }

    /// Writes our RTP packet for the browser into `buf` (the header str0m would write: our
    /// SSRC, the MID extension) and seals it. Returns the SRTP length.
    fn seal(
        &mut self,
        buf: &mut [u8],
        payload_type: u8,
        rewritten: &rtp::Rewritten,
        payload: &[u8],
    ) -> Result<usize, SrtpError> {
        let mut header = [0u8; 12 + 4 + 20];
        header[0] = 0x80;
        header[1] = (u8::from(rewritten.marker) << 7) | (payload_type & 0x7f);
        header[2..4].copy_from_slice(&(rewritten.sequence as u16).to_be_bytes());
        header[4..8].copy_from_slice(&rewritten.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut header_len = 12;
        if let Some((id, mid)) = &self.mid_extension {
            let value = mid.as_bytes();
            // RFC 8285 one-byte form: ids 1-14, 1-16 bytes of value.
            if (1..=14).contains(id) && (1..=16).contains(&value.len()) {
                let words = (1 + value.len()).div_ceil(4);
                header[0] |= 0x10;
                header[12..14].copy_from_slice(&[0xbe, 0xde]);
                header[14..16].copy_from_slice(&(words as u16).to_be_bytes());
                header[16] = (id << 4) | (value.len() as u8 - 1);
                header[17..17 + value.len()].copy_from_slice(value);
                header_len = 16 + 4 * words;
            }
        }
        let len = header_len + payload.len();
        if buf.len() < len + browser_srtp::MAX_TRAILER {
            return Err(SrtpError::NoRoom);
        }
        buf[..header_len].copy_from_slice(&header[..header_len]);
        buf[header_len..len].copy_from_slice(payload);
        self.tx.protect_rtp(buf, len, rewritten.sequence)
    }
}

/// The fields of one browser RTP packet the relay to the PBX uses.
struct BrowserRtp {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker: bool,
}

/// How many of the browser's RTP packets may fail the exported keys before the first one
/// passes; then the keys are dropped and RTP stays with str0m.
const DIRECT_RTP_TRIES: u8 = 8;

/// What [`Bridge::relay_browser_rtp`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirectOutcome {
    /// Relayed to the PBX, or dropped and counted.
    Done,
    /// Not handled: give it to str0m.
    ToStr0m,
}

impl<S: SipSocket> Bridge<S> {
    /// A new bridge for a negotiated browser leg and its SIP-leg sockets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: BridgeKey,
        generation: u32,
        webrtc: Negotiated,
        rtp: S,
        rtcp: S,
        lease: Option<PortLease>,
        events: EventSink,
        now: Instant,
    ) -> Bridge<S> {
        Bridge {
            key,
            generation,
            codec_pt: webrtc.codec.payload_type(),
            rtc: Some(Box::new(webrtc.rtc)),
            str0m_rtcp_sent: 0,
            octets_to_browser: 0,
            mid: webrtc.mid,
            local_ufrag: webrtc.local_ufrag,
            browser_telephone_event: webrtc.browser_telephone_event,
            rtp,
            rtcp,
            _lease: lease,
            sip_route: None,
            pbx_ssrc: None,
            browser_addrs: Vec::new(),
            sip_remote: None,
            latched: false,
            to_sip_map: PayloadMap::new(&[]),
            to_browser_map: PayloadMap::new(&[]),
            to_sip: StreamRewriter::new(rand::random(), rand::random()),
            to_browser: StreamRewriter::new(rand::random(), rand::random()),
            sip_ssrc: rand::random(),
            created_at: now,
            last_webrtc_rx: None,
            last_sip_rx: None,
            sip_connected_at: None,
            inactivity_reported: false,
            connected_reported: false,
            next_timeout: None,
            stats: Default::default(),
            forward_to_sip: true,
            sip_telephone_event: None,
            last_dtmf_timestamp: None,
            dtmf: DtmfInjector::default(),
            webrtc_rx: Default::default(),
            sip_rx: Default::default(),
            webrtc_rtt_ms: None,
            sip_rtt_ms: None,
            next_sender_report: now + SENDER_REPORT_INTERVAL,
            next_quality: now + QUALITY_INTERVAL,
            events,
            doomed: false,
            browser_away: false,
            keep_on_browser_failure: false,
            sip_srtp: None,
            srtp_tx: None,
            srtp_rx: None,
            key_tap: Some(webrtc.srtp_keys),
            direct: None,
        }
    }

    /// Hands one datagram from the browser (STUN, DTLS, SRTP, SRTCP) to the `Rtc`; the
    /// caller then drains it with [`Bridge::poll_rtc`].
    pub fn receive_webrtc(
        &mut self,
        packet: &[u8],
        source: SocketAddr,
        destination: SocketAddr,
        now: Instant,
        counters: &mut Counters,
    ) {
        let Ok(contents) = packet.try_into() else {
            counters.error(MediaError::UnknownPacket);
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        self.last_webrtc_rx = Some(now);
        let Some(rtc) = self.rtc.as_mut() else {
            counters.error(MediaError::UnknownPacket);
            return;
        };
        if let Err(e) = rtc.handle_input(input) {
            debug!(key = self.key, error = %e, "str0m refused a datagram");
            counters.error(MediaError::Str0m);
        }
    }

    /// True while the worker keeps the leg itself (str0m let go, [`KeptLeg`]).
    pub fn is_kept(&self) -> bool {
        self.rtc.is_none()
    }

    /// True once ICE and DTLS are up with the browser (a kept leg always was).
    pub fn browser_connected(&self) -> bool {
        self.rtc.as_ref().is_none_or(|rtc| rtc.is_connected())
    }

    /// Handles one datagram from the browser on a kept leg (RTP goes to
    /// [`Bridge::relay_browser_rtp`] first): answers consent checks, reads the browser's
    /// SRTCP reports (round trip, its sender report for our next block), and takes a DTLS
    /// record as the browser closing the leg (after the handshake the only records a
    /// browser sends on an audio-only connection are alerts: close_notify). `since_unix` is
    /// the wall clock now, for the round trip. `out` is scratch for the answers.
    #[allow(clippy::too_many_arguments)]
    pub fn receive_kept(
        &mut self,
        packet: &mut [u8],
        source: SocketAddr,
        now: Instant,
        since_unix: std::time::Duration,
        out: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) {
        let Some(direct) = self.direct.as_mut() else {
            counters.error(MediaError::UnknownPacket);
            return;
        };
        let Some(kept) = direct.kept.as_mut() else {
            counters.error(MediaError::UnknownPacket);
            return;
        };
        match rtp::classify(packet) {
            PacketKind::Stun => {
                let answer = stun::answer_consent_check(
                    packet,
                    &self.local_ufrag,
                    &kept.ice_password,
                    source,
                    out,
                );
                let len = match answer {
                    ConsentCheck::Answered { len, nominated } => {
                        counters.kept_consent_answers += 1;
                        kept.last_consent = now;
                        self.last_webrtc_rx = Some(now);
                        if nominated {
                            direct.browser = Some(source);
                        }
                        len
                    }
                    ConsentCheck::Refused { len } => {
                        counters.error(MediaError::StunRefused);
                        len
                    }
                    ConsentCheck::Ignored => {
                        counters.error(MediaError::UnknownPacket);
                        return;
                    }
                };
                match egress.to_browser(&out[..len], source) {
                    Ok(()) => counters.webrtc_out += 1,
                    Err(_) => counters.error(MediaError::SendFailed),
                }
            }
            PacketKind::Rtcp => {
                let len = match direct.rx.unprotect_rtcp(packet) {
                    Ok(len) => len,
                    Err(e) => {
                        counters.error(srtp_error_kind(e));
                        return;
                    }
                };
                counters.kept_rtcp_in += 1;
                self.last_webrtc_rx = Some(now);
                let report = &packet[..len];
                if let Some(block) = quality::report_block_for(report, direct.ssrc)
                    && let Some(rtt) =
                        quality::rtt_from_report(&block, quality::ntp_middle32(since_unix))
                {
                    self.webrtc_rtt_ms = Some(rtt);
                }
                if let Some((ssrc, ntp)) = quality::sender_report_ntp(report)
                    && Some(ssrc) == direct.browser_ssrc
                {
                    kept.browser_sr = Some((ntp, now));
                }
            }
            PacketKind::Dtls => {
                debug!(
                    key = self.key,
                    "a DTLS record on a kept leg: the browser closed it"
                );
                self.browser_leg_ended("the WebRTC connection closed".into());
            }
            PacketKind::Rtp => {
                // Another SSRC than the stream the keys track, or one that failed them.
                counters.error(MediaError::UnknownSource);
                self.stats.dropped += 1;
            }
            PacketKind::Unknown => counters.error(MediaError::UnknownPacket),
        }
    }

    /// A kept leg's timed duties, run by the worker's housekeeping: ends the leg when the
    /// browser's consent expired, and sends our RTCP report (sender report with a block
    /// about the browser's stream, SDES CNAME) when due. With `bye` (the bridge is being
    /// removed) the report goes at once and ends with an RTCP BYE.
    pub fn kept_leg_duties(
        &mut self,
        now: Instant,
        since_unix: std::time::Duration,
        bye: bool,
        out: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) {
        if self.browser_away || self.doomed && !bye {
            return;
        }
        let Some(direct) = self.direct.as_mut() else {
            return;
        };
        let (Some(kept), Some(browser)) = (direct.kept.as_mut(), direct.browser) else {
            return;
        };
        if !bye && now.saturating_duration_since(kept.last_consent) > CONSENT_EXPIRY {
            info!(
                key = self.key,
                "ICE consent expired: no check from the browser for 30 s"
            );
            self.browser_leg_ended("ICE consent expired".into());
            return;
        }
        if !bye && now < kept.next_report {
            return;
        }
        kept.next_report = now + BROWSER_REPORT_INTERVAL;
        let sender = SenderInfo {
            ssrc: direct.ssrc,
            since_unix,
            rtp_timestamp: self.to_browser.current_timestamp(),
            packets: self.stats.to_browser as u32,
            octets: self.octets_to_browser as u32,
        };
        let block = direct.browser_ssrc.and_then(|ssrc| {
            let figures = self.webrtc_rx.next_report()?;
            let (last_sr, delay_since_last_sr) = kept.browser_sr.map_or((0, 0), |(ntp, at)| {
                (ntp, quality::delay_units(now.saturating_duration_since(at)))
            });
            Some(OutgoingBlock {
                ssrc,
                figures,
                last_sr,
                delay_since_last_sr,
            })
        });
        let Some(len) = out
            .len()
            .checked_sub(browser_srtp::MAX_RTCP_TRAILER)
            .and_then(|room| {
                quality::write_compound_report(
                    &mut out[..room],
                    &sender,
                    block.as_ref(),
                    kept.cname.as_bytes(),
                    bye,
                )
            })
        else {
            counters.error(MediaError::SrtpFailed);
            return;
        };
        match direct.tx.protect_rtcp(out, len) {
            Ok(len) => match egress.to_browser(&out[..len], browser) {
                Ok(()) => {
                    counters.webrtc_out += 1;
                    counters.kept_rtcp_out += 1;
                }
                Err(_) => counters.error(MediaError::SendFailed),
            },
            Err(e) => counters.error(srtp_error_kind(e)),
        }
    }

    /// The browser's side of the leg is over (closed, failed, consent expired): reported
    /// once; the bridge is torn down, or kept for a replacement leg when a resume may come.
    fn browser_leg_ended(&mut self, reason: String) {
        if self.doomed || self.browser_away {
            return;
        }
        self.emit(MediaEventKind::Failed { reason });
        if self.keep_on_browser_failure {
            // A reloading page closes its peer connection before its WebSocket: keep
            // the SIP leg; the session decides whether a resume follows.
            self.browser_away = true;
        } else {
            self.doomed = true;
        }
    }

    /// Relays one datagram of the PBX's RTP (not RTCP) towards the browser: source check
    /// and latching, payload-type map, sequence/timestamp rewrite, DTMF detection, then
    /// either sealed here with the browser leg's keys and queued on `egress` (once the
    /// browser's own packets passed them, [`DirectRtp`]) or written into str0m's stream.
    /// True when the `Rtc` took it (the caller then drains it with [`Bridge::poll_rtc`],
    /// which encrypts and sends); `scratch` holds the sealed packet otherwise.
    ///
    /// With SDES the packet is authenticated and decrypted in place first, before it may
    /// latch the source: a forged or replayed packet is dropped and counted.
    #[allow(clippy::too_many_arguments)]
    pub fn receive_sip_rtp(
        &mut self,
        packet: &mut [u8],
        kind: PacketKind,
        source: SocketAddr,
        now: Instant,
        scratch: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) -> bool {
        if kind != PacketKind::Rtp {
            counters.error(MediaError::UnknownPacket);
            return false;
        }
        let Some(remote) = self.sip_remote else {
            counters.error(MediaError::NoTarget);
            self.stats.dropped += 1;
            return false;
        };
        let packet: &[u8] = match self.srtp_rx.as_mut() {
            None => packet,
            Some(rx) => match rx.unprotect_rtp(packet) {
                Ok(len) => &packet[..len],
                Err(e) => {
                    counters.error(srtp_error_kind(e));
                    self.stats.dropped += 1;
                    return false;
                }
            },
        };
        if source != remote {
            if self.latched {
                counters.error(MediaError::UnknownSource);
                self.stats.dropped += 1;
                return false;
            }
            debug!(key = self.key, %source, advertised = %remote, "symmetric RTP: latched to source");
            self.sip_remote = Some(source);
        }
        self.latched = true;
        self.last_sip_rx = Some(now);
        let Some(header) = rtp::parse_rtp(packet) else {
            counters.error(MediaError::MalformedRtp);
            return false;
        };
        self.sip_rx
            .on_packet16(header.sequence, header.timestamp, now);
        let Some(pt) = self.to_browser_map.map(header.payload_type) else {
            counters.error(MediaError::PayloadType);
            self.stats.dropped += 1;
            return false;
        };
        if Some(header.payload_type) == self.sip_telephone_event {
            let payload =
                &packet[header.payload_offset..header.payload_offset + header.payload_len];
            if let Some(event) = rtp::TelephoneEvent::parse(payload)
                && event.end
                && self.last_dtmf_timestamp != Some(header.timestamp)
            {
                self.last_dtmf_timestamp = Some(header.timestamp);
                if let Some(digit) = rtp::dtmf_char(event.event) {
                    self.emit(MediaEventKind::Dtmf { digit });
                }
            }
        }
        if self.browser_away || !self.browser_connected() {
            counters.error(MediaError::NoTarget);
            self.stats.dropped += 1;
            return false;
        }
        let Some(out) = self.to_browser.rewrite(
            header.ssrc,
            header.sequence,
            header.timestamp,
            header.marker,
        ) else {
            self.stats.dropped += 1;
            return false;
        };
        let payload = &packet[header.payload_offset..header.payload_offset + header.payload_len];
        if let Some(direct) = self.direct.as_mut()
            && let Some(browser) = direct.browser
        {
            // The browser's keys passed its own packets: ours go out sealed with them,
            // without str0m's send queue and pacing pass.
            match direct.seal(scratch, pt, &out, payload) {
                Ok(len) => match egress.to_browser(&scratch[..len], browser) {
                    Ok(()) => {
                        counters.webrtc_out += 1;
                        counters.direct_out += 1;
                        self.stats.to_browser += 1;
                        self.octets_to_browser += payload.len() as u64;
                    }
                    Err(_) => counters.error(MediaError::SendFailed),
                },
                Err(e) => counters.error(srtp_error_kind(e)),
            }
            return false;
        }
        let mid = self.mid;
        let Some(rtc) = self.rtc.as_mut() else {
            counters.error(MediaError::NoTarget);
            return false;
        };
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            counters.error(MediaError::NoTarget);
            return false;
        };
        // str0m takes the payload as Arc<[u8]>: its one allocation per packet.
        let write = RtpWrite::new(pt.into(), out.sequence.into(), out.timestamp, now, payload)
            .marker(out.marker);
        stream.write_rtp(write);
        self.stats.to_browser += 1;
        self.octets_to_browser += payload.len() as u64;
        true
    }

    /// Polls the `Rtc` until it asks to be woken later (str0m's drain rule): datagrams for
    /// the browser go to `egress`, the browser's RTP is rewritten into `out` and goes to the
    /// PBX through `egress` too. Returns the `Rtc`'s next deadline when it changed (the caller
    /// schedules it). A failed leg sets `doomed`.
    pub fn poll_rtc(
        &mut self,
        now: Instant,
        out: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) -> Option<Instant> {
        let mut schedule = None;
        let mut inline_timeouts = 0;
        loop {
            let rtc = self.rtc.as_mut()?;
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) if at <= now && inline_timeouts < INLINE_TIMEOUTS => {
                    // Already due: str0m releases a packet written towards the browser only
                    // after a timeout pass. Run it now, so the packet leaves with the batch
                    // that brought it rather than after every other ready socket's batch
                    // (the worker's timer heap runs at the end of a pass).
                    inline_timeouts += 1;
                    if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                        debug!(key = self.key, error = %e, "str0m timeout handling failed");
                        counters.error(MediaError::Str0m);
                    }
                }
                Ok(Output::Timeout(at)) => {
                    if self.next_timeout != Some(at) {
                        self.next_timeout = Some(at);
                        schedule = Some(at);
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if rtp::classify(&t.contents) == PacketKind::Rtcp {
                        // Each one used an SRTCP index of the leg's keys.
                        self.str0m_rtcp_sent = self.str0m_rtcp_sent.saturating_add(1);
                    }
                    match egress.to_browser(&t.contents, t.destination) {
                        Ok(()) => counters.webrtc_out += 1,
                        Err(_) => counters.error(MediaError::SendFailed),
                    }
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    self.webrtc_rx
                        .on_packet(*packet.seq_no, packet.header.timestamp, now);
                    let header = &packet.header;
                    self.forward_browser_rtp(
                        BrowserRtp {
                            payload_type: *header.payload_type,
                            ssrc: *header.ssrc,
                            sequence: header.sequence_number,
                            timestamp: header.timestamp,
                            marker: header.marker,
                        },
                        &packet.payload,
                        out,
                        counters,
                        egress,
                    );
                }
                Ok(Output::Event(Event::Connected)) => {
                    if !self.connected_reported {
                        self.connected_reported = true;
                        self.emit(MediaEventKind::Connected);
                    }
                }
                Ok(Output::Event(Event::MediaEgressStats(stats))) => {
                    // From the browser's RTCP receiver reports about our stream.
                    if let Some(rtt) = stats.rtt {
                        self.webrtc_rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
                Ok(Output::Event(Event::IceConnectionStateChange(state))) => {
                    debug!(key = self.key, ?state, "ICE state");
                }
                Ok(Output::Event(_)) => {}
                Err(e) if self.browser_away => {
                    debug!(key = self.key, error = %e, "the away browser's leg failed; waiting for its replacement");
                    break;
                }
                Err(e) if self.keep_on_browser_failure => {
                    info!(key = self.key, error = %e, "browser leg failed; SIP leg kept for a resume");
                    self.browser_away = true;
                    self.emit(MediaEventKind::Failed {
                        reason: e.to_string(),
                    });
                    break;
                }
                Err(e) => {
                    warn!(key = self.key, error = %e, "browser leg failed");
                    self.emit(MediaEventKind::Failed {
                        reason: e.to_string(),
                    });
                    self.doomed = true;
                    break;
                }
            }
        }
        if self.rtc.as_ref().is_some_and(|rtc| !rtc.is_alive()) {
            self.browser_leg_ended("the WebRTC connection closed".into());
        }
        if self.key_tap.is_some() {
            self.adopt_direct_keys();
        }
        self.keep_leg_if_ready(now);
        schedule
    }

    /// Lets str0m go once the worker can keep the leg itself: ICE and DTLS are up, the
    /// connection was reported, and the browser's RTP passed the exported keys (so the
    /// browser has our last handshake flight and will send no more of it). The browser's
    /// consent checks and our RTCP continue here ([`KeptLeg`]); SRTCP indices continue
    /// after str0m's.
    fn keep_leg_if_ready(&mut self, now: Instant) {
        let Some(direct) = self.direct.as_mut() else {
            return;
        };
        if !direct.verified() || !self.connected_reported || self.browser_away {
            return;
        }
        let Some(rtc) = self.rtc.as_mut() else {
            return;
        };
        if !rtc.is_connected() {
            return;
        }
        let ice_password = rtc.direct_api().local_ice_credentials().pass;
        let cname = rtc
            .media(self.mid)
            .map(|media| media.cname().to_string())
            .unwrap_or_default();
        direct.tx.continue_rtcp_after(self.str0m_rtcp_sent);
        direct.kept = Some(KeptLeg {
            ice_password,
            cname,
            // The browser's checks so far went to str0m, which answered them.
            last_consent: now,
            browser_sr: None,
            next_report: now,
        });
        self.rtc = None;
        self.next_timeout = None;
        debug!(
            key = self.key,
            "browser leg kept by the worker; str0m let go"
        );
    }

    /// Takes the SRTP keys the browser leg's handshake exported, once there are some and
    /// str0m has set up the stream we send (whose SSRC and MID extension we write).
    fn adopt_direct_keys(&mut self) {
        let Some(keys) = self.key_tap.as_ref().and_then(|tap| tap.get()) else {
            return;
        };
        let Some(rtc) = self.rtc.as_mut() else {
            return;
        };
        // No stream of ours to write into (a leg that only receives): nothing to adopt yet.
        let Some(ssrc) = rtc
            .direct_api()
            .stream_tx_by_mid(self.mid, None)
            .map(|stream| *stream.ssrc())
        else {
            return;
        };
        let built = BrowserSrtp::new(keys, browser_srtp::Direction::Receive)
            .zip(BrowserSrtp::new(keys, browser_srtp::Direction::Send));
        let profile = keys.profile;
        self.key_tap = None;
        let Some((rx, tx)) = built else {
            warn!(
                key = self.key,
                ?profile,
                "unusable DTLS-SRTP keys; the browser's RTP stays with str0m"
            );
            return;
        };
        let mid_extension = rtc
            .media(self.mid)
            .and_then(|media| media.remote_extmap().id_of(Extension::RtpMid))
            .map(|id| (id, self.mid));
        debug!(key = self.key, ?profile, "browser RTP keys adopted");
        self.direct = Some(Box::new(DirectRtp {
            rx,
            tx,
            browser: None,
            browser_ssrc: None,
            ssrc,
            mid_extension,
            failed_before_verified: 0,
            kept: None,
        }));
    }

    /// Relays one of the browser's RTP datagrams to the PBX without str0m, when the leg's
    /// keys are adopted: unprotects it in place, then forwards it as str0m's path would.
    /// Until one packet passed, a packet that fails is handed to str0m instead (with its
    /// bytes untouched: the first tries decrypt a copy in `out`).
    pub fn relay_browser_rtp(
        &mut self,
        packet: &mut [u8],
        source: SocketAddr,
        now: Instant,
        out: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) -> DirectOutcome {
        let Some(direct) = self.direct.as_mut() else {
            return DirectOutcome::ToStr0m;
        };
        let ssrc = packet
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if direct.browser_ssrc.is_some() && direct.browser_ssrc != ssrc {
            return DirectOutcome::ToStr0m;
        }
        let first = direct.browser.is_none();
        let plain = if !first {
            match direct.rx.unprotect_rtp(packet) {
                Ok(len) => &packet[..len],
                Err(e) => {
                    counters.error(srtp_error_kind(e));
                    self.stats.dropped += 1;
                    return DirectOutcome::Done;
                }
            }
        } else {
            let Some(copy) = out.get_mut(..packet.len()) else {
                return DirectOutcome::ToStr0m;
            };
            copy.copy_from_slice(packet);
            match direct.rx.unprotect_rtp(copy) {
                Ok(len) => {
                    debug!(key = self.key, "the browser's RTP passed the adopted keys");
                    packet[..len].copy_from_slice(&copy[..len]);
                    &packet[..len]
                }
                Err(e) => {
                    direct.failed_before_verified += 1;
                    if direct.failed_before_verified >= DIRECT_RTP_TRIES {
                        warn!(key = self.key, error = %e, "the browser's RTP does not match the exported keys; it stays with str0m");
                        self.direct = None;
                    }
                    return DirectOutcome::ToStr0m;
                }
            }
        };
        direct.browser = Some(source);
        direct.browser_ssrc = ssrc;
        counters.direct_in += 1;
        self.last_webrtc_rx = Some(now);
        let Some(header) = rtp::parse_rtp(plain) else {
            counters.error(MediaError::MalformedRtp);
            return DirectOutcome::Done;
        };
        self.webrtc_rx
            .on_packet16(header.sequence, header.timestamp, now);
        let payload = &plain[header.payload_offset..header.payload_offset + header.payload_len];
        self.forward_browser_rtp(
            BrowserRtp {
                payload_type: header.payload_type,
                ssrc: header.ssrc,
                sequence: header.sequence,
                timestamp: header.timestamp,
                marker: header.marker,
            },
            payload,
            out,
            counters,
            egress,
        );
        if first {
            self.keep_leg_if_ready(now);
        }
        DirectOutcome::Done
    }

    /// Forwards one of the browser's RTP packets to the PBX: hold and DTMF checks, payload
    /// type map, sequence/timestamp rewrite, our SSRC; `out` is the scratch for the packet.
    fn forward_browser_rtp(
        &mut self,
        rtp: BrowserRtp,
        payload: &[u8],
        out: &mut [u8],
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) {
        if !self.forward_to_sip || self.dtmf.active.is_some() {
            self.stats.dropped += 1;
            return;
        }
        let Some(remote) = self.sip_remote else {
            counters.error(MediaError::NoTarget);
            self.stats.dropped += 1;
            return;
        };
        let Some(pt) = self.to_sip_map.map(rtp.payload_type) else {
            counters.error(MediaError::PayloadType);
            self.stats.dropped += 1;
            return;
        };
        let Some(rewritten) =
            self.to_sip
                .rewrite(rtp.ssrc, rtp.sequence, rtp.timestamp, rtp.marker)
        else {
            self.stats.dropped += 1;
            return;
        };
        let Some(len) = rtp::write_rtp(
            out,
            rewritten.marker,
            pt,
            rewritten.sequence as u16,
            rewritten.timestamp,
            self.sip_ssrc,
            payload,
        ) else {
            counters.error(MediaError::MalformedRtp);
            return;
        };
        if self.send_sip_rtp(out, len, remote, counters, egress) {
            self.stats.to_sip += 1;
        }
    }

    /// Sends the RTP packet in `out[..len]` to the PBX through `egress`, protected in place
    /// first when SDES keyed the leg (`out` must have room for the tag). True when it left
    /// (or was queued to).
    pub fn send_sip_rtp(
        &mut self,
        out: &mut [u8],
        len: usize,
        remote: SocketAddr,
        counters: &mut Counters,
        egress: &mut impl Egress<S>,
    ) -> bool {
        let len = match self.srtp_tx.as_mut() {
            None => len,
            Some(tx) => match tx.protect_rtp(out, len) {
                Ok(len) => len,
                Err(e) => {
                    counters.error(srtp_error_kind(e));
                    return false;
                }
            },
        };
        match egress.to_pbx(&mut self.rtp, &out[..len], remote) {
            Ok(()) => {
                counters.sip_out += 1;
                true
            }
            Err(_) => {
                counters.error(MediaError::SendFailed);
                false
            }
        }
    }

    /// Sends the RTCP packet in `out[..len]` to the PBX's RTCP port, as SRTCP when SDES keyed
    /// the leg. Best effort (sender reports).
    pub fn send_sip_rtcp(
        &mut self,
        out: &mut [u8],
        len: usize,
        to: SocketAddr,
        counters: &mut Counters,
    ) {
        let len = match self.srtp_tx.as_mut() {
            None => len,
            Some(tx) => match tx.protect_rtcp(out, len) {
                Ok(len) => len,
                Err(e) => {
                    counters.error(srtp_error_kind(e));
                    return;
                }
            },
        };
        let _ = self.rtcp.send_to(&out[..len], to);
    }

    /// Opens an RTCP packet from the PBX in place: checks and decrypts SRTCP when SDES keyed
    /// the leg. Returns the plain length, `None` (counted) for a forged or replayed packet.
    pub fn open_sip_rtcp(&mut self, packet: &mut [u8], counters: &mut Counters) -> Option<usize> {
        match self.srtp_rx.as_mut() {
            None => Some(packet.len()),
            Some(rx) => match rx.unprotect_rtcp(packet) {
                Ok(len) => Some(len),
                Err(e) => {
                    counters.error(srtp_error_kind(e));
                    None
                }
            },
        }
    }

    /// Applies the PBX's endpoint; decided once per SDP, used for every packet after.
    /// SRTP contexts are rebuilt only when a key changed, so a re-INVITE that restates the
    /// keys keeps the rollover counters and replay windows.
    pub fn connect(&mut self, target: SipTarget, now: Instant) {
        self.apply_srtp(target.srtp);
        if self.sip_remote != Some(target.remote) {
            self.latched = false;
        }
        self.sip_remote = Some(target.remote);
        let mut to_sip = vec![(self.codec_pt, self.codec_pt)];
        let mut to_browser = vec![(self.codec_pt, self.codec_pt)];
        if let (Some(browser), Some(sip)) = (self.browser_telephone_event, target.telephone_event) {
            to_sip.push((browser, sip));
            to_browser.push((sip, browser));
        }
        self.sip_telephone_event = target.telephone_event;
        self.to_sip_map = PayloadMap::new(&to_sip);
        self.to_browser_map = PayloadMap::new(&to_browser);
        if self.sip_connected_at.is_none() {
            self.sip_connected_at = Some(now);
        }
    }

    /// Rebuilds the payload-type maps after the browser leg changed (its telephone-event
    /// number may differ), keeping the PBX endpoint and its latch.
    pub fn remap(&mut self, now: Instant) {
        if let Some(remote) = self.sip_remote {
            let latched = self.latched;
            self.connect(
                SipTarget {
                    remote,
                    telephone_event: self.sip_telephone_event,
                    srtp: self.sip_srtp,
                },
                now,
            );
            self.latched = latched;
        }
    }

    fn apply_srtp(&mut self, keys: Option<crate::sdp::SrtpKeys>) {
        self.sip_srtp = keys;
        let Some(keys) = keys else {
            self.srtp_tx = None;
            self.srtp_rx = None;
            return;
        };
        let built = (|| -> Result<(), SrtpError> {
            if !self
                .srtp_tx
                .as_ref()
                .is_some_and(|tx| tx.uses(keys.suite, &keys.local))
            {
                self.srtp_tx = Some(Box::new(SrtpSender::new(keys.suite, &keys.local)?));
            }
            if !self
                .srtp_rx
                .as_ref()
                .is_some_and(|rx| rx.uses(keys.suite, &keys.remote))
            {
                self.srtp_rx = Some(Box::new(SrtpReceiver::new(keys.suite, &keys.remote)?));
            }
            Ok(())
        })();
        if let Err(e) = built {
            // Never plain RTP when SRTP was negotiated: the call cannot go on.
            warn!(key = self.key, error = %e, "cannot key the SIP leg's SRTP");
            self.emit(MediaEventKind::Failed {
                reason: format!("SRTP keying failed: {e}"),
            });
            self.doomed = true;
        }
    }

    /// Both legs' loss, jitter and round trip so far: (browser leg, SIP leg). Sent every
    /// few seconds and once more when the bridge is removed.
    pub fn quality(&self) -> (super::quality::LegQuality, super::quality::LegQuality) {
        let mut webrtc = self.webrtc_rx.snapshot();
        webrtc.rtt_ms = self.webrtc_rtt_ms;
        let mut sip = self.sip_rx.snapshot();
        sip.rtt_ms = self.sip_rtt_ms;
        (webrtc, sip)
    }

    /// Sends an event; a closed sink dooms the bridge.
    pub fn emit(&mut self, kind: MediaEventKind) {
        if !(self.events)(MediaEvent {
            key: self.key,
            kind,
        }) {
            self.doomed = true;
        }
    }
}

/// The counter kind of an SRTP failure.
fn srtp_error_kind(e: SrtpError) -> MediaError {
    match e {
        SrtpError::AuthFailed => MediaError::SrtpAuth,
        SrtpError::Replayed => MediaError::SrtpReplay,
        SrtpError::Malformed => MediaError::MalformedRtp,
        SrtpError::NoRoom | SrtpError::Crypto | SrtpError::Exhausted => MediaError::SrtpFailed,
    }
}

/// RFC 4733 event generation for the agent's `dtmf` requests: one event every tick of
/// 20 ms, three end packets, 50 ms between digits (RFC 4733 §2.5).
#[derive(Debug, Default)]
pub(super) struct DtmfInjector {
    pub queue: std::collections::VecDeque<u8>,
    pub duration_samples: u32,
    pub active: Option<ActiveTone>,
    /// When the next packet (or the next digit) is due.
    pub next_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ActiveTone {
    pub event: u8,
    pub timestamp: u32,
    pub elapsed: u32,
    pub ends_sent: u8,
}

/// Samples per 20 ms packet at 8 kHz.
pub(super) const TONE_STEP: u32 = 160;
/// Gap between digits.
pub(super) const TONE_GAP: std::time::Duration = std::time::Duration::from_millis(50);
/// Packet interval.
pub(super) const TONE_TICK: std::time::Duration = std::time::Duration::from_millis(20);
