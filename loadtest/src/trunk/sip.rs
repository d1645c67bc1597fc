//! Just enough SIP (RFC 3261) for a UAS that answers calls: a borrowing parser for one
//! datagram and a writer for responses. Pure: bytes in, values out; never panics on any input
//! (a property test feeds it random bytes).
//!
//! Deliberately independent of the gateway's SIP stack, so the trunk catches its mistakes
//! instead of sharing them.

use std::fmt::Write as _;

/// Largest datagram looked at; longer ones are refused before parsing.
pub const MAX_MESSAGE: usize = 65_535;
/// Most header lines kept from one message.
const MAX_HEADERS: usize = 128;

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD request-uri SIP/2.0`.
    Request {
        /// The method, as sent (`INVITE`, `ACK`, ...).
        method: &'a str,
        /// The Request-URI.
        uri: &'a str,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// The status code.
        code: u16,
    },
}

/// Why a datagram is not a SIP message we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_MESSAGE`].
    #[error("message too large")]
    TooLarge,
    /// The start line and headers are not UTF-8.
    #[error("head is not UTF-8")]
    NotUtf8,
    /// No empty line ends the headers.
    #[error("no end of headers")]
    NoEndOfHeaders,
    /// The start line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line without a colon, a folded line, or too many headers.
    #[error("bad header line")]
    BadHeader,
    /// `Content-Length` is not a number or says more than arrived.
    #[error("bad Content-Length")]
    BadContentLength,
}

/// One parsed message, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The request or status line.
    pub start: StartLine<'a>,
    /// Header (name, value) pairs in order, values trimmed.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The body: `Content-Length` bytes, or everything after the headers when absent.
    pub body: &'a [u8],
}

/// The long name of a compact header name (RFC 3261 §7.3.3), or the name itself.
fn long_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        other => other,
    }
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let (head_len, body_start) = find_head_end(datagram).ok_or(ParseError::NoEndOfHeaders)?;
    let head = datagram.get(..head_len).ok_or(ParseError::NoEndOfHeaders)?;
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = parse_start_line(lines.next().unwrap_or_default())?;
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) || headers.len() >= MAX_HEADERS {
            return Err(ParseError::BadHeader);
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        let name = name.trim();
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ParseError::BadHeader);
        }
        headers.push((long_name(name), value.trim()));
    }
    let rest = datagram.get(body_start..).unwrap_or_default();
    let body = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    {
        Some((_, value)) => {
            let len: usize = value.parse().map_err(|_| ParseError::BadContentLength)?;
            rest.get(..len).ok_or(ParseError::BadContentLength)?
        }
        None => rest,
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// Where the head ends (exclusive, without the blank line) and the body starts.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let crlf = data.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = data.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    let mut parts = line.splitn(3, ' ');
    let first = parts.next().unwrap_or_default();
    let second = parts.next().ok_or(ParseError::BadStartLine)?;
    let third = parts.next().ok_or(ParseError::BadStartLine)?;
    if first == "SIP/2.0" {
        let code: u16 = second.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response { code });
    }
    let is_token = !first.is_empty() && first.bytes().all(|b| b.is_ascii_alphabetic());
    if !is_token || third != "SIP/2.0" || second.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: first,
        uri: second,
    })
}

impl<'a> Message<'a> {
    /// The first value of header `name` (case-insensitive; compact forms already expanded).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Every value of header `name`, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// `Call-ID`.
    pub fn call_id(&self) -> Option<&'a str> {
        self.header("Call-ID").filter(|v| !v.is_empty())
    }

    /// `CSeq` as (number, method).
    pub fn cseq(&self) -> Option<(u32, &'a str)> {
        let (number, method) = self.header("CSeq")?.split_once(char::is_whitespace)?;
        Some((number.parse().ok()?, method.trim()))
    }

    /// Whether the `To` header carries a tag (an in-dialog request).
    pub fn to_has_tag(&self) -> bool {
        self.header("To").is_some_and(has_tag)
    }

    /// The user part of the Request-URI (`echo` in `sip:echo@host`).
    pub fn uri_user(&self) -> Option<&'a str> {
        let StartLine::Request { uri, .. } = self.start else {
            return None;
        };
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let (user, _) = rest.split_once('@')?;
        Some(user.split(';').next().unwrap_or(user))
    }

    /// Whether this message is complete enough to be answered (RFC 3261 §8.1.1: Via, From,
    /// To, Call-ID and CSeq).
    pub fn answerable(&self) -> bool {
        self.header("Via").is_some()
            && self.header("From").is_some()
            && self.header("To").is_some()
            && self.call_id().is_some()
            && self.cseq().is_some()
    }
}

/// Whether a `To`/`From` value has a `tag` parameter (after the URI when it is in `<>`).
fn has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(at) => value.get(at + 1..).unwrap_or_default(),
        None => value,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

/// What to put in a response besides the headers copied from the request.
#[derive(Debug, Clone, Default)]
pub struct Response<'r> {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'r str,
    /// Our tag, added to `To` unless it already has one.
    pub to_tag: Option<&'r str>,
    /// Extra headers, in order.
    pub headers: Vec<(&'r str, String)>,
    /// (Content-Type, body).
    pub body: Option<(&'r str, &'r str)>,
}

/// Writes the response to `request`: Via (every one, in order), From, To (with our tag),
/// Call-ID and CSeq copied (RFC 3261 §8.2.6.2), then our headers and the body.
pub fn write_response(request: &Message<'_>, response: &Response<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(512 + response.body.map_or(0, |(_, b)| b.len()));
    let _ = write!(out, "SIP/2.0 {} {}\r\n", response.code, response.reason);
    for via in request.headers_named("Via") {
        let _ = write!(out, "Via: {via}\r\n");
    }
    if let Some(from) = request.header("From") {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = request.header("To") {
        match response.to_tag {
            Some(tag) if !has_tag(to) => {
                let _ = write!(out, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(out, "To: {to}\r\n");
            }
        }
    }
    if let Some(call_id) = request.header("Call-ID") {
        let _ = write!(out, "Call-ID: {call_id}\r\n");
    }
    if let Some(cseq) = request.header("CSeq") {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    for (name, value) in &response.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    match response.body {
        Some((content_type, body)) => {
            let _ = write!(
                out,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out.into_bytes()
}
