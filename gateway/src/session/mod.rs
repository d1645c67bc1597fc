//! One agent session: the task that owns one browser WebSocket, the agent's identity and
//! every call of that agent (design.md §2.4: one owner per state, no shared call objects).
//! It parses frames into requests, feeds the pure call machines, and executes their
//! outputs on the SIP edge and the media workers.

mod expiry;
pub mod input;
mod resume;

pub use resume::{Attach, Resumable};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use signaling::{
    Ack, AnswerRequest, Auth, CallRequest, ClientMessage, ErrorCode, ErrorMessage, Hello,
    IncomingCall, MessageReceived, MessageRequest, PROTOCOL_VERSION, RefreshTokenRequest,
    Registered, RegistrationFailed, RejectReason, RenegotiateRequest, Resumed, ResumedCall,
    ServerMessage, TokenExpired, TokenExpiring, TokenRefreshed, TransferRequest, Unregistered,
    Welcome, parse_client_message,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use self::expiry::{TokenClock, TokenEvent};
use self::input::{
    DialTarget, DtmfDigits, Extension, ExtraHeaders, Refusal, new_call_uuid, parse_call_uuid,
};
use crate::app::Services;
use crate::auth::LoginRefusal;
use crate::auth::credentials::SipCredentials;
use crate::auth::token::TokenClaims;
use crate::call::{
    AgentRequest, Call, CallId, CallInput, CallOutput, CallTimers, DtmfMode, MediaAction, SipAction,
};
use crate::clock;
use crate::config::DtmfModeSetting;
use crate::dialplan::Patterns;
use crate::media::webrtc::PendingOffer;
use crate::media::{
    BridgeKey, MediaCommand, MediaEvent, MediaEventKind, NewBridge, SipLegPorts, SipTarget,
    WorkerId,
};
use crate::redact::{Number, Secret};
use crate::sdp::{
    Direction, G711, SIP_TELEPHONE_EVENT_PT, SdpError, SipOffer, check_browser_offer,
};
use crate::sip::{
    AgentInbound, IncomingInvite, OutboundInvite, OutgoingMessage, RegisterRequest,
    RegistrationEvent, RegistrationHandle, SipCallHandle, SipCommand, SipEvent,
};
use crate::webhooks::CallEventKind as WebhookKind;

/// Whether `agent` may dial `number`: the gateway's dial plan and, for a token login with a
/// `dial` claim, the token's patterns too.
fn may_dial(services: &Services, agent: &Agent, number: &str) -> bool {
    services.dialplan.allows(agent.extension.as_str(), number)
        && agent.dial.as_ref().is_none_or(|dial| dial.matches(number))
}

/// A browser that has not said `hello` within this time is disconnected.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a resuming browser waits for the kept session to take its socket.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

/// At least this long is given to a resumed browser to renegotiate each call's media.
const MIN_RENEGOTIATE_TIME: Duration = Duration::from_secs(10);

/// How long a call whose browser leg failed waits for the WebSocket to drop too (a page
/// reload) before it ends with `media_failed`.
const BROWSER_FAILURE_GRACE: Duration = Duration::from_secs(2);

/// Close code sent on a socket another connection of the same agent has replaced.
const CLOSE_REPLACED: u16 = 4001;

/// Close code of a token session that ended because its token expired without a refresh
/// (once its last call had ended).
const CLOSE_TOKEN_EXPIRED: u16 = 4002;

/// The browser's socket while one is attached. It moves between session tasks when a
/// browser resumes; dropping it releases the per-IP slot and the `ws_connections` gauge.
pub struct Conn {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    _guard: ConnGuard,
}

struct ConnGuard {
    metrics: Arc<crate::metrics::Metrics>,
    _slot: Box<dyn Send + Sync>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.ws_connections.dec();
    }
}

/// What woke the session loop.
enum Wake {
    Frame(Option<Result<Message, axum::Error>>),
    Event(SessionEvent),
    Inbound(AgentInbound),
    Attach(Box<Attach>),
    Timers,
    GraceOver,
    HelloTimeout,
    Shutdown,
}

/// Events from the SIP edge and the media workers about this session's calls.
///
/// Every payload is boxed: the channel allocates a block of 32 messages at its creation, paid
/// by every connected agent, idle or not (at 120 bytes a message that was 3.7 KiB per agent).
enum SessionEvent {
    Sip(Box<(CallId, SipEvent)>),
    Media(Box<(CallId, MediaEvent)>),
    Registration(Box<RegistrationEvent>),
    /// The PBX's final answer to a `message` request (or why none came).
    MessageOutcome(u64, Box<Result<u16, String>>),
    /// The outcome of a token login's credential lookup (`hello` request id).
    Login(u64, Box<Result<Agent, LoginRefusal>>),
    /// The outcome of a `refresh_token`'s credential lookup (its request id).
    Refreshed(
        u64,
        Box<Result<(TokenClaims, SipCredentials), LoginRefusal>>,
    ),
}

/// The sending end of a session's event channel. It sends each event boxed, so a slot of the
/// channel's first block (32 slots, allocated with the channel, paid by every connected
/// agent) is a pointer, not a 24-byte event.
#[derive(Clone)]
struct EventSender(mpsc::UnboundedSender<Box<SessionEvent>>);

/// The session an event was for has ended.
#[derive(Debug)]
struct SessionGone;

impl EventSender {
    /// Queues `event` for the session.
    fn send(&self, event: SessionEvent) -> Result<(), SessionGone> {
        self.0.send(Box::new(event)).map_err(|_| SessionGone)
    }
}

struct Agent {
    extension: Extension,
    /// Digest username when it differs from the extension (token mode's credentials).
    auth_user: Option<String>,
    password: Secret,
    /// A token login's `dial` claim: narrows the dial plan for this session.
    dial: Option<Patterns>,
    /// A token login's `exp` (Unix seconds); `None` for a password login.
    token_expires_at: Option<u64>,
}

/// A newer token's terms that a resuming browser brings to the session it takes over.
#[derive(Clone)]
pub(crate) struct TokenGrant {
    expires_at: u64,
    dial: Option<Patterns>,
}

/// A session's calls by id.
type CallSlots = HashMap<CallId, Box<CallSlot>>;

struct CallSlot {
    call: Call,
    /// The G.711 codec of both legs (a renegotiated browser leg must keep it).
    codec: G711,
    /// A media bridge exists in `worker` under `key`.
    bridged: bool,
    /// Inbound: the `incoming_call` sent, re-sent to a resuming browser while it rings.
    offered: Option<IncomingCall>,
    /// After a resume: the browser must renegotiate this call's media by then.
    renegotiate_by: Option<Instant>,
    /// Outbound: the number dialled; inbound: the caller.
    target: DialTarget,
    /// Inbound: our WebRTC offer, until the browser answers. Boxed: it holds a whole `Rtc`
    /// (~10 KiB), and every slot of the calls map would otherwise be that big.
    pending_webrtc: Option<Box<PendingOffer>>,
    /// Inbound: the SIP-leg ports, until the bridge is built.
    rtp: Option<SipLegPorts>,
    /// The confirmed SIP dialog (Call-ID, local tag, remote tag), for `Replaces`.
    sip_dialog: Option<(String, String, String)>,
    /// What the CRM webhooks report about the call.
    cdr: Cdr,
    headers: Vec<(String, String)>,
    sip: Option<SipCallHandle>,
    worker: WorkerId,
    key: BridgeKey,
}

/// CDR fields of a call for the CRM webhooks.
struct Cdr {
    call_uuid: Option<String>,
    direction: &'static str,
    started_at_ms: u64,
    ringing_reported: bool,
}

impl Cdr {
    fn new(call_uuid: Option<String>, direction: &'static str) -> Cdr {
        Cdr {
            call_uuid,
            direction,
            started_at_ms: unix_ms(),
            ringing_reported: false,
        }
    }
}

fn unix_ms() -> u64 {
    u64::try_from(clock::since_unix_epoch().as_millis()).unwrap_or(u64::MAX)
}

struct Session {
    services: Arc<Services>,
    id: String,
    agent: Option<Agent>,
    /// The Contact user that routes the agent's inbound calls here.
    contact_user: String,
    registration: Option<RegistrationHandle>,
    inbox: mpsc::UnboundedSender<AgentInbound>,
    /// Boxed slots: a map allocates room for several entries at its first insert, and an
    /// agent has one call at a time for most of its life (heaptrack: ~4 KiB per call with
    /// the ~850-byte slots inline).
    calls: CallSlots,
    events: EventSender,
    outbox: Vec<ServerMessage>,
    /// When this agent's recent calls were placed (for `limits.calls_per_minute`).
    recent_calls: std::collections::VecDeque<Instant>,
    /// Who the hello authenticated as (a resume must match it).
    identity: Option<resume::Identity>,
    /// The PBX granted the registration (last registration event).
    registered: bool,
    /// The current resume token, listed in `services.resumable`.
    resume_token: Option<String>,
    /// Where a resuming browser's socket arrives.
    attach: resume::AttachSender,
    /// Set while detached: when the kept session gives up.
    detached_until: Option<Instant>,
    /// A hello that asked to resume another session: (token, request id, user agent).
    pending_resume: Option<(String, u64, Option<String>)>,
    /// A token `hello` waits for its credential lookup.
    logging_in: bool,
    /// The hello's resume token and user agent, until the agent is authenticated.
    hello_extras: Option<(Option<String>, Option<String>)>,
    /// A token session's token: when to warn the page, when it runs out.
    token: Option<TokenClock>,
    /// Why the registration is being removed, for the `unregistered` event that follows.
    unregister_reason: Option<&'static str>,
}

/// Runs one WebSocket's session until it ends; every call it owns is ended before returning.
/// `slot` (the per-IP connection count) is released when the socket closes, also when the
/// socket has moved to a resumed session.
pub async fn run(socket: WebSocket, services: Arc<Services>, slot: Box<dyn Send + Sync>) {
    let id = format!("s-{:08x}", rand::random::<u32>());
    let span = info_span!("session", session_id = %id);
    async move {
        services.metrics.ws_connections.inc();
        info!("browser connected");
        let (sink, stream) = socket.split();
        let conn = Conn {
            sink,
            stream,
            _guard: ConnGuard {
                metrics: services.metrics.clone(),
                _slot: slot,
            },
        };
        serve(conn, services.clone(), id).await;
        info!("session closed");
    }
    .instrument(span)
    .await
}

async fn serve(conn: Conn, services: Arc<Services>, id: String) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shutdown = services.shutdown.clone();
    let (inbox, mut incoming) = mpsc::unbounded_channel();
    let (attach_tx, mut attach_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        services: services.clone(),
        contact_user: String::new(),
        registration: None,
        inbox,
        id,
        agent: None,
        calls: HashMap::new(),
        events: EventSender(events_tx),
        outbox: Vec::new(),
        recent_calls: std::collections::VecDeque::new(),
        identity: None,
        registered: false,
        resume_token: None,
        attach: attach_tx,
        detached_until: None,
        pending_resume: None,
        logging_in: false,
        hello_extras: None,
        token: None,
        unregister_reason: None,
    };
    let mut conn = Some(conn);
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let next_timer = session.next_deadline().map(tokio::time::Instant::from_std);
        let grace_over = session.detached_until.map(tokio::time::Instant::from_std);
        // A token hello's credential lookup is not charged to the hello timeout.
        let waiting_for_hello = session.agent.is_none() && !session.logging_in;
        let wake = tokio::select! {
            frame = next_frame(&mut conn) => Wake::Frame(frame),
            Some(event) = events.recv() => Wake::Event(*event),
            Some(inbound) = incoming.recv() => Wake::Inbound(inbound),
            Some(attach) = attach_rx.recv() => Wake::Attach(attach),
            () = sleep_until_opt(next_timer) => Wake::Timers,
            () = sleep_until_opt(grace_over) => Wake::GraceOver,
            () = tokio::time::sleep_until(hello_deadline), if waiting_for_hello => Wake::HelloTimeout,
            () = shutdown.cancelled() => Wake::Shutdown,
        };
        let now = clock::now();
        match wake {
            Wake::Frame(Some(Ok(Message::Text(text)))) => session.on_text(now, text.as_str()),
            Wake::Frame(Some(Ok(Message::Binary(_)))) => session.error(
                None,
                None,
                ErrorCode::BinaryNotSupported,
                "binary frames are not part of the protocol; send JSON text frames",
            ),
            Wake::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Wake::Frame(frame) => {
                // Closed: only a normal closure (1000, the SDK's logout) means "for good".
                let for_good =
                    matches!(&frame, Some(Ok(Message::Close(Some(close)))) if close.code == 1000);
                if let Some(Err(e)) = &frame {
                    debug!(error = %e, "WebSocket receive failed");
                }
                conn = None;
                if for_good || !session.detach(now) {
                    break;
                }
            }
            Wake::Event(event) => session.on_event(now, event),
            Wake::Inbound(AgentInbound::Invite(invite)) => session.on_incoming(now, *invite),
            Wake::Inbound(AgentInbound::Message(message)) => {
                session
                    .outbox
                    .push(ServerMessage::MessageReceived(MessageReceived {
                        from: message.from,
                        display_name: message.display_name,
                        text: message.text,
                        content_type: message.content_type,
                    }))
            }
            Wake::Attach(attach) => {
                if !session.accepts(&attach) {
                    attach.refuse();
                } else {
                    if let Some(mut old) = conn.take() {
                        let _ = old
                            .sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CLOSE_REPLACED,
                                reason: "replaced by a resumed connection".into(),
                            })))
                            .await;
                    }
                    let Attach {
                        conn: new,
                        request_id,
                        user_agent,
                        reply,
                        token,
                        ..
                    } = *attach;
                    conn = Some(new);
                    let _ = reply.send(Ok(()));
                    session.adopt_token(now, token);
                    session.on_resumed(now, request_id, user_agent);
                }
            }
            Wake::Timers => session.on_timers(now),
            Wake::GraceOver => {
                info!("the browser did not resume within the grace period");
                services.metrics.session_resume("expired");
                break;
            }
            Wake::HelloTimeout => {
                session.error(
                    None,
                    None,
                    ErrorCode::NotAuthenticated,
                    "no hello within 10 seconds",
                );
                if let Some(c) = conn.as_mut() {
                    let _ = flush(&mut c.sink, &mut session.outbox).await;
                }
                break;
            }
            Wake::Shutdown => {
                session.end_all(now, CallInput::Shutdown);
                if let Some(c) = conn.as_mut() {
                    let _ = flush(&mut c.sink, &mut session.outbox).await;
                    let _ = c.sink.send(Message::Close(None)).await;
                }
                break;
            }
        }
        if let Some((token, request_id, user_agent)) = session.pending_resume.take()
            && let Some(c) = conn.take()
        {
            match hand_over(&services, &session, token, request_id, user_agent, c).await {
                HandOver::Done => return,
                HandOver::Lost => break,
                HandOver::Refused(c) => {
                    conn = Some(c);
                    session.welcome(request_id, None);
                }
            }
        }
        match conn.as_mut() {
            Some(c) => {
                if flush(&mut c.sink, &mut session.outbox).await.is_err() {
                    conn = None;
                    if !session.detach(clock::now()) {
                        break;
                    }
                }
            }
            None => session.keep_only_what_a_resume_needs(),
        }
        if session.token_expired() && session.calls.is_empty() {
            // The token ran out and the last call has ended: the session ends for good.
            info!("session token expired and no call is left: session closed");
            if let Some(c) = conn.as_mut() {
                let _ = c
                    .sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CLOSE_TOKEN_EXPIRED,
                        reason: "token expired".into(),
                    })))
                    .await;
            }
            break;
        }
    }
    if let Some(token) = session.resume_token.take() {
        services.resumable.remove(&token);
    }
    if session.detached_until.is_some() {
        services.metrics.sessions_detached.dec();
    }
    // A browser resuming at this very moment gets its socket back and a fresh session.
    attach_rx.close();
    while let Ok(attach) = attach_rx.try_recv() {
        attach.refuse();
    }
    session.end_all(clock::now(), CallInput::SessionClosed);
}

/// The next frame of the attached socket; never resolves while detached.
async fn next_frame(conn: &mut Option<Conn>) -> Option<Result<Message, axum::Error>> {
    match conn {
        Some(c) => c.stream.next().await,
        None => std::future::pending().await,
    }
}

enum HandOver {
    /// The kept session owns the socket now; this task ends.
    Done,
    /// The kept session refused (another agent) or is ending: open a fresh session.
    Refused(Conn),
    /// The kept session took the socket but never answered; nothing left to serve.
    Lost,
}

/// Offers the socket to the session the resume token names.
async fn hand_over(
    services: &Services,
    session: &Session,
    token: String,
    request_id: u64,
    user_agent: Option<String>,
    conn: Conn,
) -> HandOver {
    let Some(identity) = session.identity.clone() else {
        return HandOver::Refused(conn);
    };
    let Some(target) = services.resumable.get(&token) else {
        return HandOver::Refused(conn);
    };
    let (reply, answer) = oneshot::channel();
    let token = session.agent.as_ref().and_then(|agent| {
        agent.token_expires_at.map(|expires_at| TokenGrant {
            expires_at,
            dial: agent.dial.clone(),
        })
    });
    let attach = Box::new(Attach {
        conn,
        request_id,
        identity,
        user_agent,
        token,
        reply,
    });
    if let Err(rejected) = target.send(attach) {
        return HandOver::Refused(rejected.0.conn);
    }
    match tokio::time::timeout(HAND_OVER_TIMEOUT, answer).await {
        Ok(Ok(Ok(()))) => {
            debug!("socket handed to the kept session");
            HandOver::Done
        }
        Ok(Ok(Err(conn))) => {
            services.metrics.session_resume("refused");
            HandOver::Refused(conn)
        }
        _ => HandOver::Lost,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flush<S>(sink: &mut S, outbox: &mut Vec<ServerMessage>) -> Result<(), ()>
where
    S: SinkExt<Message> + Unpin,
{
    for message in outbox.drain(..) {
        let text = match serde_json::to_string(&message) {
            Ok(text) => text,
            Err(e) => {
                warn!(error = %e, "cannot serialize a server message");
                continue;
            }
        };
        sink.send(Message::Text(text.into()))
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}

impl Session {
    fn error(
        &mut self,
        request_id: Option<u64>,
        call_id: Option<String>,
        code: ErrorCode,
        message: &str,
    ) {
        self.services.metrics.browser_error(code);
        debug!(%code, message, "error reply");
        self.outbox.push(ServerMessage::Error(ErrorMessage {
            request_id,
            call_id,
            code,
            message: message.into(),
        }));
    }

    fn refuse(&mut self, request_id: u64, refusal: Refusal) {
        self.error(Some(request_id), None, refusal.code, &refusal.message);
    }

    fn on_text(&mut self, now: Instant, text: &str) {
        let message = match parse_client_message(text) {
            Ok(message) => message,
            Err(e) => return self.error(e.request_id, None, e.code, &e.message),
        };
        let request_id = message.request_id();
        let is_refresh = matches!(message, ClientMessage::RefreshToken(_));
        match (message, self.agent.is_some()) {
            (ClientMessage::Hello(_), false) if self.logging_in => self.error(
                Some(request_id),
                None,
                ErrorCode::AlreadyAuthenticated,
                "a login is already in progress on this session",
            ),
            (ClientMessage::Hello(hello), false) => self.on_hello(hello),
            (ClientMessage::Hello(_), true) => self.error(
                Some(request_id),
                None,
                ErrorCode::AlreadyAuthenticated,
                "this session is already open",
            ),
            (_, false) => self.error(
                Some(request_id),
                None,
                ErrorCode::NotAuthenticated,
                "send hello before any other request",
            ),
            (
                ClientMessage::Call(_)
                | ClientMessage::Transfer(_)
                | ClientMessage::Register { .. }
                | ClientMessage::Message(_)
                | ClientMessage::RefreshToken(_),
                true,
            ) if self.token_expired() => {
                if is_refresh {
                    self.services.metrics.token_refresh("session_expired");
                }
                self.error(
                    Some(request_id),
                    None,
                    ErrorCode::TokenExpired,
                    "this session's token has expired: no new activity is accepted; the \
                     session closes once its last call has ended",
                )
            }
            (ClientMessage::RefreshToken(r), true) => self.on_refresh(r),
            (ClientMessage::Ping { request_id }, true) => {
                self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)))
            }
            (ClientMessage::Call(request), true) => self.on_call(now, request),
            (ClientMessage::Hold(r), true) => {
                self.agent_request(&r.call_id, r.request_id, AgentRequest::Hold)
            }
            (ClientMessage::Unhold(r), true) => {
                self.agent_request(&r.call_id, r.request_id, AgentRequest::Unhold)
            }
            (ClientMessage::Mute(r), true) => {
                self.agent_request(&r.call_id, r.request_id, AgentRequest::Mute)
            }
            (ClientMessage::Unmute(r), true) => {
                self.agent_request(&r.call_id, r.request_id, AgentRequest::Unmute)
            }
            (ClientMessage::Dtmf(r), true) => match DtmfDigits::parse(&r.digits, r.duration_ms) {
                Ok(d) => self.agent_request(
                    &r.call_id,
                    r.request_id,
                    AgentRequest::Dtmf {
                        digits: d.digits,
                        duration: d.duration,
                    },
                ),
                Err(refusal) => self.refuse(r.request_id, refusal),
            },
            (ClientMessage::Register { request_id }, true) => self.on_register(request_id),
            (ClientMessage::Unregister { request_id }, true) => self.on_unregister(request_id),
            (ClientMessage::Answer(r), true) => self.on_answer(now, r),
            (ClientMessage::Reject(r), true) => {
                let status = r.reason.unwrap_or(RejectReason::Busy).sip_status();
                self.agent_request(&r.call_id, r.request_id, AgentRequest::Reject { status });
            }
            (ClientMessage::Transfer(r), true) => self.on_transfer(r),
            (ClientMessage::Message(r), true) => self.on_message(r),
            (ClientMessage::Renegotiate(r), true) => self.on_renegotiate(now, r),
            (ClientMessage::Hangup(request), true) => {
                let call_id = CallId::new(request.call_id.clone());
                if self.calls.contains_key(&call_id) {
                    self.outbox
                        .push(ServerMessage::Ack(Ack::plain(request.request_id)));
                    self.feed(now, &call_id, CallInput::BrowserHangup);
                } else {
                    self.error(
                        Some(request.request_id),
                        Some(request.call_id),
                        ErrorCode::UnknownCall,
                        "no such call in this session",
                    );
                }
            }
        }
    }

    fn agent_request(&mut self, call_id: &str, request_id: u64, request: AgentRequest) {
        let id = CallId::new(call_id);
        let Some(slot) = self.calls.get_mut(&id) else {
            return self.error(
                Some(request_id),
                Some(call_id.to_string()),
                ErrorCode::UnknownCall,
                "no such call in this session",
            );
        };
        match slot.call.request(clock::now(), request) {
            Ok(()) => {
                self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)));
                self.drain(clock::now(), &id);
            }
            Err(refusal) => self.error(
                Some(request_id),
                Some(call_id.to_string()),
                refusal.code,
                &refusal.message,
            ),
        }
    }

    /// Sends a SIP MESSAGE; the reply (ack or error) follows the PBX's final response.
    fn on_message(&mut self, request: MessageRequest) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        let target = match DialTarget::parse(&request.to) {
            Ok(target) => target,
            Err(refusal) => return self.refuse(request.request_id, refusal),
        };
        if request.text.is_empty() || request.text.len() > 4096 {
            return self.error(
                Some(request.request_id),
                None,
                ErrorCode::InvalidMessage,
                "text must be 1-4096 bytes",
            );
        }
        let content_type = request
            .content_type
            .unwrap_or_else(|| "text/plain;charset=UTF-8".into());
        let valid_type = content_type.len() <= 100
            && content_type.contains('/')
            && content_type
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ');
        if !valid_type {
            return self.error(
                Some(request.request_id),
                None,
                ErrorCode::InvalidMessage,
                "content_type must be a MIME type",
            );
        }
        let message = OutgoingMessage {
            extension: agent.extension.as_str().to_string(),
            auth_user: agent.auth_user.clone(),
            password: agent.password.0.clone(),
            to: target.uri_user(),
            text: request.text,
            content_type,
        };
        let services = self.services.clone();
        let events = self.events.clone();
        let request_id = request.request_id;
        tokio::spawn(async move {
            let outcome = services.sip.send_message(message).await;
            let _ = events.send(SessionEvent::MessageOutcome(request_id, Box::new(outcome)));
        });
    }

    /// Blind (`to`) or attended (`replaces_call_id`) transfer by REFER.
    fn on_transfer(&mut self, request: TransferRequest) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        let domain = self.services.settings.sip_domain();
        let referred_by = format!("<sip:{}@{domain}>", agent.extension.as_str());
        let refer_to = match (&request.to, &request.replaces_call_id) {
            (Some(to), None) => match DialTarget::parse(to) {
                Ok(target) if !may_dial(&self.services, agent, target.as_str()) => {
                    return self.error(
                        Some(request.request_id),
                        Some(request.call_id),
                        ErrorCode::NumberNotAllowed,
                        "the dial plan does not allow transfers to this number",
                    );
                }
                Ok(target) => format!("<sip:{}@{domain}>", target.uri_user()),
                Err(refusal) => return self.refuse(request.request_id, refusal),
            },
            (None, Some(other)) if *other != request.call_id => {
                let other_slot = self.calls.get(&CallId::new(other.clone()));
                match other_slot
                    .and_then(|slot| slot.sip_dialog.clone().map(|d| (d, slot.target.uri_user())))
                {
                    Some(((sip_call_id, local_tag, remote_tag), user)) => format!(
                        "<sip:{user}@{domain}?Replaces={}%3Bto-tag%3D{}%3Bfrom-tag%3D{}>",
                        escape_uri_header(&sip_call_id),
                        escape_uri_header(&remote_tag),
                        escape_uri_header(&local_tag)
                    ),
                    None => {
                        return self.error(
                            Some(request.request_id),
                            Some(other.clone()),
                            ErrorCode::InvalidState,
                            "replaces_call_id must name another answered call of this session",
                        );
                    }
                }
            }
            _ => {
                return self.error(
                    Some(request.request_id),
                    Some(request.call_id),
                    ErrorCode::InvalidNumber,
                    "give exactly one of `to` (blind) or `replaces_call_id` (attended, another call)",
                );
            }
        };
        self.agent_request(
            &request.call_id,
            request.request_id,
            AgentRequest::Transfer {
                refer_to,
                referred_by,
            },
        );
    }

    /// Queues a CRM webhook for the call; never waits.
    fn webhook(
        &self,
        call_id: &CallId,
        kind: WebhookKind,
        record: Option<&crate::call::CallRecord>,
    ) {
        let (Some(webhooks), Some(slot), Some(agent)) = (
            &self.services.webhooks,
            self.calls.get(call_id),
            self.agent.as_ref(),
        ) else {
            return;
        };
        let event = crate::webhooks::CallEvent {
            event: kind,
            call_id: call_id.to_string(),
            call_uuid: slot.cdr.call_uuid.clone(),
            direction: slot.cdr.direction,
            agent: agent.extension.as_str().to_string(),
            remote_number: slot.target.as_str().to_string(),
            started_at_ms: slot.cdr.started_at_ms,
            at_ms: unix_ms(),
            duration_secs: record.and_then(|r| r.talk).map(|t| t.as_secs_f64()),
            cause: record.map(|r| r.ending.cause.as_str().to_string()),
            ended_by: record.map(|r| r.ending.by),
            sip_status: record.and_then(|r| r.ending.sip_status),
            quality: record.and_then(|r| r.quality),
        };
        if !webhooks.send(event) {
            warn!(call_id = %call_id, "webhook queue full: event dropped");
        }
    }

    fn on_register(&mut self, request_id: u64) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        if self.registration.is_some() {
            // Already registered or registering: the state events keep flowing.
            self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)));
            return;
        }
        let request = RegisterRequest {
            extension: agent.extension.as_str().to_string(),
            auth_user: agent.auth_user.clone(),
            password: agent.password.0.clone(),
            contact_user: self.contact_user.clone(),
            expires: self.services.settings.sip.register_expires,
        };
        let events = self.events.clone();
        let sink = Box::new(move |event| {
            let _ = events.send(SessionEvent::Registration(Box::new(event)));
        });
        match self
            .services
            .sip
            .register(request, self.inbox.clone(), sink)
        {
            Ok(handle) => {
                self.registration = Some(handle);
                self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)));
            }
            Err(e) => self.error(Some(request_id), None, ErrorCode::Internal, &e),
        }
    }

    fn on_unregister(&mut self, request_id: u64) {
        self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)));
        match self.registration.take() {
            Some(handle) => handle.unregister(),
            None => self.outbox.push(ServerMessage::Unregistered(Unregistered {
                reason: "requested".into(),
            })),
        }
    }

    /// An INVITE from the PBX for this agent: offer WebRTC to the browser.
    /// Calls that occupy the agent: an ended call whose final report still waits (at most
    /// `call::FINAL_QUALITY_WAIT`) must not answer the next inbound call busy.
    fn calls_in_progress(&self) -> usize {
        self.calls
            .values()
            .filter(|slot| !slot.call.is_over())
            .count()
    }

    fn on_incoming(&mut self, now: Instant, invite: IncomingInvite) {
        let IncomingInvite {
            info,
            handle,
            events,
        } = invite;
        let services = self.services.clone();
        if services.draining.is_cancelled() {
            handle.send(SipCommand::Reject { status: 503 });
            return;
        }
        if self.token_expired() {
            info!(from = %Number(&info.from), "session token expired: inbound call refused with 480");
            handle.send(SipCommand::Reject { status: 480 });
            return;
        }
        let in_progress = self.calls_in_progress();
        let busy = in_progress >= services.settings.calls.max_per_agent
            || (!services.settings.calls.call_waiting && in_progress > 0);
        if busy {
            info!(from = %Number(&info.from), "agent busy: inbound call refused with 486");
            handle.send(SipCommand::Reject { status: 486 });
            return;
        }
        let offered_audio = info.sdp.as_deref().map(crate::sdp::parse_audio);
        // Where the PBX (or, looped through a proxy, callgate itself) wants our RTP.
        let pbx_media = match &offered_audio {
            Some(Ok(audio)) => audio
                .address
                .map(|ip| std::net::SocketAddr::new(ip, audio.port)),
            _ => None,
        };
        let codec = match offered_audio {
            Some(Ok(audio)) => match audio.preferred_g711() {
                Some(codec) => codec,
                None => return handle.send(SipCommand::Reject { status: 488 }),
            },
            Some(Err(_)) => return handle.send(SipCommand::Reject { status: 488 }),
            None => crate::sdp::G711::Pcmu,
        };
        let worker = services.media.pick_worker();
        let offer = match services
            .webrtc
            .create_offer(codec, services.media.candidate(worker), now)
        {
            Ok(offer) => offer,
            Err(e) => {
                warn!(error = %e, "cannot build the browser offer");
                return handle.send(SipCommand::Reject { status: 500 });
            }
        };
        let rtp = match services
            .media
            .sip_leg_ports(worker, &services.ports, pbx_media)
        {
            Ok(rtp) => rtp,
            Err(e) => {
                warn!(error = %e, "no SIP-leg RTP port for an inbound call");
                return handle.send(SipCommand::Reject { status: 503 });
            }
        };
        let Some(sdes) = new_sdes(services.settings.sip.srtp.into()) else {
            return handle.send(SipCommand::Reject { status: 500 });
        };
        let mut local = SipOffer {
            session_id: rand::random::<u32>().into(),
            version: 1,
            rtp: std::net::SocketAddr::new(services.settings.rtp.ip, rtp.rtp_addr().port()),
            codecs: vec![codec],
            telephone_event: Some(SIP_TELEPHONE_EVENT_PT),
            direction: Direction::SendRecv,
            sdes,
        };
        let remote = match info
            .sdp
            .as_deref()
            .map(|text| crate::sdp::read_sip_offer(text, &mut local))
        {
            Some(Ok(remote)) => Some(remote),
            Some(Err(e)) => {
                info!(from = %Number(&info.from), error = %e, "inbound offer refused with 488");
                return handle.send(SipCommand::Reject { status: 488 });
            }
            None => None,
        };
        let call_id = CallId::new(format!("c-{:016x}", rand::random::<u64>()));
        let caller = DialTarget::parse(&info.from)
            .or_else(|_| DialTarget::parse("anonymous"))
            .unwrap_or_else(|_| unreachable!("a constant target parses"));
        info!(call_id = %call_id, from = %Number(&info.from), codec = codec.name(), "inbound call");
        let call = Call::inbound(call_id.clone(), remote, local, now, self.call_timers());
        let forward = self.events.clone();
        let forward_id = call_id.clone();
        tokio::spawn(async move {
            let mut events = events;
            while let Some(event) = events.recv().await {
                if forward
                    .send(SessionEvent::Sip(Box::new((forward_id.clone(), *event))))
                    .is_err()
                {
                    break;
                }
            }
        });
        let offered = IncomingCall {
            call_id: call_id.to_string(),
            from: info.from,
            display_name: info.display_name,
            to: info.to,
            headers: info.headers.into_iter().collect(),
            sdp: offer.offer_sdp.clone(),
        };
        self.outbox
            .push(ServerMessage::IncomingCall(offered.clone()));
        let key = services.media.new_key();
        let ringing_id = call_id.clone();
        self.calls.insert(
            call_id,
            Box::new(CallSlot {
                call,
                codec,
                bridged: false,
                offered: Some(offered),
                renegotiate_by: None,
                target: caller,
                pending_webrtc: Some(Box::new(offer)),
                rtp: Some(rtp),
                sip_dialog: None,
                cdr: Cdr::new(None, "inbound"),
                headers: Vec::new(),
                sip: Some(handle),
                worker,
                key,
            }),
        );
        services.metrics.calls_active.inc();
        if let Some(slot) = self.calls.get_mut(&ringing_id) {
            slot.cdr.ringing_reported = true;
        }
        self.webhook(&ringing_id, WebhookKind::Ringing, None);
    }

    /// The browser answered an inbound call: build the bridge, then let the call answer SIP.
    fn on_answer(&mut self, now: Instant, request: AnswerRequest) {
        let id = CallId::new(request.call_id.clone());
        let services = self.services.clone();
        let events = self.events.clone();
        let Some(slot) = self.calls.get_mut(&id) else {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::UnknownCall,
                "no such call in this session",
            );
        };
        slot.offered = None;
        let (Some(pending), Some(rtp)) = (slot.pending_webrtc.take(), slot.rtp.take()) else {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::InvalidState,
                "no incoming call is ringing",
            );
        };
        let negotiated = match pending.accept_answer(&request.sdp) {
            Ok(negotiated) => negotiated,
            Err(e) => {
                // The offer is spent: the call can only be rejected or left to time out now.
                slot.rtp = Some(rtp);
                let message = format!("the answer cannot be applied: {e}");
                return self.error(
                    Some(request.request_id),
                    Some(request.call_id),
                    ErrorCode::InvalidSdp,
                    &message,
                );
            }
        };
        let media_call_id = id.clone();
        let bridge = NewBridge {
            key: slot.key,
            webrtc: negotiated,
            rtp,
            events: Box::new(move |event| {
                events
                    .send(SessionEvent::Media(Box::new((
                        media_call_id.clone(),
                        event,
                    ))))
                    .is_ok()
            }),
            keep_on_browser_failure: !services.settings.calls.resume_grace.is_zero(),
        };
        if !services
            .media
            .send(slot.worker, MediaCommand::Add(Box::new(bridge)))
        {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::Internal,
                "the media worker is not running",
            );
        }
        slot.bridged = true;
        match slot.call.request(now, AgentRequest::Answer) {
            Ok(()) => {
                self.outbox
                    .push(ServerMessage::Ack(Ack::plain(request.request_id)));
                self.drain(now, &id);
            }
            Err(refusal) => self.error(
                Some(request.request_id),
                Some(request.call_id),
                refusal.code,
                &refusal.message,
            ),
        }
    }

    fn call_timers(&self) -> CallTimers {
        let sip = &self.services.settings.sip;
        CallTimers {
            ring_timeout: sip.ring_timeout,
            answer_timeout: sip.answer_timeout,
            dtmf_mode: match sip.dtmf_mode {
                DtmfModeSetting::Rfc4733 => DtmfMode::Rfc4733,
                DtmfModeSetting::Info => DtmfMode::Info,
                DtmfModeSetting::Both => DtmfMode::Both,
            },
            ..CallTimers::default()
        }
    }

    fn on_hello(&mut self, hello: Hello) {
        if hello.protocol != PROTOCOL_VERSION {
            let message = format!(
                "this gateway speaks protocol {PROTOCOL_VERSION}, not {}",
                hello.protocol
            );
            return self.error(
                Some(hello.request_id),
                None,
                ErrorCode::UnsupportedProtocol,
                &message,
            );
        }
        self.hello_extras = Some((hello.resume_token.clone(), hello.user_agent.clone()));
        let (extension, password) = match hello.auth {
            Auth::SipCredentials {
                extension,
                password,
            } => (extension, password),
            Auth::Token { extension, token } => {
                return self.on_token_hello(hello.request_id, extension, &token);
            }
        };
        if let Err(refusal) = self.services.auth.check_password_mode() {
            return self.login_refused(hello.request_id, refusal);
        }
        let extension = match Extension::parse(&extension) {
            Ok(extension) => extension,
            Err(refusal) => return self.refuse(hello.request_id, refusal),
        };
        if password.is_empty() || password.len() > 128 {
            return self.error(
                Some(hello.request_id),
                None,
                ErrorCode::AuthFailed,
                "password must be 1-128 bytes",
            );
        }
        debug!(user_agent = ?hello.user_agent, "password login");
        self.open(
            hello.request_id,
            Agent {
                extension,
                auth_user: None,
                password: Secret(password),
                dial: None,
                token_expires_at: None,
            },
        );
    }

    /// A token `hello`: verify the token now (pure, cheap), then look the SIP credentials up
    /// off the session loop; the welcome or the refusal comes back as `SessionEvent::Login`.
    fn on_token_hello(&mut self, request_id: u64, extension: Option<String>, token: &str) {
        let now = clock::since_unix_epoch().as_secs();
        let claims = match self
            .services
            .auth
            .verify_token(token, extension.as_deref(), now)
        {
            Ok(claims) => claims,
            Err(refusal) => return self.login_refused(request_id, refusal),
        };
        let extension = match Extension::parse(&claims.subject) {
            Ok(extension) => extension,
            Err(refusal) => {
                self.services.metrics.auth_failure("claims");
                return self.refuse(request_id, refusal);
            }
        };
        self.logging_in = true;
        let services = self.services.clone();
        let events = self.events.clone();
        let dial = claims.dial;
        let token_expires_at = Some(claims.expires_at);
        tokio::spawn(async move {
            let outcome = services
                .auth
                .credentials(extension.as_str())
                .await
                .map(|credentials| Agent {
                    extension,
                    auth_user: credentials.auth_user,
                    password: Secret(credentials.password),
                    dial,
                    token_expires_at,
                });
            let _ = events.send(SessionEvent::Login(request_id, Box::new(outcome)));
        });
    }

    fn on_login(&mut self, request_id: u64, outcome: Result<Agent, LoginRefusal>) {
        self.logging_in = false;
        match outcome {
            Ok(agent) => {
                debug!(dial_scoped = agent.dial.is_some(), "token login");
                self.open(request_id, agent);
            }
            Err(refusal) => self.login_refused(request_id, refusal),
        }
    }

    /// The clock of a token with `exp` = `expires_at` accepted now.
    fn token_clock(&self, now: Instant, expires_at: u64) -> TokenClock {
        let auth = &self.services.settings.auth;
        TokenClock::new(
            expires_at,
            now,
            clock::since_unix_epoch().as_secs(),
            auth.token_leeway_secs,
            auth.token_expiry_warning_secs,
        )
    }

    /// The session's token ran out: no new activity from now on.
    fn token_expired(&self) -> bool {
        self.token.as_ref().is_some_and(TokenClock::expired)
    }

    /// A resuming browser's newer token becomes the session's (its expiry and `dial`
    /// claim), unless the session's own token already ran out: that is final.
    fn adopt_token(&mut self, now: Instant, grant: Option<TokenGrant>) {
        let Some(grant) = grant else {
            return;
        };
        if self.token_expired() {
            info!("resumed a session whose token has expired: only its calls go on");
            return;
        }
        self.token = Some(self.token_clock(now, grant.expires_at));
        if let Some(agent) = self.agent.as_mut() {
            agent.token_expires_at = Some(grant.expires_at);
            agent.dial = grant.dial;
        }
    }

    /// No refresh came before the token's `exp` (plus leeway): tell the page, drop the
    /// registration (no new inbound calls), and let the calls in progress go on; the
    /// session closes once the last one has ended (serve()).
    fn on_token_expired(&mut self, expires_at: u64) {
        self.services.metrics.token_expiries_total.inc();
        info!(
            calls = self.calls.len(),
            registered = self.registration.is_some(),
            "session token expired without a refresh: no new activity; the session ends \
             with its last call"
        );
        if let Some(handle) = self.registration.take() {
            self.unregister_reason = Some("token_expired");
            handle.unregister();
        }
        self.outbox.push(ServerMessage::TokenExpired(TokenExpired {
            expires_at,
            active_calls: u32::try_from(self.calls_in_progress()).unwrap_or(u32::MAX),
        }));
    }

    /// `refresh_token`: verify the new token now (same checks as a login, same subject),
    /// then look the extension's credentials up again off the loop (an extension removed
    /// from the credentials file cannot refresh); `on_refreshed` applies the outcome.
    fn on_refresh(&mut self, request: RefreshTokenRequest) {
        let request_id = request.request_id;
        let services = self.services.clone();
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        if self.token.is_none() {
            services.metrics.token_refresh("mode_disabled");
            return self.error(
                Some(request_id),
                None,
                ErrorCode::AuthModeDisabled,
                "this session logged in with a SIP password: it has no token to refresh",
            );
        }
        let now_unix = clock::since_unix_epoch().as_secs();
        let claims = match services.auth.verify_token(&request.token, None, now_unix) {
            Ok(claims) => claims,
            Err(refusal) => {
                let outcome = match refusal.code {
                    ErrorCode::TokenExpired => "expired",
                    ErrorCode::TokenReplayed => "replayed",
                    ErrorCode::AuthModeDisabled => "mode_disabled",
                    _ => "invalid",
                };
                services.metrics.token_refresh(outcome);
                warn!(reason = refusal.reason, "token refresh refused");
                return self.error(Some(request_id), None, refusal.code, &refusal.message);
            }
        };
        if claims.subject != agent.extension.as_str() {
            services.metrics.token_refresh("mismatch");
            warn!("token refresh refused: the token names another extension");
            return self.error(
                Some(request_id),
                None,
                ErrorCode::TokenMismatch,
                "the token's subject is not this session's extension; the session keeps its \
                 current token",
            );
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            let outcome = services
                .auth
                .credentials(&claims.subject)
                .await
                .map(|credentials| (claims, credentials));
            let _ = events.send(SessionEvent::Refreshed(request_id, Box::new(outcome)));
        });
    }

    fn on_refreshed(
        &mut self,
        now: Instant,
        request_id: u64,
        outcome: Result<(TokenClaims, SipCredentials), LoginRefusal>,
    ) {
        let services = self.services.clone();
        let (claims, credentials) = match outcome {
            Ok(granted) if !self.token_expired() => granted,
            Ok(_) => {
                services.metrics.token_refresh("session_expired");
                return self.error(
                    Some(request_id),
                    None,
                    ErrorCode::TokenExpired,
                    "this session's token expired before the refresh completed",
                );
            }
            Err(refusal) => {
                services.metrics.token_refresh("credentials");
                warn!(reason = refusal.reason, "token refresh refused");
                return self.error(Some(request_id), None, refusal.code, &refusal.message);
            }
        };
        let new_clock = self.token_clock(now, claims.expires_at);
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        // Future calls, transfers and texts use the new token's scope and the credentials
        // in force now; so does the running registration (a rotated PBX password reaches
        // its next REGISTER, and a refused registration retries with it).
        agent.dial = claims.dial;
        agent.token_expires_at = Some(claims.expires_at);
        agent.auth_user = credentials.auth_user;
        agent.password = Secret(credentials.password);
        if let Some(registration) = &self.registration {
            registration.update_credentials(agent.auth_user.clone(), agent.password.0.clone());
        }
        if let Some(identity) = self.identity.as_mut() {
            identity.secret = agent.password.0.clone();
        }
        self.token = Some(new_clock);
        services.metrics.token_refresh("ok");
        info!(
            expires_in_secs = claims
                .expires_at
                .saturating_sub(clock::since_unix_epoch().as_secs()),
            dial_scoped = agent.dial.is_some(),
            "session token refreshed"
        );
        self.outbox
            .push(ServerMessage::TokenRefreshed(TokenRefreshed {
                request_id,
                expires_at: claims.expires_at,
            }));
    }

    fn login_refused(&mut self, request_id: u64, refusal: LoginRefusal) {
        self.services.metrics.auth_failure(refusal.reason);
        warn!(reason = refusal.reason, "login refused");
        self.error(Some(request_id), None, refusal.code, &refusal.message);
    }

    /// The agent is authenticated: open a new session, or hand this socket to the kept
    /// session the hello's resume token names (serve() does the hand-over).
    fn open(&mut self, request_id: u64, agent: Agent) {
        let (resume_token, user_agent) = self.hello_extras.take().unwrap_or_default();
        self.identity = Some(resume::Identity {
            extension: agent.extension.as_str().to_string(),
            secret: agent.password.0.clone(),
        });
        self.contact_user = format!("{}-{:08x}", agent.extension.as_str(), rand::random::<u32>());
        let extension = agent.extension.as_str().to_string();
        self.token = agent
            .token_expires_at
            .map(|expires_at| self.token_clock(clock::now(), expires_at));
        self.agent = Some(agent);
        match resume_token {
            Some(token) if self.services.resumable.get(&token).is_some() => {
                // A refusal comes back as a fresh welcome.
                self.pending_resume = Some((token, request_id, user_agent));
            }
            resume => {
                if resume.is_some() {
                    debug!("resume token unknown or expired: a new session opens");
                    self.services.metrics.session_resume("unknown");
                }
                info!(agent = %extension, user_agent = ?user_agent, "session opened");
                self.welcome(request_id, None);
            }
        }
    }

    /// Opens (or re-opens after a resume) the session for the browser: a new resume token
    /// replaces the previous one.
    fn welcome(&mut self, request_id: u64, resumed: Option<Resumed>) {
        let services = self.services.clone();
        if let Some(old) = self.resume_token.take() {
            services.resumable.remove(&old);
        }
        let grace = services.settings.calls.resume_grace;
        if !grace.is_zero() {
            let token = resume::new_token(&services.node_id);
            services
                .resumable
                .insert(token.clone(), self.attach.clone());
            self.resume_token = Some(token);
        }
        self.outbox.insert(
            0,
            ServerMessage::Welcome(Welcome {
                request_id,
                protocol: PROTOCOL_VERSION,
                session_id: self.id.clone(),
                server: concat!("callgate/", env!("CARGO_PKG_VERSION")).into(),
                resume_token: self.resume_token.clone(),
                node: (!grace.is_zero()).then(|| services.node_id.clone()),
                resumed,
                token_expires_at: self.token.as_ref().map(|token| token.expires_at),
            }),
        );
    }

    /// Sessions of this gateway may be resumed (`calls.resume_grace` > 0).
    fn resumable(&self) -> bool {
        !self.services.settings.calls.resume_grace.is_zero()
    }

    /// The WebSocket is gone: keep the session for the grace period when it holds calls or
    /// a registration worth keeping. False when it should end now.
    fn detach(&mut self, now: Instant) -> bool {
        let grace = self.services.settings.calls.resume_grace;
        if grace.is_zero()
            || self.agent.is_none()
            || (self.calls.is_empty() && self.registration.is_none())
            || self.services.shutdown.is_cancelled()
        {
            return false;
        }
        if self.detached_until.is_none() {
            self.services.metrics.sessions_detached.inc();
        }
        self.detached_until = Some(now + grace);
        for slot in self.calls.values_mut() {
            slot.renegotiate_by = None;
            if slot.bridged {
                self.services
                    .media
                    .send(slot.worker, MediaCommand::BrowserAway { key: slot.key });
            }
        }
        info!(
            calls = self.calls.len(),
            registered = self.registered,
            grace_secs = grace.as_secs(),
            "WebSocket lost: session kept for the browser to resume"
        );
        self.keep_only_what_a_resume_needs();
        true
    }

    /// While detached, the outbox keeps only what the welcome's snapshot cannot say: ended
    /// calls and received texts (the rest is summarised by `welcome.resumed`).
    fn keep_only_what_a_resume_needs(&mut self) {
        self.outbox.retain(|message| {
            matches!(
                message,
                ServerMessage::CallEnded(_) | ServerMessage::MessageReceived(_)
            )
        });
    }

    /// Whether a resuming browser may take this session over (same agent, same secret).
    fn accepts(&self, attach: &Attach) -> bool {
        let same = self
            .identity
            .as_ref()
            .is_some_and(|mine| mine.same_as(&attach.identity));
        if !same {
            warn!("a resume token was presented with another agent's credentials: refused");
        }
        same
    }

    /// A browser took this session over: welcome it with what survived, offer ringing
    /// inbound calls again, and give it time to renegotiate each call's media.
    fn on_resumed(&mut self, now: Instant, request_id: u64, user_agent: Option<String>) {
        let services = self.services.clone();
        if self.detached_until.take().is_some() {
            services.metrics.sessions_detached.dec();
        }
        services.metrics.session_resume("resumed");
        let renegotiate_by = now
            + services
                .settings
                .calls
                .resume_grace
                .max(MIN_RENEGOTIATE_TIME);
        let mut calls = Vec::new();
        let mut offers = Vec::new();
        for (call_id, slot) in &mut self.calls {
            let Some(view) = slot.call.resume_view() else {
                continue;
            };
            if slot.bridged {
                // The browser renegotiates with a new peer connection; until then its old
                // leg may die without ending the call.
                services
                    .media
                    .send(slot.worker, MediaCommand::BrowserAway { key: slot.key });
                slot.renegotiate_by = Some(renegotiate_by);
            }
            if let Some(offer) = &slot.offered {
                offers.push(ServerMessage::IncomingCall(offer.clone()));
            }
            calls.push(ResumedCall {
                call_id: call_id.to_string(),
                call_uuid: slot.cdr.call_uuid.clone(),
                direction: if slot.cdr.direction == "inbound" {
                    signaling::CallDirection::Inbound
                } else {
                    signaling::CallDirection::Outbound
                },
                peer: slot.target.as_str().to_string(),
                state: view.state,
                held: view.held,
                remote_held: view.remote_held,
                muted: view.muted,
            });
        }
        calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        info!(calls = calls.len(), registered = self.registered, user_agent = ?user_agent, "session resumed");
        self.outbox.extend(offers);
        self.welcome(
            request_id,
            Some(Resumed {
                registered: self.registered,
                calls,
            }),
        );
        if let Some(token) = self.token.as_ref().filter(|token| token.expired()) {
            // Resumed only to keep its calls: say so again after the welcome.
            self.outbox.push(ServerMessage::TokenExpired(TokenExpired {
                expires_at: token.expires_at,
                active_calls: u32::try_from(self.calls_in_progress()).unwrap_or(u32::MAX),
            }));
        }
    }

    /// A resumed browser's new peer connection for one call: a new browser leg replaces the
    /// old one in the call's bridge.
    fn on_renegotiate(&mut self, now: Instant, request: RenegotiateRequest) {
        let services = self.services.clone();
        let id = CallId::new(request.call_id.clone());
        let Some(slot) = self.calls.get_mut(&id) else {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::UnknownCall,
                "no such call in this session",
            );
        };
        if !slot.bridged {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::InvalidState,
                "this call has no media yet: answer it instead",
            );
        }
        let codec = slot.codec;
        let offered = crate::sdp::parse_audio(&request.sdp)
            .map(|audio| audio.g711_codecs().any(|c| c == codec));
        match offered {
            Ok(true) => {}
            Ok(false) => {
                let message = format!(
                    "the offer must include {}, the codec this call uses",
                    codec.name()
                );
                return self.error(
                    Some(request.request_id),
                    Some(request.call_id),
                    ErrorCode::NoCommonCodec,
                    &message,
                );
            }
            Err(e) => {
                return self.error(
                    Some(request.request_id),
                    Some(request.call_id),
                    ErrorCode::InvalidSdp,
                    &e.to_string(),
                );
            }
        }
        let negotiated = match services.webrtc.accept_offer(
            &request.sdp,
            codec,
            services.media.candidate(slot.worker),
            now,
        ) {
            Ok(negotiated) => negotiated,
            Err(e) => {
                return self.error(
                    Some(request.request_id),
                    Some(request.call_id),
                    ErrorCode::InvalidSdp,
                    &e.to_string(),
                );
            }
        };
        let answer_sdp = negotiated.answer_sdp.clone();
        let command = MediaCommand::ReplaceBrowser {
            key: slot.key,
            webrtc: Box::new(negotiated),
        };
        if !services.media.send(slot.worker, command) {
            return self.error(
                Some(request.request_id),
                Some(request.call_id),
                ErrorCode::Internal,
                "the media worker is not running",
            );
        }
        slot.renegotiate_by = None;
        info!(call_id = %id, "browser leg renegotiated after a resume");
        self.outbox.push(ServerMessage::Ack(Ack {
            request_id: request.request_id,
            call_id: Some(request.call_id),
            sdp: Some(answer_sdp),
            call_uuid: None,
        }));
    }

    fn on_call(&mut self, now: Instant, request: CallRequest) {
        let request_id = request.request_id;
        let services = self.services.clone();
        if services.shutdown.is_cancelled() || services.draining.is_cancelled() {
            return self.error(
                Some(request_id),
                None,
                ErrorCode::ShuttingDown,
                "callgate is draining for a restart: try again on another node",
            );
        }
        if self.calls_in_progress() >= services.settings.calls.max_per_agent {
            let message = format!(
                "at most {} simultaneous calls per agent",
                services.settings.calls.max_per_agent
            );
            return self.error(Some(request_id), None, ErrorCode::TooManyCalls, &message);
        }
        let target = match DialTarget::parse(&request.to) {
            Ok(target) => target,
            Err(refusal) => return self.refuse(request_id, refusal),
        };
        let extension = self
            .agent
            .as_ref()
            .map(|a| a.extension.as_str().to_string())
            .unwrap_or_default();
        if !self
            .agent
            .as_ref()
            .is_some_and(|agent| may_dial(&services, agent, target.as_str()))
        {
            warn!(agent = %extension, to = %Number(target.as_str()), "dial plan refused a number");
            return self.error(
                Some(request_id),
                None,
                ErrorCode::NumberNotAllowed,
                "the dial plan does not allow this number for this agent",
            );
        }
        while self
            .recent_calls
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent_calls.pop_front();
        }
        if self.recent_calls.len() >= services.settings.limits.calls_per_minute as usize {
            let message = format!(
                "at most {} calls per minute",
                services.settings.limits.calls_per_minute
            );
            return self.error(Some(request_id), None, ErrorCode::RateLimited, &message);
        }
        if services.metrics.calls_active.get()
            >= i64::try_from(services.settings.limits.max_calls).unwrap_or(i64::MAX)
        {
            return self.error(
                Some(request_id),
                None,
                ErrorCode::Overloaded,
                "callgate carries its maximum number of calls",
            );
        }
        self.recent_calls.push_back(now);
        let mut headers =
            match ExtraHeaders::parse(&request.headers, &services.settings.sip.header_prefixes) {
                Ok(headers) => headers.into_vec(),
                Err(refusal) => return self.refuse(request_id, refusal),
            };
        let call_uuid = match request.call_uuid.as_deref().map(parse_call_uuid) {
            Some(Ok(uuid)) => uuid,
            Some(Err(refusal)) => return self.refuse(request_id, refusal),
            None => new_call_uuid(),
        };
        let uuid_header = &services.settings.sip.call_uuid_header;
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(uuid_header));
        headers.push((uuid_header.clone(), call_uuid.clone()));
        let codec = match check_browser_offer(&request.sdp) {
            Ok(codec) => codec,
            Err(SdpError::NoG711) => {
                return self.error(Some(request_id), None, ErrorCode::NoCommonCodec,
                    "the offer has audio but neither PCMU nor PCMA; callgate relays G.711 without transcoding");
            }
            Err(e) => {
                return self.error(
                    Some(request_id),
                    None,
                    ErrorCode::InvalidSdp,
                    &e.to_string(),
                );
            }
        };
        let worker = services.media.pick_worker();
        let negotiated = match services.webrtc.accept_offer(
            &request.sdp,
            codec,
            services.media.candidate(worker),
            now,
        ) {
            Ok(negotiated) => negotiated,
            Err(e) => {
                return self.error(
                    Some(request_id),
                    None,
                    ErrorCode::InvalidSdp,
                    &e.to_string(),
                );
            }
        };
        let rtp = match services.media.sip_leg_ports(worker, &services.ports, None) {
            Ok(rtp) => rtp,
            Err(e) => {
                warn!(error = %e, "no SIP-leg RTP port");
                return self.error(
                    Some(request_id),
                    None,
                    ErrorCode::Overloaded,
                    "no media port available, try again later",
                );
            }
        };
        let call_id = CallId::new(format!("c-{:016x}", rand::random::<u64>()));
        let Some(sdes) = new_sdes(services.settings.sip.srtp.into()) else {
            return self.error(
                Some(request_id),
                None,
                ErrorCode::Internal,
                "no SRTP key could be generated",
            );
        };
        let offer = SipOffer {
            session_id: rand::random::<u32>().into(),
            version: 1,
            rtp: std::net::SocketAddr::new(services.settings.rtp.ip, rtp.rtp_addr().port()),
            codecs: vec![codec],
            telephone_event: Some(SIP_TELEPHONE_EVENT_PT),
            direction: Direction::SendRecv,
            sdes,
        };
        let answer_sdp = negotiated.answer_sdp.clone();
        let key = services.media.new_key();
        let events = self.events.clone();
        let media_call_id = call_id.clone();
        let bridge = NewBridge {
            key,
            webrtc: negotiated,
            rtp,
            events: Box::new(move |event| {
                events
                    .send(SessionEvent::Media(Box::new((
                        media_call_id.clone(),
                        event,
                    ))))
                    .is_ok()
            }),
            keep_on_browser_failure: !services.settings.calls.resume_grace.is_zero(),
        };
        if !services
            .media
            .send(worker, MediaCommand::Add(Box::new(bridge)))
        {
            return self.error(
                Some(request_id),
                None,
                ErrorCode::Internal,
                "the media worker is not running",
            );
        }
        let timers = self.call_timers();
        info!(call_id = %call_id, to = %Number(target.as_str()), codec = codec.name(), "outbound call");
        let call = Call::outbound(call_id.clone(), offer, now, timers);
        self.calls.insert(
            call_id.clone(),
            Box::new(CallSlot {
                call,
                codec,
                bridged: true,
                offered: None,
                renegotiate_by: None,
                target,
                pending_webrtc: None,
                rtp: None,
                sip_dialog: None,
                cdr: Cdr::new(Some(call_uuid.clone()), "outbound"),
                headers,
                sip: None,
                worker,
                key,
            }),
        );
        services.metrics.calls_active.inc();
        self.outbox.push(ServerMessage::Ack(Ack {
            request_id,
            call_id: Some(call_id.to_string()),
            sdp: Some(answer_sdp),
            call_uuid: Some(call_uuid),
        }));
        self.drain(now, &call_id);
    }

    fn on_event(&mut self, now: Instant, event: SessionEvent) {
        let (call_id, input) = match event {
            SessionEvent::Login(request_id, outcome) => return self.on_login(request_id, *outcome),
            SessionEvent::Refreshed(request_id, outcome) => {
                return self.on_refreshed(now, request_id, *outcome);
            }
            SessionEvent::MessageOutcome(request_id, outcome) => {
                match *outcome {
                    Ok(status) if (200..300).contains(&status) => {
                        self.outbox.push(ServerMessage::Ack(Ack::plain(request_id)));
                    }
                    Ok(status) => {
                        let message = format!("the PBX refused the MESSAGE with {status}");
                        self.error(Some(request_id), None, ErrorCode::PbxRefused, &message);
                    }
                    Err(why) => {
                        let message = format!("the MESSAGE could not be delivered: {why}");
                        self.error(Some(request_id), None, ErrorCode::PbxRefused, &message);
                    }
                }
                return;
            }
            SessionEvent::Registration(event) => {
                let event = *event;
                self.registered = matches!(event, RegistrationEvent::Registered { .. });
                self.outbox.push(match event {
                    RegistrationEvent::Registered { expires } => {
                        ServerMessage::Registered(Registered { expires })
                    }
                    RegistrationEvent::Failed {
                        status,
                        reason,
                        retrying,
                    } => ServerMessage::RegistrationFailed(RegistrationFailed {
                        sip_status: status,
                        reason,
                        retrying,
                    }),
                    RegistrationEvent::Unregistered => ServerMessage::Unregistered(Unregistered {
                        reason: self.unregister_reason.take().unwrap_or("requested").into(),
                    }),
                });
                return;
            }
            SessionEvent::Sip(boxed) => {
                let (call_id, event) = *boxed;
                let input = match event {
                    SipEvent::Provisional { status, sdp } => {
                        CallInput::SipProvisional { status, sdp }
                    }
                    SipEvent::Answered { sdp, session_timer } => {
                        self.feed(now, &call_id, CallInput::SipAnswered { sdp });
                        match session_timer {
                            Some((seconds, we_refresh)) => CallInput::SipSessionTimer {
                                interval: Duration::from_secs(u64::from(seconds)),
                                we_refresh,
                            },
                            None => return,
                        }
                    }
                    SipEvent::SessionRefreshed => CallInput::SipSessionRefreshed,
                    SipEvent::Failed { status, reason } => CallInput::SipFailed { status, reason },
                    SipEvent::Unreachable { reason } => CallInput::SipUnreachable { reason },
                    SipEvent::RemoteBye => CallInput::SipRemoteBye,
                    SipEvent::CallerCancelled => CallInput::SipCallerCancelled,
                    SipEvent::DialogEstablished {
                        call_id: sip_call_id,
                        local_tag,
                        remote_tag,
                    } => {
                        if let Some(slot) = self.calls.get_mut(&call_id) {
                            slot.sip_dialog = Some((sip_call_id, local_tag, remote_tag));
                        }
                        return;
                    }
                    SipEvent::ReferOutcome { status } => CallInput::SipReferOutcome { status },
                    SipEvent::TransferProgress { status, done } => {
                        CallInput::SipTransferProgress { status, done }
                    }
                    SipEvent::ReinviteOutcome { status, sdp } => {
                        CallInput::SipReinviteOutcome { status, sdp }
                    }
                    SipEvent::RemoteReinvite { sdp } => CallInput::SipRemoteReinvite { sdp },
                    SipEvent::ReinviteAckAnswer { sdp } => CallInput::SipReinviteAckAnswer { sdp },
                    SipEvent::Dtmf { digit } => CallInput::SipDtmf { digit },
                };
                (call_id, input)
            }
            SessionEvent::Media(boxed) => {
                let (call_id, MediaEvent { kind, .. }) = *boxed;
                let input = match kind {
                    MediaEventKind::Connected => CallInput::MediaConnected,
                    MediaEventKind::Inactive { leg } => CallInput::MediaInactive { leg },
                    MediaEventKind::Failed { reason } if self.resumable() => {
                        // The worker kept the SIP leg: a reloading page closes its peer
                        // connection just before its WebSocket. End the call only if the
                        // socket is still attached a moment later.
                        if let Some(slot) = self.calls.get_mut(&call_id)
                            && self.detached_until.is_none()
                            && slot.renegotiate_by.is_none()
                        {
                            debug!(call_id = %call_id, %reason, "browser leg failed; waiting to see whether the browser resumes");
                            slot.renegotiate_by = Some(now + BROWSER_FAILURE_GRACE);
                        }
                        return;
                    }
                    MediaEventKind::Failed { reason } => CallInput::MediaFailed { reason },
                    MediaEventKind::Dtmf { digit } => CallInput::MediaDtmf { digit },
                    MediaEventKind::Quality { webrtc, sip } => {
                        CallInput::MediaQuality(call_quality(webrtc, sip))
                    }
                    MediaEventKind::Removed { stats, quality } => {
                        info!(call_id = %call_id, to_sip = stats.to_sip, to_browser = stats.to_browser,
                              dropped = stats.dropped, "media bridge closed");
                        CallInput::MediaReleased(
                            quality.map(|(webrtc, sip)| call_quality(webrtc, sip)),
                        )
                    }
                };
                (call_id, input)
            }
        };
        self.feed(now, &call_id, input);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|slot| [slot.call.poll_timeout(), slot.renegotiate_by])
            .chain([self.token.as_ref().and_then(TokenClock::poll_timeout)])
            .flatten()
            .min()
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(event) = self.token.as_mut().and_then(|token| token.poll(now)) {
            let expires_at = self.token.as_ref().map_or(0, |token| token.expires_at);
            match event {
                TokenEvent::Expiring => {
                    debug!(expires_at, "session token expiring: page warned");
                    self.outbox
                        .push(ServerMessage::TokenExpiring(TokenExpiring { expires_at }));
                }
                TokenEvent::Expired => self.on_token_expired(expires_at),
            }
        }
        let abandoned: Vec<CallId> = self
            .calls
            .iter_mut()
            .filter(|(_, slot)| slot.renegotiate_by.is_some_and(|at| at <= now))
            .map(|(id, slot)| {
                slot.renegotiate_by = None;
                id.clone()
            })
            .collect();
        for call_id in abandoned {
            info!(call_id = %call_id, "the browser leg is gone and the browser did not reconnect it");
            self.feed(
                now,
                &call_id,
                CallInput::MediaFailed {
                    reason: "the browser's audio connection failed and was not reconnected".into(),
                },
            );
        }
        let due: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, slot)| slot.call.poll_timeout().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in due {
            self.feed(now, &call_id, CallInput::Timeout);
        }
    }

    fn end_all(&mut self, now: Instant, input: CallInput) {
        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
        for call_id in ids {
            self.feed(now, &call_id, input.clone());
        }
    }

    fn feed(&mut self, now: Instant, call_id: &CallId, input: CallInput) {
        let Some(slot) = self.calls.get_mut(call_id) else {
            return;
        };
        slot.call.handle_input(now, input);
        self.drain(now, call_id);
    }

    /// Executes a call's outputs until it has none (design.md §2.3), then drops it if done.
    fn drain(&mut self, now: Instant, call_id: &CallId) {
        let services = self.services.clone();
        loop {
            let Some(slot) = self.calls.get_mut(call_id) else {
                return;
            };
            let Some(output) = slot.call.poll_output() else {
                break;
            };
            match output {
                CallOutput::Browser(message) => {
                    let kind = match &message {
                        ServerMessage::CallRinging(_)
                        | ServerMessage::CallEarlyMedia(_)
                        | ServerMessage::IncomingCall(_)
                            if !slot.cdr.ringing_reported =>
                        {
                            slot.cdr.ringing_reported = true;
                            Some(WebhookKind::Ringing)
                        }
                        ServerMessage::CallAnswered(_) => Some(WebhookKind::Answered),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        self.webhook(call_id, kind, None);
                    }
                    self.outbox.push(message);
                }
                CallOutput::Sip(SipAction::Invite { sdp }) => {
                    let Some(agent) = self.agent.as_ref() else {
                        break;
                    };
                    let invite = OutboundInvite {
                        call_id: call_id.to_string(),
                        extension: agent.extension.as_str().to_string(),
                        auth_user: agent.auth_user.clone(),
                        password: agent.password.0.clone(),
                        target: slot.target.uri_user(),
                        sdp,
                        headers: slot.headers.clone(),
                    };
                    let events = self.events.clone();
                    let sip_call_id = call_id.clone();
                    let sink = Box::new(move |event| {
                        let _ =
                            events.send(SessionEvent::Sip(Box::new((sip_call_id.clone(), event))));
                    });
                    match services.sip.invite(invite, sink) {
                        Ok(handle) => slot.sip = Some(handle),
                        Err(reason) => slot
                            .call
                            .handle_input(now, CallInput::SipUnreachable { reason }),
                    }
                }
                CallOutput::Sip(SipAction::Cancel) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Cancel);
                    }
                }
                CallOutput::Sip(SipAction::Bye) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Bye);
                    }
                }
                CallOutput::Media(MediaAction::Connect(answer)) => {
                    let target = SipTarget {
                        remote: answer.remote_rtp,
                        telephone_event: answer.telephone_event,
                        srtp: answer.srtp,
                    };
                    services.media.send(
                        slot.worker,
                        MediaCommand::Connect {
                            key: slot.key,
                            target,
                        },
                    );
                }
                CallOutput::Sip(SipAction::Reinvite {
                    sdp,
                    session_expires,
                }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Reinvite {
                            sdp,
                            session_expires,
                        });
                    }
                }
                CallOutput::Sip(SipAction::ReplyReinvite { status, sdp }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::ReplyReinvite { status, sdp });
                    }
                }
                CallOutput::Sip(SipAction::Refer {
                    refer_to,
                    referred_by,
                }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Refer {
                            refer_to,
                            referred_by,
                        });
                    }
                }
                CallOutput::Sip(SipAction::Accept { sdp }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Accept { sdp });
                    }
                }
                CallOutput::Sip(SipAction::Reject { status }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Reject { status });
                    }
                }
                CallOutput::Sip(SipAction::Info { digit, duration_ms }) => {
                    if let Some(sip) = &slot.sip {
                        sip.send(SipCommand::Info { digit, duration_ms });
                    }
                }
                CallOutput::Media(MediaAction::Forward { to_sip }) => {
                    services.media.send(
                        slot.worker,
                        MediaCommand::Forward {
                            key: slot.key,
                            to_sip,
                        },
                    );
                }
                CallOutput::Media(MediaAction::Dtmf { digits, duration }) => {
                    let events = digits
                        .chars()
                        .filter_map(crate::media::rtp::dtmf_event)
                        .collect();
                    services.media.send(
                        slot.worker,
                        MediaCommand::Dtmf {
                            key: slot.key,
                            events,
                            duration,
                        },
                    );
                }
                CallOutput::Media(MediaAction::Remove) => {
                    services
                        .media
                        .send(slot.worker, MediaCommand::Remove { key: slot.key });
                }
                CallOutput::Finished(record) => {
                    self.webhook(call_id, WebhookKind::Ended, Some(&record));
                    services.metrics.calls_active.dec();
                    services.metrics.call_finished(record.result_label());
                    if let Some(quality) = &record.quality {
                        services.metrics.call_quality(quality);
                    }
                    if let Some(setup) = record.setup {
                        services
                            .metrics
                            .call_setup_seconds
                            .observe(setup.as_secs_f64());
                    }
                    info!(
                        call_id = %call_id,
                        ended_by = ?record.ending.by,
                        cause = record.ending.cause.as_str(),
                        sip_status = ?record.ending.sip_status,
                        talk_secs = record.talk.map(|t| t.as_secs()),
                        mos = record.quality.map(|q| q.mos),
                        loss_webrtc = record.quality.map(|q| q.webrtc.lost),
                        loss_sip = record.quality.map(|q| q.sip.lost),
                        jitter_ms = record.quality.map(|q| q.webrtc.jitter_ms.max(q.sip.jitter_ms)),
                        "call ended"
                    );
                }
            }
        }
        if self
            .calls
            .get(call_id)
            .is_some_and(|slot| slot.call.is_done())
        {
            self.calls.remove(call_id);
        }
    }
}

/// Escapes a value for a SIP URI header part (RFC 3261 §19.1.1: `;` `=` `@` … as %XX).
fn escape_uri_header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The browser-facing quality report: both legs and an E-model MOS from the worse one.
fn call_quality(
    webrtc: crate::media::quality::LegQuality,
    sip: crate::media::quality::LegQuality,
) -> signaling::CallQuality {
    let leg = |q: crate::media::quality::LegQuality| signaling::LegQuality {
        packets: q.packets,
        lost: q.lost,
        jitter_ms: (q.jitter_ms * 100.0).round() / 100.0,
        rtt_ms: q.rtt_ms.map(|rtt| (rtt * 100.0).round() / 100.0),
    };
    let loss = webrtc.loss_fraction().max(sip.loss_fraction());
    let jitter = webrtc.jitter_ms.max(sip.jitter_ms);
    let rtt = match (webrtc.rtt_ms, sip.rtt_ms) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    let mos = crate::media::quality::mos(loss, jitter, rtt);
    signaling::CallQuality {
        webrtc: leg(webrtc),
        sip: leg(sip),
        mos: (mos * 100.0).round() / 100.0,
    }
}

/// A call's SDES state under `policy`: fresh keys from the CSPRNG (one per suite) unless SRTP
/// is off. `None` when the system's random source failed.
fn new_sdes(policy: crate::sdp::SrtpPolicy) -> Option<crate::sdp::Sdes> {
    if policy == crate::sdp::SrtpPolicy::Off {
        return Some(crate::sdp::Sdes::off());
    }
    let keys = [
        crate::sdp::MasterKey::random().ok()?,
        crate::sdp::MasterKey::random().ok()?,
    ];
    Some(crate::sdp::Sdes::new(policy, keys))
}

#[cfg(test)]
mod memory_footprint {
    /// Each session's channels allocate a block of 32 messages at creation and its calls map
    /// allocates slots for several calls at the first: large values there are paid by every
    /// agent (heaptrack found 13 KiB per session and 43 KiB per call from these two).
    #[test]
    fn per_session_values_stay_small() {
        assert!(std::mem::size_of::<super::CallSlot>() <= 1024);
        // The calls map holds pointers: its first allocation is several entries wide.
        trait MapValue {
            type Value;
        }
        impl<K, V> MapValue for std::collections::HashMap<K, V> {
            type Value = V;
        }
        assert!(std::mem::size_of::<<super::CallSlots as MapValue>::Value>() <= 8);
        assert!(std::mem::size_of::<super::SessionEvent>() <= 24);
        // What the event channel's slots hold.
        assert_eq!(
            std::mem::size_of::<Box<super::SessionEvent>>(),
            std::mem::size_of::<usize>()
        );
        assert!(std::mem::size_of::<crate::sip::AgentInbound>() <= 32);
    }
}
