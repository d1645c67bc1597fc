//! Demo PBX tests: pure parsers (including never-panic properties) and
//! black-box SIP/RTP flows over real loopback sockets, each on port 0 and
//! bounded in time. The SIP peer is a small rsipstack UAC, or raw UDP where
//! the test needs exact bytes (digest, malformed input, offer-less INVITE).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::{Credential, compute_digest};
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::headers::auth::{Algorithm, AuthQop};
use rsipstack::sip::prelude::{HasHeaders, HeadersExt};
use rsipstack::sip::{Header, Method, Request, Response, SipMessage, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::udp::UdpConnection;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::auth::{self, AuthOutcome, DigestAuth, parse_digest};
use super::rtp::{DtmfDetector, event_char, parse_rtp};
use super::sdp::{self, Codec, Direction, LocalMedia};
use super::transfer::{ReferTarget, parse_refer_to, sipfrag};
use super::udp_guard::{Verdict, vet};
use super::{DemoPbx, DemoPbxConfig};

const TEST_LIMIT: Duration = Duration::from_secs(15);
const STEP: Duration = Duration::from_secs(3);

// ───────────────────────────── pure: SDP ─────────────────────────────

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 111 8 0 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendonly\r\n\
m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";

#[test]
fn sdp_negotiation_picks_first_g711_and_telephone_event() {
    let offer = sdp::parse(OFFER.as_bytes()).expect("valid offer");
    let n = sdp::negotiate(&offer).expect("negotiable");
    assert_eq!((n.index, n.codec, n.pt), (0, Codec::Pcma, 8));
    assert_eq!(n.telephone_event, Some(101));
    assert_eq!(n.direction, Direction::SendOnly);
    let local = LocalMedia {
        ip: "127.0.0.1".parse().expect("ip"),
        port: 5000,
        session_id: 7,
        version: 1,
    };
    let answer = sdp::build_answer(&offer, &n, &local);
    let parsed = sdp::parse(answer.as_bytes()).expect("our answer parses");
    assert_eq!(parsed.media.len(), 2, "same m-line count as the offer");
    assert_eq!(parsed.media[0].port, 5000);
    assert_eq!(parsed.media[0].formats, vec!["8", "101"]);
    assert_eq!(parsed.media[0].direction, Some(Direction::RecvOnly));
    assert_eq!(parsed.media[1].port, 0, "video rejected");
    let back = sdp::negotiate(&parsed).expect("answer is negotiable");
    assert_eq!((back.codec, back.telephone_event), (Codec::Pcma, Some(101)));
}

#[test]
fn sdp_without_g711_or_audio_is_not_acceptable() {
    let opus =
        "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let offer = sdp::parse(opus.as_bytes()).expect("valid");
    assert_eq!(sdp::negotiate(&offer), Err(sdp::NegotiationError::NoCodec));
    let srtp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/SAVP 0\r\n";
    let offer = sdp::parse(srtp.as_bytes()).expect("valid");
    assert_eq!(sdp::negotiate(&offer), Err(sdp::NegotiationError::NoAudio));
    assert!(sdp::parse(b"hello").is_err());
    assert!(sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
}

// ──────────────────────────── pure: digest ───────────────────────────

fn rsip_digest(user: &str, password: &str, nonce: &str, method: &Method, uri: &str) -> String {
    let qop = AuthQop::Auth {
        cnonce: "c0ffee".to_string(),
        nc: 1,
    };
    compute_digest(
        user,
        password,
        auth::REALM,
        nonce,
        method,
        uri,
        Algorithm::Md5,
        Some(&qop),
    )
}

fn authorization(user: &str, nonce: &str, uri: &str, response: &str) -> String {
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"",
        auth::REALM
    )
}

#[test]
fn digest_verification_matches_rsipstack_and_rejects_bad_input() {
    let now = crate::clock::now();
    let auth = DigestAuth::new(Some("secret".to_string()));
    let challenge = auth.challenge(now, false);
    let nonce = parse_digest(&challenge)
        .expect("our challenge parses")
        .nonce;
    let uri = "sip:127.0.0.1:5080";
    let good = rsip_digest("alice", "secret", &nonce, &Method::Register, uri);
    let ok = authorization("alice", &nonce, uri, &good);
    assert_eq!(
        auth.check(&Method::Register, &[&ok], Some("alice"), now),
        AuthOutcome::Accepted
    );
    // Same credentials for another method, user or password.
    assert!(matches!(
        auth.check(&Method::Invite, &[&ok], None, now),
        AuthOutcome::Forbidden(_)
    ));
    assert!(matches!(
        auth.check(&Method::Register, &[&ok], Some("bob"), now),
        AuthOutcome::Forbidden(_)
    ));
    let bad = rsip_digest("alice", "wrong", &nonce, &Method::Register, uri);
    let wrong = authorization("alice", &nonce, uri, &bad);
    assert!(matches!(
        auth.check(&Method::Register, &[&wrong], Some("alice"), now),
        AuthOutcome::Forbidden(_)
    ));
    // A nonce we never issued, no credentials, garbage.
    let foreign = authorization("alice", "0123", uri, &good);
    assert_eq!(
        auth.check(&Method::Register, &[&foreign], Some("alice"), now),
        AuthOutcome::Challenge { stale: true }
    );
    assert_eq!(
        auth.check(&Method::Register, &[], Some("alice"), now),
        AuthOutcome::Challenge { stale: false }
    );
    assert!(matches!(
        auth.check(&Method::Register, &["Digest garbage"], Some("alice"), now),
        AuthOutcome::Malformed(_)
    ));
    // Expired nonce.
    let later = now + auth::NONCE_TTL + Duration::from_secs(1);
    assert_eq!(
        auth.check(&Method::Register, &[&ok], Some("alice"), later),
        AuthOutcome::Challenge { stale: true }
    );
    // Without a configured password any well-formed response naming our nonce passes.
    let open = DigestAuth::new(None);
    let nonce = parse_digest(&open.challenge(now, false))
        .expect("parses")
        .nonce;
    let any = authorization("carol", &nonce, uri, &"0".repeat(32));
    assert_eq!(
        open.check(&Method::Invite, &[&any], None, now),
        AuthOutcome::Accepted
    );
    let short = authorization("carol", &nonce, uri, "abc");
    assert!(matches!(
        open.check(&Method::Invite, &[&short], None, now),
        AuthOutcome::Malformed(_)
    ));
}

#[test]
fn digest_nc_is_hex_not_decimal() {
    // nc=0000000a: rsipstack's verify_digest would format 10 as "00000010".
    let creds = parse_digest(
        "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", \
         response=\"00000000000000000000000000000000\", qop=auth, nc=0000000a, cnonce=\"c\"",
    )
    .expect("parses");
    assert_eq!(creds.nc.as_deref(), Some("0000000a"));
    let ours = auth::expected_response(&creds, "pw", &Method::Invite);
    let with_nc1 = parse_digest(
        "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", \
         response=\"00000000000000000000000000000000\", qop=auth, nc=00000001, cnonce=\"c\"",
    )
    .expect("parses");
    let rsip = compute_digest(
        "a",
        "pw",
        "r",
        "n",
        &Method::Invite,
        "sip:x",
        Algorithm::Md5,
        Some(&AuthQop::Auth {
            cnonce: "c".to_string(),
            nc: 1,
        }),
    );
    assert_eq!(
        auth::expected_response(&with_nc1, "pw", &Method::Invite),
        rsip
    );
    assert_ne!(ours, rsip);
}

// ───────────────────────────── pure: RTP ─────────────────────────────

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn dtmf_packets(pt: u8, digit_event: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, end) in [false, false, true, true, true].into_iter().enumerate() {
        let flags = if end { 0x80 | 10 } else { 10 };
        let duration = (160 * (i as u16 + 1)).to_be_bytes();
        let payload = [digit_event, flags, duration[0], duration[1]];
        out.push(rtp_packet(pt, seq + i as u16, ts, ssrc, &payload));
    }
    out
}

#[test]
fn dtmf_detector_reports_each_event_once() {
    let mut d = DtmfDetector::new(Some(101));
    let mut digits = Vec::new();
    for (i, event) in [1u8, 1, 11, 10].into_iter().enumerate() {
        let ts = 1000 * (i as u32 + 1);
        for p in dtmf_packets(101, event, 10 * i as u16, ts, 42) {
            digits.extend(d.on_packet(&p));
        }
        // Audio in between is ignored.
        digits.extend(d.on_packet(&rtp_packet(0, 0, ts, 42, &[0xff; 160])));
    }
    assert_eq!(digits, vec!['1', '1', '#', '*']);
    assert_eq!(event_char(15), Some('D'));
    assert_eq!(event_char(16), None);
    assert!(
        DtmfDetector::new(None)
            .on_packet(&dtmf_packets(101, 1, 0, 0, 1)[2])
            .is_none()
    );
}

// ──────────────────────────── pure: REFER ────────────────────────────

#[test]
fn refer_to_values_are_parsed_or_refused() {
    let blind = parse_refer_to("<sip:1003@pbx.example.com>").expect("blind");
    assert_eq!(
        blind,
        ReferTarget {
            uri: "sip:1003@pbx.example.com".to_string(),
            user: "1003".to_string(),
            replaces: false,
        }
    );
    assert_eq!(blind.outcome(), StatusCode::OK);
    let attended = "sip:1003@10.0.0.1:5060?Replaces=abc%40h%3Bto-tag%3Dx%3Bfrom-tag%3Dy";
    let t = parse_refer_to(&format!("\"Bob\" <{attended}>;foo=bar")).expect("attended");
    assert_eq!(
        (t.uri.as_str(), t.user.as_str(), t.replaces),
        (attended, "1003", true)
    );
    // addr-spec form: what follows ';' are header parameters.
    let t = parse_refer_to(" sip:BUSY@127.0.0.1 ;x=y").expect("addr-spec");
    assert_eq!(
        (t.uri.as_str(), t.outcome()),
        ("sip:BUSY@127.0.0.1", StatusCode::BusyHere)
    );
    for bad in [
        "",
        "<>",
        "<sip:1003@host",
        "<tel:+15551234567>",
        "<sip:pbx.example.com>",
        "<http://1003@host>",
        "garbage",
        "<sip:1003@>",
    ] {
        assert!(parse_refer_to(bad).is_err(), "{bad:?} must be refused");
    }
    assert_eq!(sipfrag(&StatusCode::Trying), b"SIP/2.0 100 Trying\r\n");
    assert_eq!(sipfrag(&StatusCode::BusyHere), b"SIP/2.0 486 Busy Here\r\n");
}

// ─────────────────────── never-panic properties ──────────────────────

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sdp_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = sdp::parse(&bytes) { let _ = sdp::negotiate(&s); }
    }

    #[test]
    fn sdp_lines_never_panic(lines in proptest::collection::vec("[vcmaot]=[ -~]{0,40}", 0..20)) {
        let text = format!("v=0\r\n{}", lines.join("\r\n"));
        if let Ok(s) = sdp::parse(text.as_bytes()) { let _ = sdp::negotiate(&s); }
    }

    #[test]
    fn digest_parse_never_panics(s in "\\PC{0,200}") {
        let _ = parse_digest(&s);
        let _ = parse_digest(&format!("Digest {s}"));
    }

    #[test]
    fn rtp_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_rtp(&bytes);
        let _ = DtmfDetector::new(Some(bytes.first().copied().unwrap_or(0) & 0x7f)).on_packet(&bytes);
    }

    #[test]
    fn refer_to_parse_never_panics(s in "\\PC{0,120}", user in "[ -~]{0,20}", rest in "[ -~]{0,40}") {
        let _ = parse_refer_to(&s);
        let _ = parse_refer_to(&format!("<sip:{user}@{rest}>"));
        let _ = parse_refer_to(&format!("sip:{user}@[{rest}"));
    }

    #[test]
    fn udp_guard_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = vet(&bytes);
    }

    #[test]
    fn udp_guard_sip_like_never_panics(head in "[A-Z]{1,8} [ -~]{0,30} SIP/2\\.0", hdrs in "[ -~\r\n]{0,200}") {
        let _ = vet(format!("{head}\r\n{hdrs}\r\n\r\n").as_bytes());
    }
}

#[test]
fn udp_guard_answers_unparseable_requests() {
    let via = "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nCall-ID: g1\r\nCSeq: 1 FOO\r\n";
    let unknown_method = format!("FOO sip:echo@127.0.0.1 SIP/2.0\r\n{via}\r\n");
    let Verdict::Reply(resp) = vet(unknown_method.as_bytes()) else {
        panic!("unknown method must be answered");
    };
    let resp = String::from_utf8(resp).expect("ascii");
    assert!(resp.starts_with("SIP/2.0 501 "), "{resp}");
    assert!(resp.contains("Call-ID: g1\r\n") && resp.contains("branch=z9hG4bKx"));
    let truncated = format!("INVITE sip:echo@127.0.0.1 SIP/2.0\r\n{via}");
    assert!(
        matches!(vet(truncated.as_bytes()), Verdict::Reply(r) if r.starts_with(b"SIP/2.0 400 "))
    );
    assert_eq!(vet(b"\x00\x01\x02 garbage"), Verdict::Drop);
    assert_eq!(
        vet(b"FOO sip:x SIP/2.0\r\n\r\n"),
        Verdict::Drop,
        "no Via: nothing to answer"
    );
    assert_eq!(vet(b"\r\n\r\n"), Verdict::Pass, "keepalive is rsipstack's");
}

// ───────────────────────────── harness ───────────────────────────────

fn test_config() -> DemoPbxConfig {
    DemoPbxConfig {
        sip_addr: "127.0.0.1:0".parse().expect("addr"),
        ring_time: Duration::from_millis(300),
        early_media_time: Duration::from_millis(400),
        callback_delay: Duration::from_millis(100),
        ..DemoPbxConfig::default()
    }
}

async fn start_pbx(config: DemoPbxConfig) -> DemoPbx {
    // `RUST_LOG=gateway::demo=debug cargo test ... -- --nocapture` shows the flows.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    DemoPbx::start(config, CancellationToken::new())
        .await
        .expect("demo PBX starts")
}

/// Poll `f` until it holds (bounded by the test's own timeout).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = crate::clock::now() + STEP;
    while !f() {
        assert!(
            crate::clock::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Tasks an idle PBX runs: endpoint, dispatcher, TCP accept, housekeeping.
const IDLE_TASKS: usize = 4;

/// Nothing of a finished call is left: no call, no dialog, no task (and so
/// no RTP socket, which only its echo task owns).
async fn assert_quiescent(pbx: &DemoPbx) {
    eventually("active_calls == 0", || pbx.active_calls() == 0).await;
    eventually("no open dialogs", || pbx.shared.open_dialogs() == 0).await;
    eventually("only the idle tasks", || pbx.tracker.len() == IDLE_TASKS).await;
}

/// A minimal rsipstack user agent on 127.0.0.1:0.
struct Uac {
    cancel: CancellationToken,
    endpoint: EndpointInnerRef,
    layer: Arc<DialogLayer>,
    addr: SocketAddr,
    /// New INVITEs the UAC receives (the PBX's callback).
    invites: mpsc::UnboundedReceiver<Transaction>,
}

impl Drop for Uac {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn uac() -> Uac {
    let cancel = CancellationToken::new();
    let transport = TransportLayer::new(cancel.child_token());
    let udp = UdpConnection::create_connection(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        Some(cancel.child_token()),
    )
    .await
    .expect("uac socket");
    let addr = udp.get_addr().get_socketaddr().expect("uac addr");
    transport.add_transport(udp.into());
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel.child_token())
        .with_transport_layer(transport)
        .build();
    let incoming = endpoint.incoming_transactions().expect("incoming");
    let inner = endpoint.inner.clone();
    let layer = Arc::new(DialogLayer::new(inner.clone()));
    tokio::spawn(async move { endpoint.serve().await });
    let (tx, invites) = mpsc::unbounded_channel();
    tokio::spawn(uac_incoming(layer.clone(), incoming, tx));
    Uac {
        cancel,
        endpoint: inner,
        layer,
        addr,
        invites,
    }
}

async fn uac_incoming(
    layer: Arc<DialogLayer>,
    mut incoming: TransactionReceiver,
    invites: mpsc::UnboundedSender<Transaction>,
) {
    while let Some(mut tx) = incoming.recv().await {
        let to_tag = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten());
        if to_tag.is_some() {
            if let Some(mut d) = layer.match_dialog(&tx) {
                tokio::spawn(async move { d.handle(&mut tx).await.ok() });
            } else {
                tx.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
            }
        } else if tx.original.method == Method::Invite {
            invites.send(tx).ok();
        } else {
            tx.reply(StatusCode::OK).await.ok();
        }
    }
}

impl Uac {
    fn uri(&self, user: &str) -> rsipstack::sip::Uri {
        format!("sip:{user}@{}", self.addr).try_into().expect("uri")
    }

    fn invite(&self, pbx: SocketAddr, ext: &str, offer: Option<String>) -> InviteOption {
        InviteOption {
            caller: self.uri("alice"),
            callee: format!("sip:{ext}@{pbx}").try_into().expect("uri"),
            contact: self.uri("alice"),
            content_type: offer.as_ref().map(|_| "application/sdp".to_string()),
            offer: offer.map(String::into_bytes),
            credential: Some(credential("alice", "pw")),
            ..Default::default()
        }
    }

    async fn call(
        &self,
        pbx: SocketAddr,
        ext: &str,
        offer: Option<String>,
    ) -> (InviteDialog, Option<Response>, DialogStateReceiver) {
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let (dialog, resp) = timeout(
            STEP,
            self.layer.do_invite(self.invite(pbx, ext, offer), state_tx),
        )
        .await
        .expect("INVITE answered in time")
        .expect("INVITE sent");
        (dialog, resp, state_rx)
    }

    async fn register(&self, pbx: SocketAddr, user: &str, password: &str) -> Response {
        let mut reg = Registration::new(self.endpoint.clone(), Some(credential(user, password)));
        let server = format!("sip:{pbx}").try_into().expect("uri");
        timeout(STEP, reg.register(server, Some(60)))
            .await
            .expect("REGISTER answered in time")
            .expect("REGISTER sent")
    }
}

fn credential(user: &str, password: &str) -> Credential {
    Credential {
        username: user.to_string(),
        password: password.to_string(),
        realm: None,
        auth_username: None,
    }
}

/// A test RTP endpoint and the SDP offer pointing at it.
async fn rtp_peer() -> (UdpSocket, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("rtp socket");
    let port = sock.local_addr().expect("addr").port();
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    );
    (sock, offer)
}

/// The RTP address an SDP body (answer or offer) names.
fn media_addr(body: &[u8]) -> SocketAddr {
    let sdp = sdp::parse(body).expect("SDP parses");
    let n = sdp::negotiate(&sdp).expect("SDP negotiable");
    let (ip, port) = n.remote.expect("c= and port");
    SocketAddr::new(ip, port)
}

/// Send `count` RTP packets and assert each comes back byte-identical.
async fn assert_echo(sock: &UdpSocket, to: SocketAddr, count: u16) {
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let payload: Vec<u8> = (0..160)
            .map(|i| (i as u8).wrapping_add(seq as u8))
            .collect();
        let pkt = rtp_packet(0, seq, u32::from(seq) * 160, 0xdead_beef, &payload);
        sock.send_to(&pkt, to).await.expect("send rtp");
        let (len, from) = timeout(STEP, sock.recv_from(&mut buf))
            .await
            .expect("echo in time")
            .expect("recv");
        assert_eq!(from, to, "echo comes from the advertised port");
        assert_eq!(&buf[..len], &pkt[..], "packet {seq} echoed byte-identical");
    }
}

async fn assert_no_echo(sock: &UdpSocket, to: SocketAddr) {
    let pkt = rtp_packet(0, 1, 1, 1, &[0u8; 160]);
    sock.send_to(&pkt, to).await.ok();
    let mut buf = [0u8; 2048];
    let got = timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
    assert!(
        got.is_err(),
        "RTP socket still echoing after the call ended"
    );
}

fn drain_states(rx: &mut DialogStateReceiver) -> Vec<DialogState> {
    let mut out = Vec::new();
    while let Ok(s) = rx.try_recv() {
        out.push(s);
    }
    out
}

/// Raw UDP SIP peer for byte-exact requests.
struct Raw {
    sock: UdpSocket,
    pbx: SocketAddr,
}

impl Raw {
    async fn new(pbx: SocketAddr) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("raw socket");
        Raw { sock, pbx }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    async fn send(&self, msg: &str) {
        self.sock
            .send_to(msg.as_bytes(), self.pbx)
            .await
            .expect("send");
    }

    async fn recv(&self) -> SipMessage {
        let mut buf = vec![0u8; 8192];
        let (len, _) = timeout(STEP, self.sock.recv_from(&mut buf))
            .await
            .expect("SIP message in time")
            .expect("recv");
        SipMessage::try_from(&buf[..len]).expect("PBX sends parseable SIP")
    }

    /// The next response that is not 100 Trying.
    async fn response(&self) -> Response {
        loop {
            match self.recv().await {
                SipMessage::Response(r) if r.status_code == StatusCode::Trying => continue,
                SipMessage::Response(r) => return r,
                SipMessage::Request(r) => panic!("unexpected request {}", r.method),
            }
        }
    }

    /// The next final response to a `method` request, skipping 100 Trying and responses to
    /// other requests (e.g. a 2xx retransmitted while its ACK is still on the way).
    async fn response_to(&self, method: Method) -> Response {
        loop {
            let r = self.response().await;
            if r.cseq_header().ok().and_then(|c| c.method().ok()) == Some(method) {
                return r;
            }
        }
    }

    /// A request inside the dialog whose `To` (with the PBX's tag) is `to`.
    fn in_dialog(&self, method: &str, ruri: &str, call_id: &str, cseq: u32, to: &str) -> String {
        self.request(method, ruri, call_id, cseq, "", "").replacen(
            &format!("To: <{ruri}>"),
            &format!("To: {to}"),
            1,
        )
    }

    fn request(
        &self,
        method: &str,
        ruri: &str,
        call_id: &str,
        cseq: u32,
        extra: &str,
        body: &str,
    ) -> String {
        let addr = self.addr();
        let branch = format!("z9hG4bK{:x}", rand::random::<u64>());
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{addr}>;tag=raw1\r\nTo: <{ruri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@{addr}>\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

impl Raw {
    /// Send `method` without credentials, answer the 401, return the next
    /// response to the authenticated retry (not 100).
    async fn send_authed(
        &self,
        method: &str,
        ruri: &str,
        call_id: &str,
        extra: &str,
        body: &str,
    ) -> Response {
        self.send(&self.request(method, ruri, call_id, 1, extra, body))
            .await;
        let r401 = self.response().await;
        assert_eq!(
            r401.status_code,
            StatusCode::Unauthorized,
            "{method} is challenged"
        );
        let m: Method = method.parse().expect("method");
        let auth = answer_challenge(&r401, "alice", "pw", &m, ruri);
        self.send(&self.request(method, ruri, call_id, 2, &format!("{extra}{auth}"), body))
            .await;
        self.response().await
    }
}

fn header_value(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
}

/// Authorization for a raw request from the 401 `resp`.
fn answer_challenge(
    resp: &Response,
    user: &str,
    password: &str,
    method: &Method,
    uri: &str,
) -> String {
    let challenge = header_value(resp, "WWW-Authenticate").expect("401 has WWW-Authenticate");
    let c = parse_digest(&challenge).expect("challenge parses");
    assert_eq!(c.realm, auth::REALM);
    assert!(challenge.contains("qop=\"auth\"") && challenge.contains("algorithm=MD5"));
    let response = rsip_digest(user, password, &c.nonce, method, uri);
    format!(
        "Authorization: {}\r\n",
        authorization(user, &c.nonce, uri, &response)
    )
}

// ───────────────────────────── SIP flows ─────────────────────────────

#[tokio::test]
async fn register_is_challenged_then_accepted_and_expires_zero_unregisters() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let raw = Raw::new(pbx.sip_addr()).await;
        let ruri = format!("sip:{}", pbx.sip_addr());
        let to = format!("To: <sip:alice@{}>\r\n", pbx.sip_addr());
        // Raw first attempt: 401 with a fresh MD5/qop=auth challenge.
        let first = raw.request("REGISTER", &ruri, "reg1", 1, "Expires: 60\r\n", "");
        let first = first.replacen(&format!("To: <{ruri}>\r\n"), &to, 1);
        raw.send(&first).await;
        let r401 = raw.response().await;
        assert_eq!(r401.status_code, StatusCode::Unauthorized);
        let auth = answer_challenge(&r401, "alice", "anything", &Method::Register, &ruri);
        let second = raw.request(
            "REGISTER",
            &ruri,
            "reg1",
            2,
            &format!("Expires: 60\r\n{auth}"),
            "",
        );
        raw.send(&second.replacen(&format!("To: <{ruri}>\r\n"), &to, 1))
            .await;
        let ok = raw.response().await;
        assert_eq!(ok.status_code, StatusCode::OK);
        let contact = header_value(&ok, "Contact").expect("200 lists the binding");
        assert!(
            contact.contains(&raw.addr().to_string()) && contact.contains("expires="),
            "{contact}"
        );
        assert_eq!(
            pbx.registrations(),
            vec![("alice".to_string(), format!("sip:alice@{}", raw.addr()))]
        );

        // rsipstack's own Registration interoperates; Expires 0 unregisters.
        let uac = uac().await;
        assert_eq!(
            uac.register(pbx.sip_addr(), "bob", "pw").await.status_code,
            StatusCode::OK
        );
        assert!(pbx.registrations().iter().any(|(ext, _)| ext == "bob"));
        let mut reg = Registration::new(uac.endpoint.clone(), Some(credential("bob", "pw")));
        let server = format!("sip:{}", pbx.sip_addr()).try_into().expect("uri");
        let resp = timeout(STEP, reg.register(server, Some(0)))
            .await
            .expect("in time")
            .expect("sent");
        assert_eq!(resp.status_code, StatusCode::OK);
        assert!(!pbx.registrations().iter().any(|(ext, _)| ext == "bob"));
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn wrong_password_is_forbidden_when_a_password_is_configured() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(DemoPbxConfig {
            password: Some("s3cret".to_string()),
            ..test_config()
        })
        .await;
        let uac = uac().await;
        let wrong = uac.register(pbx.sip_addr(), "alice", "guess").await;
        assert_eq!(wrong.status_code, StatusCode::Forbidden);
        assert!(pbx.registrations().is_empty());
        let right = uac.register(pbx.sip_addr(), "alice", "s3cret").await;
        assert_eq!(right.status_code, StatusCode::OK);
        // INVITE with the wrong password: 401, then 403.
        let (_, resp, _) = uac.call(pbx.sip_addr(), "echo", None).await;
        assert_eq!(
            resp.expect("final response").status_code,
            StatusCode::Forbidden
        );
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn echo_call_echoes_rtp_records_dtmf_and_releases_everything_on_bye() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (rtp, offer) = rtp_peer().await;
        let (dialog, resp, mut states) =
            uac.call(pbx.sip_addr(), "echo", Some(offer.clone())).await;
        let resp = resp.expect("final response");
        assert_eq!(resp.status_code, StatusCode::OK);
        assert!(drain_states(&mut states).iter().any(
            |s| matches!(s, DialogState::Early(_, r) if r.status_code == StatusCode::Ringing)
        ));
        let answer = sdp::negotiate(&sdp::parse(resp.body()).expect("answer parses")).expect("ok");
        assert_eq!(
            (answer.codec, answer.telephone_event),
            (Codec::Pcmu, Some(101))
        );
        let media = media_addr(resp.body());
        assert_eq!(pbx.active_calls(), 1);

        assert_echo(&rtp, media, 50).await;

        // RFC 4733 '5' and '#', each with three end packets.
        let mut buf = [0u8; 2048];
        for (event, ts) in [(5u8, 8000u32), (11, 16000)] {
            for p in dtmf_packets(101, event, 100, ts, 0xdead_beef) {
                rtp.send_to(&p, media).await.expect("send");
                timeout(STEP, rtp.recv_from(&mut buf))
                    .await
                    .expect("echo")
                    .expect("recv");
            }
        }
        let call_id = dialog.id().call_id;
        eventually("dtmf", || pbx.received_dtmf().len() == 2).await;
        assert_eq!(
            pbx.received_dtmf(),
            vec![(call_id.clone(), '5'), (call_id, '#')]
        );

        // Hold via re-INVITE: answered with recvonly on the same port; an
        // in-dialog OPTIONS is answered too; echo keeps working.
        let hold = offer.replace("a=sendrecv", "a=sendonly");
        let ct = vec![Header::ContentType("application/sdp".into())];
        let r = timeout(STEP, dialog.reinvite(Some(ct), Some(hold.into_bytes())))
            .await
            .expect("re-INVITE answered in time")
            .expect("re-INVITE sent")
            .expect("response");
        assert_eq!(r.status_code, StatusCode::OK);
        let held = sdp::parse(r.body()).expect("answer parses");
        assert_eq!(held.media[0].direction, Some(Direction::RecvOnly));
        assert_eq!(media_addr(r.body()), media);
        let options = timeout(STEP, dialog.options(None))
            .await
            .expect("in time")
            .expect("sent");
        assert_eq!(options.expect("response").status_code, StatusCode::OK);
        assert_echo(&rtp, media, 5).await;

        dialog.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        assert_no_echo(&rtp, media).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn busy_unknown_and_unacceptable_offers_are_rejected() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (_, busy, _) = uac.call(pbx.sip_addr(), "busy", None).await;
        assert_eq!(busy.expect("final").status_code, StatusCode::BusyHere);
        let (_, unknown, _) = uac.call(pbx.sip_addr(), "nobody", None).await;
        assert_eq!(unknown.expect("final").status_code, StatusCode::NotFound);
        let opus_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let (_, r488, _) = uac
            .call(pbx.sip_addr(), "echo", Some(opus_only.to_string()))
            .await;
        assert_eq!(
            r488.expect("final").status_code,
            StatusCode::NotAcceptableHere
        );
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn noanswer_rings_then_480() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let started = crate::clock::now();
        let (_, resp, mut states) = uac.call(pbx.sip_addr(), "noanswer", None).await;
        assert_eq!(
            resp.expect("final").status_code,
            StatusCode::TemporarilyUnavailable
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "rang for ring_time"
        );
        assert!(drain_states(&mut states).iter().any(
            |s| matches!(s, DialogState::Early(_, r) if r.status_code == StatusCode::Ringing)
        ));
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn cancel_of_a_ringing_call_gets_487() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(DemoPbxConfig {
            ring_time: Duration::from_secs(30),
            ..test_config()
        })
        .await;
        let uac = uac().await;
        let (state_tx, mut states) = uac.layer.new_dialog_state_channel();
        let (dialog, handle) = uac
            .layer
            .do_invite_async(uac.invite(pbx.sip_addr(), "noanswer", None), state_tx)
            .expect("INVITE sent");
        loop {
            let s = timeout(STEP, states.recv())
                .await
                .expect("ringing in time")
                .expect("state");
            if matches!(s, DialogState::Early(..)) {
                break;
            }
        }
        assert_eq!(pbx.active_calls(), 1);
        dialog.cancel().await.expect("CANCEL answered 200");
        let (_, resp) = timeout(STEP, handle)
            .await
            .expect("in time")
            .expect("join")
            .expect("ok");
        assert_eq!(
            resp.expect("final").status_code,
            StatusCode::RequestTerminated
        );
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn early_sends_183_with_sdp_echoes_early_media_then_200() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (rtp, offer) = rtp_peer().await;
        let (state_tx, mut states) = uac.layer.new_dialog_state_channel();
        let (dialog, handle) = uac
            .layer
            .do_invite_async(uac.invite(pbx.sip_addr(), "early", Some(offer)), state_tx)
            .expect("INVITE sent");
        let r183 = loop {
            let s = timeout(STEP, states.recv())
                .await
                .expect("183 in time")
                .expect("state");
            if let DialogState::Early(_, r) = s {
                break r;
            }
        };
        assert_eq!(r183.status_code, StatusCode::SessionProgress);
        let media = media_addr(r183.body());
        assert_echo(&rtp, media, 5).await; // early media flows before the answer
        let (_, resp) = timeout(STEP, handle)
            .await
            .expect("in time")
            .expect("join")
            .expect("ok");
        let resp = resp.expect("final");
        assert_eq!(resp.status_code, StatusCode::OK);
        assert_eq!(media_addr(resp.body()), media, "200 carries the same SDP");
        dialog.bye().await.expect("BYE");
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn offerless_invite_gets_offer_in_200_and_answer_in_ack() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let raw = Raw::new(pbx.sip_addr()).await;
        let ruri = format!("sip:echo@{}", pbx.sip_addr());
        raw.send(&raw.request("INVITE", &ruri, "ol1", 1, "", ""))
            .await;
        let r401 = raw.response().await;
        assert_eq!(r401.status_code, StatusCode::Unauthorized);
        let to_401 = header_value(&r401, "To").expect("To");
        raw.send(&format!(
            "ACK {ruri} SIP/2.0\r\nVia: {}\r\nFrom: <sip:alice@{}>;tag=raw1\r\nTo: {to_401}\r\n\
             Call-ID: ol1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            header_value(&r401, "Via").expect("Via"),
            raw.addr()
        ))
        .await;
        let auth = answer_challenge(&r401, "alice", "x", &Method::Invite, &ruri);
        raw.send(&raw.request("INVITE", &ruri, "ol1", 2, &auth, ""))
            .await;
        let ok = loop {
            let r = raw.response().await;
            if r.status_code != StatusCode::Ringing {
                break r;
            }
        };
        assert_eq!(ok.status_code, StatusCode::OK);
        let offer = sdp::parse(ok.body()).expect("200 carries an offer");
        assert_eq!(offer.media[0].formats, vec!["0", "8", "101"]);
        let media = media_addr(ok.body());
        let to = header_value(&ok, "To").expect("To with tag");
        let (rtp, answer) = rtp_peer().await;
        raw.send(&format!(
            "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKack{};rport\r\n\
             From: <sip:alice@{}>;tag=raw1\r\nTo: {to}\r\nCall-ID: ol1\r\nCSeq: 2 ACK\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            raw.addr(),
            rand::random::<u32>(),
            raw.addr(),
            answer.len()
        ))
        .await;
        assert_echo(&rtp, media, 10).await;
        raw.send(&raw.in_dialog("BYE", &ruri, "ol1", 3, &to)).await;
        assert_eq!(raw.response().await.status_code, StatusCode::OK);
        assert_quiescent(&pbx).await;
        assert_no_echo(&rtp, media).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

/// An in-dialog request sent right after the ACK of our 2xx (an answer followed at once by a
/// REFER) must not be refused as if the INVITE were still pending: here it even overtakes
/// the ACK, which arrives 50 ms later, and is still served once the ACK confirms the dialog.
#[tokio::test]
async fn a_request_that_overtakes_the_ack_waits_for_it() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let raw = Raw::new(pbx.sip_addr()).await;
        let ruri = format!("sip:echo@{}", pbx.sip_addr());
        let (_rtp, offer) = rtp_peer().await;
        let ok = raw
            .send_authed(
                "INVITE",
                &ruri,
                "wa1",
                "Content-Type: application/sdp\r\n",
                &offer,
            )
            .await;
        let ok = if ok.status_code == StatusCode::Ringing {
            raw.response().await
        } else {
            ok
        };
        assert_eq!(ok.status_code, StatusCode::OK);
        let to = header_value(&ok, "To").expect("To with tag");
        raw.send(&raw.in_dialog("UPDATE", &ruri, "wa1", 3, &to))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        raw.send(&raw.in_dialog("ACK", &ruri, "wa1", 2, &to)).await;
        let update = raw.response_to(Method::Update).await;
        assert_eq!(update.status_code, StatusCode::OK, "{update}");
        raw.send(&raw.in_dialog("BYE", &ruri, "wa1", 4, &to)).await;
        assert_eq!(
            raw.response_to(Method::Bye).await.status_code,
            StatusCode::OK
        );
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn garbage_and_malformed_requests_do_not_break_the_pbx() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let raw = Raw::new(pbx.sip_addr()).await;
        for junk in [
            &b"\x00\x01\x02\x03"[..],
            b"hello world",
            b"INVITE\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"REGISTER sip:x SIP/2.0\r\nVia: garbage\r\n\r\n",
            b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\nContent-Length: 99999\r\n\r\nv=0",
        ] {
            raw.sock.send_to(junk, pbx.sip_addr()).await.expect("send");
        }
        // Unknown method with a Via: 501 from the guard.
        let ruri = format!("sip:echo@{}", pbx.sip_addr());
        raw.send(&raw.request("FROB", &ruri, "g1", 1, "", "")).await;
        assert_eq!(raw.response().await.status_code, StatusCode::NotImplemented);
        // Parseable but unacceptable: SDP garbage, wrong content type, in-dialog
        // request without dialog, OPTIONS, unsupported method.
        let sdp_type = "Content-Type: application/sdp\r\n";
        let bad = raw
            .send_authed("INVITE", &ruri, "g2", sdp_type, "junk")
            .await;
        assert_eq!(bad.status_code, StatusCode::BadRequest);
        let text = "Content-Type: text/plain\r\n";
        let bad = raw
            .send_authed("INVITE", &ruri, "g2b", text, "v=0\r\n")
            .await;
        assert_eq!(bad.status_code, StatusCode::UnsupportedMediaType);
        raw.send(&raw.request("OPTIONS", &ruri, "g3", 1, "", ""))
            .await;
        let options = raw.response().await;
        assert_eq!(options.status_code, StatusCode::OK);
        assert!(header_value(&options, "Allow").is_some_and(|a| a.contains("INVITE")));
        raw.send(&raw.request("BYE", &ruri, "g4", 1, "", "").replacen(
            ">\r\nCall-ID",
            ">;tag=zz\r\nCall-ID",
            1,
        ))
        .await;
        assert_eq!(
            raw.response().await.status_code,
            StatusCode::CallTransactionDoesNotExist
        );
        let require = "Require: 100rel, foo\r\n";
        raw.send(&raw.request("INVITE", &ruri, "g6", 1, require, ""))
            .await;
        let r420 = raw.response().await;
        assert_eq!(r420.status_code, StatusCode::BadExtension);
        assert_eq!(
            header_value(&r420, "Unsupported").as_deref(),
            Some("100rel, foo")
        );
        let tel = "tel:+15551234567";
        raw.send(&raw.request("INVITE", tel, "g7", 1, "", "")).await;
        assert_eq!(
            raw.response().await.status_code,
            StatusCode::UnsupportedUriScheme
        );
        raw.send(&raw.request("SUBSCRIBE", &ruri, "g5", 1, "", ""))
            .await;
        assert_eq!(
            raw.response().await.status_code,
            StatusCode::MethodNotAllowed
        );

        // Still serving.
        let uac = uac().await;
        assert_eq!(
            uac.register(pbx.sip_addr(), "alice", "pw")
                .await
                .status_code,
            StatusCode::OK
        );
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn callback_hangs_up_and_calls_the_registered_caller_back() {
    callback_flow(true, false).await;
}

#[tokio::test]
async fn callback_without_registration_goes_to_the_gateway_address() {
    callback_flow(false, false).await;
}

#[tokio::test]
async fn transfer_in_the_callback_call_is_accepted_and_notified() {
    callback_flow(true, true).await;
}

/// `callback`: answered, BYE from the PBX after ~1 s, then an INVITE to the
/// caller (registered contact, else `gateway_addr`) that echoes and ends
/// cleanly on the callee's BYE; with `transfer`, the callee first REFERs
/// the PBX's call (its own dialog, not the layer's) and gets both NOTIFYs.
async fn callback_flow(register: bool, transfer: bool) {
    timeout(TEST_LIMIT, async {
        let mut uac = uac().await;
        let pbx = start_pbx(DemoPbxConfig {
            gateway_addr: (!register).then_some(uac.addr),
            ..test_config()
        })
        .await;
        if register {
            let reg = uac.register(pbx.sip_addr(), "alice", "pw").await;
            assert_eq!(reg.status_code, StatusCode::OK);
        }
        let (_rtp, offer) = rtp_peer().await;
        let (_dialog, resp, mut states) = uac.call(pbx.sip_addr(), "callback", Some(offer)).await;
        assert_eq!(resp.expect("final").status_code, StatusCode::OK);
        // The PBX hangs up after ~1 s.
        loop {
            let s = timeout(STEP, states.recv())
                .await
                .expect("BYE in time")
                .expect("state");
            if matches!(s, DialogState::Terminated(..)) {
                break;
            }
        }
        // Then it calls alice back at her registered contact.
        let mut tx = timeout(STEP, uac.invites.recv())
            .await
            .expect("callback in time")
            .expect("tx");
        assert_eq!(tx.original.uri.user(), Some("alice"));
        let offer = tx.original.body().clone();
        let pbx_media = media_addr(&offer);
        let (rtp, answer) = rtp_peer().await;
        let (state_tx, mut callee_states) = uac.layer.new_dialog_state_channel();
        let callee = uac
            .layer
            .get_or_create_server_invite(&tx, state_tx, None, Some(uac.uri("alice")))
            .expect("server dialog");
        let mut driver = callee.clone();
        tokio::spawn(async move { driver.handle(&mut tx).await.ok() });
        let ct = vec![Header::ContentType("application/sdp".into())];
        callee
            .accept(Some(ct), Some(answer.into_bytes()))
            .expect("accept");
        loop {
            let s = timeout(STEP, callee_states.recv())
                .await
                .expect("ACK in time")
                .expect("state");
            if matches!(s, DialogState::Confirmed(..)) {
                break;
            }
        }
        assert_eq!(pbx.active_calls(), 1, "the callback call is active");
        assert_echo(&rtp, pbx_media, 20).await;
        if transfer {
            let refer_to = format!("<sip:1003@{}>", pbx.sip_addr());
            assert_eq!(refer(&callee, &refer_to).await, StatusCode::Accepted);
            expect_notifies(&mut callee_states, "SIP/2.0 200 OK").await;
            let call_id = callee.id().call_id;
            assert_eq!(
                pbx.transfers(),
                vec![(call_id, refer_to.replace(['<', '>'], ""))]
            );
        }
        callee.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        assert_no_echo(&rtp, pbx_media).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn shutdown_closes_the_sip_port_and_drop_stops_the_pbx() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let addr = pbx.sip_addr();
        let uac = uac().await;
        let (_dialog, resp, _) = uac.call(addr, "echo", Some(rtp_peer().await.1)).await;
        assert_eq!(resp.expect("final").status_code, StatusCode::OK);
        assert_eq!(pbx.active_calls(), 1);
        pbx.shutdown().await;
        // The SIP port (UDP and TCP) is free again as soon as shutdown returns.
        let rebound =
            std::net::UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok();
        assert!(rebound, "SIP port released after shutdown");

        // Dropping the handle (no shutdown) stops it as well: it answers
        // OPTIONS before the drop and, once its tasks noticed, never again.
        let pbx = start_pbx(test_config()).await;
        let raw = Raw::new(pbx.sip_addr()).await;
        raw.send(&raw.request("OPTIONS", "sip:x@127.0.0.1", "d1", 1, "", ""))
            .await;
        assert_eq!(raw.response().await.status_code, StatusCode::OK);
        drop(pbx);
        let mut silent = false;
        let mut buf = [0u8; 2048];
        for cseq in 2..20 {
            raw.send(&raw.request("OPTIONS", "sip:x@127.0.0.1", "d1", cseq, "", ""))
                .await;
            let wait = timeout(Duration::from_millis(150), raw.sock.recv_from(&mut buf));
            if wait.await.is_err() {
                silent = true;
                break;
            }
        }
        assert!(silent, "a dropped PBX keeps answering");
    })
    .await
    .expect("test within time limit");
}

// ───────────────────────────── transfer ──────────────────────────────

/// The value of request header `name`, if present.
fn request_header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
}

/// Send a REFER in `dialog` (as callgate does: Refer-To and Referred-By)
/// and return the PBX's final status.
async fn refer(dialog: &InviteDialog, refer_to: &str) -> StatusCode {
    let referred_by = Header::ReferredBy("<sip:alice@127.0.0.1>".into());
    timeout(
        STEP,
        dialog.refer(refer_to.to_string(), Some(vec![referred_by]), None),
    )
    .await
    .expect("REFER answered in time")
    .expect("REFER sent")
    .expect("REFER response")
    .status_code
}

/// The next NOTIFY the PBX sends in the dialog (other states skipped), with
/// its transaction still unanswered.
async fn next_notify(states: &mut DialogStateReceiver) -> (Request, TransactionHandle) {
    loop {
        let state = timeout(STEP, states.recv())
            .await
            .expect("NOTIFY in time")
            .expect("dialog state");
        match state {
            DialogState::Notify(_, req, handle) => return (req, handle),
            DialogState::Terminated(_, reason) => {
                panic!("dialog ended waiting for NOTIFY: {reason:?}")
            }
            _ => {}
        }
    }
}

/// Nothing but non-request states (e.g. the REFER's return to Confirmed)
/// arrives for `wait`: in particular no NOTIFY.
async fn assert_no_notify(states: &mut DialogStateReceiver, wait: Duration) {
    tokio::time::sleep(wait).await;
    for state in drain_states(states) {
        assert!(
            !matches!(state, DialogState::Notify(..) | DialogState::Terminated(..)),
            "unexpected {state}"
        );
    }
}

/// The REFER's subscription as callgate expects it: NOTIFY `100 Trying`
/// (active), and only after our 200 the final NOTIFY (terminated) whose
/// sipfrag is `final_line`. Both are answered 200.
async fn expect_notifies(states: &mut DialogStateReceiver, final_line: &str) {
    let (trying, handle) = next_notify(states).await;
    let cseq = |req: &Request| req.cseq_header().and_then(|c| c.seq()).expect("CSeq");
    assert_eq!(request_header(&trying, "Event").as_deref(), Some("refer"));
    let state = request_header(&trying, "Subscription-State").expect("Subscription-State");
    assert!(state.starts_with("active"), "{state}");
    assert_eq!(
        request_header(&trying, "Content-Type").as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(
        String::from_utf8_lossy(&trying.body).trim_end(),
        "SIP/2.0 100 Trying"
    );
    // The final NOTIFY waits for the first one's 200.
    assert_no_notify(states, Duration::from_millis(200)).await;
    handle.reply(StatusCode::OK).await.expect("answer NOTIFY");

    let (done, handle) = next_notify(states).await;
    assert_eq!(request_header(&done, "Event").as_deref(), Some("refer"));
    assert_eq!(
        request_header(&done, "Subscription-State").as_deref(),
        Some("terminated;reason=noresource")
    );
    assert_eq!(
        request_header(&done, "Content-Type").as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(String::from_utf8_lossy(&done.body).trim_end(), final_line);
    assert!(cseq(&done) > cseq(&trying), "in order, in the same dialog");
    handle.reply(StatusCode::OK).await.expect("answer NOTIFY");
}

#[tokio::test]
async fn blind_transfer_gets_202_trying_and_200_notifies_then_the_bye() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (rtp, offer) = rtp_peer().await;
        let (dialog, resp, mut states) = uac.call(pbx.sip_addr(), "echo", Some(offer)).await;
        let resp = resp.expect("final response");
        assert_eq!(resp.status_code, StatusCode::OK);
        let media = media_addr(resp.body());
        let refer_to = format!("sip:1003@{}", pbx.sip_addr());

        assert_eq!(
            refer(&dialog, &format!("<{refer_to}>")).await,
            StatusCode::Accepted
        );
        expect_notifies(&mut states, "SIP/2.0 200 OK").await;
        let call_id = dialog.id().call_id;
        assert_eq!(pbx.transfers(), vec![(call_id, refer_to)]);

        // The PBX leaves the call to the transferor, which hangs up.
        assert_eq!(pbx.active_calls(), 1);
        assert_echo(&rtp, media, 3).await;
        dialog.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        assert_no_echo(&rtp, media).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn transfer_to_busy_notifies_486_and_the_call_goes_on() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (rtp, offer) = rtp_peer().await;
        // `early`: 183 with early media, then answered.
        let (dialog, resp, mut states) = uac.call(pbx.sip_addr(), "early", Some(offer)).await;
        let resp = resp.expect("final response");
        assert_eq!(resp.status_code, StatusCode::OK);
        let media = media_addr(resp.body());
        let busy = format!("sip:busy@{}", pbx.sip_addr());

        assert_eq!(
            refer(&dialog, &format!("<{busy}>")).await,
            StatusCode::Accepted
        );
        expect_notifies(&mut states, "SIP/2.0 486 Busy Here").await;
        assert_eq!(pbx.active_calls(), 1, "a failed transfer keeps the call");
        assert_echo(&rtp, media, 3).await;

        // A second REFER in the same dialog, attended this time.
        let attended = format!(
            "sip:1003@{}?Replaces=other%40h%3Bto-tag%3Da%3Bfrom-tag%3Db",
            pbx.sip_addr()
        );
        assert_eq!(
            refer(&dialog, &format!("<{attended}>")).await,
            StatusCode::Accepted
        );
        expect_notifies(&mut states, "SIP/2.0 200 OK").await;
        let call_id = dialog.id().call_id;
        assert_eq!(
            pbx.transfers(),
            vec![(call_id.clone(), busy), (call_id, attended)]
        );

        dialog.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn malformed_refers_get_400_and_no_notify() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (_rtp, offer) = rtp_peer().await;
        let (dialog, resp, mut states) = uac.call(pbx.sip_addr(), "echo", Some(offer)).await;
        assert_eq!(resp.expect("final").status_code, StatusCode::OK);
        let no_refer_to = timeout(STEP, dialog.request(Method::Refer, None, None))
            .await
            .expect("in time")
            .expect("sent")
            .expect("response");
        assert_eq!(no_refer_to.status_code, StatusCode::BadRequest);
        for bad in ["<tel:+15551234567>", "<sip:1003@", "<sip:host.example>"] {
            assert_eq!(refer(&dialog, bad).await, StatusCode::BadRequest, "{bad}");
        }
        let two = vec![
            Header::ReferTo("<sip:1003@127.0.0.1>".into()),
            Header::ReferTo("<sip:1004@127.0.0.1>".into()),
        ];
        let r = timeout(STEP, dialog.request(Method::Refer, Some(two), None))
            .await
            .expect("in time")
            .expect("sent")
            .expect("response");
        assert_eq!(r.status_code, StatusCode::BadRequest);
        assert_no_notify(&mut states, Duration::from_millis(300)).await;
        assert!(pbx.transfers().is_empty());
        // The call is unharmed.
        let options = timeout(STEP, dialog.options(None))
            .await
            .expect("in time")
            .expect("sent");
        assert_eq!(options.expect("response").status_code, StatusCode::OK);
        dialog.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn a_bye_during_the_transfer_stops_its_notifies() {
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let uac = uac().await;
        let (_rtp, offer) = rtp_peer().await;
        let (dialog, resp, mut states) = uac.call(pbx.sip_addr(), "echo", Some(offer)).await;
        assert_eq!(resp.expect("final").status_code, StatusCode::OK);
        let refer_to = format!("<sip:1003@{}>", pbx.sip_addr());
        assert_eq!(refer(&dialog, &refer_to).await, StatusCode::Accepted);
        // Leave the first NOTIFY unanswered (the PBX retransmits it) and
        // hang up: the transfer must end with the call, not 32 s later.
        let (_trying, unanswered) = next_notify(&mut states).await;
        dialog.bye().await.expect("BYE answered");
        assert_quiescent(&pbx).await;
        assert_eq!(pbx.transfers().len(), 1);
        drop(unanswered);
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

// ─────────────────────────── SIPp interop ────────────────────────────

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Interop with an independent UAC: `sipp/uac_auth.xml` (digest REGISTER,
/// digest INVITE, ACK, BYE) against each answering extension. Skipped when
/// `sipp` is not installed (`apt-get install sip-tester`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_interop() {
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("sipp not installed; skipping interop test");
        return;
    }
    timeout(Duration::from_secs(60), async {
        let pbx = start_pbx(DemoPbxConfig {
            password: Some("pw".to_string()),
            ..test_config()
        })
        .await;
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/src/demo/sipp/uac_auth.xml");
        for (service, transport) in [("echo", "u1"), ("early", "u1"), ("echo", "t1")] {
            let target = pbx.sip_addr().to_string();
            let args: Vec<String> = [
                "-sf",
                scenario,
                "-s",
                service,
                "-au",
                "sipp",
                "-ap",
                "pw",
                "-m",
                "2",
                "-l",
                "1",
                "-i",
                "127.0.0.1",
                "-t",
                transport,
                "-nostdin",
                "-timeout",
                "20s",
                "-timeout_error",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "-p".to_string(),
                free_udp_port().to_string(),
                "-mp".to_string(),
                free_udp_port().to_string(),
                target,
            ])
            .collect();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("sipp").args(&args).output()
            })
            .await
            .expect("join")
            .expect("sipp runs");
            assert!(
                out.status.success(),
                "sipp {service}/{transport} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(pbx.registrations().iter().any(|(ext, _)| ext == "sipp"));
        }
        assert_quiescent(&pbx).await;
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}

#[tokio::test]
async fn tcp_is_served_on_the_same_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(TEST_LIMIT, async {
        let pbx = start_pbx(test_config()).await;
        let mut stream = timeout(STEP, tokio::net::TcpStream::connect(pbx.sip_addr()))
            .await
            .expect("connect in time")
            .expect("TCP listener");
        let local = stream.local_addr().expect("addr");
        let register = format!(
            "REGISTER sip:{pbx} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcp1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{pbx}>;tag=t1\r\nTo: <sip:alice@{pbx}>\r\n\
             Call-ID: tcp1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{local};transport=tcp>\r\n\
             Content-Length: 0\r\n\r\n",
            pbx = pbx.sip_addr()
        );
        stream.write_all(register.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = timeout(STEP, stream.read(&mut chunk))
                .await
                .expect("response in time")
                .expect("read");
            assert!(n > 0, "connection closed without a response");
            buf.extend_from_slice(&chunk[..n]);
        }
        let Ok(SipMessage::Response(resp)) = SipMessage::try_from(&buf[..]) else {
            panic!("not a SIP response: {}", String::from_utf8_lossy(&buf));
        };
        assert_eq!(resp.status_code, StatusCode::Unauthorized);
        pbx.shutdown().await;
    })
    .await
    .expect("test within time limit");
}
