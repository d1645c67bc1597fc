//! Shared set-up for the black-box tests: a gateway on loopback ephemeral ports, the demo PBX,
//! a simulated browser, and a plain HTTP GET for `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use gateway::app::Gateway;
use gateway::config::Settings;
use gateway::demo::{DemoPbx, DemoPbxConfig};
use loadtest::browser::{CallEvent, SimBrowser, SimCall};
use signaling::{CallEnded, ClientMessage, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Each gateway gets its own slice of the SIP-leg RTP range so parallel tests never compete.
/// The slices lie below Linux's ephemeral range (32768–60999: the kernel hands those ports to
/// every port-0 socket of the suite) and away from the fixed ranges of the tests that start the
/// binary (10000–10419, 61000–61399, 64000–64199) and of baresip (62000–62999); they were at
/// 42000 up, overlapping both, and a gateway there could find every port of its slice taken
/// ("no media port available"). The fixed ranges stay outside the ephemeral range too: the
/// binary tests were at 47000 up until a port-0 socket of another test took their shared
/// SIP-leg port (47002) and `callgate demo` could not start.
static NEXT_RTP_SLICE: AtomicU16 = AtomicU16::new(0);
/// First port of the slices, their size and count (20000–32599).
const RTP_SLICES_START: u16 = 20000;
const RTP_SLICE_PORTS: u16 = 100;
const RTP_SLICES: u16 = 126;

/// The first port of the next slice whose first pair is free. Slices are reused after the
/// last one (the suite starts more gateways than there are slices), and a long test may still
/// hold the one it had: the shared SIP-leg pair (`rtp.sockets = "shared"`) is the slice's
/// first pair and must be bindable.
fn free_rtp_slice() -> u16 {
    let mut base = RTP_SLICES_START;
    for _ in 0..RTP_SLICES {
        let slice = NEXT_RTP_SLICE.fetch_add(1, Ordering::Relaxed) % RTP_SLICES;
        base = RTP_SLICES_START + slice * RTP_SLICE_PORTS;
        let free = |port: u16| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free(base) && free(base + 1) {
            break;
        }
    }
    base
}

/// Moves `settings` to a slice of the RTP range of its own, for a second gateway started from
/// them while the first still runs (each binds its range's first pair for its media worker).
pub fn fresh_rtp_range(settings: &mut Settings) {
    let base = free_rtp_slice();
    settings.rtp.port_min = base;
    settings.rtp.port_max = base + RTP_SLICE_PORTS - 1;
}

/// Settings for a test gateway pointed at `proxy`.
pub fn test_settings(proxy: SocketAddr) -> Settings {
    let mut s = Settings::default();
    s.http.listen = "127.0.0.1:0".parse().expect("addr");
    s.webrtc.bind = "127.0.0.1:0".parse().expect("addr");
    s.webrtc.workers = 1;
    s.sip.listen = "127.0.0.1:0".parse().expect("addr");
    s.sip.proxy = proxy;
    let base = free_rtp_slice();
    s.rtp.port_min = base;
    s.rtp.port_max = base + RTP_SLICE_PORTS - 1;
    s.rtp.inactivity_timeout = Duration::from_secs(10);
    // Scripted SIPp peers would count a keepalive OPTIONS as an unexpected message;
    // gateway/tests/it/keepalive.rs turns it on.
    s.sip.keepalive_interval = Duration::ZERO;
    // Closing a test's WebSocket ends its calls at once; the resume tests turn this on.
    s.calls.resume_grace = Duration::ZERO;
    s.validate().expect("test settings validate");
    s
}

/// Logs to the test output when `CALLGATE_TEST_LOG` holds a filter (e.g. `debug`).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("CALLGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A started gateway.
pub async fn start_gateway(settings: Settings) -> Gateway {
    init_logs();
    Gateway::start(settings).await.expect("gateway starts")
}

/// The demo PBX on an ephemeral port, with short timers for tests.
pub async fn start_demo(password: Option<&str>) -> DemoPbx {
    let config = DemoPbxConfig {
        sip_addr: "127.0.0.1:0".parse().expect("addr"),
        password: password.map(str::to_string),
        ring_time: Duration::from_millis(600),
        early_media_time: Duration::from_secs(3),
        callback_delay: Duration::from_millis(500),
        ..DemoPbxConfig::default()
    };
    DemoPbx::start(config, CancellationToken::new())
        .await
        .expect("demo PBX starts")
}

/// A browser connected to `gateway` that has said hello as extension 1001.
pub async fn browser(gateway: &Gateway) -> SimBrowser {
    browser_as(gateway, "1001", "secret").await
}

/// A browser connected to `gateway` that has said hello with these credentials.
pub async fn browser_as(gateway: &Gateway, extension: &str, password: &str) -> SimBrowser {
    let mut browser = SimBrowser::connect(&ws_url(gateway))
        .await
        .expect("WebSocket connects");
    browser.set_timeout(Duration::from_secs(10));
    browser
        .hello(extension, password)
        .await
        .expect("hello accepted");
    browser
}

/// `ws://…/ws` of a gateway.
pub fn ws_url(gateway: &Gateway) -> String {
    format!("ws://{}/ws", gateway.http_addr())
}

/// Waits for the next event of `call_id` and returns it.
pub async fn event(browser: &mut SimBrowser, call_id: &str) -> CallEvent {
    browser
        .next_event_for(call_id)
        .await
        .expect("a call event arrives")
}

/// Calls `to` (no extra headers) and waits for `call_answered`, skipping progress events.
/// A call that ends first comes back as its `call_ended`, for the caller to report with its
/// own context (a peer's log, a proxy's report).
pub async fn answered_call(browser: &mut SimBrowser, to: &str) -> Result<SimCall, CallEnded> {
    let call = browser
        .call(to, std::collections::BTreeMap::new())
        .await
        .expect("call accepted");
    loop {
        match event(browser, call.call_id()).await {
            CallEvent::Answered(_) => return Ok(call),
            CallEvent::Ended(ended) => return Err(ended),
            _ => {}
        }
    }
}

/// Waits for `call_ended` of `call_id`, skipping progress events.
pub async fn ended(browser: &mut SimBrowser, call_id: &str) -> CallEnded {
    loop {
        if let CallEvent::Ended(ended) = event(browser, call_id).await {
            return ended;
        }
    }
}

/// `GET path` on the gateway's HTTP port, returning (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("HTTP connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP answers in time")
        .expect("HTTP response read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one metric line (exact name with labels), or 0 if absent.
pub fn metric(text: &str, name_with_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name_with_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Polls until `done` holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Nothing of a finished call is left: no media bridge, no SIP dialog.
pub async fn assert_no_leftovers(gateway: &Gateway) {
    let services = gateway.services().clone();
    let clean = eventually(Duration::from_secs(5), || {
        services
            .media
            .snapshots()
            .iter()
            .all(|s| s.bridges == 0 && s.routed_sip_sources == 0)
            && services.sip.dialog_count() == 0
    })
    .await;
    assert!(
        clean,
        "leftovers: bridges {:?}, SIP dialogs {:?}",
        services
            .media
            .snapshots()
            .iter()
            .map(|s| s.bridges)
            .collect::<Vec<_>>(),
        services.sip.dialog_ids()
    );
}

/// Sends one hand-written out-of-dialog INVITE over UDP, as a PBX (or an attacker) would, and
/// returns the first final response's text; provisional responses are skipped.
pub async fn raw_invite_final_response(
    sip: SocketAddr,
    request_user: &str,
    from_user: &str,
    call_id: &str,
) -> String {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let local = socket.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:{request_user}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\n\
         From: <sip:{from_user}@{local}>;tag=t1\r\nTo: <sip:{request_user}@{sip}>\r\nCall-ID: {call_id}@test\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:{from_user}@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(invite.as_bytes(), sip).await.expect("sent");
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
            .await
            .expect("a final answer")
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

/// Reads the started `callgate` binary's ready line from its stdout (which must be piped) and
/// returns the HTTP address it names (`host:port`).
pub fn ready_http_addr(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader, Read};
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("ready line");
    if !line.contains("http://") {
        // No ready line: callgate did not start; say why (its stderr, when piped).
        let status = child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        panic!("callgate printed no ready line ({line:?}), exit {status:?}:\n{stderr}");
    }
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// After abuse, a normal echo call still works end to end.
pub async fn prove_still_serving(gateway: &Gateway) {
    let mut browser = browser(gateway).await;
    let call = browser
        .call("echo", std::collections::BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("audio still flows");
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
}

/// Sends `register`; the `registered` or `registration_failed` that follows.
pub async fn register_outcome(browser: &mut SimBrowser) -> ServerMessage {
    send_register(browser).await;
    registration_result(browser).await
}

/// Sends `register` without waiting, for a hand-written PBX to answer the REGISTER first.
pub async fn send_register(browser: &mut SimBrowser) {
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Register { request_id })
        .await
        .expect("sent");
}

/// The next `registered` or `registration_failed`.
pub async fn registration_result(browser: &mut SimBrowser) -> ServerMessage {
    browser
        .wait_for("a registration outcome", |m| {
            matches!(
                m,
                ServerMessage::Registered(_) | ServerMessage::RegistrationFailed(_)
            )
        })
        .await
        .expect("a registration outcome")
}

/// A bodiless response to `request` (its text) with the headers RFC 3261 §8.2.6 copies, for
/// hand-written PBXs.
pub fn sip_response(request: &str, status: &str) -> String {
    let copied: String = request
        .split("\r\n")
        .filter(|line| {
            let name = line.split(':').next().unwrap_or("").trim();
            ["via", "from", "to", "call-id", "cseq"]
                .iter()
                .any(|copied| name.eq_ignore_ascii_case(copied))
        })
        .map(|line| format!("{line}\r\n"))
        .collect();
    format!("SIP/2.0 {status}\r\n{copied}Content-Length: 0\r\n\r\n")
}
