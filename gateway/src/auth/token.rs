//! JWT verification for token-mode logins. Pure: the token, the configured keys and `now`
//! (Unix seconds) go in, typed claims or a typed refusal come out. No clock, no IO.
//!
//! The algorithm is pinned by the key: an HS256 token is checked only with the shared secret,
//! an ES256 token only with the public key. `alg: none`, any other algorithm and a token
//! whose header names a key kind that is not configured are refused, so neither alg
//! confusion (an ES256 public key used as an HMAC secret) nor unsigned tokens get through.
//! `jsonwebtoken` checks the signature, `iss` and `aud`; the time claims are checked here
//! against the `now` the caller passes.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::dialplan::Patterns;

/// Longest token accepted; a real one is well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most `dial` patterns one token may carry.
pub const MAX_DIAL_PATTERNS: usize = 64;

/// The keys and claim rules tokens are checked with.
pub struct TokenVerifier {
    hs256: Option<DecodingKey>,
    es256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// The extension the session acts as (`sub`).
    pub subject: String,
    /// The `dial` claim compiled; `None` when the token does not narrow the dial plan.
    pub dial: Option<Patterns>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `jti`, the token's unique id (for single-use tokens).
    pub jti: Option<String>,
}

/// Why a token was refused; each maps to one browser code and one metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, bad base64 or JSON, or over the size limit.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm callgate has no key for (`none`, RS256, HS256 with
    /// only an EC key configured, …).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// The signature does not verify with the configured key.
    #[error("the token's signature is invalid")]
    Signature,
    /// No `exp` claim: callgate only accepts short-lived tokens.
    #[error("the token has no exp claim")]
    MissingExpiry,
    /// `exp` (plus leeway) is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` is missing or does not name the configured audience (or names one when none is
    /// configured).
    #[error("the token's audience is not accepted")]
    Audience,
    /// `sub` is missing, or `dial` is not a list of valid patterns.
    #[error("the token's claims are invalid")]
    Claims,
}

impl TokenError {
    /// The `reason` label of `callgate_auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::MissingExpiry => "missing_exp",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::Claims => "claims",
        }
    }

    /// Whether a fresh token would fix it (the browser gets `token_expired`).
    pub fn is_expiry(self) -> bool {
        matches!(self, TokenError::Expired | TokenError::NotYetValid)
    }
}

/// The claims as they arrive; unknown claims are ignored.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    dial: Option<Vec<String>>,
    jti: Option<String>,
}

/// Why a verifier could not be built from the settings.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl TokenVerifier {
    /// Builds a verifier. `hs256_secret` enables HS256, `es256_public_pem` (a PEM
    /// `PUBLIC KEY`) enables ES256; at least one is needed. An empty `audience`/`issuer` is
    /// treated as unset.
    pub fn new(
        hs256_secret: Option<&[u8]>,
        es256_public_pem: Option<&[u8]>,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway_secs: u64,
    ) -> Result<TokenVerifier, KeyError> {
        let hs256 = match hs256_secret {
            Some(secret) if secret.len() < 32 => {
                return Err(KeyError(
                    "the HS256 token secret must be at least 32 bytes".into(),
                ));
            }
            Some(secret) => Some(DecodingKey::from_secret(secret)),
            None => None,
        };
        let es256 =
            match es256_public_pem {
                Some(pem) => Some(DecodingKey::from_ec_pem(pem).map_err(|e| {
                    KeyError(format!("the ES256 public key is not a PEM EC key: {e}"))
                })?),
                None => None,
            };
        if hs256.is_none() && es256.is_none() {
            return Err(KeyError("token mode needs a secret or a public key".into()));
        }
        let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Ok(TokenVerifier {
            hs256,
            es256,
            issuer: nonempty(issuer),
            audience: nonempty(audience),
            leeway_secs,
        })
    }

    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Verifies `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (alg, key) = match header_alg(token)?.as_str() {
            "HS256" => (Algorithm::HS256, self.hs256.as_ref()),
            "ES256" => (Algorithm::ES256, self.es256.as_ref()),
            // `none`, RS256, HS384, … are never accepted.
            _ => return Err(TokenError::Algorithm),
        };
        let key = key.ok_or(TokenError::Algorithm)?;
        let mut validation = Validation::new(alg);
        // Time claims are checked below against the caller's `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            // Without a configured audience an `aud` claim is not checked.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName
                    | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
                    ErrorKind::InvalidIssuer => TokenError::Issuer,
                    ErrorKind::InvalidAudience => TokenError::Audience,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::Issuer,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                        TokenError::Audience
                    }
                    ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => TokenError::Claims,
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        let expires_at = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if expires_at.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Err(TokenError::NotYetValid);
        }
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::Claims)?;
        let dial = match claims.dial {
            Some(patterns) if patterns.len() > MAX_DIAL_PATTERNS => {
                return Err(TokenError::Claims);
            }
            Some(patterns) => Some(Patterns::new(&patterns).map_err(|_| TokenError::Claims)?),
            None => None,
        };
        Ok(TokenClaims {
            subject,
            dial,
            expires_at,
            jti: claims.jti,
        })
    }
}

/// The header's `alg`, read before any key is chosen (so `alg: none` is named as such
/// rather than failing as an unknown value inside the library).
fn header_alg(token: &str) -> Result<String, TokenError> {
    use base64::Engine as _;
    let (header, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if rest.split('.').count() != 2 {
        return Err(TokenError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) => Ok(alg.clone()),
        _ => Err(TokenError::Algorithm),
    }
}

#[cfg(test)]
mod tests;
