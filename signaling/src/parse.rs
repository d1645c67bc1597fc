//! Turning one text frame into a [`ClientMessage`], with an error precise enough to answer.

use crate::{ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, RequestId};

/// Why a frame could not be read, with the request id when it was recoverable so the
/// error reply can still be correlated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The id found in the frame, if any.
    pub request_id: Option<RequestId>,
    /// Stable code for the reply.
    pub code: ErrorCode,
    /// Human detail (serde's message for field errors).
    pub message: String,
}

/// Parses one text frame. Never panics, whatever the input.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError {
            request_id: None,
            code: ErrorCode::MessageTooLarge,
            message: format!("frame of {} bytes exceeds {MAX_MESSAGE_BYTES}", text.len()),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError {
        request_id: None,
        code: ErrorCode::BadJson,
        message: format!("not valid JSON: {e}"),
    })?;
    let Some(object) = value.as_object() else {
        return Err(ParseError {
            request_id: None,
            code: ErrorCode::BadJson,
            message: "a message must be a JSON object".into(),
        });
    };
    let request_id = object.get("request_id").and_then(serde_json::Value::as_u64);
    let known = match object.get("type").and_then(serde_json::Value::as_str) {
        Some(kind) => KNOWN_TYPES.contains(&kind),
        None => {
            return Err(ParseError {
                request_id,
                code: ErrorCode::UnknownType,
                message: "missing string field \"type\"".into(),
            });
        }
    };
    if !known {
        return Err(ParseError {
            request_id,
            code: ErrorCode::UnknownType,
            message: format!("unknown message type {}", object["type"]),
        });
    }
    serde_json::from_value(value).map_err(|e| ParseError {
        request_id,
        code: ErrorCode::InvalidMessage,
        message: e.to_string(),
    })
}

/// The `type` tags of [`ClientMessage`]; a test keeps this list in step with the enum.
pub(crate) const KNOWN_TYPES: &[&str] = &[
    "hello",
    "call",
    "hangup",
    "ping",
    "register",
    "unregister",
    "answer",
    "reject",
    "hold",
    "unhold",
    "mute",
    "unmute",
    "transfer",
    "dtmf",
    "message",
    "renegotiate",
    "refresh_token",
];
