//! A tiny stand-in for callgate, just enough to validate the simulated browser against a peer
//! that behaves like the real gateway on the wire: the `/ws` protocol from `signaling`, and an
//! ICE-lite str0m peer per call, all calls sharing one UDP port, echoing audio back.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signaling::{
    Ack, CallAnswered, CallEnded, CallRinging, ClientMessage, EndedBy, ErrorCode, ErrorMessage,
    ServerMessage, Welcome, parse_client_message,
};
use str0m::change::SdpOffer;
use str0m::format::{Codec, CodecExtra, FormatParams};
use str0m::media::{Frequency, MediaData};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The fixture's clock (the workspace bans `Instant::now` outside one function per crate).
#[allow(
    clippy::disallowed_methods,
    reason = "the fake gateway's only clock read"
)]
fn clock() -> Instant {
    Instant::now()
}

/// A running fake gateway; dropping it stops everything.
pub struct FakeGateway {
    /// `ws://127.0.0.1:port/ws`.
    pub ws_url: String,
    /// Every text frame any client sent, verbatim, in arrival order.
    pub frames: mpsc::UnboundedReceiver<String>,
    /// DTMF digits received per call, as `(call_id, digit)`.
    pub dtmf: mpsc::UnboundedReceiver<(String, char)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How the fake gateway echoes audio, to prove the browser's checker catches each fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Every frame back, untouched.
    Faithful,
    /// Every `n`th frame back with one payload byte flipped.
    CorruptEvery(u64),
    /// Every frame back twice (as two RTP packets).
    Twice,
}

enum MediaControl {
    Add(Box<Peer>),
    Remove(String),
}

struct Peer {
    call_id: String,
    rtc: Rtc,
    last_dtmf_end: Option<u64>,
    echoed: u64,
}

impl FakeGateway {
    /// Binds the WebSocket listener and the media port on loopback and starts serving.
    pub async fn start() -> std::io::Result<FakeGateway> {
        Self::start_with(Echo::Faithful).await
    }

    /// Like [`FakeGateway::start`], echoing as `echo` says.
    pub async fn start_with(echo: Echo) -> std::io::Result<FakeGateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ws_url = format!("ws://{}/ws", listener.local_addr()?);
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let media_addr = socket.local_addr()?;
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let (dtmf_tx, dtmf) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let media = tokio::spawn(media_loop(socket, media_rx, dtmf_tx, echo));
        let calls = Arc::new(AtomicU64::new(1));
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let frames_tx = frames_tx.clone();
                let media_tx = media_tx.clone();
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        session(ws, media_addr, frames_tx, media_tx, calls).await;
                    }
                });
            }
        });
        Ok(FakeGateway {
            ws_url,
            frames,
            dtmf,
            tasks: vec![media, accept],
        })
    }

    /// The next frame a client sent, parsed as JSON, waiting at most 5 s.
    pub async fn next_frame(&mut self) -> Option<serde_json::Value> {
        let text = tokio::time::timeout(Duration::from_secs(5), self.frames.recv())
            .await
            .ok()??;
        serde_json::from_str(&text).ok()
    }

    /// The next frame of `kind` (`"call"`, `"hangup"`...), skipping others.
    pub async fn next_frame_of(&mut self, kind: &str) -> Option<serde_json::Value> {
        loop {
            let frame = self.next_frame().await?;
            if frame["type"] == kind {
                return Some(frame);
            }
        }
    }
}

/// One WebSocket session: answers each request, then pushes call events.
async fn session(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    media_addr: SocketAddr,
    frames_tx: mpsc::UnboundedSender<String>,
    media_tx: mpsc::UnboundedSender<MediaControl>,
    next_call: Arc<AtomicU64>,
) {
    let (mut sink, mut stream) = ws.split();
    let mut authenticated = false;
    let mut calls = HashSet::new();
    while let Some(Ok(frame)) = stream.next().await {
        let replies = match frame {
            Message::Text(text) => {
                let _ = frames_tx.send(text.as_str().to_owned());
                match parse_client_message(text.as_str()) {
                    Err(e) => vec![error(e.request_id, e.code, &e.message)],
                    Ok(message) => handle(
                        message,
                        &mut authenticated,
                        &mut calls,
                        media_addr,
                        &media_tx,
                        &next_call,
                    ),
                }
            }
            Message::Binary(_) => vec![error(None, ErrorCode::BinaryNotSupported, "binary")],
            Message::Close(_) => break,
            _ => continue,
        };
        for reply in replies {
            let Ok(text) = serde_json::to_string(&reply) else {
                continue;
            };
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    }
    // Completes the closing handshake (tungstenite queued the close reply; this flushes it).
    let _ = sink.close().await;
    for call_id in calls {
        let _ = media_tx.send(MediaControl::Remove(call_id));
    }
}

fn handle(
    message: ClientMessage,
    authenticated: &mut bool,
    calls: &mut HashSet<String>,
    media_addr: SocketAddr,
    media_tx: &mpsc::UnboundedSender<MediaControl>,
    next_call: &AtomicU64,
) -> Vec<ServerMessage> {
    let id = message.request_id();
    match message {
        ClientMessage::Hello(hello) => {
            let signaling::Auth::SipCredentials { password, .. } = &hello.auth else {
                return vec![error(
                    Some(id),
                    ErrorCode::AuthModeDisabled,
                    "passwords only",
                )];
            };
            if password.is_empty() {
                return vec![error(Some(id), ErrorCode::AuthFailed, "empty password")];
            }
            *authenticated = true;
            vec![ServerMessage::Welcome(Welcome {
                request_id: id,
                protocol: signaling::PROTOCOL_VERSION,
                session_id: "s-fake".into(),
                server: "fake-gateway/0".into(),
                resume_token: None,
                node: None,
                resumed: None,
                token_expires_at: None,
            })]
        }
        _ if !*authenticated => vec![error(Some(id), ErrorCode::NotAuthenticated, "hello first")],
        ClientMessage::Call(call) => match answer(&call.sdp, media_addr) {
            Err((code, why)) => vec![error(Some(id), code, &why)],
            Ok((rtc, sdp)) => {
                let call_id = format!("c-{}", next_call.fetch_add(1, Ordering::Relaxed));
                calls.insert(call_id.clone());
                // Registered before the ack goes out, so the first STUN finds its peer.
                let _ = media_tx.send(MediaControl::Add(Box::new(Peer {
                    call_id: call_id.clone(),
                    rtc,
                    last_dtmf_end: None,
                    echoed: 0,
                })));
                vec![
                    ServerMessage::Ack(Ack {
                        request_id: id,
                        call_id: Some(call_id.clone()),
                        sdp: Some(sdp),
                        call_uuid: None,
                    }),
                    ServerMessage::CallRinging(CallRinging {
                        call_id: call_id.clone(),
                        sip_status: 180,
                    }),
                    ServerMessage::CallAnswered(CallAnswered { call_id }),
                ]
            }
        },
        ClientMessage::Hangup(hangup) => {
            if !calls.remove(&hangup.call_id) {
                return vec![error(Some(id), ErrorCode::UnknownCall, "no such call")];
            }
            let _ = media_tx.send(MediaControl::Remove(hangup.call_id.clone()));
            vec![
                ServerMessage::Ack(Ack::plain(id)),
                ServerMessage::CallEnded(CallEnded {
                    call_id: hangup.call_id,
                    ended_by: EndedBy::Agent,
                    cause: "normal_clearing".into(),
                    sip_status: None,
                    reason: "hung up".into(),
                    answered: true,
                    quality: None,
                }),
            ]
        }
        ClientMessage::Ping { .. } => vec![ServerMessage::Ack(Ack::plain(id))],
        // The fake only plays calls placed by the browser; the agent features are tested
        // against the real gateway.
        _ => vec![error(
            Some(id),
            ErrorCode::InvalidMessage,
            "not played by the fake gateway",
        )],
    }
}

fn error(request_id: Option<u64>, code: ErrorCode, message: &str) -> ServerMessage {
    ServerMessage::Error(ErrorMessage {
        request_id,
        call_id: None,
        code,
        message: message.into(),
    })
}

/// Builds the ICE-lite peer for an offer, the way callgate does: G.711 + telephone-event only.
fn answer(sdp: &str, media_addr: SocketAddr) -> Result<(Rtc, String), (ErrorCode, String)> {
    let offer =
        SdpOffer::from_sdp_string(sdp).map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
    let has_g711 = offer
        .media_lines
        .iter()
        .flat_map(|m| m.rtp_params())
        .any(|p| matches!(p.spec().codec, Codec::PCMU | Codec::PCMA));
    if !has_g711 {
        return Err((ErrorCode::NoCommonCodec, "neither PCMU nor PCMA".into()));
    }
    let mut config = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_pcmu(true, false)
        .enable_pcma(true, false);
    config.codec_config().add_config(
        126.into(),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::parse_line("0-15"),
    );
    let mut rtc = config.build(clock());
    let candidate =
        Candidate::host(media_addr, "udp").map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
    Ok((rtc, answer.to_sdp_string()))
}

/// All calls' media on one UDP socket: demultiplexed with `Rtc::accepts`, audio echoed.
async fn media_loop(
    socket: UdpSocket,
    mut control: mpsc::UnboundedReceiver<MediaControl>,
    dtmf_tx: mpsc::UnboundedSender<(String, char)>,
    echo: Echo,
) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut peers: Vec<Peer> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let mut wake = clock() + Duration::from_millis(100);
        for peer in &mut peers {
            wake = wake.min(drain(peer, &socket, &dtmf_tx, echo));
        }
        peers.retain(|p| p.rtc.is_alive());
        // Due deadlines are served at once: a tokio sleep would round up to 1 ms, and str0m
        // sends an echoed packet only on the timeout it asks for right after the write.
        let now = clock();
        if wake <= now {
            for peer in &mut peers {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
            }
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            control = control.recv() => match control {
                None => return,
                Some(MediaControl::Add(peer)) => peers.push(*peer),
                Some(MediaControl::Remove(call_id)) => {
                    for peer in peers.iter_mut().filter(|p| p.call_id == call_id) {
                        let _ = peer.rtc.close();
                    }
                }
            },
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) else {
                    continue;
                };
                let input = Input::Receive(clock(), receive);
                if let Some(peer) = peers.iter_mut().find(|p| p.rtc.accepts(&input)) {
                    let _ = peer.rtc.handle_input(input);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = clock();
                for peer in &mut peers {
                    let _ = peer.rtc.handle_input(Input::Timeout(now));
                }
            }
        }
    }
}

/// Drains one peer to its next timeout; echoes audio and reports DTMF on the way.
fn drain(
    peer: &mut Peer,
    socket: &UdpSocket,
    dtmf_tx: &mpsc::UnboundedSender<(String, char)>,
    echo: Echo,
) -> Instant {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(at)) => return at,
            Ok(Output::Transmit(t)) => {
                let _ = socket.try_send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::MediaData(data))) => on_media(peer, data, dtmf_tx, echo),
            Ok(Output::Event(_)) => {}
            Err(_) => {
                peer.rtc.disconnect();
                return clock();
            }
        }
    }
}

fn on_media(
    peer: &mut Peer,
    data: MediaData,
    dtmf_tx: &mpsc::UnboundedSender<(String, char)>,
    echo: Echo,
) {
    if data.params.spec().codec.is_tele() {
        if let CodecExtra::Tele(report) = data.codec_extra
            && report.end
            && peer.last_dtmf_end != Some(data.time.numer())
        {
            peer.last_dtmf_end = Some(data.time.numer());
            let digit = loadtest::media::dtmf_digit(report.event).unwrap_or('?');
            let _ = dtmf_tx.send((peer.call_id.clone(), digit));
        }
        return;
    }
    // Echo: same payload type, same media time, straight back (a mutation inside the drain).
    let Some(writer) = peer.rtc.writer(data.mid) else {
        return;
    };
    let pt = writer.match_params(data.params).unwrap_or(data.pt);
    peer.echoed += 1;
    let mut payload = data.data.to_vec();
    match echo {
        Echo::Faithful => {}
        Echo::CorruptEvery(n) => {
            if peer.echoed.is_multiple_of(n)
                && let Some(last) = payload.last_mut()
            {
                *last ^= 0x40;
            }
        }
        Echo::Twice => {
            let _ = writer.write(pt, data.network_time, data.time, payload.clone());
            // A second write needs its own writer; str0m allows several writes per drain.
            let Some(again) = peer.rtc.writer(data.mid) else {
                return;
            };
            let _ = again.write(pt, data.network_time, data.time, payload);
            return;
        }
    }
    let _ = writer.write(pt, data.network_time, data.time, payload);
}
