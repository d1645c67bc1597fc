//! The trunk's side of SDP offer/answer (RFC 3264), for G.711 only: read the offer's first
//! usable audio stream, answer it on our echo port. Pure and never panicking.
//!
//! SDES (RFC 4568): an offer with an `a=crypto` line for `AES_CM_128_HMAC_SHA1_80` or `_32`
//! (on RTP/SAVP, or RTP/AVP as best-effort SRTP) is answered with the same profile and the
//! *offerer's own key*, so the trunk's byte-for-byte echo is valid SRTP for the offerer and the
//! trunk does no crypto at all: callgate pays for protect and unprotect on every packet, which
//! is what a load run measures. Reusing a key for both directions is only sound here because
//! the echo sends back exactly the ciphertext it got; no real endpoint may do this.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Largest SDP body looked at.
pub const MAX_SDP: usize = 16 * 1024;
/// Most `m=` lines handled; an offer with more is refused.
const MAX_MEDIA: usize = 16;

/// Why an offer cannot be answered (the trunk replies 488 Not Acceptable Here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not text, too long, or not starting with `v=0`.
    #[error("not an SDP body")]
    NotSdp,
    /// No `m=audio` line with a port and RTP/AVP(F), or RTP/SAVP(F) with a usable `a=crypto`.
    #[error("no plain RTP audio stream")]
    NoAudio,
    /// The audio stream lists neither PCMU nor PCMA.
    #[error("neither PCMU nor PCMA offered")]
    NoG711,
}

/// One `m=` line of the offer, kept to reject it in the answer when it is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    proto: String,
    first_format: String,
}

/// What one `m=` line offers, as far as the trunk cares.
#[derive(Debug, Default)]
struct Stream {
    port: u16,
    /// Payload types, empty when the line is not plain RTP audio.
    pts: Vec<u8>,
    ip: Option<IpAddr>,
    /// `a=rtpmap` entries: (payload type, encoding upper-cased, clock rate).
    rtpmaps: Vec<(u8, String, u32)>,
    /// RTP/SAVP(F): needs a usable `a=crypto`.
    secure: bool,
    /// The transport as offered.
    proto: String,
    /// The first usable `a=crypto` value (`tag suite inline:key`).
    crypto: Option<String>,
}

/// What the trunk answers: the chosen stream and codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Index of the audio stream among the offer's `m=` lines.
    index: usize,
    media: Vec<MediaLine>,
    /// Where the offerer receives RTP (informational: the echo is symmetric).
    pub remote: Option<SocketAddr>,
    /// The G.711 payload type chosen (the offerer's first PCMU/PCMA).
    pub payload_type: u8,
    /// `PCMU` or `PCMA`.
    pub codec: &'static str,
    /// telephone-event/8000's payload type, when offered.
    pub telephone_event: Option<u8>,
    /// SDES: the offer's transport and the `a=crypto` value echoed in the answer.
    pub sdes: Option<(String, String)>,
}

/// Reads an offer.
pub fn read_offer(body: &[u8]) -> Result<Offer, SdpError> {
    if body.len() > MAX_SDP {
        return Err(SdpError::NotSdp);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotSdp)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(SdpError::NotSdp);
    }
    let mut session_ip: Option<IpAddr> = None;
    let mut media: Vec<MediaLine> = Vec::new();
    let mut streams: Vec<Stream> = Vec::new();
    for line in lines {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                if media.len() >= MAX_MEDIA {
                    return Err(SdpError::NotSdp);
                }
                let mut parts = value.split_ascii_whitespace();
                let kind = parts.next().ok_or(SdpError::NotSdp)?;
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or(SdpError::NotSdp)?;
                let proto = parts.next().ok_or(SdpError::NotSdp)?;
                let formats: Vec<&str> = parts.take(64).collect();
                media.push(MediaLine {
                    media: kind.to_string(),
                    proto: proto.to_string(),
                    first_format: formats.first().copied().unwrap_or("0").to_string(),
                });
                let secure = proto.eq_ignore_ascii_case("RTP/SAVP")
                    || proto.eq_ignore_ascii_case("RTP/SAVPF");
                let usable = kind == "audio"
                    && port != 0
                    && (secure
                        || proto.eq_ignore_ascii_case("RTP/AVP")
                        || proto.eq_ignore_ascii_case("RTP/AVPF"));
                let pts = if usable {
                    formats.iter().filter_map(|f| f.parse().ok()).collect()
                } else {
                    Vec::new()
                };
                streams.push(Stream {
                    port,
                    pts,
                    secure,
                    proto: proto.to_string(),
                    ..Stream::default()
                });
            }
            "c" => {
                let ip = value
                    .split_ascii_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next())
                    .and_then(|a| a.parse().ok());
                match streams.last_mut() {
                    Some(stream) => stream.ip = ip,
                    None => session_ip = ip,
                }
            }
            "a" => {
                if let (Some(stream), Some(crypto)) =
                    (streams.last_mut(), value.strip_prefix("crypto:"))
                    && stream.crypto.is_none()
                    && usable_crypto(crypto)
                {
                    stream.crypto = Some(crypto.to_string());
                }
                if let (Some(stream), Some(map)) =
                    (streams.last_mut(), value.strip_prefix("rtpmap:"))
                    && let Some((pt, rest)) = map.split_once(' ')
                    && let Ok(pt) = pt.parse::<u8>()
                {
                    let mut parts = rest.trim().split('/');
                    let name = parts.next().unwrap_or_default().to_ascii_uppercase();
                    let clock = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    stream.rtpmaps.push((pt, name, clock));
                }
            }
            _ => {}
        }
    }
    let mut saw_audio = false;
    for (index, stream) in streams.iter().enumerate() {
        let pts = &stream.pts;
        if pts.is_empty() || (stream.secure && stream.crypto.is_none()) {
            continue;
        }
        saw_audio = true;
        let name_of = |pt: u8| {
            stream
                .rtpmaps
                .iter()
                .find(|(p, _, _)| *p == pt)
                .map(|(_, name, clock)| (name.as_str(), *clock))
        };
        let g711 = pts.iter().find_map(|&pt| match name_of(pt) {
            Some(("PCMU", 8000)) => Some((pt, "PCMU")),
            Some(("PCMA", 8000)) => Some((pt, "PCMA")),
            Some(_) => None,
            None if pt == 0 => Some((0, "PCMU")),
            None if pt == 8 => Some((8, "PCMA")),
            None => None,
        });
        let Some((payload_type, codec)) = g711 else {
            continue;
        };
        let telephone_event = pts
            .iter()
            .copied()
            .find(|&pt| name_of(pt) == Some(("TELEPHONE-EVENT", 8000)));
        return Ok(Offer {
            index,
            media,
            remote: stream
                .ip
                .or(session_ip)
                .map(|ip| SocketAddr::new(ip, stream.port)),
            payload_type,
            codec,
            telephone_event,
            sdes: stream
                .crypto
                .clone()
                .map(|crypto| (stream.proto.clone(), crypto)),
        });
    }
    Err(if saw_audio {
        SdpError::NoG711
    } else {
        SdpError::NoAudio
    })
}

/// Our answer: the chosen codec (and telephone-event) on `local`, sendrecv; every other `m=`
/// line rejected with port 0, keeping their count and order (RFC 3264 §6).
pub fn answer(offer: &Offer, local: SocketAddr, session_id: u64, version: u64) -> String {
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut out = String::with_capacity(320);
    let _ = write!(
        out,
        "v=0\r\no=loadtest {session_id} {version} IN {family} {ip}\r\ns=callgate loadtest trunk\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (index, line) in offer.media.iter().enumerate() {
        if index != offer.index {
            let _ = write!(
                out,
                "m={} 0 {} {}\r\n",
                line.media, line.proto, line.first_format
            );
            continue;
        }
        let pt = offer.payload_type;
        let proto = offer.sdes.as_ref().map_or("RTP/AVP", |(proto, _)| proto);
        let _ = write!(out, "m=audio {} {proto} {pt}", local.port());
        if let Some(te) = offer.telephone_event {
            let _ = write!(out, " {te}");
        }
        let _ = write!(out, "\r\na=rtpmap:{pt} {}/8000\r\n", offer.codec);
        if let Some(te) = offer.telephone_event {
            let _ = write!(
                out,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        if let Some((_, crypto)) = &offer.sdes {
            let _ = write!(out, "a=crypto:{crypto}\r\n");
        }
        out.push_str("a=ptime:20\r\na=sendrecv\r\n");
    }
    out
}

/// `tag AES_CM_128_HMAC_SHA1_80|_32 inline:<40 base64 chars>`, nothing more (no MKI, lifetime or
/// session parameters): the lines callgate offers.
fn usable_crypto(value: &str) -> bool {
    let mut parts = value.split_ascii_whitespace();
    let (Some(tag), Some(suite), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let key = key.strip_prefix("inline:").unwrap_or_default();
    !tag.is_empty()
        && tag.len() <= 9
        && tag.bytes().all(|b| b.is_ascii_digit())
        && matches!(suite, "AES_CM_128_HMAC_SHA1_80" | "AES_CM_128_HMAC_SHA1_32")
        && key.len() == 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
