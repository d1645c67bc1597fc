//! A deliberately small SDP (RFC 4566) parser and builder for the demo PBX.
//!
//! Private to `demo` on purpose: the gateway's own `sdp` module is written
//! separately, and the demo PBX must stay an independent peer so that it can
//! catch the gateway's SDP mistakes instead of sharing them. Only what the
//! demo's offer/answer needs is understood: `c=`, `m=` (port, proto, formats),
//! `a=rtpmap`, `a=fmtp` (ignored) and the four direction attributes.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Upper bound on the SDP bodies we look at; larger bodies are rejected
/// before any parsing so a hostile peer cannot make us do unbounded work.
pub(crate) const MAX_SDP_LEN: usize = 16 * 1024;

/// Dynamic payload type the demo uses for RFC 4733 telephone-event in offers.
pub(crate) const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// Why an SDP body could not be parsed at all (→ 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SdpError {
    /// Body larger than [`MAX_SDP_LEN`].
    #[error("SDP body too large")]
    TooLarge,
    /// Body is not UTF-8 text.
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    /// First line is not `v=0`.
    #[error("SDP does not start with v=0")]
    NoVersion,
    /// An `m=` line lacks fields or has a non-numeric port.
    #[error("malformed m= line")]
    BadMediaLine,
}

/// Why a well-formed SDP cannot be used for a call (→ 488 Not Acceptable Here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NegotiationError {
    /// No `m=audio` section with a non-zero port and plain RTP/AVP(F).
    #[error("no usable plain-RTP audio stream")]
    NoAudio,
    /// The audio stream offers neither PCMU nor PCMA.
    #[error("neither PCMU nor PCMA offered")]
    NoCodec,
}

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `a=sendrecv` (the default when absent).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    fn parse(attr: &str) -> Option<Self> {
        match attr {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    /// The direction an answerer uses for a stream offered with `self`.
    pub(crate) fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
}

/// One `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RtpMap {
    pub(crate) pt: u8,
    pub(crate) encoding: String,
    pub(crate) clock: u32,
}

/// One `m=` section with the attributes the demo cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaSection {
    pub(crate) media: String,
    pub(crate) port: u16,
    pub(crate) proto: String,
    pub(crate) formats: Vec<String>,
    pub(crate) rtpmaps: Vec<RtpMap>,
    pub(crate) direction: Option<Direction>,
    pub(crate) connection: Option<IpAddr>,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SessionDescription {
    pub(crate) connection: Option<IpAddr>,
    pub(crate) direction: Option<Direction>,
    pub(crate) media: Vec<MediaSection>,
}

/// G.711 flavours the demo PBX speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// G.711 µ-law, static PT 0.
    Pcmu,
    /// G.711 A-law, static PT 8.
    Pcma,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }
}

/// The outcome of offer/answer for the one audio stream the demo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// Index of the chosen `m=` section in the peer's SDP.
    pub(crate) index: usize,
    pub(crate) codec: Codec,
    /// Payload type the peer uses for `codec` (normally 0 or 8).
    pub(crate) pt: u8,
    /// Payload type of telephone-event/8000, when the peer lists it.
    pub(crate) telephone_event: Option<u8>,
    /// Direction the peer declared for the stream.
    pub(crate) direction: Direction,
    /// Where the peer said it receives RTP (logged only: the echo is symmetric).
    pub(crate) remote: Option<(IpAddr, u16)>,
}

/// Parse an SDP body. Never panics; unknown lines are ignored.
pub(crate) fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    if lines.next().map(str::trim) != Some("v=0") {
        return Err(SdpError::NoVersion);
    }
    let mut sdp = SessionDescription::default();
    for line in lines {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match kind.trim() {
            "m" => sdp.media.push(parse_media_line(value)?),
            "c" => {
                let addr = parse_connection(value);
                match sdp.media.last_mut() {
                    Some(m) => m.connection = addr,
                    None => sdp.connection = addr,
                }
            }
            "a" => {
                let (name, arg) = match value.split_once(':') {
                    Some((n, a)) => (n, Some(a)),
                    None => (value, None),
                };
                if let Some(dir) = Direction::parse(name) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = Some(dir),
                        None => sdp.direction = Some(dir),
                    }
                } else if name == "rtpmap"
                    && let (Some(m), Some(arg)) = (sdp.media.last_mut(), arg)
                    && let Some(map) = parse_rtpmap(arg)
                {
                    m.rtpmaps.push(map);
                }
            }
            _ => {}
        }
    }
    Ok(sdp)
}

fn parse_media_line(value: &str) -> Result<MediaSection, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let media = parts.next().ok_or(SdpError::BadMediaLine)?.to_string();
    // `<port>[/<count>]`
    let port_field = parts.next().ok_or(SdpError::BadMediaLine)?;
    let port_str = port_field.split('/').next().unwrap_or(port_field);
    let port = port_str
        .parse::<u16>()
        .map_err(|_| SdpError::BadMediaLine)?;
    let proto = parts.next().ok_or(SdpError::BadMediaLine)?.to_string();
    let formats: Vec<String> = parts.take(64).map(str::to_string).collect();
    Ok(MediaSection {
        media,
        port,
        proto,
        formats,
        rtpmaps: Vec::new(),
        direction: None,
        connection: None,
    })
}

/// `IN IP4 192.0.2.1[/ttl]` → the address; anything else → None.
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_ascii_whitespace();
    if parts.next()? != "IN" {
        return None;
    }
    let _addrtype = parts.next()?;
    let addr = parts.next()?;
    addr.split('/').next()?.parse().ok()
}

/// `0 PCMU/8000[/1]`
fn parse_rtpmap(arg: &str) -> Option<RtpMap> {
    let (pt, rest) = arg.trim().split_once(char::is_whitespace)?;
    let pt = pt.parse::<u8>().ok().filter(|pt| *pt < 128)?;
    let mut enc = rest.trim().split('/');
    let encoding = enc.next()?.trim().to_string();
    let clock = enc.next()?.trim().parse::<u32>().ok()?;
    Some(RtpMap {
        pt,
        encoding,
        clock,
    })
}

impl MediaSection {
    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.pt == pt)
    }

    /// The G.711 codec payload type `pt` stands for in this section.
    fn codec_of(&self, pt: u8) -> Option<Codec> {
        match self.rtpmap(pt) {
            Some(map) if map.clock == 8000 => {
                if map.encoding.eq_ignore_ascii_case("PCMU") {
                    Some(Codec::Pcmu)
                } else if map.encoding.eq_ignore_ascii_case("PCMA") {
                    Some(Codec::Pcma)
                } else {
                    None
                }
            }
            Some(_) => None,
            None => match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        }
    }

    fn is_plain_rtp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/AVP") || self.proto.eq_ignore_ascii_case("RTP/AVPF")
    }
}

/// Pick the stream and codec for a call from the peer's SDP (offer or answer):
/// the first live plain-RTP audio section, then the first of PCMU/PCMA in the
/// peer's format order, plus telephone-event/8000 if listed.
pub(crate) fn negotiate(sdp: &SessionDescription) -> Result<Negotiated, NegotiationError> {
    let mut saw_audio = false;
    for (index, m) in sdp.media.iter().enumerate() {
        if !m.media.eq_ignore_ascii_case("audio") || m.port == 0 || !m.is_plain_rtp() {
            continue;
        }
        saw_audio = true;
        let pts = m.formats.iter().filter_map(|f| f.parse::<u8>().ok());
        let Some((pt, codec)) = pts
            .clone()
            .find_map(|pt| m.codec_of(pt).map(|codec| (pt, codec)))
        else {
            continue;
        };
        let telephone_event = pts.clone().find(|pt| {
            m.rtpmap(*pt).is_some_and(|map| {
                map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock == 8000
            })
        });
        let direction = m.direction.or(sdp.direction).unwrap_or(Direction::SendRecv);
        let remote = m.connection.or(sdp.connection).map(|ip| (ip, m.port));
        return Ok(Negotiated {
            index,
            codec,
            pt,
            telephone_event,
            direction,
            remote,
        });
    }
    Err(if saw_audio {
        NegotiationError::NoCodec
    } else {
        NegotiationError::NoAudio
    })
}

/// Our side of the media: where we receive RTP and the `o=` line counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalMedia {
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    pub(crate) session_id: u64,
    pub(crate) version: u64,
}

fn write_session_header(out: &mut String, local: &LocalMedia) {
    let family = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    // `write!` into a String cannot fail.
    let _ = write!(
        out,
        "v=0\r\no=callgate-demo {} {} IN {family} {}\r\ns=callgate demo\r\nc=IN {family} {}\r\nt=0 0\r\n",
        local.session_id, local.version, local.ip, local.ip
    );
}

/// The answer to `offer` for the stream `neg` selected: the chosen codec and
/// telephone-event on our port, every other `m=` line rejected with port 0
/// (RFC 3264 §6 keeps the m-line count and order).
pub(crate) fn build_answer(
    offer: &SessionDescription,
    neg: &Negotiated,
    local: &LocalMedia,
) -> String {
    let mut out = String::with_capacity(256);
    write_session_header(&mut out, local);
    for (index, m) in offer.media.iter().enumerate() {
        if index != neg.index {
            let formats = if m.formats.is_empty() {
                "0".to_string()
            } else {
                m.formats.join(" ")
            };
            let _ = write!(out, "m={} 0 {} {formats}\r\n", m.media, m.proto);
            continue;
        }
        let _ = write!(out, "m=audio {} RTP/AVP {}", local.port, neg.pt);
        if let Some(te) = neg.telephone_event {
            let _ = write!(out, " {te}");
        }
        out.push_str("\r\n");
        let _ = write!(out, "a=rtpmap:{} {}/8000\r\n", neg.pt, neg.codec.name());
        if let Some(te) = neg.telephone_event {
            let _ = write!(
                out,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        let _ = write!(
            out,
            "a=ptime:20\r\na={}\r\n",
            neg.direction.answer().as_str()
        );
    }
    out
}

/// Our offer (offer-less INVITE's 200, callback INVITE): PCMU, PCMA and
/// telephone-event, sendrecv.
pub(crate) fn build_offer(local: &LocalMedia) -> String {
    let mut out = String::with_capacity(256);
    write_session_header(&mut out, local);
    let te = OFFER_TELEPHONE_EVENT_PT;
    let _ = write!(
        out,
        "m=audio {} RTP/AVP 0 8 {te}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        local.port
    );
    out
}
