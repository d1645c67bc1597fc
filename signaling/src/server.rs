//! Messages the gateway sends.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, RequestId};

/// Every message the gateway may send, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The PBX accepted the agent's registration.
    Registered(Registered),
    /// The agent is no longer registered.
    Unregistered(Unregistered),
    /// The PBX refused the registration or could not be reached.
    RegistrationFailed(RegistrationFailed),
    /// A call for the agent: answer with `answer` (the offer is in `sdp`) or `reject`.
    IncomingCall(IncomingCall),
    /// A call was put on hold.
    CallHeld(CallHold),
    /// A held call was resumed.
    CallResumed(CallHold),
    /// Progress of a transfer (NOTIFY sipfrag from the PBX).
    TransferProgress(TransferProgress),
    /// The far end sent a DTMF digit (RFC 4733 or SIP INFO).
    DtmfReceived(DtmfReceived),
    /// A SIP MESSAGE arrived for the agent.
    MessageReceived(MessageReceived),
    /// Reply to `refresh_token`: the session now runs on the new token.
    TokenRefreshed(TokenRefreshed),
    /// The session's token expires soon: send `refresh_token` with a fresh one.
    TokenExpiring(TokenExpiring),
    /// The session's token expired without a refresh: no new activity is accepted; the
    /// session ends (close code 4002) once its last call has ended.
    TokenExpired(TokenExpired),
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
    /// Send it back in the next `hello.resume_token` after a drop or reload to keep this
    /// session's calls and registration; absent when the gateway keeps no sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// The gateway node holding the session, for load balancers that route a reconnecting
    /// client back to it (the token carries it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Present when the hello resumed a kept session: what survived the drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
    /// Token sessions: the token's `exp` (Unix seconds); refresh before it with
    /// `refresh_token`. Absent for password sessions, which do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<u64>,
}

/// Reply to `refresh_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRefreshed {
    /// Echo of the request's id.
    pub request_id: RequestId,
    /// The new token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Warning ahead of the session token's expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExpiring {
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// The session's token expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExpired {
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
    /// Calls still up; they go on until hung up, then the session closes.
    pub active_calls: u32,
}

/// What a resumed session still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resumed {
    /// Whether the agent is still registered with the PBX.
    pub registered: bool,
    /// The calls still up; each `calling`/`answering`/`answered` one needs a `renegotiate`
    /// (a new peer connection) to hear and be heard again. An `incoming` one is offered
    /// again by an `incoming_call` right after the welcome.
    pub calls: Vec<ResumedCall>,
}

/// One call kept across the drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumedCall {
    /// The call's id, unchanged.
    pub call_id: String,
    /// The CRM's id for the call (`X-Call-UUID`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_uuid: Option<String>,
    /// Who placed it.
    pub direction: CallDirection,
    /// The other party: the dialled number (outbound) or the caller (inbound).
    pub peer: String,
    /// Where the call stands.
    pub state: ResumedCallState,
    /// The agent put it on hold.
    pub held: bool,
    /// The far end put it on hold.
    pub remote_held: bool,
    /// The agent's audio is muted at the gateway.
    pub muted: bool,
}

/// Direction of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// Placed by the agent.
    Outbound,
    /// Offered to the agent by the PBX.
    Inbound,
}

/// Where a resumed call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumedCallState {
    /// Outbound, no answer yet (ringing or early media).
    Calling,
    /// Inbound, waiting for the agent's `answer` or `reject` (its `incoming_call` follows).
    Incoming,
    /// Inbound, answered, waiting for the PBX's ACK.
    Answering,
    /// Talking (possibly on hold).
    Answered,
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
    /// For `call`: the call UUID sent to the PBX (the browser's, or one callgate generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_uuid: Option<String>,
}

impl Ack {
    /// A bare ack carrying only the request id.
    pub fn plain(request_id: RequestId) -> Self {
        Ack {
            request_id,
            call_id: None,
            sdp: None,
            call_uuid: None,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Media quality of an answered call (both legs and a MOS estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<CallQuality>,
}

/// Registration accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// Seconds the PBX granted; callgate refreshes before they run out.
    pub expires: u32,
}

/// Registration ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unregistered {
    /// Why: `requested`, `refresh_failed`, `shutdown`.
    pub reason: String,
}

/// Registration refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationFailed {
    /// The PBX's final status (401, 403, 404, 408, 503, …); absent when it was unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Reason phrase or explanation.
    pub reason: String,
    /// Whether callgate keeps retrying with back-off (true for timeouts and 5xx).
    pub retrying: bool,
}

/// An inbound call for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingCall {
    /// The new call's id.
    pub call_id: String,
    /// Caller number (From user part).
    pub from: String,
    /// Caller display name, if the PBX sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Called number (To user part).
    pub to: String,
    /// The INVITE's headers whose names carry a configured prefix (e.g. `X-`), for the CRM.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// callgate's WebRTC SDP offer; reply with `answer` carrying the browser's answer.
    pub sdp: String,
}

/// Which side changed the hold state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldBy {
    /// The agent (`hold` / `unhold`).
    Agent,
    /// The far end (a re-INVITE from the PBX).
    Remote,
}

/// Hold state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallHold {
    /// The call.
    pub call_id: String,
    /// Who held or resumed it.
    pub by: HoldBy,
}

/// Transfer progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferProgress {
    /// The transferred call.
    pub call_id: String,
    /// Status of the transfer target's call (100, 180, 200, 486, …).
    pub sip_status: u16,
    /// True on the last report: 2xx means transferred (the agent's call then ends).
    pub done: bool,
}

/// One DTMF digit from the far end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfReceived {
    /// The call.
    pub call_id: String,
    /// `0-9 * # A-D`.
    pub digit: String,
}

/// A SIP MESSAGE for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageReceived {
    /// Sender number.
    pub from: String,
    /// Sender display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The text.
    pub text: String,
    /// Its MIME type.
    pub content_type: String,
}

/// Quality of one media leg over the call, as measured by callgate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegQuality {
    /// RTP packets callgate received on this leg.
    pub packets: u64,
    /// Packets the sender sent that never arrived (RFC 3550 expected − received).
    pub lost: u64,
    /// Interarrival jitter in milliseconds (RFC 3550).
    pub jitter_ms: f64,
    /// Round-trip time from RTCP on this leg, when it could be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// Quality of a call on both legs with an E-model MOS estimate (ITU-T G.107).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallQuality {
    /// The browser's leg (received from the browser).
    pub webrtc: LegQuality,
    /// The PBX's leg (received from the PBX).
    pub sip: LegQuality,
    /// Estimated mean opinion score, 1.0-4.5, from the worse leg.
    pub mos: f64,
}
