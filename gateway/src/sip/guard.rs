//! Answers malformed SIP requests with `400 Bad Request` (RFC 3261 §8.2, RFC 4475) instead
//! of letting them vanish, and keeps them away from the stack. rsipstack drops unparseable
//! datagrams silently, so callgate owns its UDP socket and checks each datagram first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rsipstack::platform::net::UdpSocket as StackUdpSocket;
use tracing::debug;

/// What to do with one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A well-formed message (or keepalive): hand it to the stack.
    Pass,
    /// Well-formed, but written in a way rsipstack cannot read (folded lines, LWS around `;`
    /// and `=`, an RFC 2543 From without tag): hand it these equivalent bytes instead.
    Normalized(Vec<u8>),
    /// A malformed request (400, or 505 for another SIP version): send this back.
    Reject(Vec<u8>),
    /// A well-formed request the stack cannot serve (416 scheme, 420 `Require`, 501
    /// extension method): send this back; not counted as malformed.
    Unsupported(Vec<u8>),
    /// Malformed and unanswerable (a response, an ACK, no Via): drop it.
    Drop,
}

/// Methods rsipstack knows; any other token is an extension method callgate answers 501.
const KNOWN_METHODS: &[&str] = &[
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// The `Allow` of a 501: what callgate's SIP edge answers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, NOTIFY, REFER";

/// Option tags callgate supports in a `Require` (RFC 3261 §8.2.2.3).
const SUPPORTED_OPTIONS: &[&str] = &["timer"];

/// The From tag given to an RFC 2543 request that has none (RFC 4475 §3.4.1), so the stack
/// can key its transaction; the same for the request and its retransmissions and ACK.
const RFC2543_FROM_TAG: &str = "rfc2543";

/// Judges one datagram. Never panics, whatever the bytes.
pub fn judge(datagram: &[u8]) -> Verdict {
    if datagram.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Pass; // CRLF keepalives (RFC 5626) are the stack's business
    }
    if datagram.starts_with(b"SIP/") {
        // Responses are never answered (RFC 3261 §8.1.3.3); drop the ones the stack would
        // misread (RFC 4475 §3.1.2.5, §3.1.2.19).
        return match rsipstack::sip::SipMessage::try_from(datagram) {
            Ok(rsipstack::sip::SipMessage::Response(response)) if response_is_sane(&response) => {
                Verdict::Pass
            }
            _ => Verdict::Drop,
        };
    }
    let Some(method) = request_method(datagram) else {
        return Verdict::Drop;
    };
    let answer = |status: &str, extra: &[String]| match reply_for(datagram, status, extra) {
        Some(reply) if status.starts_with("400") || status.starts_with("505") => {
            Verdict::Reject(reply)
        }
        Some(reply) => Verdict::Unsupported(reply),
        None => Verdict::Drop,
    };
    let bad = || answer("400 Bad Request", &[]);
    match request_line_problem(datagram) {
        Some(LineProblem::Version) => return answer("505 Version Not Supported", &[]),
        Some(LineProblem::Syntax) => return bad(),
        None => {}
    }
    if framing_is_broken(datagram) {
        return bad();
    }
    let normalized = normalize(datagram);
    let bytes = normalized.as_deref().unwrap_or(datagram);
    if !KNOWN_METHODS.contains(&method.as_str()) {
        // RFC 3261 §8.2.1: an extension method we do not implement is 501, once the rest
        // of the request is readable (checked with a known method in its place).
        return match with_method(bytes, &method, "OPTIONS") {
            Some(stand_in) if parsed_request_is_sane(&stand_in) => {
                answer("501 Not Implemented", &[format!("Allow: {ALLOW}")])
            }
            _ => bad(),
        };
    }
    if !parsed_request_is_sane(bytes) {
        return bad();
    }
    if method == "ACK" {
        return pass(normalized);
    }
    if !request_uri_scheme_supported(bytes) {
        return answer("416 Unsupported URI Scheme", &[]);
    }
    if method != "CANCEL" {
        let unsupported = unsupported_requirements(bytes);
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return answer("420 Bad Extension", &[format!("Unsupported: {list}")]);
        }
    }
    pass(normalized)
}

fn pass(normalized: Option<Vec<u8>>) -> Verdict {
    match normalized {
        Some(bytes) => Verdict::Normalized(bytes),
        None => Verdict::Pass,
    }
}

/// The request line's method when it is a token (RFC 3261 §25.1).
fn request_method(datagram: &[u8]) -> Option<String> {
    let line = datagram.split(|b| *b == b'\n').next()?;
    let method = line.split(|b| *b == b' ').next()?;
    let is_token = !method.is_empty()
        && method
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b));
    is_token.then(|| String::from_utf8_lossy(method).into_owned())
}

enum LineProblem {
    Syntax,
    Version,
}

/// `Method SP Request-URI SP SIP-Version CRLF` exactly (RFC 3261 §7.1): extra or trailing
/// spaces, LWS in the URI and a URI in `<>` are 400 (RFC 4475 §3.1.2.7-10); another SIP
/// version is 505 (§3.1.2.16).
fn request_line_problem(datagram: &[u8]) -> Option<LineProblem> {
    let Some(end) = datagram.windows(2).position(|w| w == b"\r\n") else {
        return Some(LineProblem::Syntax);
    };
    let line = &datagram[..end];
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let [_, uri, version] = parts.as_slice() else {
        return Some(LineProblem::Syntax);
    };
    if uri.is_empty() || uri.starts_with(b"<") || uri.iter().any(|b| !b.is_ascii_graphic()) {
        return Some(LineProblem::Syntax);
    }
    if *version == b"SIP/2.0" {
        None
    } else if version.starts_with(b"SIP/") {
        Some(LineProblem::Version)
    } else {
        Some(LineProblem::Syntax)
    }
}

/// The header lines (unfolded, RFC 3261 §7.3.1) and the body.
fn split_message(datagram: &[u8]) -> (Vec<Vec<u8>>, &[u8]) {
    let (head, body) = match datagram.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&datagram[..at], &datagram[at + 4..]),
        None => (datagram, &datagram[datagram.len()..]),
    };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for (i, raw) in head.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if i == 0 {
            continue; // the start line
        }
        match (raw.first(), lines.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => {
                last.push(b' ');
                last.extend_from_slice(raw.trim_ascii_start());
            }
            _ => lines.push(raw.to_vec()),
        }
    }
    (lines, body)
}

/// The canonical long name of a header line and its value.
fn header_of(line: &[u8]) -> Option<(String, &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = String::from_utf8_lossy(line[..colon].trim_ascii()).to_ascii_lowercase();
    let canonical = match name.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        other => other,
    };
    Some((canonical.to_string(), line[colon + 1..].trim_ascii()))
}

/// Framing and single-value violations the stack would accept silently: a Content-Length
/// that is not a number, repeated, or longer than the datagram's body (RFC 4475 §3.1.2.2,
/// §3.1.2.3, §3.3.9); single-value headers given twice (§3.3.8); empty Via or Contact
/// elements (§3.1.2.1); unbalanced quotes in an address (§3.1.2.6).
fn framing_is_broken(datagram: &[u8]) -> bool {
    let (lines, body) = split_message(datagram);
    let mut seen: Vec<String> = Vec::new();
    for line in &lines {
        let Some((name, value)) = header_of(line) else {
            continue;
        };
        let single = matches!(
            name.as_str(),
            "call-id" | "from" | "to" | "cseq" | "max-forwards" | "content-length"
        );
        if single && seen.contains(&name) {
            return true;
        }
        seen.push(name.clone());
        match name.as_str() {
            "content-length" => {
                let length = std::str::from_utf8(value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok());
                match length {
                    Some(length) if length <= body.len() => {}
                    _ => return true,
                }
            }
            "via" | "contact" if has_empty_element(value) => return true,
            "from" | "to" | "contact" if !quotes_balanced(value) => return true,
            "from" | "to" if !display_name_is_valid(value) => return true,
            _ => {}
        }
    }
    false
}

/// Whether a Via or Contact value has an empty element: `;;`, `;,`, `,,`, or a trailing
/// separator, outside quoted strings and `<>`.
fn has_empty_element(value: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut previous_separator = true; // an element cannot start with a separator either
    for &b in value {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b';' | b',' if !in_quotes && !in_angle => {
                if previous_separator {
                    return true;
                }
                previous_separator = true;
                continue;
            }
            b' ' | b'\t' => continue,
            _ => {}
        }
        previous_separator = false;
    }
    previous_separator
}

/// Whether the display name before `<` is a quoted string or tokens (RFC 3261 §25.1
/// `display-name`; RFC 4475 §3.1.2.15): an unquoted `,` or `@` there is malformed. UTF-8
/// is let through unquoted, as some PBXs send it and it is unambiguous.
fn display_name_is_valid(value: &[u8]) -> bool {
    if value.first() == Some(&b'"') {
        return true; // quoted; balance is checked separately
    }
    let Some(angle) = value.iter().position(|b| *b == b'<') else {
        return true; // addr-spec form, no display name
    };
    value[..angle]
        .iter()
        .all(|b| !b.is_ascii() || b.is_ascii_alphanumeric() || b"-.!%*_+`'~ \t".contains(b))
}

/// Whether every quoted string in an address value is closed (quoted-pairs respected).
fn quotes_balanced(value: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    for &b in value {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            _ => {}
        }
    }
    !in_quotes
}

/// The same request in a form rsipstack reads, when it needs one: folded header lines
/// joined (RFC 3261 §7.3.1), LWS around `;` and `=` in From/To removed (the grammar's
/// SEMI and EQUAL allow it), and a From tag added to an RFC 2543 request that has none.
/// `None` when the bytes are fine as they are.
fn normalize(datagram: &[u8]) -> Option<Vec<u8>> {
    let start_end = datagram.windows(2).position(|w| w == b"\r\n")?;
    let (lines, body) = split_message(datagram);
    let mut out = datagram[..start_end + 2].to_vec();
    for line in lines {
        match header_of(&line) {
            Some((name, value)) if name == "from" || name == "to" => {
                let raw_name = &line[..line.iter().position(|b| *b == b':').unwrap_or(0)];
                let mut value = tighten_separators(value);
                if name == "from" && !has_tag(&value) {
                    value.extend_from_slice(format!(";tag={RFC2543_FROM_TAG}").as_bytes());
                }
                out.extend_from_slice(raw_name.trim_ascii());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&value);
            }
            _ => out.extend_from_slice(&line),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    (out != datagram).then_some(out)
}

/// Removes whitespace around `;` and `=` outside quoted strings and `<>`.
fn tighten_separators(value: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut pending_space = false;
    for &b in value {
        if in_quotes {
            out.push(b);
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\t' if !in_angle => {
                pending_space = true;
                continue;
            }
            b';' | b'=' if !in_angle => {
                pending_space = false;
                while out.last().is_some_and(|c| *c == b' ') {
                    out.pop();
                }
                out.push(b);
                continue;
            }
            _ => {}
        }
        let after_separator = out.last().is_some_and(|c| *c == b';' || *c == b'=');
        if pending_space && !after_separator && !out.is_empty() {
            out.push(b' ');
        }
        pending_space = false;
        match b {
            b'"' => in_quotes = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            _ => {}
        }
        out.push(b);
    }
    out
}

/// Whether an address value carries a `tag` parameter (after the URI).
fn has_tag(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value).to_ascii_lowercase();
    let params = match text.rfind('>') {
        Some(at) => &text[at..],
        None => text.as_str(),
    };
    params.split(';').skip(1).any(|p| p.starts_with("tag="))
}

/// The request with `method` in its request line and CSeq replaced by `stand_in`.
fn with_method(datagram: &[u8], method: &str, stand_in: &str) -> Option<Vec<u8>> {
    let start_end = datagram.windows(2).position(|w| w == b"\r\n")?;
    let (lines, body) = split_message(datagram);
    let mut out = stand_in.as_bytes().to_vec();
    out.extend_from_slice(&datagram[method.len()..start_end + 2]);
    for line in lines {
        match header_of(&line) {
            Some((name, value)) if name == "cseq" => {
                let text = String::from_utf8_lossy(value);
                let mut parts = text.split_ascii_whitespace();
                let (seq, cseq_method) = (parts.next()?, parts.next()?);
                if cseq_method != method || parts.next().is_some() {
                    return None; // RFC 4475 §3.1.2.18: a mismatch is 400
                }
                out.extend_from_slice(format!("CSeq: {seq} {stand_in}").as_bytes());
            }
            _ => out.extend_from_slice(&line),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Some(out)
}

fn parsed_request_is_sane(bytes: &[u8]) -> bool {
    matches!(
        rsipstack::sip::SipMessage::try_from(bytes),
        Ok(rsipstack::sip::SipMessage::Request(request)) if request_is_sane(&request)
    )
}

/// True when the headers RFC 3261 §8.1.1 makes mandatory are present and readable: Via,
/// From, To (with valid URIs), Call-ID, a numeric CSeq naming the request's method, and a
/// numeric Max-Forwards when present.
fn request_is_sane(request: &rsipstack::sip::Request) -> bool {
    use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
    let checks = || -> Result<bool, rsipstack::sip::Error> {
        request.top_via_header()?.typed()?;
        request.from_header()?.typed()?;
        request.to_header()?.typed()?;
        let call_id_ok = !request.call_id_header()?.value().trim().is_empty();
        let cseq = request.cseq_header()?;
        cseq.seq()?;
        let method_ok = cseq.method()? == request.method;
        let max_forwards_ok = match request.max_forwards_header() {
            Ok(header) => header.value().trim().parse::<u8>().is_ok(),
            Err(_) => true,
        };
        Ok(call_id_ok && method_ok && max_forwards_ok)
    };
    checks().unwrap_or(false)
}

/// The same for a response: a status 100-699 and the headers a client transaction matches
/// on (RFC 3261 §8.1.3, §17.1.3).
fn response_is_sane(response: &rsipstack::sip::Response) -> bool {
    use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
    let checks = || -> Result<bool, rsipstack::sip::Error> {
        response.via_header()?.typed()?;
        response.from_header()?.typed()?;
        response.to_header()?.typed()?;
        let cseq = response.cseq_header()?;
        cseq.seq()?;
        cseq.method()?;
        Ok((100..700).contains(&response.status_code.code()))
    };
    checks().unwrap_or(false)
}

/// `sip:` and `sips:` Request-URIs only; anything else is 416 (RFC 3261 §8.2.2.1).
fn request_uri_scheme_supported(datagram: &[u8]) -> bool {
    let line = datagram.split(|b| *b == b'\r').next().unwrap_or_default();
    let uri = line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    let scheme = uri.split(|b| *b == b':').next().unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")
}

/// The option tags of `Require` callgate does not support (RFC 3261 §8.2.2.3).
fn unsupported_requirements(datagram: &[u8]) -> Vec<String> {
    let (lines, _) = split_message(datagram);
    lines
        .iter()
        .filter_map(|line| header_of(line))
        .filter(|(name, _)| name == "require")
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value)
                .split(',')
                .map(|tag| tag.trim().to_string())
                .filter(|tag| !tag.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|tag| {
            !SUPPORTED_OPTIONS
                .iter()
                .any(|s| tag.eq_ignore_ascii_case(s))
        })
        .collect()
}

/// Builds `400 Bad Request` for a request (see [`reply_for`]).
pub fn bad_request_for(datagram: &[u8]) -> Option<Vec<u8>> {
    reply_for(datagram, "400 Bad Request", &[])
}

/// Builds a stateless answer from whatever header lines can be read, as RFC 3261 §8.2.6
/// asks: Via, From, To, Call-ID and CSeq copied from the request, plus `extra` lines.
/// `None` when the datagram is not a request, is an ACK, or carries no Via to route the
/// answer by.
pub fn reply_for(datagram: &[u8], status: &str, extra: &[String]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(datagram);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next()?;
    let method = request_line.split(' ').next()?;
    let is_token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    if !is_token
        || method == "SIP/2.0"
        || method.eq_ignore_ascii_case("ACK")
        || !request_line.contains("SIP/")
    {
        return None;
    }
    let mut copied = Vec::new();
    let mut has_via = false;
    let mut to_line: Option<String> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let canonical = match name.to_ascii_lowercase().as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        let value = value.trim();
        if value.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
            continue;
        }
        if canonical == "Via" {
            has_via = true;
        }
        if canonical == "To" {
            to_line = Some(value.to_string());
            continue;
        }
        copied.push(format!("{canonical}: {value}"));
    }
    if !has_via {
        return None;
    }
    let mut reply = format!("SIP/2.0 {status}\r\n");
    for line in copied {
        reply.push_str(&line);
        reply.push_str("\r\n");
    }
    if let Some(to) = to_line {
        let tagged = if to.contains(";tag=") {
            to
        } else {
            format!("{to};tag=cg400")
        };
        reply.push_str(&format!("To: {tagged}\r\n"));
    }
    for line in extra {
        reply.push_str(line);
        reply.push_str("\r\n");
    }
    reply.push_str("Server: callgate\r\nContent-Length: 0\r\n\r\n");
    Some(reply.into_bytes())
}

/// A UDP socket for rsipstack that filters what it receives through [`judge`].
pub struct GuardedUdpSocket {
    inner: tokio::net::UdpSocket,
    rejected: Arc<AtomicU64>,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket; `rejected` counts malformed datagrams (answered or dropped).
    pub fn new(inner: tokio::net::UdpSocket, rejected: Arc<AtomicU64>) -> GuardedUdpSocket {
        GuardedUdpSocket { inner, rejected }
    }
}

#[async_trait::async_trait]
impl StackUdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, source) = self.inner.recv_from(buf).await?;
            match judge(&buf[..len]) {
                Verdict::Pass => return Ok((len, source)),
                Verdict::Normalized(bytes) if bytes.len() <= buf.len() => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok((bytes.len(), source));
                }
                Verdict::Normalized(_) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(%source, len, "SIP datagram too large once normalized, dropped");
                }
                Verdict::Unsupported(reply) => {
                    debug!(%source, len, "unsupported SIP request answered");
                    let _ = self.inner.send_to(&reply, source).await;
                }
                Verdict::Reject(reply) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(%source, len, "malformed or unsupported SIP request answered");
                    let _ = self.inner.send_to(&reply, source).await;
                }
                Verdict::Drop => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(%source, len, "malformed SIP datagram dropped");
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.inner.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GOOD: &str = "OPTIONS sip:callgate@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\nTo: <sip:callgate@127.0.0.1>\r\n\
        From: <sip:probe@127.0.0.1>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\n\
        CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn well_formed_requests_pass() {
        assert_eq!(judge(GOOD.as_bytes()), Verdict::Pass);
        assert_eq!(judge(b"\r\n\r\n"), Verdict::Pass);
    }

    #[test]
    fn malformed_request_gets_400_with_copied_headers() {
        let bad = GOOD
            .replace("CSeq: 63104 OPTIONS", "CSeq: not-a-number OPTIONS")
            .replace("Max-Forwards: 70", "Max-Forwards: seventy");
        let Verdict::Reject(reply) = judge(bad.as_bytes()) else {
            panic!("expected a 400")
        };
        let reply = String::from_utf8(reply).expect("text");
        assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds\r\n"));
        assert!(reply.contains("Call-ID: a84b4c76e66710\r\n"));
        assert!(reply.contains("To: <sip:callgate@127.0.0.1>;tag=cg400\r\n"));
        assert!(reply.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn unanswerable_garbage_is_dropped() {
        assert_eq!(judge(b"\x00\x01\x02 garbage"), Verdict::Drop);
        assert_eq!(
            judge(b"SIP/2.0 200 OK\r\nbroken"),
            Verdict::Drop,
            "responses are never answered"
        );
        assert_eq!(
            judge(b"INVITE sip:x SIP/2.0\r\nFrom: a\r\n\r\n"),
            Verdict::Drop,
            "no Via"
        );
        assert_eq!(
            judge(b"ACK sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nbad\r\n"),
            Verdict::Drop
        );
    }

    fn reply_text(verdict: Verdict) -> String {
        match verdict {
            Verdict::Reject(reply) | Verdict::Unsupported(reply) => {
                String::from_utf8(reply).expect("text")
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn folded_from_and_spaced_tag_are_normalized_for_the_stack() {
        let folded = GOOD.replace(
            "From: <sip:probe@127.0.0.1>;tag=1928301774",
            "From: \"A; B\" <sip:probe@127.0.0.1>\r\n  ;\r\n tag = 1928301774",
        );
        let Verdict::Normalized(bytes) = judge(folded.as_bytes()) else {
            panic!("expected a normalized request")
        };
        let text = String::from_utf8(bytes).expect("text");
        assert!(
            text.contains("From: \"A; B\" <sip:probe@127.0.0.1>;tag=1928301774\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn rfc2543_request_without_from_tag_gets_one() {
        let untagged = GOOD.replace(";tag=1928301774", "");
        let Verdict::Normalized(bytes) = judge(untagged.as_bytes()) else {
            panic!("expected a normalized request")
        };
        let text = String::from_utf8(bytes).expect("text");
        assert!(
            text.contains("From: <sip:probe@127.0.0.1>;tag=rfc2543\r\n"),
            "{text}"
        );
    }

    #[test]
    fn unsupported_but_well_formed_requests_get_their_status() {
        let extension = GOOD.replace("OPTIONS", "FROBNICATE");
        let reply = reply_text(judge(extension.as_bytes()));
        assert!(
            reply.starts_with("SIP/2.0 501 Not Implemented\r\n"),
            "{reply}"
        );
        assert!(reply.contains("\r\nAllow: INVITE, "), "{reply}");
        let mismatch = GOOD.replacen("OPTIONS", "FROBNICATE", 1);
        let reply = reply_text(judge(mismatch.as_bytes()));
        assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
        let version = GOOD.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        let reply = reply_text(judge(version.as_bytes()));
        assert!(reply.starts_with("SIP/2.0 505 "), "{reply}");
        let scheme = GOOD.replace("OPTIONS sip:callgate@", "OPTIONS tel:callgate@");
        let reply = reply_text(judge(scheme.as_bytes()));
        assert!(reply.starts_with("SIP/2.0 416 "), "{reply}");
        let required = GOOD.replace(
            "Max-Forwards: 70",
            "Require: timer, foo\r\nMax-Forwards: 70",
        );
        let reply = reply_text(judge(required.as_bytes()));
        assert!(reply.starts_with("SIP/2.0 420 "), "{reply}");
        assert!(reply.contains("\r\nUnsupported: foo\r\n"), "{reply}");
        let timer = GOOD.replace("Max-Forwards: 70", "Require: timer\r\nMax-Forwards: 70");
        assert_eq!(judge(timer.as_bytes()), Verdict::Pass);
    }

    #[test]
    fn framing_errors_are_400() {
        for (from, to) in [
            ("Content-Length: 0", "Content-Length: 10"),
            ("Content-Length: 0", "Content-Length: -1"),
            ("Content-Length: 0", "Content-Length: 0\r\nl: 0"),
            ("Call-ID: a84b4c76e66710", "Call-ID: a\r\ni: b"),
            (
                "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds",
                "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK776asdhds;;,",
            ),
            (
                "To: <sip:callgate@127.0.0.1>",
                "To: \"unclosed <sip:callgate@127.0.0.1>",
            ),
            (
                "To: <sip:callgate@127.0.0.1>",
                "To: Doe, John <sip:callgate@127.0.0.1>",
            ),
            (
                "OPTIONS sip:callgate@127.0.0.1 SIP",
                "OPTIONS  sip:callgate@127.0.0.1 SIP",
            ),
            (
                "OPTIONS sip:callgate@127.0.0.1 SIP",
                "OPTIONS <sip:callgate@127.0.0.1> SIP",
            ),
        ] {
            let bad = GOOD.replace(from, to);
            let reply = reply_text(judge(bad.as_bytes()));
            assert!(reply.starts_with("SIP/2.0 400 "), "{to}: {reply}");
        }
    }

    #[test]
    fn malformed_responses_are_dropped_and_good_ones_pass() {
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK7\r\n\
            To: <sip:a@b>;tag=2\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\
            Content-Length: 0\r\n\r\n";
        assert_eq!(judge(response.as_bytes()), Verdict::Pass);
        let huge = response.replace("CSeq: 1 ", "CSeq: 36893488147419103232 ");
        assert_eq!(judge(huge.as_bytes()), Verdict::Drop);
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = judge(&bytes);
        }

        #[test]
        fn never_panics_on_sip_shaped_text(
            method in "[A-Z]{1,8}",
            lines in proptest::collection::vec("[A-Za-z-]{1,10}: ?[ -~]{0,40}", 0..10),
        ) {
            let text = format!("{method} sip:a@b SIP/2.0\r\n{}\r\n\r\n", lines.join("\r\n"));
            let _ = judge(text.as_bytes());
        }
    }
}
