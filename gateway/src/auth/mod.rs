//! Browser login: which `hello` modes are accepted, token verification ([`token`], pure) and
//! the SIP credential lookup for token logins ([`credentials`], edge). The session asks this
//! module and only keeps the outcome: an extension, its digest credentials and the token's
//! dial scope.

pub mod credentials;
pub mod replay;
pub mod token;

use signaling::ErrorCode;

use std::sync::Arc;

use self::credentials::{CredentialSource, CredentialsFile, LookupError, SipCredentials};
use self::token::{TokenClaims, TokenError, TokenVerifier};
use crate::config::AuthSettings;
use crate::http_client::HttpClient;

/// Every `reason` label of `callgate_auth_failures_total`, for the metrics catalogue.
pub const FAILURE_REASONS: &[&str] = &[
    "malformed",
    "algorithm",
    "signature",
    "missing_exp",
    "expired",
    "not_yet_valid",
    "issuer",
    "audience",
    "claims",
    "extension_mismatch",
    "unknown_extension",
    "lookup_failed",
    "mode_disabled",
    "no_credentials_source",
    "missing_jti",
    "replayed",
];

/// The login policy and the means to carry it out, built once at start-up.
pub struct Authenticator {
    password_mode: bool,
    verifier: Option<TokenVerifier>,
    credentials: Option<CredentialSource>,
    /// `auth.single_use_tokens`: the `jti`s already accepted.
    replay: Option<replay::ReplayCache>,
}

/// A refused login: the browser's code, its message, and the metric reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefusal {
    /// What the browser is told.
    pub code: ErrorCode,
    /// Human detail (never the token or a password).
    pub message: String,
    /// The `reason` label of `callgate_auth_failures_total`.
    pub reason: &'static str,
}

impl LoginRefusal {
    fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> LoginRefusal {
        LoginRefusal {
            code,
            message: message.into(),
            reason,
        }
    }
}

impl From<TokenError> for LoginRefusal {
    fn from(e: TokenError) -> LoginRefusal {
        let code = if e.is_expiry() {
            ErrorCode::TokenExpired
        } else {
            ErrorCode::AuthFailed
        };
        LoginRefusal::new(code, e.reason(), e.to_string())
    }
}

impl Authenticator {
    /// Builds the policy from the settings (reads the key and credentials files); `client`
    /// is needed only for an HTTP credential lookup.
    pub fn new(settings: &AuthSettings, client: Option<HttpClient>) -> Result<Self, String> {
        let verifier = if settings.token_mode() {
            let public_key = match &settings.token_public_key_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    format!(
                        "cannot read auth.token_public_key_file {}: {e}",
                        path.display()
                    )
                })?),
                None => None,
            };
            Some(
                TokenVerifier::new(
                    settings.token_secret.as_deref().map(str::as_bytes),
                    public_key.as_deref(),
                    settings.token_issuer.as_deref(),
                    settings.token_audience.as_deref(),
                    settings.token_leeway_secs,
                )
                .map_err(|e| format!("auth: {e}"))?,
            )
        } else {
            None
        };
        let credentials = match (&settings.credentials_file, &settings.credentials_url) {
            (Some(path), _) => Some(CredentialSource::File(credentials::CredentialsFile::load(
                path,
            )?)),
            (None, Some(url)) => Some(CredentialSource::Http(Box::new(credentials::HttpLookup {
                client: {
                    if url.starts_with("http://") {
                        tracing::warn!(
                            "auth.credentials_url is plain http: SIP passwords and the bearer \
                             token cross the network unencrypted; use https"
                        );
                    }
                    client.ok_or("auth.credentials_url needs the HTTP client")?
                },
                url: url.clone(),
                bearer: settings.credentials_bearer.clone(),
                timeout: std::time::Duration::from_millis(settings.credentials_timeout_ms),
            }))),
            (None, None) => None,
        };
        Ok(Authenticator {
            password_mode: settings.password_mode,
            verifier,
            credentials,
            replay: settings
                .single_use_tokens
                .then(replay::ReplayCache::default),
        })
    }

    /// `jti`s held by the single-use replay cache (0 when single use is off).
    pub fn replay_entries(&self) -> usize {
        self.replay.as_ref().map_or(0, replay::ReplayCache::len)
    }

    /// The credentials file, when that is the source (for its reload task).
    pub fn credentials_file(&self) -> Option<Arc<CredentialsFile>> {
        match &self.credentials {
            Some(CredentialSource::File(file)) => Some(file.clone()),
            _ => None,
        }
    }

    /// Checks that a `sip_credentials` hello may be used at all.
    pub fn check_password_mode(&self) -> Result<(), LoginRefusal> {
        if self.password_mode {
            Ok(())
        } else {
            Err(LoginRefusal::new(
                ErrorCode::AuthModeDisabled,
                "mode_disabled",
                "this gateway does not accept SIP passwords from the page: log in with a token",
            ))
        }
    }

    /// Verifies a token hello (or refresh) at `now` (Unix seconds): the token itself, then
    /// that the extension the page names (if any) is the token's subject, then, with single
    /// use on, that its `jti` was not used before (which uses it up).
    pub fn verify_token(
        &self,
        token: &str,
        extension: Option<&str>,
        now: u64,
    ) -> Result<TokenClaims, LoginRefusal> {
        let Some(verifier) = &self.verifier else {
            return Err(LoginRefusal::new(
                ErrorCode::AuthModeDisabled,
                "mode_disabled",
                "this gateway has no token key configured: log in with the SIP password",
            ));
        };
        let claims = verifier.verify(token, now)?;
        if extension.is_some_and(|extension| extension != claims.subject) {
            return Err(LoginRefusal::new(
                ErrorCode::AuthFailed,
                "extension_mismatch",
                "the extension does not match the token's subject",
            ));
        }
        if let Some(cache) = &self.replay {
            let forget_after = claims.expires_at.saturating_add(verifier.leeway_secs());
            cache
                .consume(claims.jti.as_deref(), forget_after, now)
                .map_err(|e| match e {
                    replay::ReplayError::Missing => LoginRefusal::new(
                        ErrorCode::AuthFailed,
                        "missing_jti",
                        "single-use tokens are required: the token has no usable jti claim",
                    ),
                    replay::ReplayError::Replayed => LoginRefusal::new(
                        ErrorCode::TokenReplayed,
                        "replayed",
                        "this token was used before: fetch a fresh one",
                    ),
                })?;
        }
        Ok(claims)
    }

    /// Finds the SIP credentials of a token login's extension.
    pub async fn credentials(&self, extension: &str) -> Result<SipCredentials, LoginRefusal> {
        let Some(source) = &self.credentials else {
            return Err(LoginRefusal::new(
                ErrorCode::Internal,
                "no_credentials_source",
                "no credentials source is configured",
            ));
        };
        source.lookup(extension).await.map_err(|e| match e {
            LookupError::Unknown => LoginRefusal::new(
                ErrorCode::AuthFailed,
                "unknown_extension",
                "callgate has no SIP credentials for this extension",
            ),
            LookupError::Unavailable(detail) => LoginRefusal::new(
                ErrorCode::CredentialsUnavailable,
                "lookup_failed",
                format!("the SIP credential lookup failed ({detail}); try again"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::token::TokenError;
    use super::*;

    #[test]
    fn every_token_error_reason_is_catalogued() {
        for e in [
            TokenError::Malformed,
            TokenError::Algorithm,
            TokenError::Signature,
            TokenError::MissingExpiry,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::Issuer,
            TokenError::Audience,
            TokenError::Claims,
        ] {
            assert!(FAILURE_REASONS.contains(&e.reason()), "{e:?}");
            let refusal = LoginRefusal::from(e);
            let expected = if e.is_expiry() {
                ErrorCode::TokenExpired
            } else {
                ErrorCode::AuthFailed
            };
            assert_eq!(refusal.code, expected);
        }
    }
}
