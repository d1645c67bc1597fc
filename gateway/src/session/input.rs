//! Browser input parsed into domain values at the edge (design.md §2.6): the core never sees
//! a raw string that could inject SIP syntax.

use std::collections::BTreeMap;

use signaling::ErrorCode;

/// A refused field, with the code and message the browser gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error code for the reply.
    pub code: ErrorCode,
    /// Human detail.
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// An agent's SIP user part: 1-64 characters of `[A-Za-z0-9._+-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension(String);

impl Extension {
    /// Parses the `hello` extension.
    pub fn parse(raw: &str) -> Result<Extension, Refusal> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if ok {
            Ok(Extension(raw.to_string()))
        } else {
            Err(refuse(
                ErrorCode::AuthFailed,
                "extension must be 1-64 characters of A-Z a-z 0-9 . _ + -",
            ))
        }
    }

    /// The user part.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A number or extension to dial: 1-64 characters of `[A-Za-z0-9*#+._-]`, so it can be put
/// in a SIP URI user part as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget(String);

impl DialTarget {
    /// Parses the `call` target.
    pub fn parse(raw: &str) -> Result<DialTarget, Refusal> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(refuse(
                ErrorCode::InvalidNumber,
                "the number to dial is empty",
            ));
        }
        if trimmed.len() > 64 {
            return Err(refuse(
                ErrorCode::InvalidNumber,
                "the number to dial is longer than 64 characters",
            ));
        }
        if let Some(bad) = trimmed
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "*#+._-".contains(*c)))
        {
            return Err(refuse(
                ErrorCode::InvalidNumber,
                format!("the number contains {bad:?}, which cannot be dialled"),
            ));
        }
        Ok(DialTarget(trimmed.to_string()))
    }

    /// The target, ready for a SIP URI user part (`#` escaped as RFC 3261 requires).
    pub fn uri_user(&self) -> String {
        self.0.replace('#', "%23")
    }

    /// The target as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Browser-supplied SIP headers, checked against the configured name prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtraHeaders(Vec<(String, String)>);

/// At most this many extra headers per call.
pub const MAX_EXTRA_HEADERS: usize = 16;
/// Longest extra header value.
pub const MAX_HEADER_VALUE: usize = 256;

impl ExtraHeaders {
    /// Parses the `headers` map of a `call` request.
    pub fn parse(
        raw: &BTreeMap<String, String>,
        prefixes: &[String],
    ) -> Result<ExtraHeaders, Refusal> {
        if raw.len() > MAX_EXTRA_HEADERS {
            return Err(refuse(
                ErrorCode::InvalidHeader,
                format!("at most {MAX_EXTRA_HEADERS} extra headers"),
            ));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            let token = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            if !token {
                return Err(refuse(
                    ErrorCode::InvalidHeader,
                    format!("{name:?} is not a valid SIP header name"),
                ));
            }
            let allowed = prefixes.iter().any(|p| {
                name.len() > p.len()
                    && name
                        .get(..p.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(p))
            });
            if !allowed {
                return Err(refuse(
                    ErrorCode::InvalidHeader,
                    format!("header {name:?} must start with one of {prefixes:?}"),
                ));
            }
            if value.len() > MAX_HEADER_VALUE || value.chars().any(char::is_control) {
                return Err(refuse(
                    ErrorCode::InvalidHeader,
                    format!(
                        "header {name:?} has a control character or is longer than {MAX_HEADER_VALUE} bytes"
                    ),
                ));
            }
            out.push((name.clone(), value.trim().to_string()));
        }
        Ok(ExtraHeaders(out))
    }

    /// The headers in name order.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

/// DTMF digits to send: 1-32 of `0-9 * # A-D`, each 40-2000 ms long (default 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfDigits {
    /// The digits, upper-cased.
    pub digits: String,
    /// Tone length of each.
    pub duration: std::time::Duration,
}

impl DtmfDigits {
    /// Parses a `dtmf` request's fields.
    pub fn parse(digits: &str, duration_ms: Option<u32>) -> Result<DtmfDigits, Refusal> {
        let ok = !digits.is_empty()
            && digits.len() <= 32
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || "*#ABCDabcd".contains(c));
        if !ok {
            return Err(refuse(
                ErrorCode::InvalidDtmf,
                "digits must be 1-32 of 0-9 * # A-D",
            ));
        }
        let ms = duration_ms.unwrap_or(100);
        if !(40..=2000).contains(&ms) {
            return Err(refuse(
                ErrorCode::InvalidDtmf,
                "duration_ms must be 40-2000",
            ));
        }
        Ok(DtmfDigits {
            digits: digits.to_ascii_uppercase(),
            duration: std::time::Duration::from_millis(u64::from(ms)),
        })
    }
}

/// A CRM call UUID: 1-64 characters of `[A-Za-z0-9._-]`, safe in a SIP header value.
pub fn parse_call_uuid(raw: &str) -> Result<String, Refusal> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(refuse(
            ErrorCode::InvalidHeader,
            "call_uuid must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// A random RFC 4122 version-4 UUID for calls the browser did not name.
pub fn new_call_uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x3),
        b[8] >> 4,
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_and_targets() {
        assert!(Extension::parse("1001").is_ok());
        assert_eq!(
            Extension::parse("").expect_err("empty").code,
            ErrorCode::AuthFailed
        );
        assert!(Extension::parse("10 01").is_err());
        assert_eq!(
            DialTarget::parse(" +1555*12# ").expect("ok").uri_user(),
            "+1555*12%23"
        );
        assert_eq!(
            DialTarget::parse("").expect_err("empty").code,
            ErrorCode::InvalidNumber
        );
        assert!(DialTarget::parse("1002@evil.example").is_err());
        assert!(DialTarget::parse("1002>\r\nVia: x").is_err());
        assert!(DialTarget::parse(&"9".repeat(65)).is_err());
    }

    #[test]
    fn dtmf_digits_and_call_uuids() {
        let d = DtmfDigits::parse("12*#ab", None).expect("ok");
        assert_eq!((d.digits.as_str(), d.duration.as_millis()), ("12*#AB", 100));
        for (digits, ms) in [
            ("", None),
            ("12x", None),
            ("1", Some(10)),
            ("1", Some(5000)),
        ] {
            assert_eq!(
                DtmfDigits::parse(digits, ms).expect_err(digits).code,
                ErrorCode::InvalidDtmf
            );
        }
        assert!(DtmfDigits::parse(&"1".repeat(33), None).is_err());
        let uuid = new_call_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(parse_call_uuid(&uuid), Ok(uuid.clone()));
        assert!(parse_call_uuid("a b").is_err() && parse_call_uuid("x\r\nVia: y").is_err());
    }

    #[test]
    fn headers_need_an_allowed_prefix_and_clean_values() {
        let prefixes = vec!["X-".to_string()];
        let mut raw = BTreeMap::new();
        raw.insert("X-Call-UUID".to_string(), "abc".to_string());
        assert_eq!(
            ExtraHeaders::parse(&raw, &prefixes).expect("ok").into_vec(),
            vec![("X-Call-UUID".into(), "abc".into())]
        );
        for (name, value) in [
            ("Via", "x"),
            ("X-", "x"),
            ("X-Ok", "a\r\nVia: evil"),
            ("X Bad", "x"),
        ] {
            let mut raw = BTreeMap::new();
            raw.insert(name.to_string(), value.to_string());
            assert_eq!(
                ExtraHeaders::parse(&raw, &prefixes).expect_err(name).code,
                ErrorCode::InvalidHeader,
                "{name}"
            );
        }
        let many: BTreeMap<String, String> = (0..17)
            .map(|i| (format!("X-H{i}"), "v".to_string()))
            .collect();
        assert!(ExtraHeaders::parse(&many, &prefixes).is_err());
    }
}
