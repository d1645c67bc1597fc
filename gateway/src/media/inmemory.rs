//! One bridge without sockets: the same per-packet code as a media worker's (str0m SRTP,
//! payload-type map, sequence/timestamp rewrite, RTP write), fed and drained in memory. It
//! exists for the relay benchmark (`cargo bench -p gateway --bench relay`), so a regression
//! in the per-packet path shows without the kernel's UDP cost drowning it, and for tests that
//! drive a bridge packet by packet.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use super::bridge::{Bridge, DirectOutcome, Egress, SipSocket};
use super::engine::Counters;
use super::rtp;
use super::webrtc::Negotiated;
use super::{BridgeStats, MediaEvent, SipTarget};

/// Datagrams captured in one reusable arena (no allocation once it has grown).
#[derive(Debug, Default)]
pub struct Captured {
    bytes: Vec<u8>,
    packets: Vec<(SocketAddr, Range<usize>)>,
}

impl Captured {
    fn push(&mut self, contents: &[u8], to: SocketAddr) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(contents);
        self.packets.push((to, start..self.bytes.len()));
    }

    /// The datagrams in the order they were sent, with their destinations.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.packets
            .iter()
            .map(|(to, range)| (*to, &self.bytes[range.clone()]))
    }

    /// How many datagrams are held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when nothing was sent since the last [`Captured::clear`].
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Forgets the datagrams, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.packets.clear();
    }
}

impl SipSocket for Captured {
    fn send_to(&mut self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.push(buf, target);
        Ok(buf.len())
    }
}

/// The in-memory bridge's egress: what goes to the browser is captured here, what goes to
/// the PBX in the bridge's own [`Captured`] socket.
struct MemoryEgress<'a> {
    to_browser: &'a mut Captured,
}

impl Egress<Captured> for MemoryEgress<'_> {
    fn to_browser(&mut self, contents: &[u8], to: SocketAddr) -> io::Result<()> {
        self.to_browser.push(contents, to);
        Ok(())
    }

    fn to_pbx(&mut self, socket: &mut Captured, contents: &[u8], to: SocketAddr) -> io::Result<()> {
        socket.push(contents, to);
        Ok(())
    }
}

/// A bridge between a negotiated browser leg and a PBX endpoint, driven by the caller with
/// datagrams and a clock of its own; what it sends is captured in [`Captured`] buffers.
pub struct InMemoryBridge {
    bridge: Bridge<Captured>,
    candidate: SocketAddr,
    counters: Counters,
    out: Box<[u8; 2048]>,
    rx: Box<[u8; 2048]>,
    to_browser: Captured,
    events: std::sync::Arc<std::sync::Mutex<Vec<MediaEvent>>>,
    /// The caller's clock at creation, and the wall clock then (RTCP's NTP times).
    clock_base: Instant,
    unix_base: std::time::Duration,
}

impl InMemoryBridge {
    /// A bridge for `webrtc` (accepted with `candidate` as our ICE candidate), already
    /// pointed at the PBX endpoint `target` as a 2xx SDP would.
    pub fn new(
        webrtc: Negotiated,
        candidate: SocketAddr,
        target: SipTarget,
        now: Instant,
    ) -> InMemoryBridge {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut bridge = Bridge::new(
            1,
            1,
            webrtc,
            Captured::default(),
            Captured::default(),
            None,
            Box::new(move |event| {
                if let Ok(mut events) = sink.lock() {
                    events.push(event);
                }
                true
            }),
            now,
        );
        bridge.connect(target, now);
        let mut relay = InMemoryBridge {
            bridge,
            candidate,
            counters: Counters::default(),
            out: Box::new([0; 2048]),
            rx: Box::new([0; 2048]),
            to_browser: Captured::default(),
            events,
            clock_base: now,
            unix_base: crate::clock::since_unix_epoch(),
        };
        relay.drain(now);
        relay
    }

    /// A datagram from the browser at `source` (STUN, DTLS, SRTP): what results is in
    /// [`InMemoryBridge::to_browser`] and [`InMemoryBridge::to_sip`].
    pub fn browser_datagram(&mut self, packet: &[u8], source: SocketAddr, now: Instant) {
        if rtp::classify(packet) == rtp::PacketKind::Rtp
            && self.bridge.direct.is_some()
            && let Some(buf) = self.rx.get_mut(..packet.len())
        {
            buf.copy_from_slice(packet);
            let mut egress = MemoryEgress {
                to_browser: &mut self.to_browser,
            };
            if self.bridge.relay_browser_rtp(
                buf,
                source,
                now,
                &mut self.out[..],
                &mut self.counters,
                &mut egress,
            ) == DirectOutcome::Done
            {
                return;
            }
        }
        if self.bridge.is_kept() {
            let Some(buf) = self.rx.get_mut(..packet.len()) else {
                return;
            };
            buf.copy_from_slice(packet);
            let mut egress = MemoryEgress {
                to_browser: &mut self.to_browser,
            };
            let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
            self.bridge.receive_kept(
                buf,
                source,
                now,
                since_unix,
                &mut self.out[..],
                &mut self.counters,
                &mut egress,
            );
            return;
        }
        self.bridge
            .receive_webrtc(packet, source, self.candidate, now, &mut self.counters);
        self.drain(now);
        self.run_due_timers(now);
    }

    /// A datagram from the PBX at `source` on the RTP port. It is copied into the bridge's
    /// receive buffer first, as the worker's `recv_from` does (SRTP is opened in place there).
    pub fn sip_datagram(&mut self, packet: &[u8], source: SocketAddr, now: Instant) {
        let Some(buf) = self.rx.get_mut(..packet.len()) else {
            return;
        };
        buf.copy_from_slice(packet);
        let kind = rtp::classify(buf);
        let mut egress = MemoryEgress {
            to_browser: &mut self.to_browser,
        };
        if self.bridge.receive_sip_rtp(
            buf,
            kind,
            source,
            now,
            &mut self.out[..],
            &mut self.counters,
            &mut egress,
        ) {
            self.drain(now);
            self.run_due_timers(now);
        }
    }

    /// What the worker does at the end of the same wake-up: str0m often asks for a timeout
    /// at `now` (a written packet leaves on it), which the worker's timer heap runs at once.
    fn run_due_timers(&mut self, now: Instant) {
        for _ in 0..4 {
            if self.bridge.next_timeout.is_none_or(|at| at > now) {
                return;
            }
            self.bridge.next_timeout = None;
            let Some(rtc) = self.bridge.rtc.as_mut() else {
                return;
            };
            if rtc.handle_input(str0m::Input::Timeout(now)).is_err() {
                return;
            }
            self.drain(now);
        }
    }

    /// Lets the browser leg's timers run (retransmissions, RTCP, consent): str0m's, or once
    /// the leg is kept, the worker's housekeeping duties (consent expiry, our reports).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.bridge.next_timeout = None;
        if self.bridge.is_kept() {
            let mut egress = MemoryEgress {
                to_browser: &mut self.to_browser,
            };
            let since_unix = self.unix_base + now.saturating_duration_since(self.clock_base);
            self.bridge.kept_leg_duties(
                now,
                since_unix,
                false,
                &mut self.out[..],
                &mut self.counters,
                &mut egress,
            );
            return;
        }
        let Some(rtc) = self.bridge.rtc.as_mut() else {
            return;
        };
        if rtc.handle_input(str0m::Input::Timeout(now)).is_ok() {
            self.drain(now);
        }
    }

    /// When [`InMemoryBridge::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bridge.next_timeout
    }

    fn drain(&mut self, now: Instant) {
        let mut egress = MemoryEgress {
            to_browser: &mut self.to_browser,
        };
        self.bridge
            .poll_rtc(now, &mut self.out[..], &mut self.counters, &mut egress);
    }

    /// Whether RTP goes around str0m (`webrtc.direct_srtp`, on by default): off drops the
    /// leg's keys so that every packet goes through str0m, as before that setting.
    pub fn set_direct_srtp(&mut self, on: bool) {
        if !on {
            self.bridge.key_tap = None;
            self.bridge.direct = None;
        }
    }

    /// True once the bridge relays the browser's RTP itself (its keys passed a packet).
    pub fn relays_rtp_directly(&self) -> bool {
        self.bridge.direct.as_ref().is_some_and(|d| d.verified())
    }

    /// Installs SRTP keys of the caller's choosing for the bridge's own RTP path (the
    /// benchmark's re-keying, next to str0m's `_set_srtp_keys`); adopted on the next drain.
    pub fn rekey_direct(&mut self, keys: shared_dtls::ExportedSrtpKeys, now: Instant) {
        self.bridge.direct = None;
        self.bridge.key_tap = Some(shared_dtls::KeyTap::filled(keys));
        self.drain(now);
    }

    /// Datagrams sent to the browser since the last clear.
    pub fn to_browser(&mut self) -> &mut Captured {
        &mut self.to_browser
    }

    /// RTP sent to the PBX since the last clear.
    pub fn to_sip(&mut self) -> &mut Captured {
        &mut self.bridge.rtp
    }

    /// The browser leg's `Rtc`, for tests and the benchmark that look inside it; `None`
    /// once the bridge keeps the leg itself.
    pub fn rtc_mut(&mut self) -> Option<&mut str0m::Rtc> {
        self.bridge.rtc.as_deref_mut()
    }

    /// True once ICE and DTLS are up with the browser.
    pub fn is_connected(&self) -> bool {
        self.bridge.browser_connected()
    }

    /// True once the bridge keeps the browser leg without str0m (consent checks and RTCP
    /// its own).
    pub fn keeps_the_leg(&self) -> bool {
        self.bridge.is_kept()
    }

    /// On a kept leg: the browser's RTCP reports opened, ours sent, its consent checks
    /// answered (the worker's `callgate_browser_*` counters).
    pub fn kept_leg_counts(&self) -> (u64, u64, u64) {
        (
            self.counters.kept_rtcp_in,
            self.counters.kept_rtcp_out,
            self.counters.kept_consent_answers,
        )
    }

    /// Both legs' quality so far (browser leg, SIP leg), as the quality events report it.
    pub fn quality(&self) -> (super::quality::LegQuality, super::quality::LegQuality) {
        self.bridge.quality()
    }

    /// The packets relayed and dropped so far.
    pub fn stats(&self) -> BridgeStats {
        self.bridge.stats
    }

    /// Packets the bridge dropped or refused, by the worker's metric kind (`no_target`, …),
    /// zero kinds left out.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        super::engine::error_counts(&self.counters)
    }

    /// The events the bridge reported (connected, failed, DTMF, …), taken.
    pub fn take_events(&mut self) -> Vec<MediaEvent> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}
