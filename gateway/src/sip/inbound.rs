//! Inbound INVITEs for registered agents: one task per call drives the server transaction and
//! dialog, reports [`SipEvent`]s and executes [`SipCommand`]s (accept, reject, BYE, …).

use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    InfoQueue, SipCallHandle, SipCommand, SipEvent, SipEventSink, answer_in_dialog, body_text,
    send_refer, send_reinvite,
};

/// What the INVITE says about the call, for the browser's `incoming_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteInfo {
    /// Caller number (From user part).
    pub from: String,
    /// Caller display name.
    pub display_name: Option<String>,
    /// Called number (To user part).
    pub to: String,
    /// Headers whose names carry a configured prefix.
    pub headers: Vec<(String, String)>,
    /// The SDP offer, if the INVITE carried one.
    pub sdp: Option<String>,
}

/// An inbound call handed to the agent's session.
pub struct IncomingInvite {
    /// What the INVITE says.
    pub info: InviteInfo,
    /// Control of the call's SIP task.
    pub handle: SipCallHandle,
    /// The call's SIP events.
    pub events: super::EventReceiver,
}

/// Reads the caller, callee and allowed headers of an INVITE.
pub(super) fn invite_info(tx: &Transaction, prefixes: &[String]) -> InviteInfo {
    let request = &tx.original;
    let user = |uri: Option<Uri>| {
        uri.and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default()
    };
    let from = request.from_header().ok();
    let display_name = from
        .and_then(|f| f.typed().ok())
        .and_then(|f| f.display_name.clone())
        .map(|d| d.trim_matches('"').to_string())
        .filter(|d| !d.is_empty());
    let headers = request
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Other(name, value) => Some((name.clone(), value.clone())),
            _ => None,
        })
        .filter(|(name, value)| {
            prefixes
                .iter()
                .any(|p| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p))
                && value.len() <= 256
        })
        .take(16)
        .collect();
    InviteInfo {
        from: user(from.and_then(|f| f.uri().ok())),
        display_name,
        to: user(request.to_header().ok().and_then(|t| t.uri().ok())),
        headers,
        sdp: body_text(&request.body),
    }
}

/// How long a BYE the agent asked for waits for the PBX's ACK to our 2xx. rsipstack gives up
/// on the ACK after 64×T1 (32 s) and sends the BYE itself; this only bounds the wait should
/// neither come.
const ACK_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(40);

/// Sleeps until `deadline`; forever without one (a `select!` branch guarded by `is_some()`).
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Drives one inbound INVITE until the call is over.
pub(super) async fn run_inbound(
    dialogs: Arc<DialogLayer>,
    mut tx: Transaction,
    contact: Uri,
    mut subscription: super::dialog_states::Subscription,
    mut events: SipEventSink,
    mut commands: super::CommandReceiver,
) {
    let dialog = match dialogs.get_or_create_server_invite(
        &tx,
        subscription.sender(),
        None,
        Some(contact),
    ) {
        Ok(dialog) => dialog,
        Err(e) => {
            debug!(error = %e, "cannot create the inbound dialog");
            let _ = Box::pin(tx.reply(StatusCode::BadRequest)).await;
            events(SipEvent::Unreachable {
                reason: format!("bad INVITE: {e}"),
            });
            return;
        }
    };
    let _ = Box::pin(tx.send_trying()).await;
    if let Err(e) = dialog.ringing(None, None) {
        debug!(error = %e, "180 failed");
    }
    let mut driver_dialog = dialog.clone();
    // The INVITE server transaction's driver is the largest part of this task (~8 KiB of
    // rsipstack state) and is done once the answer is acknowledged: on the heap, and
    // dropped then, so a long call does not keep it.
    let mut driver = Some(Box::pin(async move {
        if let Err(e) = driver_dialog.handle(&mut tx).await {
            debug!(error = %e, "INVITE server transaction ended with an error");
        }
    }));
    let (outcomes_tx, mut outcomes): (super::EventSender, _) = mpsc::unbounded_channel();
    let mut pending_reinvite = None;
    let mut confirmed = false;
    let mut accepted = false;
    let mut we_ended = false;
    // Set when the agent hung up after our 2xx but before the PBX's ACK: RFC 3261 §15 holds
    // the BYE until the ACK (or until rsipstack gives up on it and sends the BYE itself).
    let mut bye_after_ack: Option<tokio::time::Instant> = None;
    let mut in_dialog_reply_at: Option<tokio::time::Instant> = None;
    let mut info = InfoQueue::default();
    loop {
        tokio::select! {
            Some(event) = outcomes.recv() => events(*event),
            () = super::run_until_done(&mut driver), if driver.is_some() => driver = None,
            () = sleep_until_some(bye_after_ack), if bye_after_ack.is_some() => {
                warn!("neither the ACK nor rsipstack's timeout came; sending the BYE anyway");
                let _ = Box::pin(dialog.bye()).await;
                break;
            }
            state = subscription.states.recv() => match state.map(|s| *s) {
                Some(DialogState::Confirmed(..)) if !confirmed && bye_after_ack.is_some() => {
                    let _ = Box::pin(dialog.bye()).await;
                    break;
                }
                Some(DialogState::Confirmed(..)) if !confirmed => {
                    confirmed = true;
                    let id = dialog.id();
                    events(SipEvent::DialogEstablished {
                        call_id: id.call_id.clone(),
                        local_tag: id.local_tag.clone(),
                        remote_tag: id.remote_tag.clone(),
                    });
                    let sdp = dialog.last_remote_ack().and_then(|ack| body_text(&ack.body));
                    events(SipEvent::Answered { sdp, session_timer: None });
                }
                Some(DialogState::Terminated(_, reason)) => {
                    debug!(?reason, "inbound dialog terminated");
                    if !we_ended {
                        events(if confirmed {
                            SipEvent::RemoteBye
                        } else {
                            SipEvent::CallerCancelled
                        });
                    }
                    break;
                }
                Some(other) => {
                    if Box::pin(answer_in_dialog(other, &mut events, &mut pending_reinvite)).await {
                        in_dialog_reply_at = Some(tokio::time::Instant::now());
                    }
                }
                None => break,
            },
            command = commands.recv(), if bye_after_ack.is_none() => match command.map(|c| *c) {
                Some(SipCommand::Accept { sdp }) => {
                    let headers = vec![Header::ContentType("application/sdp".into())];
                    match dialog.accept(Some(headers), Some(sdp.into_bytes())) {
                        Ok(()) => accepted = true,
                        Err(e) => events(SipEvent::Unreachable { reason: format!("cannot answer: {e}") }),
                    }
                }
                Some(SipCommand::Reject { status }) => {
                    we_ended = true;
                    let _ = dialog.reject(Some(StatusCode::from(status)), None);
                }
                Some(SipCommand::Bye) | None => {
                    if let Some(pending) = pending_reinvite.take() {
                        let _ = Box::pin(pending.handle.reply(StatusCode::RequestTerminated)).await;
                    }
                    if let Some(at) = in_dialog_reply_at {
                        tokio::time::sleep_until(at + super::IN_DIALOG_REPLY_GRACE).await;
                    }
                    if confirmed {
                        let _ = Box::pin(dialog.bye()).await;
                    } else if accepted {
                        we_ended = true;
                        bye_after_ack = Some(tokio::time::Instant::now() + ACK_WAIT_LIMIT);
                        continue;
                    } else {
                        let _ = dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
                    }
                    break;
                }
                Some(SipCommand::Reinvite { sdp, session_expires }) => send_reinvite(&dialog, sdp, session_expires, outcomes_tx.clone()),
                Some(SipCommand::ReplyReinvite { status, sdp }) => {
                    if let Some(pending) = pending_reinvite.take() {
                        Box::pin(super::reply_reinvite(&dialog, pending, status, sdp, &outcomes_tx)).await;
                        in_dialog_reply_at = Some(tokio::time::Instant::now());
                    }
                }
                Some(SipCommand::Info { digit, duration_ms }) => info.send(&dialog, digit, duration_ms),
                Some(SipCommand::Refer { refer_to, referred_by }) => {
                    send_refer(&dialog, refer_to, referred_by, outcomes_tx.clone());
                }
                Some(SipCommand::Cancel) => {}
            },
        }
    }
    dialogs.remove_dialog(&dialog.id());
    // Let a queued final response go out and its ACK be absorbed (bounded by Timer H).
    if let Some(driver) = driver {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(32), driver).await;
    }
}
