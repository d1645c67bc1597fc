//! A simulated browser: the `/ws` signaling session plus one str0m peer per call.
//!
//! The WebSocket is read by a small task that only forwards frames (so pings are answered and
//! arrival times are taken even while a test is busy elsewhere); everything else happens in
//! the caller's task, one request at a time (`&mut self`), like a browser tab.
//!
//! ```no_run
//! # async fn demo() -> loadtest::Result<()> {
//! use std::time::Duration;
//! use loadtest::{CallEvent, SimBrowser};
//!
//! let mut browser = SimBrowser::connect("ws://127.0.0.1:8080/ws").await?;
//! browser.hello("1001", "secret").await?;
//! let call = browser.call("echo", Default::default()).await?;
//! call.wait_connected(Duration::from_secs(5)).await?;
//! let stats = call.wait_frames(100, Duration::from_secs(10)).await?;
//! assert_eq!(stats.corrupted, 0);
//! browser.hangup(call.call_id()).await?;
//! let ended = browser.next_event_for(call.call_id()).await?;
//! assert!(matches!(ended, CallEvent::Ended(_)));
//! # Ok(()) }
//! ```

mod call;
mod pacer;
mod peer;
mod realtime;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use signaling::{
    Ack, Auth, CallAnswered, CallEarlyMedia, CallEnded, CallRequest, CallRinging, ClientMessage,
    HangupRequest, Hello, PROTOCOL_VERSION, RequestId, ServerMessage, Welcome,
};
use str0m::change::SdpAnswer;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use call::SimCall;
pub use pacer::{FramePacer, PacingStats};
pub use peer::Codecs;

use crate::clock;
use crate::{Error, Result};

/// How long a reply or event may take unless [`SimBrowser::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What we announce in `hello`, so gateway logs show simulated sessions for what they are.
const USER_AGENT: &str = concat!("callgate-loadtest/", env!("CARGO_PKG_VERSION"));

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One frame (or the end) forwarded by the reader task, stamped on arrival.
enum Incoming {
    Text(Instant, String),
    Binary,
    Closed(Option<String>),
    Failed(String),
}

/// A progress event about one call, as the gateway reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// `call_ringing`.
    Ringing(CallRinging),
    /// `call_early_media`.
    EarlyMedia(CallEarlyMedia),
    /// `call_answered`.
    Answered(CallAnswered),
    /// `call_ended`: nothing more will come for this call.
    Ended(CallEnded),
}

impl CallEvent {
    /// The call the event is about.
    pub fn call_id(&self) -> &str {
        match self {
            CallEvent::Ringing(e) => &e.call_id,
            CallEvent::EarlyMedia(e) => &e.call_id,
            CallEvent::Answered(e) => &e.call_id,
            CallEvent::Ended(e) => &e.call_id,
        }
    }

    /// The event inside `message`, or the message back if it is not a call event.
    pub fn from_message(message: ServerMessage) -> Result<CallEvent, Box<ServerMessage>> {
        match message {
            ServerMessage::CallRinging(e) => Ok(CallEvent::Ringing(e)),
            ServerMessage::CallEarlyMedia(e) => Ok(CallEvent::EarlyMedia(e)),
            ServerMessage::CallAnswered(e) => Ok(CallEvent::Answered(e)),
            ServerMessage::CallEnded(e) => Ok(CallEvent::Ended(e)),
            other => Err(Box::new(other)),
        }
    }
}

/// How to place a call; `Default` is a plain G.711 call that sends audio until stopped.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Extra SIP headers for the INVITE (names need the gateway's allowed prefix, e.g. `X-`).
    pub headers: BTreeMap<String, String>,
    /// Codecs the offer lists.
    pub codecs: Codecs,
    /// Send only this many frames (then keep receiving); `None` sends until the call stops,
    /// `Some(0)` never sends.
    pub frame_limit: Option<u64>,
    /// The CRM's call UUID; the gateway generates one when absent.
    pub call_uuid: Option<String>,
    /// Send no audio until [`SimCall::start_sending`] (e.g. once the call is answered, so that
    /// frames sent while the far end is not yet connected do not count as lost).
    pub start_paused: bool,
    /// Also record every echo's round trip here (the run's timeline of latency against load).
    pub rtt_window: Option<std::sync::Arc<crate::media::RttWindow>>,
    /// Send the audio frames through this pacer, at their exact slot instants, instead of
    /// on the runtime's 1 ms timer ticks (see [`FramePacer`]).
    pub pacer: Option<std::sync::Arc<FramePacer>>,
}

/// A call's media socket on loopback, and the pacer's handle on it when the call is paced.
fn media_socket(
    pacer: Option<&std::sync::Arc<FramePacer>>,
) -> Result<(UdpSocket, Option<call::PacedSend>)> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let paced = match pacer {
        Some(pacer) => Some(call::PacedSend {
            pacer: pacer.clone(),
            socket: std::sync::Arc::new(socket.try_clone()?),
        }),
        None => None,
    };
    Ok((UdpSocket::from_std(socket)?, paced))
}

/// The call a progress event is about, or `None` for any other message.
fn event_call_id(message: &ServerMessage) -> Option<&str> {
    match message {
        ServerMessage::CallRinging(e) => Some(&e.call_id),
        ServerMessage::CallEarlyMedia(e) => Some(&e.call_id),
        ServerMessage::CallAnswered(e) => Some(&e.call_id),
        ServerMessage::CallEnded(e) => Some(&e.call_id),
        _ => None,
    }
}

/// A simulated browser tab: one WebSocket session to callgate's `/ws`.
pub struct SimBrowser {
    sink: SplitSink<WsStream, Message>,
    inbox: mpsc::UnboundedReceiver<Incoming>,
    /// Messages read while looking for something else, oldest first.
    backlog: VecDeque<(Instant, ServerMessage)>,
    reader: JoinHandle<()>,
    next_request_id: RequestId,
    timeout: Duration,
    last_event_at: Option<Instant>,
}

impl Drop for SimBrowser {
    fn drop(&mut self) {
        // The reader owns the read half; without this the TCP connection would outlive us.
        self.reader.abort();
    }
}

impl SimBrowser {
    /// Opens the WebSocket (`ws://host:port/ws`, or `wss://` trusting the system's CAs); no
    /// message is sent yet.
    pub async fn connect(url: &str) -> Result<SimBrowser> {
        SimBrowser::connect_trusting(url, None).await
    }

    /// Like [`SimBrowser::connect`]; a `wss://` URL is verified against the PEM CA
    /// certificates `ca_pem` instead of the system's (a test CA, a private deployment).
    pub async fn connect_trusting(url: &str, ca_pem: Option<&[u8]>) -> Result<SimBrowser> {
        let connector = match ca_pem {
            Some(pem) => Some(tokio_tungstenite::Connector::Rustls(
                crate::tls::client_config(Some(pem)).map_err(Error::WebSocket)?,
            )),
            None => None,
        };
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
        let (ws, _response) = tokio::time::timeout(DEFAULT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout {
                after: DEFAULT_TIMEOUT,
                what: "the WebSocket handshake",
            })?
            .map_err(|e| Error::WebSocket(e.to_string()))?;
        let (sink, mut stream) = ws.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let incoming = match frame {
                    Ok(Message::Text(text)) => Incoming::Text(clock::now(), text.as_str().into()),
                    Ok(Message::Binary(_)) => Incoming::Binary,
                    Ok(Message::Close(frame)) => {
                        let reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                        let _ = tx.send(Incoming::Closed(reason));
                        return;
                    }
                    // Pings are answered by tungstenite itself.
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                    Err(e) => {
                        let _ = tx.send(Incoming::Failed(e.to_string()));
                        return;
                    }
                };
                if tx.send(incoming).is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Closed(None));
        });
        Ok(SimBrowser {
            sink,
            inbox,
            backlog: VecDeque::new(),
            reader,
            next_request_id: 1,
            timeout: DEFAULT_TIMEOUT,
            last_event_at: None,
        })
    }

    /// Sets how long replies and events may take (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A fresh request id; the typed requests use these too, so ids never repeat.
    pub fn next_request_id(&mut self) -> RequestId {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// When the event last returned by `next_event*` arrived (for setup-latency figures).
    pub fn last_event_at(&self) -> Option<Instant> {
        self.last_event_at
    }

    /// Opens the session with SIP credentials.
    pub async fn hello(&mut self, extension: &str, password: &str) -> Result<Welcome> {
        self.hello_resuming(extension, password, None).await
    }

    /// Opens the session with SIP credentials, asking to resume the session an earlier
    /// welcome's `resume_token` names (as a reloaded page does).
    pub async fn hello_resuming(
        &mut self,
        extension: &str,
        password: &str,
        resume_token: Option<&str>,
    ) -> Result<Welcome> {
        let message = ClientMessage::Hello(Hello {
            request_id: self.next_request_id(),
            protocol: PROTOCOL_VERSION,
            auth: Auth::SipCredentials {
                extension: extension.into(),
                password: password.into(),
            },
            user_agent: Some(USER_AGENT.into()),
            resume_token: resume_token.map(str::to_string),
        });
        match self.request(&message, "the welcome").await? {
            ServerMessage::Welcome(w) => Ok(w),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Application-level keepalive.
    pub async fn ping(&mut self) -> Result<Ack> {
        let message = ClientMessage::Ping {
            request_id: self.next_request_id(),
        };
        self.expect_ack(&message, "the ping ack").await
    }

    /// Places a G.711 call (PCMU, PCMA, telephone-event) that sends audio until stopped.
    pub async fn call(&mut self, to: &str, headers: BTreeMap<String, String>) -> Result<SimCall> {
        let options = CallOptions {
            headers,
            ..CallOptions::default()
        };
        self.call_with(to, options).await
    }

    /// Places a call offering `codecs` (e.g. [`Codecs::OpusOnly`] for the refusal case).
    pub async fn call_with_codecs(
        &mut self,
        to: &str,
        headers: BTreeMap<String, String>,
        codecs: Codecs,
    ) -> Result<SimCall> {
        let options = CallOptions {
            headers,
            codecs,
            ..CallOptions::default()
        };
        self.call_with(to, options).await
    }

    /// Places a call: builds the peer and its offer, sends `call`, applies the answer from
    /// the `ack` and starts the media task. Returns once the answer is applied; ICE and DTLS
    /// complete in the background (see [`SimCall::wait_connected`]).
    pub async fn call_with(&mut self, to: &str, options: CallOptions) -> Result<SimCall> {
        let request_id = self.next_request_id();
        let to = to.to_string();
        let headers = options.headers.clone();
        let call_uuid = options.call_uuid.clone();
        self.offer_and_start(options, "the call ack", move |sdp| {
            ClientMessage::Call(CallRequest {
                request_id,
                to,
                sdp,
                headers,
                call_uuid,
            })
        })
        .await
    }

    /// Reconnects the audio of a call kept across a WebSocket drop (listed in
    /// `welcome.resumed`): a new peer offers, `renegotiate` carries the offer and the ack
    /// the gateway's answer, and a new media task starts (frames counted afresh).
    pub async fn renegotiate(&mut self, call_id: &str, options: CallOptions) -> Result<SimCall> {
        let request_id = self.next_request_id();
        let call_id = call_id.to_string();
        let mut call = self
            .offer_and_start(options, "the renegotiate ack", move |sdp| {
                ClientMessage::Renegotiate(signaling::RenegotiateRequest {
                    request_id,
                    call_id,
                    sdp,
                })
            })
            .await?;
        call.call_uuid = None;
        Ok(call)
    }

    /// Builds a peer and its offer, sends the request `make` builds around the offer, applies
    /// the answer from its ack and starts the media task.
    async fn offer_and_start(
        &mut self,
        options: CallOptions,
        what: &'static str,
        make: impl FnOnce(String) -> ClientMessage,
    ) -> Result<SimCall> {
        let started_at = clock::now();
        let (socket, paced) = media_socket(options.pacer.as_ref())?;
        let local_addr = socket.local_addr()?;
        let mut offering = peer::offer(options.codecs, local_addr, started_at)?;
        let message = make(offering.offer_sdp.clone());
        let requested_at = clock::now();
        let ack = self.expect_ack(&message, what).await?;
        let (Some(call_id), Some(answer_sdp)) = (&ack.call_id, &ack.sdp) else {
            return Err(Error::IncompleteAck(Box::new(ack)));
        };
        let (call_id, answer_sdp) = (call_id.clone(), answer_sdp.clone());
        let applied = SdpAnswer::from_sdp_string(&answer_sdp)
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                offering
                    .rtc
                    .sdp_api()
                    .accept_answer(offering.pending, answer)
                    .map_err(|e| e.to_string())
            });
        if let Err(reason) = applied {
            return Err(Error::BadAnswer { call_id, reason });
        }
        let send = peer::negotiated_g711(&offering.rtc, offering.mid);
        Ok(SimCall::start(call::CallSetup {
            call_id,
            call_uuid: ack.call_uuid.clone(),
            offer_sdp: offering.offer_sdp,
            answer_sdp,
            rtc: offering.rtc,
            mid: offering.mid,
            socket,
            local_addr,
            send,
            frame_limit: options.frame_limit,
            start_paused: options.start_paused,
            rtt_window: options.rtt_window.clone(),
            started_at,
            requested_at,
            paced,
        }))
    }

    /// Answers an `incoming_call`: accepts the gateway's offer with a str0m peer, sends
    /// `answer` and starts the media task (audio flows once the gateway answered the PBX).
    pub async fn answer(
        &mut self,
        incoming: &signaling::IncomingCall,
        options: CallOptions,
    ) -> Result<SimCall> {
        let started_at = clock::now();
        let (socket, paced) = media_socket(options.pacer.as_ref())?;
        let local_addr = socket.local_addr()?;
        let answering = peer::answer(options.codecs, &incoming.sdp, local_addr, started_at)?;
        let message = ClientMessage::Answer(signaling::AnswerRequest {
            request_id: self.next_request_id(),
            call_id: incoming.call_id.clone(),
            sdp: answering.answer_sdp.clone(),
        });
        let requested_at = clock::now();
        self.expect_ack(&message, "the answer ack").await?;
        let send = peer::negotiated_g711(&answering.rtc, answering.mid);
        Ok(SimCall::start(call::CallSetup {
            call_id: incoming.call_id.clone(),
            call_uuid: None,
            offer_sdp: incoming.sdp.clone(),
            answer_sdp: answering.answer_sdp,
            rtc: answering.rtc,
            mid: answering.mid,
            socket,
            local_addr,
            send,
            frame_limit: options.frame_limit,
            start_paused: options.start_paused,
            rtt_window: options.rtt_window.clone(),
            started_at,
            requested_at,
            paced,
        }))
    }

    /// Waits for the next `incoming_call`, keeping other messages for later reads.
    pub async fn next_incoming(&mut self) -> Result<signaling::IncomingCall> {
        match self
            .wait_for("an incoming call", |m| {
                matches!(m, ServerMessage::IncomingCall(_))
            })
            .await?
        {
            ServerMessage::IncomingCall(incoming) => Ok(incoming),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Waits for the first message `wanted` accepts (from the backlog or the socket); the
    /// others read meanwhile are kept for later reads.
    pub async fn wait_for(
        &mut self,
        what: &'static str,
        wanted: impl Fn(&ServerMessage) -> bool,
    ) -> Result<ServerMessage> {
        if let Some(index) = self.backlog.iter().position(|(_, m)| wanted(m))
            && let Some((_, message)) = self.backlog.remove(index)
        {
            return Ok(message);
        }
        let deadline = clock::now() + self.timeout;
        loop {
            let (at, message) = self.read_until(deadline, self.timeout, what).await?;
            if wanted(&message) {
                return Ok(message);
            }
            self.backlog.push_back((at, message));
        }
    }

    /// Ends a call (CANCEL before answer, BYE after); the call's media keeps running until the
    /// gateway closes it or the [`SimCall`] is stopped.
    pub async fn hangup(&mut self, call_id: &str) -> Result<Ack> {
        let message = ClientMessage::Hangup(HangupRequest {
            request_id: self.next_request_id(),
            call_id: call_id.into(),
        });
        self.expect_ack(&message, "the hangup ack").await
    }

    /// Sends `message` and returns the reply carrying its request id (`welcome`, `ack`,
    /// `token_refreshed` or `error`; an `error` without id also counts). Other messages read meanwhile are kept
    /// for [`SimBrowser::recv`] and `next_event*`.
    pub async fn request(
        &mut self,
        message: &ClientMessage,
        what: &'static str,
    ) -> Result<ServerMessage> {
        let id = message.request_id();
        self.send_message(message).await?;
        let deadline = clock::now() + self.timeout;
        let reply = loop {
            let (at, received) = self.read_until(deadline, self.timeout, what).await?;
            let matches = match &received {
                ServerMessage::Welcome(m) => m.request_id == id,
                ServerMessage::Ack(m) => m.request_id == id,
                ServerMessage::TokenRefreshed(m) => m.request_id == id,
                ServerMessage::Error(m) => m.request_id.is_none_or(|r| r == id),
                _ => false,
            };
            if matches {
                break received;
            }
            self.backlog.push_back((at, received));
        };
        match reply {
            ServerMessage::Error(e) => Err(Error::Refused(Box::new(e))),
            other => Ok(other),
        }
    }

    async fn expect_ack(&mut self, message: &ClientMessage, what: &'static str) -> Result<Ack> {
        match self.request(message, what).await? {
            ServerMessage::Ack(ack) => Ok(ack),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Sends a typed message without waiting for anything.
    pub async fn send_message(&mut self, message: &ClientMessage) -> Result<()> {
        let text = serde_json::to_string(message).map_err(|e| Error::WebSocket(e.to_string()))?;
        self.send_raw(&text).await
    }

    /// Sends `text` as one text frame, verbatim: for malformed-input tests.
    pub async fn send_raw(&mut self, text: &str) -> Result<()> {
        self.send_frame(Message::text(text)).await
    }

    /// Sends a binary frame, which the protocol forbids: for `binary_not_supported` tests.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.send_frame(Message::binary(bytes)).await
    }

    /// Sends a close frame with `code` and `reason` and keeps the session readable, to see
    /// how the gateway reacts (its close reply arrives as [`Error::Closed`] from `recv`).
    pub async fn send_close(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        self.send_frame(Message::Close(Some(frame))).await
    }

    async fn send_frame(&mut self, frame: Message) -> Result<()> {
        tokio::time::timeout(self.timeout, self.sink.send(frame))
            .await
            .map_err(|_| Error::Timeout {
                after: self.timeout,
                what: "the WebSocket send",
            })?
            .map_err(|e| Error::WebSocket(e.to_string()))
    }

    /// The next message of any kind (replies and events alike), within the timeout.
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        let timeout = self.timeout;
        self.recv_timeout(timeout).await
    }

    /// The next message of any kind, within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage> {
        if let Some((_, message)) = self.backlog.pop_front() {
            return Ok(message);
        }
        let (_, message) = self
            .read_until(clock::now() + timeout, timeout, "a message")
            .await?;
        Ok(message)
    }

    /// The next call event of any call; other messages read meanwhile stay for `recv`.
    pub async fn next_event(&mut self) -> Result<CallEvent> {
        self.next_event_matching(None).await
    }

    /// The next event about `call_id`; anything else read meanwhile is kept.
    pub async fn next_event_for(&mut self, call_id: &str) -> Result<CallEvent> {
        self.next_event_matching(Some(call_id)).await
    }

    async fn next_event_matching(&mut self, call_id: Option<&str>) -> Result<CallEvent> {
        let wanted = |m: &ServerMessage| {
            event_call_id(m).is_some_and(|id| call_id.is_none_or(|want| want == id))
        };
        let found = match self.backlog.iter().position(|(_, m)| wanted(m)) {
            Some(index) => self.backlog.remove(index),
            None => None,
        };
        let (at, message) = match found {
            Some(found) => found,
            None => {
                let deadline = clock::now() + self.timeout;
                loop {
                    let (at, message) = self
                        .read_until(deadline, self.timeout, "a call event")
                        .await?;
                    if wanted(&message) {
                        break (at, message);
                    }
                    self.backlog.push_back((at, message));
                }
            }
        };
        self.last_event_at = Some(at);
        CallEvent::from_message(message).map_err(Error::Unexpected)
    }

    /// Reads one message from the socket (not the backlog) before `deadline`.
    ///
    /// `budget` is the whole wait the deadline was computed from, for the error message.
    async fn read_until(
        &mut self,
        deadline: Instant,
        budget: Duration,
        what: &'static str,
    ) -> Result<(Instant, ServerMessage)> {
        let timeout = deadline.saturating_duration_since(clock::now());
        let incoming = tokio::time::timeout(timeout, self.inbox.recv())
            .await
            .map_err(|_| Error::Timeout {
                after: budget,
                what,
            })?;
        match incoming {
            Some(Incoming::Text(at, text)) => match serde_json::from_str(&text) {
                Ok(message) => Ok((at, message)),
                Err(_) => Err(Error::BadFrame(text)),
            },
            Some(Incoming::Binary) => Err(Error::BinaryFrame),
            Some(Incoming::Closed(reason)) => Err(Error::Closed { reason }),
            Some(Incoming::Failed(e)) => Err(Error::WebSocket(e)),
            None => Err(Error::Closed { reason: None }),
        }
    }

    /// Closes the WebSocket politely (code 1000, a logout: callgate ends the session at once
    /// instead of keeping it for a resume) and waits (briefly) for the connection to end.
    ///
    /// The gateway's close reply is not required: a reset after our close frame also counts
    /// as closed (a browser does not care either). To assert on the gateway's closing
    /// behaviour, send the close with [`SimBrowser::send_close`] and watch [`SimBrowser::recv`].
    /// Calls placed from this browser keep their media until stopped or dropped.
    pub async fn close(mut self) -> Result<()> {
        let logout = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "logout".into(),
        }));
        let closing = tokio::time::timeout(self.timeout, async {
            self.sink.send(logout).await?;
            self.sink.close().await
        })
        .await;
        if let Ok(Err(e)) = closing {
            return Err(Error::WebSocket(e.to_string()));
        }
        let deadline = clock::now() + self.timeout;
        loop {
            match self
                .read_until(deadline, self.timeout, "the close reply")
                .await
            {
                Ok(_) => continue,
                Err(Error::Closed { .. } | Error::WebSocket(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
