//! Request handling of the demo PBX: registrar, digest, and the per-extension
//! call scripts, on top of rsipstack's endpoint and dialog layer.
//!
//! Shape: one dispatcher task takes every new server transaction from the
//! endpoint and hands it to a short-lived tracked task. An INVITE for a known
//! extension becomes one call task that owns the INVITE transaction (it
//! drives `InviteDialog::handle`), the dialog's state channel and the RTP
//! echo socket; the call ends when the dialog reports `Terminated`, and the
//! task then closes the socket and removes the dialog. In-dialog requests are
//! matched to their dialog and handled by rsipstack, which reports them on
//! that same state channel. A REFER is the exception that needs two steps:
//! the call answers it 202 on that channel, and the REFER's own request task
//! then sends the NOTIFYs (see `transfer.rs` and `in_dialog`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use rsipstack::EndpointBuilder;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{Dialog, DialogState, DialogStateReceiver, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::{HasHeaders, HeadersExt};
use rsipstack::sip::{self, Header, Method, Request, StatusCode, StatusCodeKind};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::transport_layer::TransportLayerInner;
use rsipstack::transport::udp::{UdpConnection, UdpInner};
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::auth::{AuthOutcome, DigestAuth};
use super::rtp::{DtmfDetector, DtmfSink, echo_loop};
use super::sdp::{self, LocalMedia, Negotiated, SessionDescription};
use super::transfer::{self, MAX_RECORDED_TRANSFERS};
use super::udp_guard::GuardedUdpSocket;
use super::{DemoError, DemoPbxConfig};
use crate::clock;
use crate::redact::Number;

/// Methods we implement, for `Allow` headers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER";
/// Registration lifetime when the REGISTER names none.
const DEFAULT_EXPIRES: u32 = 3600;
/// Longest registration we grant.
const MAX_EXPIRES: u32 = 7200;
/// Bound on stored bindings; further new extensions get 503.
const MAX_REGISTRATIONS: usize = 1024;
/// Bound on concurrent calls; further INVITEs get 503.
const MAX_CALLS: usize = 256;
/// `callback` hangs up this long after the call is confirmed.
const CALLBACK_HANGUP_AFTER: Duration = Duration::from_secs(1);
/// An answered callback call is hung up after this long.
const CALLBACK_TALK_TIME: Duration = Duration::from_secs(30);
/// A callback nobody answers is cancelled after this long.
const CALLBACK_RING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often expired bindings and nonces are purged.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
/// Upper bound on waiting for an INVITE transaction's tail (final response
/// sent, ACK absorbed) after its call ended: 64*T1.
const INVITE_TAIL: Duration = Duration::from_secs(32);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One registered contact.
struct Binding {
    uri: sip::Uri,
    expires_at: Instant,
}

/// State shared by the dispatcher and all call tasks.
pub(super) struct Shared {
    config: DemoPbxConfig,
    /// The address we advertise (Via, Contact).
    sip_addr: SocketAddr,
    auth: DigestAuth,
    layer: Arc<DialogLayer>,
    registrations: Mutex<HashMap<String, Binding>>,
    dtmf: DtmfSink,
    /// Accepted REFERs as (Call-ID, Refer-To URI), oldest first, bounded.
    transfers: Mutex<VecDeque<(String, String)>>,
    active_calls: AtomicUsize,
    /// Dialogs of outgoing `callback` calls: rsipstack's `DialogLayer` only
    /// registers client dialogs through `do_invite`, whose Timer M drain task
    /// we could neither track nor stop, so we keep our own map.
    client_dialogs: Mutex<HashMap<String, InviteDialog>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Counts a call in `active_calls` for as long as it lives.
struct CallGuard(Arc<Shared>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.active_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(super) fn active_calls(&self) -> usize {
        self.active_calls.load(Ordering::Relaxed)
    }

    pub(super) fn registrations(&self) -> Vec<(String, String)> {
        let now = clock::now();
        let mut out: Vec<(String, String)> = lock(&self.registrations)
            .iter()
            .filter(|(_, b)| b.expires_at > now)
            .map(|(ext, b)| (ext.clone(), b.uri.to_string()))
            .collect();
        out.sort();
        out
    }

    pub(super) fn received_dtmf(&self) -> Vec<(String, char)> {
        lock(&self.dtmf).clone()
    }

    pub(super) fn transfers(&self) -> Vec<(String, String)> {
        lock(&self.transfers).iter().cloned().collect()
    }

    fn record_transfer(&self, call_id: &str, refer_to: &str) {
        let mut transfers = lock(&self.transfers);
        if transfers.len() >= MAX_RECORDED_TRANSFERS {
            transfers.pop_front();
        }
        transfers.push_back((call_id.to_string(), refer_to.to_string()));
    }

    /// Dialogs still registered (server dialogs in rsipstack's layer plus
    /// our callback dialogs), for leak tests.
    #[cfg(test)]
    pub(super) fn open_dialogs(&self) -> usize {
        self.layer.len() + lock(&self.client_dialogs).len()
    }

    /// Where RTP is received, as advertised in SDP: `rtp_ip`, or the SIP
    /// address when `rtp_ip` is a wildcard (0.0.0.0 cannot be advertised).
    fn media_ip(&self) -> IpAddr {
        if self.config.rtp_ip.is_unspecified() {
            self.sip_addr.ip()
        } else {
            self.config.rtp_ip
        }
    }

    fn call_guard(self: &Arc<Self>) -> CallGuard {
        self.active_calls.fetch_add(1, Ordering::Relaxed);
        CallGuard(self.clone())
    }

    /// Spawn a tracked task that stops when the PBX is cancelled.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = fut => {}
            }
        });
    }

    /// `sip:<user>@<our address>`, with `;transport=tcp` when the peer
    /// reached us over TCP (so its in-dialog requests come back that way).
    fn local_uri(&self, user: &str, tcp: bool) -> sip::Uri {
        let addr = SipAddr {
            r#type: None,
            addr: self.sip_addr.into(),
        };
        let mut uri: sip::Uri = addr.into();
        uri.auth = Some(sip::Auth {
            user: user.to_string(),
            password: None,
        });
        if tcp {
            uri.params.push(sip::Param::Transport(sip::Transport::Tcp));
        }
        uri
    }

    fn binding(&self, ext: &str) -> Option<sip::Uri> {
        let now = clock::now();
        lock(&self.registrations)
            .get(ext)
            .filter(|b| b.expires_at > now)
            .map(|b| b.uri.clone())
    }

    async fn bind_rtp(&self) -> std::io::Result<(UdpSocket, u16)> {
        let socket = UdpSocket::bind((self.config.rtp_ip, 0)).await?;
        let port = socket.local_addr()?.port();
        Ok((socket, port))
    }

    /// Start the echo task on `socket`; cancelling the returned token stops
    /// it and closes the socket.
    fn start_echo(&self, socket: UdpSocket, call_id: &str, te_pt: Option<u8>) -> CancellationToken {
        let cancel = self.cancel.child_token();
        self.spawn(echo_loop(
            socket,
            call_id.to_string(),
            DtmfDetector::new(te_pt),
            self.dtmf.clone(),
            cancel.clone(),
        ));
        cancel
    }
}

/// What `start` hands back to the `DemoPbx` handle.
pub(super) struct Started {
    pub(super) shared: Arc<Shared>,
    pub(super) sip_addr: SocketAddr,
    /// rsipstack's transport; its own receive/accept tasks keep it (and the
    /// listening sockets) alive until they notice the cancellation.
    pub(super) transport: Weak<TransportLayerInner>,
}

/// Bind, build the rsipstack endpoint and start the dispatcher.
pub(super) async fn start(
    config: DemoPbxConfig,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<Started, DemoError> {
    let bind_err = |source: std::io::Error| DemoError::Bind {
        addr: config.sip_addr,
        source,
    };
    let socket = UdpSocket::bind(config.sip_addr).await.map_err(bind_err)?;
    let bound = socket.local_addr().map_err(bind_err)?;
    // 0.0.0.0 cannot be advertised; rsipstack picks an interface address.
    let advertised = SipConnection::resolve_bind_address(bound);

    let transport_layer = TransportLayer::new(cancel.child_token());
    let transport = Arc::downgrade(&transport_layer.inner);
    let udp = UdpConnection::attach(
        UdpInner {
            conn: Arc::new(GuardedUdpSocket::new(socket)),
            addr: SipAddr {
                r#type: Some(sip::Transport::Udp),
                addr: advertised.into(),
            },
        },
        None,
        Some(cancel.child_token()),
    )
    .await;
    transport_layer.add_transport(udp.into());

    // TCP on the same port when it is free. Bound here rather than through
    // rsipstack's `TcpListenerConnection`, which binds lazily inside
    // `serve()` (so TCP would not be up when `start` returns) and only logs a
    // bind failure; the accept loop below hands connections to rsipstack.
    let tcp_listener = match tokio::net::TcpListener::bind(bound).await {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(%bound, error = %e, "demo PBX: TCP port busy, serving UDP only");
            None
        }
    };

    let option = EndpointOption {
        callid_suffix: Some("callgate-demo".to_string()),
        ..EndpointOption::default()
    };
    let endpoint = EndpointBuilder::new()
        .with_option(option)
        .with_cancel_token(cancel.child_token())
        .with_transport_layer(transport_layer)
        .with_user_agent("callgate-demo-pbx")
        .build();
    let incoming = endpoint.incoming_transactions()?;
    let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));

    let shared = Arc::new(Shared {
        auth: DigestAuth::new(config.password.clone()),
        config,
        sip_addr: advertised,
        layer,
        registrations: Mutex::new(HashMap::new()),
        dtmf: Arc::new(Mutex::new(Vec::new())),
        transfers: Mutex::new(VecDeque::new()),
        active_calls: AtomicUsize::new(0),
        client_dialogs: Mutex::new(HashMap::new()),
        tracker,
        cancel,
    });

    shared.spawn(async move { endpoint.serve().await });
    shared.spawn(dispatch(shared.clone(), incoming));
    let transports = if let Some(listener) = tcp_listener {
        shared.spawn(accept_tcp(shared.clone(), listener));
        "udp+tcp"
    } else {
        "udp"
    };
    shared.spawn(housekeeping(shared.clone()));
    info!(sip = %advertised, transports, "demo PBX listening");
    Ok(Started {
        shared,
        sip_addr: advertised,
        transport,
    })
}

/// Accept SIP-over-TCP connections and give each to rsipstack, which reads
/// it until the peer closes or the PBX stops.
async fn accept_tcp(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let local = SipAddr {
        r#type: Some(sip::Transport::Tcp),
        addr: shared.sip_addr.into(),
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let token = Some(shared.cancel.child_token());
                match TcpConnection::from_stream(stream, local.clone(), token) {
                    Ok(conn) => {
                        debug!(%peer, "SIP TCP connection");
                        let transport = &shared.layer.endpoint.transport_layer;
                        transport.add_connection(SipConnection::Tcp(conn));
                    }
                    Err(e) => debug!(%peer, error = %e, "dropped TCP connection"),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn housekeeping(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(HOUSEKEEPING_EVERY).await;
        let now = clock::now();
        lock(&shared.registrations).retain(|_, b| b.expires_at > now);
        shared.auth.purge(now);
    }
}

async fn dispatch(shared: Arc<Shared>, mut incoming: TransactionReceiver) {
    while let Some(tx) = incoming.recv().await {
        let call_id = call_id_of(&tx.original);
        let span = info_span!("demo_pbx", %call_id);
        shared.spawn(handle_request(shared.clone(), tx).instrument(span));
    }
}

fn call_id_of(req: &Request) -> String {
    req.call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default()
}

/// Send a final response, logging (never failing) if it cannot be sent.
async fn reply(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status.clone(), headers, None).await {
        debug!(%status, error = %e, "could not send response");
    }
}

fn allow_header() -> Header {
    Header::Allow(ALLOW.into())
}

/// Whether the transaction still owes its peer a final response.
fn needs_final(tx: &Transaction) -> bool {
    !tx.is_terminated()
        && tx
            .last_response
            .as_ref()
            .is_none_or(|r| r.status_code.kind() == StatusCodeKind::Provisional)
}

async fn handle_request(shared: Arc<Shared>, mut tx: Transaction) {
    let method = tx.original.method;
    let to_tag = match tx.original.to_header().and_then(|to| to.tag()) {
        Ok(tag) => tag.is_some(),
        Err(_) => {
            if method != Method::Ack {
                reply(&mut tx, StatusCode::BadRequest, vec![]).await;
            }
            return;
        }
    };
    if method != Method::Ack
        && let Some((status, headers)) = precheck(&tx.original)
    {
        return reply(&mut tx, status, headers).await;
    }
    if to_tag {
        return in_dialog(shared, tx).await;
    }
    match method {
        Method::Register => register(&shared, &mut tx).await,
        Method::Invite => invite(shared, tx).await,
        Method::Options => {
            let headers = vec![allow_header(), Header::Accept("application/sdp".into())];
            reply(&mut tx, StatusCode::OK, headers).await;
        }
        Method::Ack => {}
        Method::Bye | Method::Cancel | Method::PRack | Method::Update | Method::Info => {
            reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
        }
        _ => reply(&mut tx, StatusCode::MethodNotAllowed, vec![allow_header()]).await,
    }
}

/// RFC 3261 §8.2.1–§8.2.2 checks before any method logic: only `sip:`
/// request-URIs (416; no TLS here, so no `sips:`) and no `Require`d
/// extensions, since we support none (420 with `Unsupported`).
fn precheck(req: &Request) -> Option<(StatusCode, Vec<Header>)> {
    if !matches!(req.uri.scheme, None | Some(sip::Scheme::Sip)) {
        return Some((StatusCode::UnsupportedUriScheme, vec![]));
    }
    let required: Vec<&str> = req
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Require(r) => Some(r.value()),
            _ => None,
        })
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if required.is_empty() {
        return None;
    }
    let unsupported = Header::Unsupported(required.join(", ").into());
    Some((StatusCode::BadExtension, vec![unsupported]))
}

/// How long an in-dialog request waits for the ACK of our 2xx that was sent just before it.
const ACK_AHEAD_GRACE: Duration = Duration::from_millis(500);

/// A request with a To tag: find its dialog and let rsipstack handle it.
async fn in_dialog(shared: Arc<Shared>, mut tx: Transaction) {
    let method = tx.original.method;
    let dialog = DialogId::try_from(&tx)
        .ok()
        .and_then(|id| match shared.layer.get_dialog(&id) {
            Some(Dialog::Invite(d)) => Some(d),
            _ => lock(&shared.client_dialogs).get(&id.to_string()).cloned(),
        });
    let Some(mut dialog) = dialog.filter(|d| !d.state().is_terminated()) else {
        if method != Method::Ack {
            debug!(%method, "no dialog");
            reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
        }
        return;
    };
    let Ok(cseq) = tx.original.cseq_header().and_then(|c| c.seq()) else {
        if method != Method::Ack {
            reply(&mut tx, StatusCode::BadRequest, vec![]).await;
        }
        return;
    };
    // Our 2xx is out and its ACK is on the wire just ahead of this request (a UA sends
    // the ACK first, e.g. an answer followed at once by a REFER), but each request runs in
    // its own task here: give the ACK the moment a UA reading its socket in order would
    // already have spent, instead of refusing the request as if the INVITE were pending.
    if method != Method::Ack && matches!(dialog.state(), DialogState::WaitAck(..)) {
        let deadline = tokio::time::Instant::now() + ACK_AHEAD_GRACE;
        while matches!(dialog.state(), DialogState::WaitAck(..))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // rsipstack drops an out-of-order request without answering it; RFC 3261
    // §12.2.2 wants 500.
    let remote_cseq = dialog.snapshot().remote_cseq;
    if remote_cseq > 0 && cseq < remote_cseq && method != Method::Ack {
        reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
        return;
    }
    if !dialog.state().is_confirmed() {
        match method {
            Method::Bye | Method::Ack | Method::PRack => {}
            Method::Options | Method::Info => {
                return reply(&mut tx, StatusCode::OK, vec![]).await;
            }
            // RFC 3261 §14.2: not while the initial INVITE is pending.
            Method::Invite | Method::Update => {
                let retry = Header::RetryAfter("1".into());
                return reply(&mut tx, StatusCode::ServerInternalError, vec![retry]).await;
            }
            _ => return reply(&mut tx, StatusCode::MethodNotAllowed, vec![allow_header()]).await,
        }
    }
    // A REFER without a usable Refer-To is refused here; the call answers
    // the others 202 and this task carries them out once rsipstack has sent
    // that 202 (`dialog.handle` returns after it), so no NOTIFY overtakes it.
    let refer = if method == Method::Refer {
        match transfer::refer_target(&tx.original) {
            Ok(target) => Some(target),
            Err(why) => {
                info!(why, "REFER refused");
                return reply(&mut tx, StatusCode::BadRequest, vec![]).await;
            }
        }
    } else {
        None
    };
    if let Err(e) = dialog.handle(&mut tx).await {
        debug!(%method, error = %e, "in-dialog request failed");
    }
    // rsipstack leaves some requests unanswered (e.g. ones it ignores in a
    // given dialog state); never leave the peer retransmitting into a void.
    if method != Method::Ack && needs_final(&tx) {
        reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
    }
    if let Some(target) = refer {
        carry_out_transfer(&shared, &dialog, &call_id_of(&tx.original), target).await;
    }
}

/// A REFER the call has answered 202: record it, then send its NOTIFYs for
/// as long as the call lasts.
async fn carry_out_transfer(
    shared: &Shared,
    dialog: &InviteDialog,
    call_id: &str,
    target: transfer::ReferTarget,
) {
    // The call ended meanwhile (its task no longer answered the REFER).
    if !dialog.state().is_confirmed() || dialog.cancel_token().is_cancelled() {
        debug!("call ended before the REFER was carried out");
        return;
    }
    shared.record_transfer(call_id, &target.uri);
    let outcome = target.outcome();
    info!(
        to = %Number(&target.user),
        attended = target.replaces,
        sipfrag = outcome.code(),
        "REFER accepted"
    );
    // Cancelled when the call's dialog is removed (its task ended).
    let call_ended = dialog.cancel_token().clone();
    tokio::select! {
        () = call_ended.cancelled() => debug!("call ended during the transfer"),
        () = transfer::notify_progress(dialog, outcome) => {}
    }
}

/// The `Authorization` header values of a request (never logged).
fn authorizations(req: &Request) -> Vec<&str> {
    req.headers()
        .iter()
        .filter_map(|h| match h {
            Header::Authorization(a) => Some(a.value()),
            _ => None,
        })
        .collect()
}

/// Apply the digest verdict; true when the request may proceed.
async fn authenticate(shared: &Shared, tx: &mut Transaction, expected_user: Option<&str>) -> bool {
    let now = clock::now();
    let outcome = {
        let values = authorizations(&tx.original);
        shared
            .auth
            .check(&tx.original.method, &values, expected_user, now)
    };
    match outcome {
        AuthOutcome::Accepted => return true,
        AuthOutcome::Challenge { stale } => {
            let header = Header::WwwAuthenticate(shared.auth.challenge(now, stale).into());
            reply(tx, StatusCode::Unauthorized, vec![header]).await;
        }
        AuthOutcome::Malformed(why) => {
            info!(why, "malformed Authorization");
            reply(tx, StatusCode::BadRequest, vec![]).await;
        }
        AuthOutcome::Forbidden(why) => {
            info!(why, "authentication failed");
            reply(tx, StatusCode::Forbidden, vec![]).await;
        }
    }
    false
}

/// Registrar: bind the To user to the first Contact for its expiry.
async fn register(shared: &Shared, tx: &mut Transaction) {
    let Some(ext) = tx
        .original
        .to_header()
        .and_then(|to| to.uri())
        .ok()
        .and_then(|uri| uri.user().map(str::to_string))
        .filter(|u| !u.is_empty())
    else {
        return reply(tx, StatusCode::BadRequest, vec![]).await;
    };
    if !authenticate(shared, tx, Some(&ext)).await {
        return;
    }
    let Ok(contacts) = tx.original.typed_contact_headers() else {
        return reply(tx, StatusCode::BadRequest, vec![]).await;
    };
    let header_expires = match tx.original.expires_header() {
        None => None,
        Some(e) => match e.value().trim().parse::<u32>() {
            Ok(v) => Some(v),
            Err(_) => return reply(tx, StatusCode::BadRequest, vec![]).await,
        },
    };
    let now = clock::now();
    let wildcard = contacts
        .iter()
        .any(|c| matches!(&c.uri.scheme, Some(sip::Scheme::Other(s)) if s == "*"));
    if wildcard {
        if header_expires != Some(0) || contacts.len() != 1 {
            return reply(tx, StatusCode::BadRequest, vec![]).await;
        }
        lock(&shared.registrations).remove(&ext);
        info!(ext = %Number(&ext), "unregistered (all contacts)");
        return reply(tx, StatusCode::OK, vec![]).await;
    }
    if let Some(contact) = contacts.first() {
        let expires = contact
            .expires()
            .or(header_expires)
            .unwrap_or(DEFAULT_EXPIRES)
            .min(MAX_EXPIRES);
        if !store_binding(shared, &ext, &contact.uri, expires, now) {
            return reply(tx, StatusCode::ServiceUnavailable, vec![]).await;
        }
    }
    // Answer with the current binding (also for a query without Contact).
    let headers = match lock(&shared.registrations).get(&ext) {
        Some(b) if b.expires_at > now => {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            vec![Header::Contact(
                format!("<{}>;expires={left}", b.uri).into(),
            )]
        }
        _ => vec![],
    };
    reply(tx, StatusCode::OK, headers).await;
}

/// Add, refresh (or with `expires` 0 remove) the binding of `ext`; false
/// when the registrar is full.
fn store_binding(shared: &Shared, ext: &str, uri: &sip::Uri, expires: u32, now: Instant) -> bool {
    let mut regs = lock(&shared.registrations);
    if expires == 0 {
        regs.remove(ext);
        info!(ext = %Number(ext), "unregistered");
        return true;
    }
    if !regs.contains_key(ext) && regs.len() >= MAX_REGISTRATIONS {
        return false;
    }
    let binding = Binding {
        uri: uri.clone(),
        expires_at: now + Duration::from_secs(u64::from(expires)),
    };
    regs.insert(ext.to_string(), binding);
    info!(ext = %Number(ext), contact = %uri.host_with_port, expires, "registered");
    true
}

/// What an extension does with an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Echo,
    Early,
    Busy,
    NoAnswer,
    Callback,
}

impl Scenario {
    fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "echo" => Some(Self::Echo),
            "early" => Some(Self::Early),
            "busy" => Some(Self::Busy),
            "noanswer" => Some(Self::NoAnswer),
            "callback" => Some(Self::Callback),
            _ => None,
        }
    }
}

/// Why an SDP body was refused.
enum BodyError {
    /// Not `application/sdp` (→ 415).
    Type,
    /// Unparseable (→ 400).
    Parse,
}

/// The SDP of a request or response body, None when there is no body.
fn body_sdp(headers: &sip::Headers, body: &[u8]) -> Result<Option<SessionDescription>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = headers.iter().find_map(|h| match h {
        Header::ContentType(ct) => Some(ct.value().to_ascii_lowercase()),
        _ => None,
    });
    if let Some(ct) = content_type
        && ct.split(';').next().map(str::trim) != Some("application/sdp")
    {
        return Err(BodyError::Type);
    }
    sdp::parse(body).map(Some).map_err(|_| BodyError::Parse)
}

fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

/// An out-of-dialog INVITE: authenticate, pick the scenario, check the
/// offer, then run the call in this task.
async fn invite(shared: Arc<Shared>, mut tx: Transaction) {
    let call_id = call_id_of(&tx.original);
    if !authenticate(&shared, &mut tx, None).await {
        return;
    }
    let ext = tx.original.uri.user().unwrap_or_default().to_string();
    let Some(scenario) = Scenario::from_extension(&ext) else {
        info!(ext = %Number(&ext), "unknown extension");
        return reply(&mut tx, StatusCode::NotFound, vec![]).await;
    };
    info!(?scenario, "incoming call");
    if scenario == Scenario::Busy {
        tx.send_trying().await.ok();
        return reply(&mut tx, StatusCode::BusyHere, vec![]).await;
    }
    let offer = match body_sdp(&tx.original.headers, &tx.original.body) {
        Ok(offer) => offer,
        Err(BodyError::Type) => {
            let accept = Header::Accept("application/sdp".into());
            return reply(&mut tx, StatusCode::UnsupportedMediaType, vec![accept]).await;
        }
        Err(BodyError::Parse) => return reply(&mut tx, StatusCode::BadRequest, vec![]).await,
    };
    let negotiated = match offer.as_ref().map(sdp::negotiate).transpose() {
        Ok(n) => n,
        Err(e) => {
            info!(error = %e, "offer not acceptable");
            let warning = Header::Warning(format!("304 callgate-demo \"{e}\"").into());
            return reply(&mut tx, StatusCode::NotAcceptableHere, vec![warning]).await;
        }
    };
    if shared.active_calls() >= MAX_CALLS {
        let retry = Header::RetryAfter("5".into());
        return reply(&mut tx, StatusCode::ServiceUnavailable, vec![retry]).await;
    }
    let (socket, port) = match shared.bind_rtp().await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot bind RTP socket");
            return reply(&mut tx, StatusCode::ServiceUnavailable, vec![]).await;
        }
    };
    tx.send_trying().await.ok();

    let tcp = tx
        .connection
        .as_ref()
        .is_some_and(|c| c.transport() == sip::Transport::Tcp);
    let (state_tx, state_rx) = shared.layer.new_dialog_state_channel();
    let contact = shared.local_uri(&ext, tcp);
    let dialog = match shared
        .layer
        .get_or_create_server_invite(&tx, state_tx, None, Some(contact))
    {
        Ok(d) => d,
        Err(e) => {
            info!(error = %e, "cannot create dialog");
            return reply(&mut tx, StatusCode::BadRequest, vec![]).await;
        }
    };
    let caller = tx
        .original
        .from_header()
        .and_then(|f| f.uri())
        .ok()
        .and_then(|u| u.user().map(str::to_string));
    let te_pt = match &negotiated {
        Some(n) => n.telephone_event,
        None => Some(sdp::OFFER_TELEPHONE_EVENT_PT),
    };
    let media_cancel = shared.start_echo(socket, &call_id, te_pt);
    let local = LocalMedia {
        ip: shared.media_ip(),
        port,
        session_id: rand::random::<u32>().into(),
        version: 1,
    };
    let call = UasCall {
        guard: shared.call_guard(),
        shared: shared.clone(),
        call_id,
        dialog,
        scenario,
        caller,
        offer: offer.zip(negotiated),
        local,
        media_cancel,
    };
    call.run(tx, state_rx).await;
}

/// Scheduled actions of a call script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Answer,
    Reject,
    HangUp,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The SDP answer to a re-INVITE/UPDATE body (or our offer when it has
/// none), as (status, headers, body) for the transaction handle.
fn answer_mid_dialog(
    req: &Request,
    local: &mut LocalMedia,
) -> (StatusCode, Option<Vec<Header>>, Option<Vec<u8>>) {
    match body_sdp(&req.headers, &req.body) {
        Err(BodyError::Type) => (StatusCode::UnsupportedMediaType, None, None),
        Err(BodyError::Parse) => (StatusCode::BadRequest, None, None),
        Ok(None) if req.method == Method::Update => (StatusCode::OK, None, None),
        Ok(None) => {
            local.version += 1;
            let body = sdp::build_offer(local).into_bytes();
            (StatusCode::OK, Some(sdp_headers()), Some(body))
        }
        Ok(Some(offer)) => match sdp::negotiate(&offer) {
            Ok(n) => {
                local.version += 1;
                let body = sdp::build_answer(&offer, &n, local).into_bytes();
                (StatusCode::OK, Some(sdp_headers()), Some(body))
            }
            Err(_) => (StatusCode::NotAcceptableHere, None, None),
        },
    }
}

/// Answer the requests rsipstack surfaces on a confirmed dialog's state
/// channel; returns false for states that are not such requests.
async fn answer_dialog_request(state: DialogState, local: &mut LocalMedia) -> bool {
    let respond = |handle: TransactionHandle, status: StatusCode| async move {
        handle.reply(status).await.ok();
    };
    match state {
        DialogState::Updated(_, req, handle) => {
            let (status, headers, body) = answer_mid_dialog(&req, local);
            info!(method = %req.method, %status, "mid-dialog offer");
            handle.respond(status, headers, body).await.ok();
        }
        DialogState::Options(_, _, handle) | DialogState::Info(_, _, handle) => {
            respond(handle, StatusCode::OK).await;
        }
        DialogState::Message(_, _, handle) => respond(handle, StatusCode::OK).await,
        // `in_dialog` let only REFERs with a usable Refer-To through; it
        // sends their NOTIFYs once rsipstack has sent this 202.
        DialogState::Refer(_, _, handle) => respond(handle, StatusCode::Accepted).await,
        DialogState::Notify(_, _, handle) | DialogState::Publish(_, _, handle) => {
            respond(handle, StatusCode::CallTransactionDoesNotExist).await;
        }
        _ => return false,
    }
    true
}

/// One incoming call: its dialog, media and script.
struct UasCall {
    guard: CallGuard,
    shared: Arc<Shared>,
    call_id: String,
    dialog: InviteDialog,
    scenario: Scenario,
    /// The From user, where `callback` calls back.
    caller: Option<String>,
    /// The INVITE's offer and what we chose from it; None for an offer-less
    /// INVITE (we offer in the 200 and take the answer from the ACK).
    offer: Option<(SessionDescription, Negotiated)>,
    local: LocalMedia,
    media_cancel: CancellationToken,
}

impl UasCall {
    /// Our SDP for the 183/200.
    fn our_sdp(&self) -> Vec<u8> {
        match &self.offer {
            Some((offer, n)) => sdp::build_answer(offer, n, &self.local).into_bytes(),
            None => sdp::build_offer(&self.local).into_bytes(),
        }
    }

    fn answer(&self) {
        if let Err(e) = self
            .dialog
            .accept(Some(sdp_headers()), Some(self.our_sdp()))
        {
            debug!(error = %e, "accept failed");
        }
    }

    fn hang_up(&self) {
        let dialog = self.dialog.clone();
        self.shared.spawn(
            async move {
                if let Err(e) = dialog.bye().await {
                    debug!(error = %e, "BYE failed");
                }
            }
            .instrument(info_span!("demo_pbx", call_id = %self.call_id)),
        );
    }

    /// First ACK: for an offer-less INVITE it carries the answer.
    fn on_confirmed(&mut self) -> Option<Step> {
        info!("call answered");
        if self.offer.is_none() {
            let ack = self.dialog.last_remote_ack();
            let answer = ack
                .as_ref()
                .and_then(|ack| body_sdp(&ack.headers, &ack.body).ok().flatten());
            match answer.as_ref().map(sdp::negotiate) {
                Some(Ok(n)) => info!(codec = ?n.codec, remote = ?n.remote, "answer in ACK"),
                Some(Err(e)) => {
                    warn!(error = %e, "unusable answer in ACK, hanging up");
                    return Some(Step::HangUp);
                }
                None => {
                    warn!("ACK without SDP answer, hanging up");
                    return Some(Step::HangUp);
                }
            }
        }
        if self.scenario == Scenario::Callback {
            if let Some(user) = self.caller.clone() {
                let delay = CALLBACK_HANGUP_AFTER + self.shared.config.callback_delay;
                let span = info_span!("demo_pbx_callback", user = %Number(&user));
                self.shared
                    .spawn(callback(self.shared.clone(), user, delay).instrument(span));
            } else {
                warn!("callback caller has no user part; not calling back");
            }
            return Some(Step::HangUp);
        }
        None
    }

    async fn run(mut self, mut tx: Transaction, mut state_rx: DialogStateReceiver) {
        let config = &self.shared.config;
        let now = clock::now();
        let mut next: Option<(Instant, Step)> = None;
        match self.scenario {
            Scenario::Echo | Scenario::Callback => {
                self.dialog.ringing(None, None).ok();
                self.answer();
            }
            Scenario::Early => {
                self.dialog
                    .ringing(Some(sdp_headers()), Some(self.our_sdp()))
                    .ok();
                next = Some((now + config.early_media_time, Step::Answer));
            }
            Scenario::NoAnswer => {
                self.dialog.ringing(None, None).ok();
                next = Some((now + config.ring_time, Step::Reject));
            }
            Scenario::Busy => {}
        }

        let mut driver_dialog = self.dialog.clone();
        let driver = async {
            if let Err(e) = driver_dialog.handle(&mut tx).await {
                debug!(error = %e, "INVITE transaction ended with error");
            }
        };
        tokio::pin!(driver);
        let mut driver_done = false;
        let mut confirmed = false;

        let reason = loop {
            tokio::select! {
                biased;
                state = state_rx.recv() => match state {
                    None => break "state channel closed".to_string(),
                    Some(DialogState::Terminated(_, reason)) => break format!("{reason:?}"),
                    Some(DialogState::Confirmed(..)) if !confirmed => {
                        confirmed = true;
                        if let Some(step) = self.on_confirmed() {
                            let callback = self.scenario == Scenario::Callback;
                            let delay = if step == Step::HangUp && callback {
                                CALLBACK_HANGUP_AFTER
                            } else {
                                Duration::ZERO
                            };
                            next = Some((clock::now() + delay, step));
                        }
                    }
                    Some(state) => {
                        answer_dialog_request(state, &mut self.local).await;
                    }
                },
                () = &mut driver, if !driver_done => {
                    driver_done = true;
                    let state = self.dialog.state();
                    if !state.is_confirmed() && !state.is_terminated() {
                        break "INVITE transaction ended".to_string();
                    }
                }
                () = sleep_until_opt(next.map(|(t, _)| t)), if next.is_some() => {
                    let Some((_, step)) = next.take() else { continue };
                    match step {
                        Step::Answer => self.answer(),
                        Step::Reject => {
                            info!("no answer, rejecting with 480");
                            self.dialog
                                .reject(Some(StatusCode::TemporarilyUnavailable), None)
                                .ok();
                        }
                        Step::HangUp => self.hang_up(),
                    }
                }
            }
        };
        info!(%reason, "call ended");
        self.media_cancel.cancel();
        self.shared.layer.remove_dialog(&self.dialog.id());
        drop(self.guard);
        // Let the INVITE transaction send a queued final response and absorb
        // its ACK; bounded, and it stops with the PBX.
        if !driver_done {
            tokio::time::timeout(INVITE_TAIL, driver).await.ok();
        }
    }
}

/// The outgoing half of `callback`: after `delay`, INVITE the caller's
/// registered contact (else `sip:<user>@<gateway_addr>`), echo, hang up.
async fn callback(shared: Arc<Shared>, user: String, delay: Duration) {
    tokio::time::sleep(delay).await;
    let target = match shared.binding(&user) {
        Some(uri) => uri,
        None => match shared.config.gateway_addr {
            Some(addr) => match sip::Uri::try_from(format!("sip:{user}@{addr}")) {
                Ok(uri) => uri,
                Err(e) => {
                    warn!(error = %e, "cannot build callback target");
                    return;
                }
            },
            None => {
                warn!("caller not registered and no gateway address: no callback");
                return;
            }
        },
    };
    let guard = shared.call_guard();
    let (socket, port) = match shared.bind_rtp().await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot bind RTP socket for callback");
            return;
        }
    };
    let local = LocalMedia {
        ip: shared.media_ip(),
        port,
        session_id: rand::random::<u32>().into(),
        version: 1,
    };
    let tcp = target
        .params
        .iter()
        .any(|p| matches!(p, sip::Param::Transport(sip::Transport::Tcp)));
    let our_uri = shared.local_uri("callback", tcp);
    let option = InviteOption {
        caller: our_uri.clone(),
        callee: target.clone(),
        contact: our_uri,
        content_type: Some("application/sdp".to_string()),
        offer: Some(sdp::build_offer(&local).into_bytes()),
        ..Default::default()
    };
    let (state_tx, mut state_rx) = shared.layer.new_dialog_state_channel();
    let (dialog, mut tx) = match shared.layer.create_client_invite_dialog(option, state_tx) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot create callback INVITE");
            return;
        }
    };
    let call_id = dialog.id().call_id;
    let span = info_span!("demo_pbx", %call_id);
    async move {
        info!(target = %target.host_with_port, "calling back");
        let media_cancel = shared.start_echo(socket, &call_id, Some(sdp::OFFER_TELEPHONE_EVENT_PT));
        let result = {
            let invite = dialog.process_invite(&mut tx);
            tokio::pin!(invite);
            let mut cancelled = false;
            loop {
                tokio::select! {
                    r = &mut invite => break r,
                    () = tokio::time::sleep(CALLBACK_RING_TIMEOUT), if !cancelled => {
                        cancelled = true;
                        info!("callback not answered, cancelling");
                        let d = dialog.clone();
                        shared.spawn(async move { d.cancel().await.ok(); });
                    }
                }
            }
        };
        // Dropping the client transaction parks its ACK in the endpoint,
        // which re-ACKs any retransmitted 2xx for 64*T1.
        drop(tx);
        let answered = match result {
            Ok((id, Some(resp))) if resp.status_code.kind() == StatusCodeKind::Successful => {
                let answer = body_sdp(&resp.headers, &resp.body).ok().flatten();
                match answer.as_ref().map(sdp::negotiate) {
                    Some(Ok(n)) => info!(codec = ?n.codec, "callback answered"),
                    _ => warn!("callback answered without a usable SDP answer"),
                }
                Some(id)
            }
            Ok((_, resp)) => {
                let status = resp.map(|r| r.status_code.to_string());
                info!(?status, "callback not answered");
                None
            }
            Err(e) => {
                info!(error = %e, "callback failed");
                None
            }
        };
        if let Some(id) = answered {
            let key = id.to_string();
            lock(&shared.client_dialogs).insert(key.clone(), dialog.clone());
            let mut local = local;
            let hang_up_at = clock::now() + CALLBACK_TALK_TIME;
            let mut hung_up = false;
            loop {
                tokio::select! {
                    state = state_rx.recv() => match state {
                        None | Some(DialogState::Terminated(..)) => break,
                        Some(state) => {
                            answer_dialog_request(state, &mut local).await;
                        }
                    },
                    () = tokio::time::sleep_until(hang_up_at.into()), if !hung_up => {
                        hung_up = true;
                        let d = dialog.clone();
                        shared.spawn(async move {
                            if let Err(e) = d.bye().await {
                                debug!(error = %e, "callback BYE failed");
                            }
                        });
                    }
                }
            }
            lock(&shared.client_dialogs).remove(&key);
            // What `DialogLayer::remove_dialog` does for server dialogs: stops
            // a transfer still sending NOTIFYs in this dialog.
            dialog.cancel_token().cancel();
            info!("callback ended");
        }
        media_cancel.cancel();
        drop(guard);
    }
    .instrument(span)
    .await;
}
