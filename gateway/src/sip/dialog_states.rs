//! One rsipstack dialog-state channel for the whole SIP edge, fanned out to the calls.
//!
//! rsipstack reports each dialog's progress on an unbounded channel of `DialogState`
//! (~300 bytes). A tokio unbounded channel allocates its first block of 32 slots when it is
//! created, so a channel per call cost ~10 KiB of every call's memory (heaptrack, eighth
//! session) while carrying a handful of messages. Here every dialog gets a clone of one
//! sender; a router task hands each state to the call it names, over the call's own channel
//! of boxed states (8-byte slots).
//!
//! A call is found by Call-ID, and by the From tag of its INVITE when several live dialogs
//! share a Call-ID (a PBX may fork a request, or route one of callgate's own INVITEs back
//! to another of its agents): callgate's own INVITEs get a fresh Call-ID before they are
//! sent, so their route needs no tag and takes the states no PBX-started dialog claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The receiving end a call reads its dialog's states from.
pub type CallStates = mpsc::UnboundedReceiver<Box<DialogState>>;

/// Routes the edge's single dialog-state channel to the calls that registered for it.
pub struct DialogStateRouter {
    sender: DialogStateSender,
    routes: Mutex<HashMap<String, Vec<Route>>>,
    next_token: std::sync::atomic::AtomicU64,
}

struct Route {
    /// The INVITE's From tag; `None` for callgate's own INVITEs (their Call-ID is ours alone).
    from_tag: Option<String>,
    token: u64,
    sender: mpsc::UnboundedSender<Box<DialogState>>,
}

/// A call's registration: its states arrive on `states`; dropping it removes the route, so
/// a call that ends by any path (including an aborted task) leaves nothing behind.
pub struct Subscription {
    router: Arc<DialogStateRouter>,
    call_id: String,
    token: u64,
    /// The dialog's states, in the order rsipstack sent them.
    pub states: CallStates,
}

impl Subscription {
    /// The sender to hand to rsipstack for this call's dialog.
    pub fn sender(&self) -> DialogStateSender {
        self.router.sender.clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router.remove(&self.call_id, self.token);
    }
}

impl DialogStateRouter {
    /// Creates the router and starts the task that delivers states until `cancel`.
    pub fn start(cancel: CancellationToken) -> Arc<DialogStateRouter> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let router = Arc::new(DialogStateRouter {
            sender,
            routes: Mutex::default(),
            next_token: std::sync::atomic::AtomicU64::new(1),
        });
        tokio::spawn(deliver_all(Arc::downgrade(&router), receiver, cancel));
        router
    }

    /// Registers a call before its dialog exists, so no state can arrive unrouted.
    /// `from_tag` is the INVITE's From tag for dialogs the PBX started, `None` for ours.
    pub fn subscribe(self: &Arc<Self>, call_id: &str, from_tag: Option<&str>) -> Subscription {
        let (sender, states) = mpsc::unbounded_channel();
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let route = Route {
            from_tag: from_tag.map(str::to_owned),
            token,
            sender,
        };
        if let Ok(mut routes) = self.routes.lock() {
            routes.entry(call_id.to_owned()).or_default().push(route);
        }
        Subscription {
            router: self.clone(),
            call_id: call_id.to_owned(),
            token,
            states,
        }
    }

    /// Hands one state to its call; returns false when no live call claims it (the call
    /// already ended: rsipstack's last words after a BYE, say).
    fn deliver(&self, state: DialogState) -> bool {
        let Ok(routes) = self.routes.lock() else {
            return false;
        };
        let id = dialog_id(&state);
        let Some(candidates) = routes.get(&id.call_id) else {
            return false;
        };
        // A dialog the PBX started has the INVITE's From tag as its remote tag. Only the
        // remote tag counts: when the PBX routes one of callgate's INVITEs back to another
        // agent of this gateway, the two dialogs share the Call-ID and both tags, swapped.
        let route = candidates
            .iter()
            .find(|r| r.from_tag.as_deref() == Some(id.remote_tag.as_str()))
            .or_else(|| candidates.iter().find(|r| r.from_tag.is_none()));
        route.is_some_and(|r| r.sender.send(Box::new(state)).is_ok())
    }

    fn remove(&self, call_id: &str, token: u64) {
        if let Ok(mut routes) = self.routes.lock()
            && let Some(candidates) = routes.get_mut(call_id)
        {
            candidates.retain(|r| r.token != token);
            if candidates.is_empty() {
                routes.remove(call_id);
            }
        }
    }

    /// Calls currently registered (tests and diagnostics).
    pub fn routed_calls(&self) -> usize {
        self.routes
            .lock()
            .map(|routes| routes.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// The router task: holds the router weakly, so dropping the edge ends it too.
async fn deliver_all(
    router: std::sync::Weak<DialogStateRouter>,
    mut receiver: DialogStateReceiver,
    cancel: CancellationToken,
) {
    loop {
        let state = tokio::select! {
            () = cancel.cancelled() => return,
            state = receiver.recv() => state,
        };
        let (Some(state), Some(router)) = (state, router.upgrade()) else {
            return;
        };
        let described = describe(&state);
        if !router.deliver(state) {
            debug!(state = described, "dialog state for a call that is gone");
        }
    }
}

/// The dialog a state belongs to: every variant names it first.
fn dialog_id(state: &DialogState) -> &DialogId {
    match state {
        DialogState::Calling(id)
        | DialogState::Trying(id)
        | DialogState::Early(id, _)
        | DialogState::WaitAck(id, _)
        | DialogState::Confirmed(id, _)
        | DialogState::Updated(id, _, _)
        | DialogState::Publish(id, _, _)
        | DialogState::Notify(id, _, _)
        | DialogState::Refer(id, _, _)
        | DialogState::Message(id, _, _)
        | DialogState::Info(id, _, _)
        | DialogState::Options(id, _, _)
        | DialogState::Terminated(id, _) => id,
    }
}

/// A short name for logging a state nobody took.
fn describe(state: &DialogState) -> &'static str {
    match state {
        DialogState::Calling(_) => "calling",
        DialogState::Trying(_) => "trying",
        DialogState::Early(..) => "early",
        DialogState::WaitAck(..) => "wait-ack",
        DialogState::Confirmed(..) => "confirmed",
        DialogState::Updated(..) => "updated",
        DialogState::Publish(..) => "publish",
        DialogState::Notify(..) => "notify",
        DialogState::Refer(..) => "refer",
        DialogState::Message(..) => "message",
        DialogState::Info(..) => "info",
        DialogState::Options(..) => "options",
        DialogState::Terminated(..) => "terminated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::dialog::TerminatedReason;

    fn id(call_id: &str, local_tag: &str, remote_tag: &str) -> DialogId {
        DialogId {
            call_id: call_id.into(),
            local_tag: local_tag.into(),
            remote_tag: remote_tag.into(),
        }
    }

    fn terminated(call_id: &str, local_tag: &str, remote_tag: &str) -> DialogState {
        DialogState::Terminated(id(call_id, local_tag, remote_tag), TerminatedReason::UasBye)
    }

    fn call_id_of(state: Option<Box<DialogState>>) -> Option<(String, String)> {
        state.map(|s| {
            let id = dialog_id(&s);
            (id.call_id.clone(), id.remote_tag.clone())
        })
    }

    #[tokio::test]
    async fn each_call_gets_its_own_dialogs_states_in_order() {
        let cancel = CancellationToken::new();
        let router = DialogStateRouter::start(cancel.clone());
        let mut ours = router.subscribe("a@callgate", None);
        let mut theirs = router.subscribe("b@pbx", Some("pbx-tag"));
        let sender = ours.sender();
        assert!(
            sender
                .send(DialogState::Calling(id("a@callgate", "cg", "")))
                .is_ok()
        );
        assert!(sender.send(terminated("b@pbx", "cg2", "pbx-tag")).is_ok());
        assert!(sender.send(terminated("a@callgate", "cg", "peer")).is_ok());
        // Nobody registered for this one: dropped, and it must not reach the others.
        assert!(sender.send(terminated("c@nowhere", "x", "y")).is_ok());
        let first = ours.states.recv().await;
        assert!(matches!(first.as_deref(), Some(DialogState::Calling(_))));
        assert_eq!(
            call_id_of(ours.states.recv().await),
            Some(("a@callgate".into(), "peer".into()))
        );
        assert_eq!(
            call_id_of(theirs.states.recv().await),
            Some(("b@pbx".into(), "pbx-tag".into()))
        );
        assert!(ours.states.try_recv().is_err());
        assert!(theirs.states.try_recv().is_err());
        cancel.cancel();
    }

    #[tokio::test]
    async fn dialogs_sharing_a_call_id_are_told_apart_by_the_from_tag() {
        let cancel = CancellationToken::new();
        let router = DialogStateRouter::start(cancel.clone());
        let mut first = router.subscribe("same@pbx", Some("tag-1"));
        let mut second = router.subscribe("same@pbx", Some("tag-2"));
        let sender = first.sender();
        assert!(sender.send(terminated("same@pbx", "cg-b", "tag-2")).is_ok());
        assert!(sender.send(terminated("same@pbx", "cg-a", "tag-1")).is_ok());
        // A tag neither registered: ambiguous, so it goes to neither.
        assert!(sender.send(terminated("same@pbx", "cg-c", "tag-3")).is_ok());
        assert_eq!(
            call_id_of(second.states.recv().await),
            Some(("same@pbx".into(), "tag-2".into()))
        );
        assert_eq!(
            call_id_of(first.states.recv().await),
            Some(("same@pbx".into(), "tag-1".into()))
        );
        tokio::task::yield_now().await;
        assert!(first.states.try_recv().is_err());
        assert!(second.states.try_recv().is_err());
        cancel.cancel();
    }

    /// Agent A calls agent B of the same gateway through a proxy: callgate's INVITE comes
    /// back to it with the same Call-ID and From tag, so the outbound dialog's tags are the
    /// inbound dialog's, swapped.
    #[tokio::test]
    async fn an_invite_looped_back_through_the_pbx_keeps_both_legs_apart() {
        let cancel = CancellationToken::new();
        let router = DialogStateRouter::start(cancel.clone());
        let mut outbound = router.subscribe("loop@callgate", None);
        let mut inbound = router.subscribe("loop@callgate", Some("a-tag"));
        let sender = outbound.sender();
        let calling = DialogState::Calling(id("loop@callgate", "a-tag", ""));
        assert!(sender.send(calling).is_ok());
        assert!(
            sender
                .send(terminated("loop@callgate", "b-tag", "a-tag"))
                .is_ok()
        );
        assert!(
            sender
                .send(terminated("loop@callgate", "a-tag", "b-tag"))
                .is_ok()
        );
        let first = outbound.states.recv().await;
        assert!(matches!(first.as_deref(), Some(DialogState::Calling(_))));
        assert_eq!(
            call_id_of(outbound.states.recv().await),
            Some(("loop@callgate".into(), "b-tag".into()))
        );
        assert_eq!(
            call_id_of(inbound.states.recv().await),
            Some(("loop@callgate".into(), "a-tag".into()))
        );
        tokio::task::yield_now().await;
        assert!(outbound.states.try_recv().is_err());
        assert!(inbound.states.try_recv().is_err());
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_dropped_subscription_leaves_no_route() {
        let cancel = CancellationToken::new();
        let router = DialogStateRouter::start(cancel.clone());
        let a = router.subscribe("a@callgate", None);
        let b = router.subscribe("same@pbx", Some("tag-1"));
        let c = router.subscribe("same@pbx", Some("tag-2"));
        assert_eq!(router.routed_calls(), 3);
        drop(b);
        assert_eq!(router.routed_calls(), 2);
        drop((a, c));
        assert_eq!(router.routed_calls(), 0);
        assert!(router.routes.lock().is_ok_and(|r| r.is_empty()));
        cancel.cancel();
    }

    /// What this module is for: the state a call receives is a pointer, whatever
    /// rsipstack's state type weighs.
    #[test]
    fn a_calls_state_slot_is_a_pointer() {
        assert!(std::mem::size_of::<DialogState>() > 64);
        assert_eq!(
            std::mem::size_of::<Box<DialogState>>(),
            std::mem::size_of::<usize>()
        );
    }
}
