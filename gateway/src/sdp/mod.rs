//! SDP for the SIP leg: the RTP (or SDES-keyed SRTP, RFC 4568) offer callgate sends the PBX,
//! and reading the PBX's answer into a forwarding decision. Also a quick look at the
//! browser's offer to refuse one without G.711 before any resource is taken. Pure: text in,
//! values out.

mod sdes;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

pub use crate::media::srtp::{MasterKey, SrtpSuite};
pub use sdes::{Sdes, SrtpKeys, SrtpPolicy};

/// G.711 variants callgate relays without transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

impl G711 {
    /// The RFC 3551 static payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        }
    }

    fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }
}

/// Media direction attribute of an m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The author only sends (it holds the other side).
    SendOnly,
    /// The author only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    /// Our direction in an answer to a peer that offered `remote`, when we ourselves hold
    /// (`holding`) or not (RFC 3264 §6.1).
    pub fn answer_to(remote: Direction, holding: bool) -> Direction {
        match (remote, holding) {
            (Direction::SendRecv, false) => Direction::SendRecv,
            (Direction::SendRecv, true) | (Direction::RecvOnly, _) => Direction::SendOnly,
            (Direction::SendOnly, false) => Direction::RecvOnly,
            (Direction::SendOnly, true) | (Direction::Inactive, _) => Direction::Inactive,
        }
    }

    /// True when the author of this direction does not want our media (it holds us).
    pub fn blocks_sending_to_author(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not SDP at all, or a line that cannot be read.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No usable `m=audio` line.
    #[error("no audio stream in SDP")]
    NoAudio,
    /// Audio, but neither PCMU nor PCMA.
    #[error("audio offered without PCMU or PCMA")]
    NoG711,
    /// No connection address for the audio stream.
    #[error("no connection address (c=) for the audio stream")]
    NoConnection,
    /// SRTP is required (by `sip.srtp = "mandatory"` or an RTP/SAVP offer) but no
    /// `a=crypto` line is usable (unknown suite, bad key, MKI or session parameters).
    #[error("no usable SRTP crypto (a=crypto) in the SDP")]
    NoCrypto,
    /// An RTP/SAVP offer while SRTP is off.
    #[error("SRTP (RTP/SAVP) offered but sip.srtp is off")]
    SrtpOff,
}

/// What callgate needs from a parsed audio m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDescription {
    /// Connection address (`c=`, media level wins over session level).
    pub address: Option<IpAddr>,
    /// The m-line port.
    pub port: u16,
    /// Payload types in preference order.
    pub payload_types: Vec<u8>,
    /// `(payload type, encoding name, clock rate)` from `a=rtpmap`.
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// Direction attribute (sendrecv when absent).
    pub direction: Direction,
    /// The m-line's transport is RTP/SAVP (or another `SAVP` profile).
    pub secure: bool,
    /// Usable `a=crypto` lines in the author's order (unusable ones are left out).
    pub crypto: Vec<sdes::Crypto>,
}

impl AudioDescription {
    /// The first G.711 codec in the author's preference order.
    pub fn preferred_g711(&self) -> Option<G711> {
        self.g711_codecs().next()
    }

    /// Every G.711 codec listed, in the author's preference order.
    pub fn g711_codecs(&self) -> impl Iterator<Item = G711> + '_ {
        self.payload_types
            .iter()
            .filter_map(|&pt| match self.encoding(pt) {
                Some((name, 8000)) if name.eq_ignore_ascii_case("PCMU") => Some(G711::Pcmu),
                Some((name, 8000)) if name.eq_ignore_ascii_case("PCMA") => Some(G711::Pcma),
                Some(_) => None,
                None => G711::from_payload_type(pt),
            })
    }

    /// The payload type of `telephone-event/8000`, if present.
    pub fn telephone_event(&self) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|(pt, name, rate)| {
                name.eq_ignore_ascii_case("telephone-event")
                    && *rate == 8000
                    && self.payload_types.contains(pt)
            })
            .map(|(pt, _, _)| *pt)
    }

    fn encoding(&self, pt: u8) -> Option<(&str, u32)> {
        self.rtpmaps
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, n, r)| (n.as_str(), *r))
    }

    /// True when the author puts us on hold (RFC 3264 §8.4 and the old `c=0.0.0.0` form).
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.address.is_some_and(|a| a.is_unspecified())
    }
}

/// Parses the first audio m-line with a non-zero port. Never panics.
pub fn parse_audio(text: &str) -> Result<AudioDescription, SdpError> {
    if !text.trim_start().starts_with("v=") {
        return Err(SdpError::Malformed("SDP must start with v=".into()));
    }
    let mut session_address: Option<IpAddr> = None;
    let mut session_direction = Direction::SendRecv;
    let mut current: Option<AudioDescription> = None;
    let mut found: Option<AudioDescription> = None;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(SdpError::Malformed(format!(
                "line without '=': {}",
                clip(line)
            )));
        };
        if kind.len() != 1 {
            return Err(SdpError::Malformed(format!(
                "bad line type: {}",
                clip(line)
            )));
        }
        match kind {
            "m" => {
                if found.is_none() {
                    found = current.take().filter(|a| a.port != 0);
                }
                current = None;
                let mut parts = value.split_ascii_whitespace();
                if parts.next() == Some("audio") {
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(|| {
                            SdpError::Malformed(format!("bad m= line: {}", clip(line)))
                        })?;
                    let secure = parts.next().is_some_and(|proto| proto.contains("SAVP"));
                    let payload_types = parts.filter_map(|p| p.parse::<u8>().ok()).collect();
                    current = Some(AudioDescription {
                        address: None,
                        port,
                        payload_types,
                        rtpmaps: Vec::new(),
                        direction: session_direction,
                        secure,
                        crypto: Vec::new(),
                    });
                }
            }
            "c" => {
                let address = parse_connection(value)?;
                match current.as_mut() {
                    Some(audio) => audio.address = Some(address),
                    None if found.is_none() => session_address = Some(address),
                    None => {}
                }
            }
            "a" => {
                let direction = match value {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (current.as_mut(), direction) {
                    (Some(audio), Some(d)) => audio.direction = d,
                    (None, Some(d)) => session_direction = d,
                    (Some(audio), None) => {
                        if let Some(entry) = value.strip_prefix("rtpmap:").and_then(parse_rtpmap) {
                            audio.rtpmaps.push(entry);
                        } else if let Some(crypto) =
                            value.strip_prefix("crypto:").and_then(sdes::parse_crypto)
                        {
                            audio.crypto.push(crypto);
                        }
                    }
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }
    if found.is_none() {
        found = current.filter(|a| a.port != 0);
    }
    let mut audio = match found {
        Some(audio) => audio,
        None => return Err(SdpError::NoAudio),
    };
    if audio.address.is_none() {
        audio.address = session_address;
    }
    Ok(audio)
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some("IN"), Some(_family), Some(address)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SdpError::Malformed(format!("bad c= line: {}", clip(value))));
    };
    let address = address.split('/').next().unwrap_or(address);
    address
        .parse()
        .map_err(|_| SdpError::Malformed(format!("c= address is not an IP: {}", clip(address))))
}

fn parse_rtpmap(map: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = map.split_once(' ')?;
    let mut enc = rest.trim().split('/');
    let name = enc.next()?.to_string();
    let rate = enc.next()?.parse().ok()?;
    Some((pt.parse().ok()?, name, rate))
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Checks a browser's WebRTC offer before any resource is taken for it.
pub fn check_browser_offer(text: &str) -> Result<G711, SdpError> {
    let audio = parse_audio(text)?;
    audio.preferred_g711().ok_or(SdpError::NoG711)
}

/// The SDP offer callgate sends the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipOffer {
    /// `o=` session id; stable for the call.
    pub session_id: u64,
    /// `o=` version; incremented on every new offer in the dialog.
    pub version: u64,
    /// Local RTP address (IP advertised, even port).
    pub rtp: SocketAddr,
    /// Codecs in preference order (the browser's choice first).
    pub codecs: Vec<G711>,
    /// Our telephone-event payload type (RFC 4733), if DTMF is offered.
    pub telephone_event: Option<u8>,
    /// Direction we offer.
    pub direction: Direction,
    /// SDES state: policy, our keys and the crypto negotiated so far.
    pub sdes: Sdes,
}

/// Payload type callgate uses for telephone-event on the SIP leg.
pub const SIP_TELEPHONE_EVENT_PT: u8 = 101;

impl SipOffer {
    /// Renders RFC 4566 text with CRLF line ends.
    pub fn render(&self) -> String {
        let ip = self.rtp.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut fmts: Vec<String> = self
            .codecs
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        if let Some(te) = self.telephone_event {
            fmts.push(te.to_string());
        }
        let mut s = String::with_capacity(320);
        // Writing into a String cannot fail.
        let _ = write!(
            s,
            "v=0\r\no=callgate {id} {ver} IN {family} {ip}\r\ns=callgate\r\nc=IN {family} {ip}\r\n\
             t=0 0\r\nm=audio {port} {proto} {fmts}\r\n",
            id = self.session_id,
            ver = self.version,
            port = self.rtp.port(),
            proto = self.sdes.proto(),
            fmts = fmts.join(" "),
        );
        self.sdes.render_crypto(&mut s);
        for codec in &self.codecs {
            let _ = write!(
                s,
                "a=rtpmap:{} {}/8000\r\n",
                codec.payload_type(),
                codec.name()
            );
        }
        if let Some(te) = self.telephone_event {
            let _ = write!(
                s,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        let _ = write!(
            s,
            "a=ptime:20\r\na=rtcp:{}\r\na={}\r\n",
            self.rtp.port() + 1,
            self.direction.attribute()
        );
        s
    }
}

/// The PBX's answer reduced to a forwarding decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipAnswer {
    /// Where to send RTP until symmetric RTP latches onto the real source.
    pub remote_rtp: SocketAddr,
    /// The codec the PBX chose.
    pub codec: G711,
    /// The PBX's telephone-event payload type.
    pub telephone_event: Option<u8>,
    /// Whether the PBX holds the call in this answer.
    pub on_hold: bool,
    /// The PBX's direction attribute (`c=0.0.0.0` holds count as sendonly).
    pub direction: Direction,
    /// SRTP keys when SDES negotiated them; `None` is plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// Reads the PBX's answer to our offer. The chosen codec must be one we offered; the crypto
/// must be one we offered (and present when SRTP is mandatory).
pub fn read_sip_answer(text: &str, offer: &SipOffer) -> Result<SipAnswer, SdpError> {
    let audio = parse_audio(text)?;
    let srtp = offer.sdes.read_answer(&audio)?;
    read_media(audio, offer, srtp)
}

/// Reads the PBX's offer (an inbound INVITE or its re-INVITE) and makes `local` the answer to
/// it: the first usable crypto the PBX offered is chosen and our key for its suite goes in
/// `local`'s next rendering. `local` is untouched when the offer is refused (488).
pub fn read_sip_offer(text: &str, local: &mut SipOffer) -> Result<SipAnswer, SdpError> {
    let audio = parse_audio(text)?;
    let (srtp, plan) = local.sdes.read_offer(&audio)?;
    let answer = read_media(audio, local, srtp)?;
    local.sdes.answer_with(plan);
    Ok(answer)
}

fn read_media(
    audio: AudioDescription,
    offer: &SipOffer,
    srtp: Option<SrtpKeys>,
) -> Result<SipAnswer, SdpError> {
    let codec = audio
        .g711_codecs()
        .find(|c| offer.codecs.contains(c))
        .ok_or(SdpError::NoG711)?;
    let address = audio.address.ok_or(SdpError::NoConnection)?;
    let direction = if address.is_unspecified() && audio.direction == Direction::SendRecv {
        Direction::SendOnly
    } else {
        audio.direction
    };
    Ok(SipAnswer {
        remote_rtp: SocketAddr::new(address, audio.port),
        codec,
        telephone_event: audio.telephone_event(),
        on_hold: audio.is_hold(),
        direction,
        srtp,
    })
}

#[cfg(test)]
mod tests;
