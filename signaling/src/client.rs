//! Messages the browser sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Correlates a request with its single `ack` or `error` reply. Chosen by the client;
/// the gateway only echoes it.
pub type RequestId = u64;

/// Every message a browser may send, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Opens the session; must be the first message.
    Hello(Hello),
    /// Places an outbound call with the browser's WebRTC offer.
    Call(CallRequest),
    /// Ends a call: CANCEL before it is answered, BYE after.
    Hangup(HangupRequest),
    /// Application-level keepalive; answered with an ack.
    Ping {
        /// Echoed in the ack.
        request_id: RequestId,
    },
    /// Registers the agent's extension with the PBX so inbound calls reach this session.
    Register {
        /// Echoed in the reply.
        request_id: RequestId,
    },
    /// Removes the registration (also done when the WebSocket is gone for good).
    Unregister {
        /// Echoed in the reply.
        request_id: RequestId,
    },
    /// Answers an `incoming_call` with the browser's SDP answer.
    Answer(AnswerRequest),
    /// Refuses an `incoming_call`.
    Reject(RejectRequest),
    /// Puts a call on hold (re-INVITE sendonly); the PBX plays music on hold.
    Hold(CallRef),
    /// Resumes a held call.
    Unhold(CallRef),
    /// Stops relaying the agent's audio; the call state is unchanged.
    Mute(CallRef),
    /// Relays the agent's audio again.
    Unmute(CallRef),
    /// Transfers the far end: blind (`to`) or attended (`replaces_call_id`).
    Transfer(TransferRequest),
    /// Sends DTMF digits on a call.
    Dtmf(DtmfRequest),
    /// Sends a SIP MESSAGE (a text) to a number or extension.
    Message(MessageRequest),
    /// Reconnects a resumed call's audio: a new WebRTC offer (new peer connection) for a
    /// call the gateway kept while the WebSocket was gone; the ack carries the answer.
    Renegotiate(RenegotiateRequest),
    /// Replaces a token session's token before it expires (same extension); the reply is
    /// `token_refreshed` with the new expiry.
    RefreshToken(RefreshTokenRequest),
}

impl ClientMessage {
    /// The id the reply must echo.
    pub fn request_id(&self) -> RequestId {
        match self {
            ClientMessage::Hello(m) => m.request_id,
            ClientMessage::Call(m) => m.request_id,
            ClientMessage::Hangup(m) => m.request_id,
            ClientMessage::Ping { request_id }
            | ClientMessage::Register { request_id }
            | ClientMessage::Unregister { request_id } => *request_id,
            ClientMessage::Answer(m) => m.request_id,
            ClientMessage::Reject(m) => m.request_id,
            ClientMessage::Hold(m)
            | ClientMessage::Unhold(m)
            | ClientMessage::Mute(m)
            | ClientMessage::Unmute(m) => m.request_id,
            ClientMessage::Transfer(m) => m.request_id,
            ClientMessage::Dtmf(m) => m.request_id,
            ClientMessage::Message(m) => m.request_id,
            ClientMessage::Renegotiate(m) => m.request_id,
            ClientMessage::RefreshToken(m) => m.request_id,
        }
    }
}

/// Opens a session: protocol version and the agent's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// Protocol version the client speaks; must equal [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// How the agent proves who it is.
    pub auth: Auth,
    /// Free-form client name and version, logged for support (e.g. `"sipcall.js/0.1.0"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The `resume_token` of an earlier welcome: when that session is still kept (its
    /// WebSocket dropped less than the grace period ago) and belongs to the same agent, this
    /// socket takes it over with its calls and registration. Otherwise a new session opens
    /// (the welcome then has no `resumed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

/// The agent's credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// The seed SDK's mode: the agent's own SIP extension and password, used for digest
    /// authentication towards the PBX.
    SipCredentials {
        /// SIP user part, e.g. `"1001"`.
        extension: String,
        /// SIP digest password; never logged.
        password: String,
    },
    /// A short-lived JWT minted by the CRM backend: its `sub` names the extension and its
    /// optional `dial` claim narrows what the session may dial. callgate looks the SIP
    /// password up itself, so it never reaches the page.
    Token {
        /// The extension the page believes it is; when present it must equal the token's
        /// `sub` (a page mixing up agents fails loudly instead of acting as another agent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extension: Option<String>,
        /// The compact JWT (`header.payload.signature`); never logged.
        token: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::SipCredentials { extension, .. } => f
                .debug_struct("SipCredentials")
                .field("extension", extension)
                .field("password", &"<redacted>")
                .finish(),
            Auth::Token { extension, .. } => f
                .debug_struct("Token")
                .field("extension", extension)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// A fresh CRM-minted token for an open token session, so it outlives the first token's
/// `exp` (agents' pages stay open for hours; tokens live minutes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenRequest {
    /// Echoed in the reply (`token_refreshed` or `error`).
    pub request_id: RequestId,
    /// The compact JWT; its `sub` must be the session's extension. Never logged.
    pub token: String,
}

impl std::fmt::Debug for RefreshTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenRequest")
            .field("request_id", &self.request_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A new WebRTC offer for a call kept across a WebSocket drop or page reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenegotiateRequest {
    /// Echoed in the ack, which carries callgate's SDP answer.
    pub request_id: RequestId,
    /// The call, as listed in `welcome.resumed.calls`.
    pub call_id: String,
    /// The new peer connection's offer; must offer the call's G.711 codec.
    pub sdp: String,
}

/// Places an outbound call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Echoed in the ack, which also carries the new `call_id`.
    pub request_id: RequestId,
    /// Number or extension to dial, e.g. `"echo"`, `"1002"`, `"+15551234567"`.
    pub to: String,
    /// The browser's WebRTC SDP offer (must offer PCMU or PCMA audio).
    pub sdp: String,
    /// Extra SIP headers for the INVITE (names must carry an allowed prefix, e.g. `X-`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The CRM's id for this call, sent to the PBX in the configured header (default
    /// `X-Call-UUID`) so its CDR matches; generated by callgate when absent and returned in
    /// the ack either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_uuid: Option<String>,
}

/// Ends one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The call to end, as returned in the `call` ack.
    pub call_id: String,
}

/// A request about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRef {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The call.
    pub call_id: String,
}

/// The browser's answer to an `incoming_call`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The incoming call.
    pub call_id: String,
    /// The browser's SDP answer to the offer in `incoming_call`.
    pub sdp: String,
}

/// Why the agent refuses a call; each maps to one SIP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// 486 Busy Here (the default).
    Busy,
    /// 603 Decline.
    Decline,
    /// 480 Temporarily Unavailable.
    Unavailable,
}

impl RejectReason {
    /// The SIP status sent to the caller.
    pub fn sip_status(self) -> u16 {
        match self {
            RejectReason::Busy => 486,
            RejectReason::Decline => 603,
            RejectReason::Unavailable => 480,
        }
    }
}

/// Refuses an incoming call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The incoming call.
    pub call_id: String,
    /// Busy (486) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
}

/// Transfers a call's far end elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The call whose far end is transferred.
    pub call_id: String,
    /// Blind transfer target (REFER with Refer-To this number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Attended transfer: the agent's other call whose far end takes over (REFER with
    /// Replaces). Exactly one of `to` and `replaces_call_id` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_call_id: Option<String>,
}

/// Sends DTMF on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// The call.
    pub call_id: String,
    /// One or more of `0-9 * # A-D` (at most 32).
    pub digits: String,
    /// Tone length per digit, 40-2000 ms (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u32>,
}

/// Sends a text as SIP MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// Echoed in the reply.
    pub request_id: RequestId,
    /// Number or extension.
    pub to: String,
    /// The text (at most 4 KiB).
    pub text: String,
    /// MIME type of `text` (default `text/plain;charset=UTF-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}
