//! Building a browser leg: a str0m `Rtc` (ICE-lite, RTP mode, one G.711 codec plus
//! telephone-event) that has accepted the browser's offer. Runs on the control plane at
//! signalling time; the negotiated value is then moved into a media worker.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::{Candidate, IceCreds, Output, Rtc};

use crate::sdp::G711;

/// Payload type str0m is configured with for telephone-event; the answer adopts the
/// browser's own number for it.
const TELEPHONE_EVENT_PT: u8 = 126;
/// The id of `urn:ietf:params:rtp-hdrext:sdes:mid` in callgate's offers (Chrome's choice).
const MID_EXTENSION_ID: u8 = 4;

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
    /// The SRTP keys the leg's DTLS handshake will export (empty until then): the media
    /// worker relays RTP with them itself (`webrtc.direct_srtp`).
    pub srtp_keys: shared_dtls::KeyTap,
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
    /// The DTLS crypto provider failed its self-check at start-up.
    #[error("DTLS set-up: {0}")]
    Dtls(String),
}

/// A browser leg for an inbound call: callgate's offer, waiting for the browser's answer.
pub struct PendingOffer {
    rtc: Rtc,
    pending: SdpPendingOffer,
    /// Our SDP offer for the browser (`incoming_call.sdp`).
    pub offer_sdp: String,
    local_ufrag: String,
    mid: Mid,
    codec: G711,
    srtp_keys: shared_dtls::KeyTap,
}

impl PendingOffer {
    /// Applies the browser's answer; the result is ready for a media worker.
    pub fn accept_answer(self, answer_sdp: &str) -> Result<Negotiated, NegotiateError> {
        let PendingOffer {
            mut rtc,
            pending,
            offer_sdp,
            local_ufrag,
            mid,
            codec,
            srtp_keys,
        } = self;
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| NegotiateError::BadOffer(e.to_string()))?;
        let chosen = crate::sdp::parse_audio(answer_sdp)
            .map_err(|e| NegotiateError::BadOffer(e.to_string()))?;
        if chosen.preferred_g711() != Some(codec) {
            return Err(NegotiateError::Refused(format!(
                "the answer must keep {}",
                codec.name()
            )));
        }
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| NegotiateError::Refused(e.to_string()))?;
        drain(&mut rtc)?;
        let browser_telephone_event = chosen.telephone_event();
        Ok(Negotiated {
            rtc,
            answer_sdp: offer_sdp,
            local_ufrag,
            mid,
            codec,
            browser_telephone_event,
            srtp_keys,
        })
    }
}

fn drain(rtc: &mut Rtc) -> Result<(), NegotiateError> {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(_)) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(NegotiateError::Refused(e.to_string())),
        }
    }
}

impl WebRtcFactory {
    /// Makes callgate's offer to the browser for an inbound call using `codec` only.
    pub fn create_offer(
        &self,
        codec: G711,
        candidate: SocketAddr,
        now: Instant,
    ) -> Result<PendingOffer, NegotiateError> {
        let (mut rtc, local_ufrag, srtp_keys) = self.build(codec, candidate, now)?;
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| NegotiateError::Refused("no offer produced".into()))?;
        drain(&mut rtc)?;
        Ok(PendingOffer {
            rtc,
            pending,
            offer_sdp: offer.to_sdp_string(),
            local_ufrag,
            mid,
            codec,
            srtp_keys,
        })
    }

    fn build(
        &self,
        codec: G711,
        candidate: SocketAddr,
        now: Instant,
    ) -> Result<(Rtc, String, shared_dtls::KeyTap), NegotiateError> {
        let creds = IceCreds::new();
        let local_ufrag = creds.ufrag.clone();
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_crypto_provider(shared_dtls::crypto_provider())
            .set_local_ice_credentials(creds)
            // MediaEgressStats every second carry the browser leg's RTCP round trip.
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            // Only the MID extension (it routes the browser's packets to the one m-line).
            // No transport-wide-cc: callgate estimates no bandwidth for G.711, and str0m's
            // TWCC send register keeps the last 1,000 packets, ~88 KiB per call (heaptrack).
            .clear_extension_map()
            .set_extension(MID_EXTENSION_ID, Extension::RtpMid)
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
        let (mut rtc, srtp_keys) = shared_dtls::with_key_tap(|| config.build(now));
        let host =
            Candidate::host(candidate, "udp").map_err(|_| NegotiateError::Candidate(candidate))?;
        rtc.add_local_candidate(host);
        Ok((rtc, local_ufrag, srtp_keys))
    }

    /// Checks the DTLS crypto once and generates the shared DTLS certificate: failures here
    /// stop callgate at start-up with a reason, instead of on the first call.
    pub fn new() -> Result<WebRtcFactory, NegotiateError> {
        shared_dtls::check().map_err(NegotiateError::Dtls)?;
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
        let (mut rtc, local_ufrag, srtp_keys) = self.build(codec, candidate, now)?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| NegotiateError::Refused(e.to_string()))?;
        drain(&mut rtc)?;
        let answer_sdp = answer.to_sdp_string();
        let mid = audio_mid(&answer_sdp).ok_or(NegotiateError::NoAudio)?;
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
            srtp_keys,
        })
    }
}

/// The `a=mid` of the first audio m-line with a non-zero port.
fn audio_mid(sdp: &str) -> Option<Mid> {
    let mut in_audio = false;
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(media) = line.strip_prefix("m=") {
            in_audio = media.starts_with("audio ") && !media.starts_with("audio 0 ");
        } else if in_audio && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(Mid::from(mid.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_audio_mid() {
        let sdp = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
        assert_eq!(audio_mid(sdp), Some(Mid::from("0")));
        assert_eq!(audio_mid("v=0\r\nm=audio 9 RTP/AVP 0\r\n"), None);
    }
}
