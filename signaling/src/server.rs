//! Messages the gateway sends.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, RequestId};

/// Every message the gateway may send, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Reply to `hello`: the session is open.
    Welcome(Welcome),
    /// Positive reply to any other request.
    Ack(Ack),
    /// Negative reply to a request, or a problem not tied to one.
    Error(ErrorMessage),
    /// The far end is alerting (SIP 180, or 183 without media).
    CallRinging(CallRinging),
    /// The far end sends early media (SIP 183 with SDP): ringback or announcements play.
    CallEarlyMedia(CallEarlyMedia),
    /// The far end answered (SIP 200 OK to the INVITE).
    CallAnswered(CallAnswered),
    /// The call is over; nothing more will be sent for this `call_id`.
    CallEnded(CallEnded),
}

/// Reply to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Echo of the hello's id.
    pub request_id: RequestId,
    /// Protocol version in force for this session.
    pub protocol: u32,
    /// Gateway-assigned session id, quoted in logs for support.
    pub session_id: String,
    /// Gateway name and version, e.g. `"callgate/0.1.0"`.
    pub server: String,
}

/// Positive reply to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Echo of the request's id.
    pub request_id: RequestId,
    /// For `call`: the id of the new call, used by every later event and request about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// For `call`: the gateway's SDP answer to the browser's offer. Apply it at once; ICE and
    /// DTLS complete while the far end is still ringing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
}

impl Ack {
    /// A bare ack carrying only the request id.
    pub fn plain(request_id: RequestId) -> Self {
        Ack {
            request_id,
            call_id: None,
            sdp: None,
        }
    }
}

/// A refusal or failure, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    /// The request this answers, when it could be read from the frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The call concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Stable code; clients branch on this, never on `message`.
    pub code: ErrorCode,
    /// Human-readable English detail for logs and developers.
    pub message: String,
}

/// SIP 180 (or 183 without SDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRinging {
    /// The call.
    pub call_id: String,
    /// The provisional SIP status that triggered it (180 or 183).
    pub sip_status: u16,
}

/// SIP 183 with SDP: audio from the far end is flowing before answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallEarlyMedia {
    /// The call.
    pub call_id: String,
    /// The provisional SIP status (183, sometimes 180 with SDP).
    pub sip_status: u16,
}

/// SIP 200 OK: the call is established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallAnswered {
    /// The call.
    pub call_id: String,
}

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The agent (browser) hung up or left.
    Agent,
    /// The far end: a SIP failure response, a BYE or a CANCEL from the PBX.
    Remote,
    /// callgate itself: media timeout, transport failure, internal error, shutdown.
    Gateway,
}

/// The end of a call with its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallEnded {
    /// The call.
    pub call_id: String,
    /// Which side ended it.
    pub ended_by: EndedBy,
    /// Stable snake_case cause, e.g. `normal_clearing`, `busy`, `no_answer`, `cancelled`,
    /// `media_timeout` (the full list is in docs/protocol.md).
    pub cause: String,
    /// SIP status of the final response when the call failed on the SIP side (e.g. 486).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Reason phrase that came with `sip_status`, or a human explanation.
    pub reason: String,
    /// Whether the call had been answered before it ended.
    pub answered: bool,
}
