//! callgate's browser protocol, version 1: JSON text frames over one WebSocket at `/ws`.
//!
//! Every frame is one object with a flat `"type"` tag. Requests from the browser carry a
//! `request_id`; each request gets exactly one reply, an [`ServerMessage::Ack`] or an
//! [`ServerMessage::Error`] echoing that id. Events (call progress) carry the `call_id` the
//! gateway assigned in the ack of the `call` request.
//!
//! This crate is pure data: the gateway, the load generator and the JS client's type
//! declarations all derive from it, so the three cannot drift apart. See
//! `docs/protocol.md` for every message with an example.

mod client;
mod error;
mod parse;
mod server;

pub use client::{
    AnswerRequest, Auth, CallRef, CallRequest, ClientMessage, DtmfRequest, HangupRequest, Hello,
    MessageRequest, RefreshTokenRequest, RejectReason, RejectRequest, RenegotiateRequest,
    RequestId, TransferRequest,
};
pub use error::ErrorCode;
pub use parse::{ParseError, parse_client_message};
pub use server::{
    Ack, CallAnswered, CallDirection, CallEarlyMedia, CallEnded, CallHold, CallQuality,
    CallRinging, DtmfReceived, EndedBy, ErrorMessage, HoldBy, IncomingCall, LegQuality,
    MessageReceived, Registered, RegistrationFailed, Resumed, ResumedCall, ResumedCallState,
    ServerMessage, TokenExpired, TokenExpiring, TokenRefreshed, TransferProgress, Unregistered,
    Welcome,
};

/// The protocol version this build speaks; a `hello` naming another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text frame the gateway accepts; an SDP offer from a browser is ~3-6 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests;
