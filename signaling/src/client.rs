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
}

impl ClientMessage {
    /// The id the reply must echo.
    pub fn request_id(&self) -> RequestId {
        match self {
            ClientMessage::Hello(m) => m.request_id,
            ClientMessage::Call(m) => m.request_id,
            ClientMessage::Hangup(m) => m.request_id,
            ClientMessage::Ping { request_id } => *request_id,
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
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::SipCredentials { extension, .. } => f
                .debug_struct("SipCredentials")
                .field("extension", extension)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
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
