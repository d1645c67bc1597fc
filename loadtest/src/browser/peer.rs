//! Building the str0m peer of a simulated browser: codecs, candidate, offer.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::{Candidate, Rtc, RtcConfig};

use crate::media::G711;
use crate::{Error, Result};

/// Which audio codecs the simulated browser's offer lists, in preference order.
///
/// Real browsers put Opus first; callgate must still pick G.711 from such an offer, and must
/// refuse an offer without G.711 (`no_common_codec`) since it never transcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codecs {
    /// PCMU (0), PCMA (8) and telephone-event/8000 (126): the plain G.711 softphone.
    #[default]
    G711,
    /// PCMU (0) and telephone-event/8000 only.
    PcmuOnly,
    /// PCMA (8) and telephone-event/8000 only: checks the gateway keeps payload type 8.
    PcmaOnly,
    /// Like Chrome: Opus (111) first, then PCMU, PCMA, telephone-event/48000 (110) and
    /// telephone-event/8000 (126). We still send only G.711 if that is what is answered.
    BrowserLike,
    /// Opus (111) alone, without telephone-event: the "no G.711" refusal case.
    OpusOnly,
}

/// Payload type Chrome uses for telephone-event/8000.
const PT_TELE_8K: u8 = 126;
/// Payload type Chrome uses for telephone-event/48000.
const PT_TELE_48K: u8 = 110;

impl Codecs {
    /// The str0m configuration for this choice: codecs in order, no video. All peers of the
    /// process share one DTLS certificate and one validated DTLS configuration (as a browser
    /// profile does), so that the generator's cost per call is the handshake itself.
    fn configure(self, config: RtcConfig) -> RtcConfig {
        let mut config = config
            .set_crypto_provider(shared_dtls::crypto_provider())
            // Once a second, what the far end's RTCP receiver reports say of our stream
            // (`MediaStats::peer_rtt_us`), as a browser's `remote-inbound-rtp` does.
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            .clear_codecs();
        if let Some(cert) = shared_dtls::shared_certificate() {
            config = config.set_dtls_cert(cert);
        }
        let (opus, pcmu, pcma) = match self {
            Codecs::G711 => (false, true, true),
            Codecs::PcmuOnly => (false, true, false),
            Codecs::PcmaOnly => (false, false, true),
            Codecs::BrowserLike => (true, true, true),
            Codecs::OpusOnly => (true, false, false),
        };
        // str0m lists payload types in the order they were configured.
        config = config
            .enable_opus(opus, false)
            .enable_pcmu(pcmu, false)
            .enable_pcma(pcma, false);
        let events = FormatParams::parse_line("0-15");
        let codecs = config.codec_config();
        if self == Codecs::BrowserLike {
            codecs.add_config(
                PT_TELE_48K.into(),
                None,
                Codec::Tele,
                Frequency::FORTY_EIGHT_KHZ,
                None,
                events,
            );
        }
        if pcmu || pcma {
            codecs.add_config(
                PT_TELE_8K.into(),
                None,
                Codec::Tele,
                Frequency::EIGHT_KHZ,
                None,
                events,
            );
        }
        config
    }
}

/// A configured peer with its offer, waiting for the gateway's answer.
pub(crate) struct OfferingPeer {
    pub rtc: Rtc,
    pub mid: Mid,
    pub offer_sdp: String,
    pub pending: SdpPendingOffer,
}

/// Creates the browser-side peer: full ICE (controlling, since it offers), one host candidate
/// on `local_addr`, one sendrecv audio m-line.
pub(crate) fn offer(codecs: Codecs, local_addr: SocketAddr, now: Instant) -> Result<OfferingPeer> {
    let config = codecs
        .configure(Rtc::builder())
        // Deliver every audio packet as it arrives, out of order included: the checker
        // counts reordering itself, and str0m's default 15-packet hold-back would add
        // up to 300 ms to the measured round trip after a single loss.
        .set_reordering_size_audio(0)
        .set_reordering_timeout_audio(None);
    let mut rtc = config.build(now);
    let candidate = Candidate::host(local_addr, "udp").map_err(|e| Error::Rtc(e.to_string()))?;
    if rtc.add_local_candidate(candidate).is_none() {
        return Err(Error::Rtc(format!(
            "str0m refused host candidate {local_addr}"
        )));
    }
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| Error::Rtc("adding audio produced no offer".into()))?;
    Ok(OfferingPeer {
        rtc,
        mid,
        offer_sdp: offer.to_sdp_string(),
        pending,
    })
}

/// A configured peer that accepted the gateway's offer (an inbound call).
pub(crate) struct AnsweringPeer {
    pub rtc: Rtc,
    pub mid: Mid,
    pub answer_sdp: String,
}

/// Creates the browser-side peer for an inbound call: accepts `offer_sdp` (callgate is ICE-lite,
/// so this side controls ICE) with one host candidate on `local_addr`.
pub(crate) fn answer(
    codecs: Codecs,
    offer_sdp: &str,
    local_addr: SocketAddr,
    now: Instant,
) -> Result<AnsweringPeer> {
    let config = codecs
        .configure(Rtc::builder())
        .set_reordering_size_audio(0)
        .set_reordering_timeout_audio(None);
    let mut rtc = config.build(now);
    let candidate = Candidate::host(local_addr, "udp").map_err(|e| Error::Rtc(e.to_string()))?;
    if rtc.add_local_candidate(candidate).is_none() {
        return Err(Error::Rtc(format!(
            "str0m refused host candidate {local_addr}"
        )));
    }
    let offer = str0m::change::SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|e| Error::Rtc(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| Error::Rtc(e.to_string()))?;
    let answer_sdp = answer.to_sdp_string();
    while !matches!(
        rtc.poll_output().map_err(|e| Error::Rtc(e.to_string()))?,
        str0m::Output::Timeout(_)
    ) {}
    // The audio m-line's mid, as the answer names it.
    let mid = answer_sdp
        .lines()
        .skip_while(|l| !l.starts_with("m=audio"))
        .find_map(|l| l.trim_end().strip_prefix("a=mid:").map(Mid::from))
        .ok_or_else(|| Error::Rtc("the offer added no audio".into()))?;
    Ok(AnsweringPeer {
        rtc,
        mid,
        answer_sdp,
    })
}

/// The G.711 codec to send with: the first PCMU/PCMA payload type in the answer's order.
pub(crate) fn negotiated_g711(rtc: &Rtc, mid: Mid) -> Option<(Pt, G711)> {
    let media = rtc.media(mid)?;
    media.remote_pts().iter().find_map(|pt| {
        let params = rtc.codec_config().find(|p| p.pt() == *pt)?;
        match params.spec().codec {
            Codec::PCMU => Some((*pt, G711::Pcmu)),
            Codec::PCMA => Some((*pt, G711::Pcma)),
            _ => None,
        }
    })
}
