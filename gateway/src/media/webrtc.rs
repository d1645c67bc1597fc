//! Building a browser leg: a str0m `Rtc` (ICE-lite, RTP mode, one G.711 codec plus
//! telephone-event) that has accepted the browser's offer. Runs on the control plane at
//! signalling time; the negotiated value is then moved into a media worker.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid};
use str0m::{Candidate, Event, IceCreds, Output, Rtc};

use crate::sdp::G711;

/// Payload type str0m is configured with for telephone-event; the answer adopts the
/// browser's own number for it.
const TELEPHONE_EVENT_PT: u8 = 126;

/// Makes browser legs; holds the one DTLS certificate all of them share (generating one
/// per call would cost milliseconds of CPU on every call setup).
pub struct WebRtcFactory {
    cert: DtlsCert,
}

/// A browser leg ready to be moved into a media worker.
pub struct Negotiated {
    /// The str0m instance that accepted the offer.
    pub rtc: Rtc,
    /// Our SDP answer for the browser.
    pub answer_sdp: String,
    /// Our ICE ufrag: the demux key for the browser's first STUN packet.
    pub local_ufrag: String,
    /// The audio m-line.
    pub mid: Mid,
    /// The G.711 codec both sides use.
    pub codec: G711,
    /// The browser's telephone-event payload type, if it offered one.
    pub browser_telephone_event: Option<u8>,
}

/// Why a browser offer could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// str0m could not parse the offer.
    #[error("the SDP offer cannot be parsed: {0}")]
    BadOffer(String),
    /// str0m refused the offer.
    #[error("the SDP offer was refused: {0}")]
    Refused(String),
    /// The answer has no audio m-line.
    #[error("no audio stream was negotiated")]
    NoAudio,
    /// The advertised address is not a usable ICE candidate.
    #[error("bad ICE candidate address {0}")]
    Candidate(SocketAddr),
    /// Certificate generation failed at start-up.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
}

impl WebRtcFactory {
    /// Generates the shared DTLS certificate.
    pub fn new() -> Result<WebRtcFactory, NegotiateError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| NegotiateError::Certificate("generation failed".into()))?;
        Ok(WebRtcFactory { cert })
    }

    /// Accepts a browser's offer for one call, advertising `candidate` (the media worker's
    /// public address). `codec` is the G.711 variant chosen from the offer.
    pub fn accept_offer(
        &self,
        offer_sdp: &str,
        codec: G711,
        candidate: SocketAddr,
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| NegotiateError::BadOffer(e.to_string()))?;
        let creds = IceCreds::new();
        let local_ufrag = creds.ufrag.clone();
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(creds)
            .clear_codecs();
        match codec {
            G711::Pcmu => config = config.enable_pcmu(true, false),
            G711::Pcma => config = config.enable_pcma(true, false),
        }
        config.codec_config().add_config(
            TELEPHONE_EVENT_PT.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(now);
        let host =
            Candidate::host(candidate, "udp").map_err(|_| NegotiateError::Candidate(candidate))?;
        rtc.add_local_candidate(host);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| NegotiateError::Refused(e.to_string()))?;
        let mut mid = None;
        // Drain to quiescence after the mutation (str0m's single-mutation rule).
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Event(Event::MediaAdded(added))) => mid = mid.or(Some(added.mid)),
                Ok(_) => {}
                Err(e) => return Err(NegotiateError::Refused(e.to_string())),
            }
        }
        let mid = mid.ok_or(NegotiateError::NoAudio)?;
        let answer_sdp = answer.to_sdp_string();
        let browser_telephone_event = crate::sdp::parse_audio(&answer_sdp)
            .ok()
            .and_then(|audio| audio.telephone_event());
        Ok(Negotiated {
            rtc,
            answer_sdp,
            local_ufrag,
            mid,
            codec,
            browser_telephone_event,
        })
    }
}
