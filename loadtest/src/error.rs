//! Why a simulated-browser operation failed, classified so a test can tell "the gateway said
//! no" from "the gateway misbehaved" from "our own peer broke".

use std::time::Duration;

use signaling::{ErrorCode, ErrorMessage, ServerMessage};

/// Result of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed operation of a simulated browser or call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebSocket could not be opened or broke while in use.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The gateway closed the WebSocket (close frame or end of stream).
    #[error("websocket closed by the gateway{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// Close code and reason from the close frame, if one was sent.
        reason: Option<String>,
    },
    /// Nothing arrived (or a condition did not hold) within the allowed time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// How long we waited.
        after: Duration,
        /// What we were waiting for.
        what: &'static str,
    },
    /// The gateway answered a request with an `error` message.
    #[error("gateway refused with {}: {}", .0.code, .0.message)]
    Refused(Box<ErrorMessage>),
    /// The gateway sent a frame that is not a valid `ServerMessage` (the text is kept).
    #[error("gateway sent an unreadable frame: {0}")]
    BadFrame(String),
    /// The gateway sent a binary frame; the protocol has none.
    #[error("gateway sent a binary frame")]
    BinaryFrame,
    /// The gateway sent a valid message that is wrong at this point of the exchange.
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<ServerMessage>),
    /// The gateway accepted the call (so it exists there: hang it up) but its ack carried no
    /// usable SDP answer.
    #[error("call {call_id}: bad SDP answer: {reason}")]
    BadAnswer {
        /// The call the gateway created.
        call_id: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The `call` ack lacked its `call_id` or `sdp`.
    #[error("the call ack lacks call_id or sdp: {0:?}")]
    IncompleteAck(Box<signaling::Ack>),
    /// str0m rejected an operation on our own peer.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// A socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A DTMF digit outside `0-9 * # A-D`.
    #[error("not a DTMF digit: {0:?}")]
    InvalidDigit(char),
    /// The call's media task has stopped, so the operation cannot run.
    #[error("media stopped: {0}")]
    MediaStopped(String),
}

impl Error {
    /// The gateway's error code, when the gateway refused; lets tests assert in one line.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused(m) => Some(m.code),
            _ => None,
        }
    }
}
