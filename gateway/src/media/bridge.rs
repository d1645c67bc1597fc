//! One call's relay state inside a worker: the browser's `Rtc`, the SIP-leg sockets and the
//! forwarding plan. Owned by exactly one worker; never shared.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::UdpSocket;
use str0m::Rtc;
use str0m::media::Mid;

use super::ports::PortLease;
use super::rtp::{PayloadMap, StreamRewriter};
use super::{BridgeKey, BridgeStats, EventSink, MediaEvent, MediaEventKind, SipTarget};

/// The forwarding plan and state of one call.
pub(super) struct Bridge {
    pub key: BridgeKey,
    /// Bumped when the slot is reused, so stale timer entries are recognised.
    pub generation: u32,
    pub rtc: Rtc,
    pub mid: Mid,
    pub local_ufrag: String,
    pub codec_pt: u8,
    pub browser_telephone_event: Option<u8>,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub _lease: PortLease,
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
}

impl Bridge {
    /// Applies the PBX's endpoint; decided once per SDP, used for every packet after.
    pub fn connect(&mut self, target: SipTarget, now: Instant) {
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
                },
                now,
            );
            self.latched = latched;
        }
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
