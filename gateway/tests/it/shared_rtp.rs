//! `rtp.sockets`: the media worker's shared SIP-leg pair (the default) against per-call pairs,
//! with PBXs that behave as real ones do: a port per call (the demo PBX), RTP sent from
//! another port than its SDP names (a PBX behind NAT), and every call's RTP on one address
//! (what SIPp's `-rtp_echo` and some SBCs do: told apart by SSRC, and where that cannot work,
//! per-call sockets).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::config::{RtpSockets, Settings};
use gateway::media::SipLegPorts;
use tokio::net::UdpSocket;

use crate::support::*;

/// A hand-written UDP SIP peer playing the PBX: answers every INVITE at once with SDP naming
/// `advertised` for media, answers any other request (BYE, REGISTER) with 200, and echoes
/// every datagram arriving on either media socket back to its source, always sending from
/// `sender` (so `advertised != sender` is a PBX behind NAT). Its echo carries its own SSRC
/// (ours with the bits flipped), as a PBX's stream would, not the reflected one.
struct RawPbx {
    sip_addr: SocketAddr,
    /// While false, media is received but not echoed.
    echoing: Arc<AtomicBool>,
    /// While true, each answer names the offer's own media address (a PBX connecting calls
    /// directly to each other, its own media socket unused).
    direct_media: Arc<AtomicBool>,
    /// Where callgate sent the PBX's media, in arrival order: the advertised socket or the
    /// sender's.
    arrivals: Arc<Mutex<Vec<SocketAddr>>>,
    /// The `m=audio` ports of callgate's SDP offers, in arrival order.
    offered_ports: Arc<Mutex<Vec<u16>>>,
    /// While true, echoes are kept in `held` instead of being sent.
    holding: Arc<AtomicBool>,
    /// Echoes kept while holding, with their destinations.
    held: HeldEchoes,
    /// The socket echoes are sent from.
    sender: Arc<UdpSocket>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Echoes a [`RawPbx`] keeps while holding, each with its destination.
type HeldEchoes = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

impl RawPbx {
    /// Media on one socket: SDP names it and echoes come from it.
    async fn symmetric() -> RawPbx {
        let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind media");
        RawPbx::start(media, None, true).await
    }

    /// Media on one socket, echoed unchanged (SSRC included), as SIPp's `-rtp_echo` does.
    async fn reflecting() -> RawPbx {
        let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind media");
        RawPbx::start(media, None, false).await
    }

    /// SDP names one socket; echoes come from another.
    async fn behind_nat() -> RawPbx {
        let advertised = UdpSocket::bind("127.0.0.1:0").await.expect("bind media");
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind media");
        RawPbx::start(sender, Some(advertised), true).await
    }

    /// `own_ssrc`: the echo carries the PBX's SSRC (ours with the bits flipped), not ours.
    async fn start(sender: UdpSocket, advertised: Option<UdpSocket>, own_ssrc: bool) -> RawPbx {
        let sip = UdpSocket::bind("127.0.0.1:0").await.expect("bind SIP");
        let sip_addr = sip.local_addr().expect("addr");
        let sender = Arc::new(sender);
        let advertised = advertised.map(Arc::new);
        let media_addr = advertised
            .as_ref()
            .unwrap_or(&sender)
            .local_addr()
            .expect("addr");
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let echoing = Arc::new(AtomicBool::new(true));
        let direct_media = Arc::new(AtomicBool::new(false));
        let offered_ports = Arc::new(Mutex::new(Vec::new()));
        let holding = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![tokio::spawn(answer_sip(
            sip,
            media_addr,
            offered_ports.clone(),
            direct_media.clone(),
        ))];
        for socket in std::iter::once(sender.clone()).chain(advertised) {
            let (sender, arrivals, echoing) = (sender.clone(), arrivals.clone(), echoing.clone());
            let (holding, held) = (holding.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                let local = socket.local_addr().expect("addr");
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    arrivals.lock().expect("arrivals").push(local);
                    if !echoing.load(Ordering::Relaxed) {
                        continue;
                    }
                    let rtcp = (200..=206).contains(&buf[1]);
                    if own_ssrc && n >= 12 && !rtcp {
                        for byte in &mut buf[8..12] {
                            *byte = !*byte;
                        }
                    }
                    if holding.load(Ordering::Relaxed) {
                        held.lock().expect("held").push((buf[..n].to_vec(), from));
                        continue;
                    }
                    let _ = sender.send_to(&buf[..n], from).await;
                }
            }));
        }
        RawPbx {
            sip_addr,
            echoing,
            direct_media,
            arrivals,
            offered_ports,
            holding,
            held,
            sender,
            tasks,
        }
    }

    /// Echoes held so far.
    fn held_count(&self) -> usize {
        self.held.lock().expect("held").len()
    }

    /// Sends every held echo back to back (a burst) and returns how many; holding goes on.
    async fn release_held(&self) -> usize {
        let burst = std::mem::take(&mut *self.held.lock().expect("held"));
        for (datagram, to) in &burst {
            self.sender.send_to(datagram, *to).await.expect("send");
        }
        burst.len()
    }

    fn arrivals(&self) -> Vec<SocketAddr> {
        self.arrivals.lock().expect("arrivals").clone()
    }

    fn offered_ports(&self) -> Vec<u16> {
        self.offered_ports.lock().expect("offers").clone()
    }
}

impl Drop for RawPbx {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The PBX's SIP side: 200 with SDP to INVITEs (the same To tag for retransmissions), 200 to
/// everything else but ACK.
async fn answer_sip(
    socket: UdpSocket,
    media: SocketAddr,
    offered_ports: Arc<Mutex<Vec<u16>>>,
    direct_media: Arc<AtomicBool>,
) {
    let local = socket.local_addr().expect("addr");
    let mut buf = vec![0u8; 8192];
    let mut answered = Vec::new();
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let method = request.split(' ').next().unwrap_or("").to_owned();
        if method == "ACK" || method.starts_with("SIP/") {
            continue;
        }
        let copied: String = request
            .split("\r\n")
            .filter(|line| {
                let name = line.split(':').next().unwrap_or("").trim();
                ["via", "v", "from", "f", "call-id", "i", "cseq"]
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h))
            })
            .map(|line| format!("{line}\r\n"))
            .collect();
        let to = request
            .split("\r\n")
            .find(|line| {
                let name = line.split(':').next().unwrap_or("").trim();
                name.eq_ignore_ascii_case("to") || name.eq_ignore_ascii_case("t")
            })
            .unwrap_or("To: <sip:pbx@127.0.0.1>")
            .to_owned();
        let to = if to.contains(";tag=") {
            to
        } else {
            format!("{to};tag=rawpbx")
        };
        let response = if method == "INVITE" {
            let call_id = request
                .split("\r\n")
                .find(|l| l.to_ascii_lowercase().starts_with("call-id:"))
                .unwrap_or("")
                .to_owned();
            let offer = request.split("\r\n\r\n").nth(1).unwrap_or("");
            let m_line = offer
                .lines()
                .find(|l| l.starts_with("m=audio "))
                .unwrap_or("m=audio 0 RTP/AVP 0");
            let mut fields = m_line.split(' ');
            let port = fields.nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let codec = fields.nth(1).unwrap_or("0").to_owned();
            if !answered.contains(&call_id) {
                answered.push(call_id);
                offered_ports.lock().expect("offers").push(port);
            }
            let offered_ip = offer
                .lines()
                .find_map(|l| l.strip_prefix("c=IN IP4 "))
                .and_then(|ip| ip.trim().parse().ok());
            let answered_media = match offered_ip {
                Some(ip) if direct_media.load(Ordering::Relaxed) => SocketAddr::new(ip, port),
                _ => media,
            };
            let sdp = format!(
                "v=0\r\no=rawpbx 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP {codec} 101\r\na=rtpmap:101 telephone-event/8000\r\n\
                 a=sendrecv\r\n",
                ip = answered_media.ip(),
                port = answered_media.port(),
            );
            format!(
                "SIP/2.0 200 OK\r\n{copied}{to}\r\nContact: <sip:pbx@{local}>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
        } else {
            format!("SIP/2.0 200 OK\r\n{copied}{to}\r\nContent-Length: 0\r\n\r\n")
        };
        let _ = socket.send_to(response.as_bytes(), from).await;
    }
}

fn settings(proxy: SocketAddr, sockets: RtpSockets) -> Settings {
    let mut s = test_settings(proxy);
    s.rtp.sockets = sockets;
    s.validate().expect("settings validate");
    s
}

/// The worker's shared RTP address, as the control plane hands it to calls.
fn shared_address(gateway: &gateway::app::Gateway) -> SocketAddr {
    let services = gateway.services();
    match services.media.sip_leg_ports(0, &services.ports, None) {
        Ok(SipLegPorts::Shared(addr)) => addr,
        other => panic!("expected the shared pair, got {other:?}"),
    }
}

async fn table(gateway: &gateway::app::Gateway, name: &str) -> f64 {
    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    metric(
        &text,
        &format!("callgate_table_entries{{table=\"{name}\"}}"),
    )
}

async fn media_errors(gateway: &gateway::app::Gateway, kind: &str) -> f64 {
    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    metric(
        &text,
        &format!("callgate_media_errors_total{{kind=\"{kind}\"}}"),
    )
}

/// Three calls at once through the demo PBX (a port per call, as FreeSWITCH and Asterisk
/// give): all relayed on the worker's one shared pair, each call's audio kept apart, no
/// per-call port leased, every route gone after the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_the_workers_pair_and_keep_their_audio_apart() {
    let demo = start_demo(None).await;
    let gateway = start_gateway(settings(demo.sip_addr(), RtpSockets::Shared)).await;
    let shared = shared_address(&gateway);
    assert!(
        std::net::UdpSocket::bind(shared).is_err(),
        "callgate holds the shared RTP port {shared}"
    );
    let mut browsers = Vec::new();
    let mut calls = Vec::new();
    for ext in ["1001", "1002", "1003"] {
        let mut browser = browser_as(&gateway, ext, "secret").await;
        let call = answered_call(&mut browser, "echo")
            .await
            .expect("the demo PBX answers");
        browsers.push(browser);
        calls.push(call);
    }
    for call in &calls {
        let stats = call
            .wait_frames(100, Duration::from_secs(10))
            .await
            .expect("each call's echo comes back");
        assert_eq!(
            (stats.corrupted, stats.foreign, stats.duplicates),
            (0, 0, 0),
            "a call got another call's audio: {stats:?}"
        );
    }
    assert!(
        eventually(Duration::from_secs(2), || {
            gateway.services().table_sizes().media_sip_sources == 3
        })
        .await,
        "three PBX addresses routed: {:?}",
        gateway.services().table_sizes()
    );
    assert_eq!(table(&gateway, "rtp_ports").await, 0.0, "no per-call pair");
    assert_eq!(media_errors(&gateway, "unknown_source").await, 0.0);
    for (browser, call) in browsers.iter_mut().zip(calls) {
        let id = call.call_id().to_string();
        browser.hangup(&id).await.expect("hangup acked");
        ended(browser, &id).await;
        call.stop().await;
    }
    assert_no_leftovers(&gateway).await;
}

/// A PBX behind NAT: its SDP names one port, its RTP comes from another. On the shared
/// socket the first packet from the PBX's IP latches the call to that source; callgate's
/// audio then goes there, and the echo reaches the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_sending_from_another_port_is_latched_on_the_shared_socket() {
    let pbx = RawPbx::behind_nat().await;
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let shared = shared_address(&gateway);
    let mut browser = browser(&gateway).await;
    let call = answered_call(&mut browser, "1000")
        .await
        .expect("the raw PBX answers");
    let stats = call
        .wait_frames(100, Duration::from_secs(10))
        .await
        .expect("the PBX's RTP from its other port reaches the browser");
    assert_eq!((stats.corrupted, stats.foreign), (0, 0), "{stats:?}");
    assert_eq!(pbx.offered_ports(), vec![shared.port()]);
    // callgate sent to the SDP address until the first echo latched it to the sender.
    let arrivals = pbx.arrivals();
    let last = *arrivals.last().expect("media reached the PBX");
    assert_ne!(
        arrivals[0], last,
        "first to the SDP port, then the latched one"
    );
    let switched = arrivals.iter().position(|a| *a == last).unwrap_or(0);
    assert!(
        arrivals[switched..].iter().all(|a| *a == last),
        "never back to the SDP port after the latch: {arrivals:?}"
    );
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

/// One browser per extension, each with an answered call to the PBX's 1000, placed one
/// after the other.
async fn answered_calls(
    gateway: &gateway::app::Gateway,
    extensions: &[&str],
) -> Vec<(loadtest::browser::SimBrowser, loadtest::browser::SimCall)> {
    let mut calls = Vec::new();
    for ext in extensions {
        let mut browser = browser_as(gateway, ext, "secret").await;
        let call = answered_call(&mut browser, "1000").await.expect("answered");
        calls.push((browser, call));
    }
    calls
}

/// Hangs up each call and checks nothing is left.
async fn hang_up_all(
    gateway: &gateway::app::Gateway,
    calls: Vec<(loadtest::browser::SimBrowser, loadtest::browser::SimCall)>,
) {
    for (mut browser, call) in calls {
        let id = call.call_id().to_string();
        browser.hangup(&id).await.expect("hangup acked");
        ended(&mut browser, &id).await;
        call.stop().await;
    }
    assert_no_leftovers(gateway).await;
}

/// A PBX that sends every call's RTP from one address (one port for all calls): on the
/// shared socket the calls are told apart by the SSRC each call has received while it was
/// alone on that address, or as the only call not yet receiving. Both calls keep their own
/// audio, with no frame of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_a_pbx_sends_from_one_address_are_told_apart_by_ssrc() {
    let pbx = RawPbx::symmetric().await;
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let mut calls = Vec::new();
    for ext in ["1001", "1002", "1003"] {
        let mut browser = browser_as(&gateway, ext, "secret").await;
        let call = answered_call(&mut browser, "1000").await.expect("answered");
        call.wait_frames(20, Duration::from_secs(10))
            .await
            .expect("this call's echo before the next call starts");
        calls.push((browser, call));
    }
    for (_, call) in &calls {
        let before = call
            .wait_frames(0, Duration::from_secs(1))
            .await
            .expect("stats")
            .frames_received;
        let stats = call
            .wait_frames(before + 50, Duration::from_secs(10))
            .await
            .expect("every call keeps its echo while the others run");
        assert_eq!((stats.foreign, stats.corrupted), (0, 0), "{stats:?}");
    }
    let offered = pbx.offered_ports();
    assert!(offered.iter().all(|p| *p == offered[0]), "{offered:?}");
    assert_eq!(gateway.services().table_sizes().media_sip_sources, 1);
    assert_eq!(media_errors(&gateway, "sip_source_ambiguous").await, 0.0);
    hang_up_all(&gateway, calls).await;
}

/// Two calls to an echo on one address (SIPp's `-rtp_echo`), both answered before anything
/// comes back: each echo carries the call's own SSRC, which tells them apart at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_calls_to_an_echo_on_one_address_are_told_apart_by_their_own_ssrc() {
    let pbx = RawPbx::reflecting().await;
    pbx.echoing.store(false, Ordering::Relaxed);
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let calls = answered_calls(&gateway, &["1001", "1002"]).await;
    pbx.echoing.store(true, Ordering::Relaxed);
    for (_, call) in &calls {
        let stats = call
            .wait_frames(50, Duration::from_secs(10))
            .await
            .expect("each call gets its own echo");
        assert_eq!((stats.foreign, stats.corrupted), (0, 0), "{stats:?}");
    }
    let offered = pbx.offered_ports();
    assert_eq!(offered[0], offered[1], "both calls offered the shared port");
    assert_eq!(media_errors(&gateway, "sip_source_ambiguous").await, 0.0);
    hang_up_all(&gateway, calls).await;
}

/// A PBX that connects two calls' media directly to each other (Asterisk's `direct_media`,
/// FreeSWITCH's bypass media) between two agents of one callgate: both calls offered the
/// worker's shared socket, so each is told to send to that very socket. The worker hands
/// each call's packets to the other call (its own SSRC marks the sender), never back to the
/// sender. The simulated agents' frames look alike, so one side talks at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_a_pbx_connects_directly_hear_each_other_through_the_shared_socket() {
    let pbx = RawPbx::symmetric().await;
    pbx.direct_media.store(true, Ordering::Relaxed);
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let shared = shared_address(&gateway);
    let mut first_browser = browser_as(&gateway, "1001", "secret").await;
    let first = answered_call(&mut first_browser, "1002")
        .await
        .expect("answered");
    let mut second_browser = browser_as(&gateway, "1002", "secret").await;
    let second = second_browser
        .call_with(
            "1001",
            loadtest::browser::CallOptions {
                start_paused: true,
                ..Default::default()
            },
        )
        .await
        .expect("call accepted");
    loop {
        match event(&mut second_browser, second.call_id()).await {
            loadtest::browser::CallEvent::Answered(_) => break,
            loadtest::browser::CallEvent::Ended(end) => panic!("{end:?}"),
            _ => {}
        }
    }
    assert_eq!(pbx.offered_ports(), vec![shared.port(), shared.port()]);
    // The first talks: the second hears it (frames it never sent count as foreign).
    second
        .wait_for(Duration::from_secs(10), "the first call's audio", |s| {
            s.foreign >= 100
        })
        .await
        .expect("the second call hears the first");
    let talker = first.stats();
    assert_eq!(
        (talker.frames_received, talker.foreign),
        (0, 0),
        "the first call hears itself: {talker:?}"
    );
    // The second talks: the first, silent now, hears it.
    first.stop_sending().await.expect("first stops");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = first.stats();
    second.start_sending().await.expect("second talks");
    first
        .wait_for(Duration::from_secs(10), "the second call's audio", |s| {
            s.frames_received + s.foreign >= before.frames_received + before.foreign + 100
        })
        .await
        .expect("the first call hears the second");
    assert_eq!(second.stats().frames_received, 0, "the second hears itself");
    assert_eq!(media_errors(&gateway, "sip_source_ambiguous").await, 0.0);
    hang_up_all(
        &gateway,
        vec![(first_browser, first), (second_browser, second)],
    )
    .await;
}

/// The case SSRCs cannot settle: two calls to a one-address PBX both answered before the
/// PBX sends anything. On the shared socket its packets match neither call: they are
/// dropped and counted (never handed to the wrong call). With `rtp.sockets = "per_call"`
/// each call has its own port and both carry audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_calls_to_a_one_address_pbx_need_per_call_sockets() {
    for sockets in [RtpSockets::Shared, RtpSockets::PerCall] {
        let pbx = RawPbx::symmetric().await;
        pbx.echoing.store(false, Ordering::Relaxed);
        let gateway = start_gateway(settings(pbx.sip_addr, sockets)).await;
        let calls = answered_calls(&gateway, &["1001", "1002"]).await;
        pbx.echoing.store(true, Ordering::Relaxed);
        let offered = pbx.offered_ports();
        for (_, call) in &calls {
            let result = call.wait_frames(50, Duration::from_secs(3)).await;
            match sockets {
                RtpSockets::Shared => {
                    assert!(result.is_err(), "an ambiguous packet was relayed");
                }
                RtpSockets::PerCall => {
                    let stats = result.expect("each call has its own pair");
                    assert_eq!(stats.foreign, 0, "{stats:?}");
                }
            }
            let stats = call
                .wait_frames(0, Duration::from_secs(1))
                .await
                .expect("stats");
            assert_eq!(stats.foreign, 0, "{sockets:?}: crossed audio {stats:?}");
        }
        let ambiguous = media_errors(&gateway, "sip_source_ambiguous").await;
        match sockets {
            RtpSockets::Shared => {
                assert_eq!(offered[0], offered[1], "both calls offered the shared port");
                assert!(ambiguous > 0.0, "dropped packets are counted");
            }
            RtpSockets::PerCall => {
                assert_ne!(offered[0], offered[1], "a pair per call");
                assert_eq!(ambiguous, 0.0);
            }
        }
        hang_up_all(&gateway, calls).await;
    }
}

/// Garbage on the shared pair during a call — an empty datagram, a byte, a truncated RTP
/// header, a well-formed RTP packet, one larger than a receive slot and an RTCP report, all
/// from an address no call expects —
/// is dropped and counted (`unknown_source`), without latching the call to it; the call's
/// audio goes on and nothing is left after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_shared_pair_is_dropped_and_counted() {
    let demo = start_demo(None).await;
    let gateway = start_gateway(settings(demo.sip_addr(), RtpSockets::Shared)).await;
    let shared = shared_address(&gateway);
    let mut browser = browser(&gateway).await;
    let call = answered_call(&mut browser, "echo")
        .await
        .expect("the demo PBX answers");
    let before = call
        .wait_frames(20, Duration::from_secs(10))
        .await
        .expect("echo before the garbage")
        .frames_received;
    let unknown_before = media_errors(&gateway, "unknown_source").await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut rtp = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
    rtp.extend([0xff; 160]);
    let rtcp = [
        0x80, 200, 0x00, 0x06, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    // Larger than a receive slot (2,048 bytes): truncated by the kernel, still one datagram.
    let oversized = [0x80u8; 3000];
    let garbage: [&[u8]; 5] = [&[], &[0x80], &[0x80, 0x00, 0x00], &rtp, &oversized];
    for datagram in garbage {
        stranger.send_to(datagram, shared).await.expect("send");
    }
    let rtcp_port = SocketAddr::new(shared.ip(), shared.port() + 1);
    stranger.send_to(&rtcp, rtcp_port).await.expect("send");
    let mut counted = 0.0;
    for _ in 0..40 {
        counted = media_errors(&gateway, "unknown_source").await - unknown_before;
        if counted >= 6.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 6.0, "every stray datagram counted once");
    let stats = call
        .wait_frames(before + 50, Duration::from_secs(10))
        .await
        .expect("the call's echo goes on, still from the demo PBX");
    assert_eq!((stats.corrupted, stats.foreign), (0, 0), "{stats:?}");
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

/// A burst from the PBX larger than a receive batch (a PBX flushing a queue, a stalled path
/// clearing), with nothing after it, reaches the browser whole and in order: the worker
/// reads a socket it left non-empty again before it sleeps, since the kernel reports the
/// socket readable again only when more arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_a_receive_batch_reaches_the_browser_whole() {
    let pbx = RawPbx::symmetric().await;
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let calls = answered_calls(&gateway, &["1001"]).await;
    let call = &calls[0].1;
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("echo flows");
    pbx.holding.store(true, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || pbx.held_count() >= 150).await,
        "the PBX holds three seconds of audio"
    );
    call.stop_sending().await.expect("stop sending");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = call.stats();
    let burst = pbx.release_held().await as u64;
    assert!(burst >= 150, "{burst} datagrams in the burst");
    let stats = call
        .wait_frames(before.frames_received + burst, Duration::from_secs(5))
        .await
        .expect("every datagram of the burst reaches the browser");
    assert_eq!(
        (
            stats.corrupted,
            stats.foreign,
            stats.duplicates,
            stats.reordered
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        media_errors(&gateway, "unknown_source").await,
        0.0,
        "nothing dropped on the way"
    );
    hang_up_all(&gateway, calls).await;
}

/// Where callgate's WebRTC socket is, from the `a=candidate` line of its SDP answer.
fn webrtc_candidate(answer_sdp: &str) -> SocketAddr {
    let line = answer_sdp
        .lines()
        .find(|l| l.starts_with("a=candidate"))
        .expect("a candidate in callgate's answer");
    let fields: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", fields[4], fields[5])
        .parse()
        .expect("candidate address")
}

/// Packets from a call's peers right after it ended (in flight when it was torn down) are
/// counted as `after_end`, apart from `unknown_source`, which stays for traffic no call
/// expected: so an operator can alert on the latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_right_after_a_call_ends_are_counted_apart_from_unknown_sources() {
    let pbx = RawPbx::symmetric().await;
    let gateway = start_gateway(settings(pbx.sip_addr, RtpSockets::Shared)).await;
    let shared = shared_address(&gateway);
    let (mut browser, call) = answered_calls(&gateway, &["1001"])
        .await
        .into_iter()
        .next()
        .expect("one call");
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("echo flows");
    let browser_addr = call.local_addr();
    let webrtc = webrtc_candidate(call.answer_sdp());
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let tables = gateway.services().table_sizes();
            tables.media_sip_sources == 0 && tables.media_addresses == 0
        })
        .await,
        "the bridge is gone: {:?}",
        gateway.services().table_sizes()
    );
    let unknown = media_errors(&gateway, "unknown_source").await;
    let after = media_errors(&gateway, "after_end").await;
    let mut rtp = vec![0x80, 0x00, 0x00, 0x07, 0, 0, 3, 0, 0x0b, 0xad, 0xf0, 0x0d];
    rtp.extend([0xd5; 160]);
    // The PBX's last echo, and the browser's last packet from its old port, arrive late.
    pbx.sender.send_to(&rtp, shared).await.expect("send");
    let late_browser = UdpSocket::bind(browser_addr)
        .await
        .expect("the browser's old port is free again");
    late_browser.send_to(&rtp, webrtc).await.expect("send");
    // A stranger is still unknown.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    stranger.send_to(&rtp, shared).await.expect("send");
    let mut counted = (0.0, 0.0);
    for _ in 0..40 {
        counted = (
            media_errors(&gateway, "after_end").await - after,
            media_errors(&gateway, "unknown_source").await - unknown,
        );
        if counted == (2.0, 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted, (2.0, 1.0), "(after_end, unknown_source)");
    assert_no_leftovers(&gateway).await;
}
