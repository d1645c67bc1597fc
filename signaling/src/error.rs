//! The one table of error codes (design.md §4). The JS client maps each to localized text.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object.
    BadJson,
    /// The `type` tag is missing or names no known message.
    UnknownType,
    /// A field is missing, has the wrong type, or an unknown field is present.
    InvalidMessage,
    /// The frame exceeds the size limit.
    MessageTooLarge,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// `hello` names a protocol version this gateway does not speak.
    UnsupportedProtocol,
    /// A request other than `hello` arrived before the session was opened.
    NotAuthenticated,
    /// A second `hello` on an open session.
    AlreadyAuthenticated,
    /// Credentials are missing, malformed or wrong: a forged or unverifiable token, an
    /// extension callgate has no SIP credentials for.
    AuthFailed,
    /// The token's `exp` has passed (or its `nbf` is still ahead): fetch a fresh token from
    /// the CRM and say `hello` again. Also the refusal of new activity (call, transfer,
    /// register, message, refresh) on a session whose token expired.
    TokenExpired,
    /// The token was used before and `auth.single_use_tokens` is on: fetch a fresh one.
    TokenReplayed,
    /// A `refresh_token` token names another extension than the session's (`sub` differs):
    /// the page mixed up agents; the session keeps its current token.
    TokenMismatch,
    /// The gateway does not accept this `auth.mode` (e.g. `sip_credentials` with
    /// `auth.password_mode = false`).
    AuthModeDisabled,
    /// The CRM's credential lookup failed or timed out; the login may be retried.
    CredentialsUnavailable,
    /// The dialled number is empty or contains characters that cannot be dialled.
    InvalidNumber,
    /// An extra SIP header is not allowed (name without an allowed prefix, or bad characters).
    InvalidHeader,
    /// The SDP offer cannot be parsed or carries no audio.
    InvalidSdp,
    /// The SDP offer has audio but neither PCMU nor PCMA: callgate does not transcode.
    NoCommonCodec,
    /// No call with that `call_id` exists in this session.
    UnknownCall,
    /// The request does not fit the call's state (answer a call that is not ringing, hold
    /// an unanswered call, a second hold, …).
    InvalidState,
    /// DTMF digits outside `0-9 * # A-D`, more than 32 of them, or a bad duration.
    InvalidDtmf,
    /// The agent already has the maximum number of simultaneous calls.
    TooManyCalls,
    /// The agent placed more calls in the last minute than `limits.calls_per_minute` allows.
    RateLimited,
    /// The dial plan does not let this agent call that number.
    NumberNotAllowed,
    /// The gateway is out of media ports or otherwise at capacity.
    Overloaded,
    /// The gateway is shutting down and takes no new calls.
    ShuttingDown,
    /// The PBX refused a request made on the agent's behalf (e.g. a MESSAGE); the message
    /// carries its status.
    PbxRefused,
    /// A bug or unexpected failure inside callgate; the message says what.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order; used by docs and the JS client's message table test.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::BinaryNotSupported,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::TokenReplayed,
        ErrorCode::TokenMismatch,
        ErrorCode::AuthModeDisabled,
        ErrorCode::CredentialsUnavailable,
        ErrorCode::InvalidNumber,
        ErrorCode::InvalidHeader,
        ErrorCode::InvalidSdp,
        ErrorCode::NoCommonCodec,
        ErrorCode::UnknownCall,
        ErrorCode::InvalidState,
        ErrorCode::InvalidDtmf,
        ErrorCode::TooManyCalls,
        ErrorCode::RateLimited,
        ErrorCode::NumberNotAllowed,
        ErrorCode::Overloaded,
        ErrorCode::ShuttingDown,
        ErrorCode::PbxRefused,
        ErrorCode::Internal,
    ];

    /// The wire spelling, e.g. `"bad_json"`; also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenReplayed => "token_replayed",
            ErrorCode::TokenMismatch => "token_mismatch",
            ErrorCode::AuthModeDisabled => "auth_mode_disabled",
            ErrorCode::CredentialsUnavailable => "credentials_unavailable",
            ErrorCode::InvalidNumber => "invalid_number",
            ErrorCode::InvalidHeader => "invalid_header",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoCommonCodec => "no_common_codec",
            ErrorCode::UnknownCall => "unknown_call",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::InvalidDtmf => "invalid_dtmf",
            ErrorCode::TooManyCalls => "too_many_calls",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NumberNotAllowed => "number_not_allowed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::PbxRefused => "pbx_refused",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
