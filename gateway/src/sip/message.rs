//! SIP MESSAGE outside any dialog (RFC 3428): texts the agent sends, and texts the PBX sends
//! to an agent's Contact.

use rsipstack::dialog::authenticate::{Credential, handle_client_authenticate};
use rsipstack::sip::typed::{From, To};
use rsipstack::sip::uri::Param;
use rsipstack::sip::{Header, Method, SipMessage, StatusCodeKind, Uri};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{make_tag, make_via_branch};
use rsipstack::transport::SipAddr;

/// A MESSAGE for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Sender number (From user).
    pub from: String,
    /// Sender display name.
    pub display_name: Option<String>,
    /// The text.
    pub text: String,
    /// Its MIME type.
    pub content_type: String,
}

/// One outgoing MESSAGE.
#[derive(Clone)]
pub struct OutgoingMessage {
    /// The agent's extension (From user, digest username).
    pub extension: String,
    /// The agent's password for digest challenges.
    pub password: String,
    /// Digest username when it differs from the extension (token mode's credentials).
    pub auth_user: Option<String>,
    /// Target user part (validated).
    pub to: String,
    /// The text.
    pub text: String,
    /// MIME type.
    pub content_type: String,
}

/// A request outside any dialog from `from` to `target` (fresh tag, branch, Call-ID; CSeq 1),
/// shared by MESSAGE and the OPTIONS keepalive.
pub(super) fn out_of_dialog_request(
    endpoint: &rsipstack::transaction::endpoint::EndpointInnerRef,
    method: Method,
    from: Uri,
    target: Uri,
) -> Result<rsipstack::sip::Request, String> {
    let via = endpoint
        .get_via(None, Some(make_via_branch()))
        .map_err(|e| e.to_string())?;
    let from = From {
        display_name: None,
        uri: from,
        params: vec![Param::Tag(make_tag())],
    };
    let to = To {
        display_name: None,
        uri: target.clone(),
        params: vec![],
    };
    Ok(endpoint.make_request(method, target, via, from, to, 1, None))
}

/// Sends `message` through `proxy`; returns the final status (answering one digest challenge).
pub(super) async fn send(
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    proxy: SipAddr,
    domain: &str,
    message: OutgoingMessage,
) -> Result<u16, String> {
    let uri = |user: &str| {
        Uri::try_from(format!("sip:{user}@{domain}").as_str()).map_err(|e| e.to_string())
    };
    let mut request = out_of_dialog_request(
        &endpoint,
        Method::Message,
        uri(&message.extension)?,
        uri(&message.to)?,
    )?;
    request
        .headers
        .push(Header::ContentType(message.content_type.clone().into()));
    request
        .headers
        .push(Header::ContentLength((message.text.len() as u32).into()));
    request.body = message.text.clone().into_bytes();
    let key = TransactionKey::from_request(&request, TransactionRole::Client)
        .map_err(|e| e.to_string())?;
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    tx.destination = Some(proxy.clone());
    tx.send().await.map_err(|e| e.to_string())?;
    let credential = Credential {
        username: message.extension.clone(),
        password: message.password.clone(),
        realm: None,
        auth_username: message.auth_user.clone(),
    };
    let mut challenged = false;
    while let Some(reply) = tx.receive().await {
        let SipMessage::Response(response) = reply else {
            continue;
        };
        let status = response.status_code.code();
        if response.status_code.kind() == StatusCodeKind::Provisional {
            continue;
        }
        if matches!(status, 401 | 407) && !challenged {
            challenged = true;
            tx = handle_client_authenticate(2, &tx, response, &credential)
                .await
                .map_err(|e| e.to_string())?;
            tx.destination = Some(proxy.clone());
            tx.send().await.map_err(|e| e.to_string())?;
            continue;
        }
        return Ok(status);
    }
    Err("no response to the MESSAGE".into())
}
