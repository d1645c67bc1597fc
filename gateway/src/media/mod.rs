//! The media core: worker threads that own the media sockets and the bridges between a
//! browser's SRTP leg and the PBX's plain RTP leg (design.md §3).
//!
//! The control plane decides everything at signalling time (which worker, which ports, which
//! payload-type map) and sends [`MediaCommand`]s; a worker executes the plan per packet with
//! no allocation of its own, no lock, no string lookup and no channel hop, and reports rare
//! [`MediaEvent`]s back. `media` never imports `call`.

pub mod batch;
mod bridge;
mod browser_srtp;
mod engine;
pub mod inmemory;
pub mod ports;
pub mod quality;
mod realtime;
pub mod relay_delay;
pub mod rtp;
mod sip_routes;
pub mod srtp;
pub mod stun;
pub mod webrtc;

use std::net::SocketAddr;

pub use engine::{EngineConfig, MediaEngine, WorkerId, WorkerSnapshot};
pub use ports::{PortPool, RtpPair, SipLegPorts};
pub use webrtc::{NegotiateError, Negotiated, WebRtcFactory};

/// Identifies a bridge across the control plane and its worker.
pub type BridgeKey = u64;

/// Called by a worker for each event of one bridge; returns false when nobody listens any
/// more (the bridge is then torn down by the worker itself, so nothing leaks).
pub type EventSink = Box<dyn FnMut(MediaEvent) -> bool + Send>;

/// Everything a worker needs to start relaying one call.
pub struct NewBridge {
    /// The bridge's key.
    pub key: BridgeKey,
    /// The browser leg, negotiated on the control plane.
    pub webrtc: Negotiated,
    /// The SIP-leg ports advertised in our SDP.
    pub rtp: SipLegPorts,
    /// Where events go.
    pub events: EventSink,
    /// When the browser leg fails, report it but keep the SIP leg (the browser may resume
    /// with a new leg); false tears the bridge down at once.
    pub keep_on_browser_failure: bool,
}

/// The PBX's media endpoint from its SDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTarget {
    /// Initial RTP destination; symmetric RTP re-latches it to the first packet's source.
    pub remote: SocketAddr,
    /// The PBX's telephone-event payload type, if it accepted DTMF events.
    pub telephone_event: Option<u8>,
    /// SRTP keys when SDES negotiated them (RFC 4568); `None` is plain RTP.
    pub srtp: Option<crate::sdp::SrtpKeys>,
}

/// Instructions from the control plane to a worker.
pub enum MediaCommand {
    /// Start relaying a new call.
    Add(Box<NewBridge>),
    /// Point the SIP leg at the PBX (from an 18x/2xx SDP); repeated when it changes.
    Connect {
        /// Which bridge.
        key: BridgeKey,
        /// The PBX's endpoint.
        target: SipTarget,
    },
    /// Relay the browser's audio to the PBX or drop it (hold, mute).
    Forward {
        /// Which bridge.
        key: BridgeKey,
        /// Whether browser audio reaches the PBX.
        to_sip: bool,
    },
    /// Send DTMF to the PBX as RFC 4733 events in the outgoing stream.
    Dtmf {
        /// Which bridge.
        key: BridgeKey,
        /// RFC 4733 event codes, in order.
        events: Vec<u8>,
        /// Tone length of each.
        duration: std::time::Duration,
    },
    /// The browser is gone for a while (its WebSocket dropped): its leg may fail or fall
    /// silent without ending the call, and PBX audio is not sent into it, until
    /// [`MediaCommand::ReplaceBrowser`] brings a new one.
    BrowserAway {
        /// Which bridge.
        key: BridgeKey,
    },
    /// A resumed browser's new leg (a new peer connection) replaces the old one; the SIP leg,
    /// its ports and the outgoing RTP numbering towards the PBX are kept.
    ReplaceBrowser {
        /// Which bridge.
        key: BridgeKey,
        /// The new leg, negotiated with the same G.711 codec.
        webrtc: Box<Negotiated>,
    },
    /// Tear the bridge down and release its ports.
    Remove {
        /// Which bridge.
        key: BridgeKey,
    },
}

/// Media leg names used in events and metric labels.
pub mod leg {
    /// The browser's SRTP leg.
    pub const WEBRTC: &str = "webrtc";
    /// The PBX's RTP leg.
    pub const SIP: &str = "sip";
}

/// Something a worker observed on one bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEvent {
    /// Which bridge.
    pub key: BridgeKey,
    /// What happened.
    pub kind: MediaEventKind,
}

/// The kinds of [`MediaEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEventKind {
    /// ICE and DTLS completed with the browser.
    Connected,
    /// A leg received nothing for the inactivity timeout.
    Inactive {
        /// [`leg::WEBRTC`] or [`leg::SIP`].
        leg: &'static str,
    },
    /// The browser leg failed for good.
    Failed {
        /// What failed.
        reason: String,
    },
    /// Quality of both legs so far (every 2 s while media flows).
    Quality {
        /// Received from the browser.
        webrtc: quality::LegQuality,
        /// Received from the PBX.
        sip: quality::LegQuality,
    },
    /// The PBX sent a DTMF digit as RFC 4733 events (reported once, at its end).
    Dtmf {
        /// The digit.
        digit: char,
    },
    /// The bridge is gone; final per-call packet counts, and the quality of the whole call
    /// when the browser leg had connected (the call reports it rather than the last
    /// periodic sample).
    Removed {
        /// Packets relayed and dropped.
        stats: BridgeStats,
        /// Both legs' quality over the whole call: (browser leg, SIP leg).
        quality: Option<(quality::LegQuality, quality::LegQuality)>,
    },
}

/// Per-call packet counts reported when a bridge is removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// RTP packets from the browser relayed to the PBX.
    pub to_sip: u64,
    /// RTP packets from the PBX relayed to the browser.
    pub to_browser: u64,
    /// Packets dropped (no target yet, unmapped payload type, unlatched source).
    pub dropped: u64,
}
