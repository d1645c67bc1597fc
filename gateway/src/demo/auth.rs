//! HTTP Digest (RFC 2617 / RFC 3261 §22.4) for the demo PBX: challenges with
//! fresh nonces and verification of the retry.
//!
//! The `Authorization` header is parsed here rather than with rsipstack's
//! typed header: that one stores `nc` as a `u8` and its digest helper formats
//! `nc` in decimal, so a client counting past 9 (or 255) would be rejected.
//! MD5 itself comes from `rsipstack::dialog::authenticate::compute_digest`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rsipstack::dialog::authenticate::compute_digest;
use rsipstack::sip::Method;
use rsipstack::sip::headers::auth::Algorithm;
use std::time::Instant;

/// The realm every challenge names.
pub(crate) const REALM: &str = "callgate-demo";
/// How long an issued nonce is accepted.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(300);
/// Bound on outstanding nonces (each challenge issues one).
pub(crate) const MAX_NONCES: usize = 4096;
/// Longest `Authorization` value we parse.
const MAX_HEADER_LEN: usize = 4096;

/// The parameters of a `Digest` credentials header we need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DigestCredentials {
    pub(crate) username: String,
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) uri: String,
    pub(crate) response: String,
    pub(crate) algorithm: Option<String>,
    pub(crate) qop: Option<String>,
    pub(crate) nc: Option<String>,
    pub(crate) cnonce: Option<String>,
}

/// What to answer a request given its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// Credentials verified (or accepted: no password configured).
    Accepted,
    /// Send 401 with a fresh nonce; `stale` when only the nonce was unknown.
    Challenge {
        /// RFC 2617 `stale=true`: retry with the new nonce, same password.
        stale: bool,
    },
    /// The header is not a well-formed Digest response (→ 400).
    Malformed(&'static str),
    /// Well-formed but wrong user or password (→ 403).
    Forbidden(&'static str),
}

/// Parse `Digest k=v, k="v", ...`. Returns None for anything else; never panics.
pub(crate) fn parse_digest(value: &str) -> Option<DigestCredentials> {
    if value.len() > MAX_HEADER_LEN {
        return None;
    }
    let value = value.trim_start();
    let (scheme, mut rest) = value.split_at(value.find(|c: char| c.is_ascii_whitespace())?);
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut creds = DigestCredentials::default();
    let mut seen = 0usize;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        seen += 1;
        if seen > 32 {
            return None;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let val;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut close = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        close = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &quoted[close? + 1..];
            val = out;
        } else {
            let end = rest
                .find(|c: char| c == ',' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            val = rest[..end].to_string();
            rest = &rest[end..];
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut creds.username,
            "realm" => &mut creds.realm,
            "nonce" => &mut creds.nonce,
            "uri" => &mut creds.uri,
            "response" => &mut creds.response,
            "algorithm" => creds.algorithm.get_or_insert_with(String::new),
            "qop" => creds.qop.get_or_insert_with(String::new),
            "nc" => creds.nc.get_or_insert_with(String::new),
            "cnonce" => creds.cnonce.get_or_insert_with(String::new),
            _ => continue,
        };
        if !slot.is_empty() {
            return None; // duplicated parameter
        }
        *slot = val;
    }
    Some(creds)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Structural checks of RFC 2617 §3.2.2 for the MD5 / qop=auth we offer.
fn well_formed(c: &DigestCredentials) -> Result<(), &'static str> {
    if c.username.is_empty() || c.nonce.is_empty() || c.uri.is_empty() {
        return Err("missing username, nonce or uri");
    }
    if !is_hex(&c.response, 32) {
        return Err("response is not 32 hex digits");
    }
    if let Some(alg) = &c.algorithm
        && !alg.eq_ignore_ascii_case("MD5")
    {
        return Err("unsupported algorithm");
    }
    match c.qop.as_deref() {
        None => Ok(()),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let nc_ok = c.nc.as_deref().is_some_and(|nc| is_hex(nc, 8));
            let cnonce_ok = c.cnonce.as_deref().is_some_and(|cn| !cn.is_empty());
            if nc_ok && cnonce_ok {
                Ok(())
            } else {
                Err("qop=auth without valid nc/cnonce")
            }
        }
        Some(_) => Err("unsupported qop"),
    }
}

/// The expected `response` for `c` (MD5; qop=auth or RFC 2069 style).
pub(crate) fn expected_response(c: &DigestCredentials, password: &str, method: &Method) -> String {
    // compute_digest renders nc in decimal; splice the raw
    // `nonce:nc:cnonce:qop` into its nonce slot and call it without qop,
    // which yields exactly MD5(HA1:nonce:nc:cnonce:qop:HA2).
    let nonce = match (&c.qop, &c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => format!("{}:{nc}:{cnonce}:{qop}", c.nonce),
        _ => c.nonce.clone(),
    };
    compute_digest(
        &c.username,
        password,
        &c.realm,
        &nonce,
        method,
        &c.uri,
        Algorithm::Md5,
        None,
    )
}

/// Issues nonces and checks credentials against them.
pub(crate) struct DigestAuth {
    password: Option<String>,
    nonces: Mutex<HashMap<String, Instant>>,
}

impl DigestAuth {
    /// `password`: None accepts any well-formed response naming our nonce.
    pub(crate) fn new(password: Option<String>) -> Self {
        Self {
            password,
            nonces: Mutex::new(HashMap::new()),
        }
    }

    /// A `WWW-Authenticate` value with a fresh nonce.
    pub(crate) fn challenge(&self, now: Instant, stale: bool) -> String {
        let nonce = format!("{:032x}", rand::random::<u128>());
        {
            let mut nonces = self
                .nonces
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            nonces.retain(|_, issued| now.saturating_duration_since(*issued) < NONCE_TTL);
            if nonces.len() >= MAX_NONCES
                && let Some(oldest) = nonces
                    .iter()
                    .min_by_key(|(_, issued)| **issued)
                    .map(|(n, _)| n.clone())
            {
                nonces.remove(&oldest);
            }
            nonces.insert(nonce.clone(), now);
        }
        let stale = if stale { ", stale=true" } else { "" };
        format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{stale}")
    }

    fn nonce_is_fresh(&self, nonce: &str, now: Instant) -> bool {
        let nonces = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nonces
            .get(nonce)
            .is_some_and(|issued| now.saturating_duration_since(*issued) < NONCE_TTL)
    }

    /// Decide on the `Authorization` values of a request. `expected_user`,
    /// when given, must be the digest username (REGISTER: the To user, so
    /// nobody registers someone else's extension).
    pub(crate) fn check(
        &self,
        method: &Method,
        authorizations: &[&str],
        expected_user: Option<&str>,
        now: Instant,
    ) -> AuthOutcome {
        if authorizations.is_empty() {
            return AuthOutcome::Challenge { stale: false };
        }
        let parsed: Vec<DigestCredentials> = authorizations
            .iter()
            .filter_map(|v| parse_digest(v))
            .collect();
        let Some(creds) = parsed.iter().find(|c| c.realm == REALM) else {
            return if parsed.is_empty() {
                AuthOutcome::Malformed("unparseable Authorization")
            } else {
                // Credentials for another realm: ask for ours.
                AuthOutcome::Challenge { stale: false }
            };
        };
        if let Err(why) = well_formed(creds) {
            return AuthOutcome::Malformed(why);
        }
        if !self.nonce_is_fresh(&creds.nonce, now) {
            return AuthOutcome::Challenge { stale: true };
        }
        if expected_user.is_some_and(|user| creds.username != user) {
            return AuthOutcome::Forbidden("digest username does not match the user");
        }
        if let Some(password) = &self.password
            && !expected_response(creds, password, method).eq_ignore_ascii_case(&creds.response)
        {
            return AuthOutcome::Forbidden("wrong password");
        }
        AuthOutcome::Accepted
    }

    /// Drop expired nonces (housekeeping).
    pub(crate) fn purge(&self, now: Instant) {
        let mut nonces = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nonces.retain(|_, issued| now.saturating_duration_since(*issued) < NONCE_TTL);
    }
}
