use std::time::Duration;

use proptest::prelude::*;
use tokio::net::UdpSocket;

use super::sip::{self, Message, ParseError, Response, StartLine};
use super::*;

const INVITE: &str = "INVITE sip:echo@127.0.0.1:5090 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-0\r\n\
Max-Forwards: 70\r\n\
f: <sip:2000@127.0.0.1>;tag=abc\r\n\
To: <sip:echo@127.0.0.1>\r\n\
i: call-1@test\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:2000@127.0.0.1:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 192\r\n\r\n";

const OFFER: &str = "v=0\r\no=callgate 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=rtcp:30001\r\na=sendrecv\r\n";

fn invite_with(offer: &str, call_id: &str, user: &str) -> String {
    INVITE
        .replace(
            "Content-Length: 192",
            &format!("Content-Length: {}", offer.len()),
        )
        .replace("call-1@test", call_id)
        .replace(
            "sip:echo@127.0.0.1:5090",
            &format!("sip:{user}@127.0.0.1:5090"),
        )
        + offer
}

#[test]
fn a_request_is_parsed_with_compact_headers_and_its_body() {
    let text = invite_with(OFFER, "call-1@test", "echo");
    let m = sip::parse(text.as_bytes()).expect("parses");
    assert_eq!(
        m.start,
        StartLine::Request {
            method: "INVITE",
            uri: "sip:echo@127.0.0.1:5090"
        }
    );
    assert_eq!(m.call_id(), Some("call-1@test"));
    assert_eq!(m.cseq(), Some((1, "INVITE")));
    assert_eq!(m.header("from"), Some("<sip:2000@127.0.0.1>;tag=abc"));
    assert_eq!(m.headers_named("Via").count(), 2);
    assert_eq!(m.uri_user(), Some("echo"));
    assert!(!m.to_has_tag());
    assert!(m.answerable());
    assert_eq!(m.body, OFFER.as_bytes());
}

#[test]
fn malformed_messages_are_refused_not_guessed() {
    let cases: [(&[u8], ParseError); 6] = [
        (
            b"INVITE sip:x SIP/2.0\r\nVia: a\r\n",
            ParseError::NoEndOfHeaders,
        ),
        (b"HELLO\r\n\r\n", ParseError::BadStartLine),
        (b"SIP/2.0 99 Odd\r\n\r\n", ParseError::BadStartLine),
        (
            b"BYE sip:x SIP/2.0\r\nNoColon\r\n\r\n",
            ParseError::BadHeader,
        ),
        (
            b"BYE sip:x SIP/2.0\r\nVia: a\r\n b\r\n\r\n",
            ParseError::BadHeader,
        ),
        (
            b"BYE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
            ParseError::BadContentLength,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            sip::parse(bytes),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let response = sip::parse(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").expect("a response");
    assert_eq!(response.start, StartLine::Response { code: 200 });
    assert!(!response.answerable());
}

#[test]
fn a_response_copies_the_dialog_headers_and_adds_our_tag() {
    let text = invite_with(OFFER, "call-1@test", "echo");
    let request = sip::parse(text.as_bytes()).expect("parses");
    let bytes = sip::write_response(
        &request,
        &Response {
            code: 200,
            reason: "OK",
            to_tag: Some("t1"),
            headers: vec![("Contact", "<sip:trunk@127.0.0.1:5090>".into())],
            body: Some(("application/sdp", "v=0\r\n")),
        },
    );
    let response = String::from_utf8(bytes).expect("text");
    let parsed: Message<'_> = sip::parse(response.as_bytes()).expect("our own output parses");
    assert_eq!(parsed.start, StartLine::Response { code: 200 });
    let vias: Vec<_> = parsed.headers_named("Via").collect();
    assert_eq!(vias.len(), 2);
    assert!(vias[0].contains("z9hG4bK-1"));
    assert_eq!(parsed.header("To"), Some("<sip:echo@127.0.0.1>;tag=t1"));
    assert_eq!(parsed.header("From"), Some("<sip:2000@127.0.0.1>;tag=abc"));
    assert_eq!(parsed.cseq(), Some((1, "INVITE")));
    assert_eq!(parsed.body, b"v=0\r\n");
}

#[test]
fn the_answer_keeps_the_offerers_first_g711_codec() {
    let offer = sdp::read_offer(OFFER.as_bytes()).expect("usable");
    assert_eq!((offer.payload_type, offer.codec), (8, "PCMA"));
    assert_eq!(offer.telephone_event, Some(101));
    assert_eq!(offer.remote, Some("127.0.0.1:30000".parse().expect("addr")));
    let answer = sdp::answer(&offer, "127.0.0.1:40000".parse().expect("addr"), 7, 1);
    assert!(
        answer.contains("m=audio 40000 RTP/AVP 8 101\r\n"),
        "{answer}"
    );
    assert!(answer.contains("a=rtpmap:8 PCMA/8000"), "{answer}");
    assert!(answer.contains("c=IN IP4 127.0.0.1"), "{answer}");

    let video_first = OFFER.replace("m=audio", "m=video 4000 RTP/AVP 96\r\nm=audio");
    let offer = sdp::read_offer(video_first.as_bytes()).expect("usable");
    let answer = sdp::answer(&offer, "127.0.0.1:40000".parse().expect("addr"), 7, 1);
    assert!(
        answer.contains("m=video 0 RTP/AVP 96\r\nm=audio 40000"),
        "{answer}"
    );

    let opus = OFFER
        .replace("8 0 101", "111")
        .replace("PCMA", "x")
        .replace("PCMU", "y");
    assert_eq!(sdp::read_offer(opus.as_bytes()), Err(sdp::SdpError::NoG711));
    assert_eq!(sdp::read_offer(b"v=0\r\n"), Err(sdp::SdpError::NoAudio));
    assert_eq!(sdp::read_offer(b"hello"), Err(sdp::SdpError::NotSdp));
}

#[test]
fn an_sdes_offer_is_answered_with_the_offerers_own_crypto_line() {
    let key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
    let crypto = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n");
    let savp = OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 0 101") + &crypto;
    let offer = sdp::read_offer(savp.as_bytes()).expect("usable");
    let answer = sdp::answer(&offer, "127.0.0.1:40000".parse().expect("addr"), 7, 1);
    assert!(
        answer.contains("m=audio 40000 RTP/SAVP 8 101\r\n"),
        "{answer}"
    );
    assert!(answer.contains(&crypto), "{answer}");
    // Best-effort SRTP: RTP/AVP with a=crypto is answered in kind.
    let avp = OFFER.to_string() + &crypto;
    let answer = sdp::answer(
        &sdp::read_offer(avp.as_bytes()).expect("usable"),
        "127.0.0.1:40000".parse().expect("addr"),
        7,
        1,
    );
    assert!(
        answer.contains("RTP/AVP 8 101") && answer.contains(&crypto),
        "{answer}"
    );
    // RTP/SAVP without a usable line (an MKI, an unknown suite): nothing to answer.
    for bad in [
        format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4\r\n"),
        format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{key}\r\n"),
        String::new(),
    ] {
        let text = OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 0 101") + &bad;
        assert_eq!(
            sdp::read_offer(text.as_bytes()),
            Err(sdp::SdpError::NoAudio),
            "{bad}"
        );
    }
    // No crypto, no SRTP.
    let plain = sdp::answer(
        &sdp::read_offer(OFFER.as_bytes()).expect("usable"),
        "127.0.0.1:40000".parse().expect("addr"),
        7,
        1,
    );
    assert!(!plain.contains("a=crypto"), "{plain}");
}

proptest! {
    #[test]
    fn sip_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = sip::parse(&bytes);
    }

    #[test]
    fn sip_parsing_of_mangled_requests_never_panics(cut in 0usize..700, flip in 0usize..700, byte in any::<u8>()) {
        let mut bytes = invite_with(OFFER, "c", "echo").into_bytes();
        if let Some(b) = bytes.get_mut(flip) {
            *b = byte;
        }
        bytes.truncate(cut);
        if let Ok(m) = sip::parse(&bytes) {
            let _ = (m.call_id(), m.cseq(), m.uri_user(), m.to_has_tag());
            let _ = sip::write_response(&m, &Response { code: 400, reason: "Bad", ..Response::default() });
        }
    }

    #[test]
    fn sdp_reading_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
        let _ = sdp::read_offer(&bytes);
        let offer = OFFER.as_bytes();
        let _ = sdp::read_offer(offer.get(..cut).unwrap_or(offer));
    }
}

/// Receives the next SIP message on `socket` as text.
async fn next(socket: &UdpSocket) -> String {
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("the trunk answers in time")
        .expect("receive");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_default()
}

/// ACK or BYE for the dialog of `ok` (a 200 to our INVITE).
fn in_dialog(method: &str, cseq: u32, ok: &str) -> String {
    format!(
        "{method} sip:trunk@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-{method}\r\n\
         From: <sip:2000@127.0.0.1>;tag=abc\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        header(ok, "To"),
        header(ok, "Call-ID")
    )
}

#[tokio::test]
async fn a_call_is_answered_echoed_and_ended() {
    let trunk = BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let sip = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let offer = OFFER.replace("30000", &rtp.local_addr().expect("addr").port().to_string());
    let invite = invite_with(&offer, "call-2@test", "echo");
    sip.send_to(invite.as_bytes(), trunk.sip_addr())
        .await
        .expect("send");

    assert!(next(&sip).await.starts_with("SIP/2.0 100 Trying"));
    let ok = next(&sip).await;
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert!(header(&ok, "To").contains(";tag="), "{ok}");
    assert!(
        header(&ok, "Contact").contains(&trunk.sip_addr().to_string()),
        "{ok}"
    );
    let ok_msg = sip::parse(ok.as_bytes()).expect("parses");
    let answer = sdp::read_offer(ok_msg.body).expect("the answer is valid SDP");
    assert_eq!((answer.payload_type, answer.codec), (8, "PCMA"));
    let echo_at = answer.remote.expect("an address");

    // RTP comes back byte for byte, from the address in the SDP; RTCP does not.
    let mut packet = vec![0x80u8, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    packet.extend_from_slice(&[0x55; 160]);
    rtp.send_to(&[0x80, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0], echo_at)
        .await
        .expect("send");
    rtp.send_to(&packet, echo_at).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (len, from) = tokio::time::timeout(Duration::from_secs(3), rtp.recv_from(&mut buf))
        .await
        .expect("echoed in time")
        .expect("receive");
    assert_eq!((&buf[..len], from), (&packet[..], echo_at));

    // A retransmitted INVITE gets the same 200.
    sip.send_to(invite.as_bytes(), trunk.sip_addr())
        .await
        .expect("send");
    assert_eq!(next(&sip).await, ok);

    sip.send_to(in_dialog("ACK", 1, &ok).as_bytes(), trunk.sip_addr())
        .await
        .expect("send");
    sip.send_to(in_dialog("BYE", 2, &ok).as_bytes(), trunk.sip_addr())
        .await
        .expect("send");
    let bye_ok = next(&sip).await;
    assert!(
        bye_ok.starts_with("SIP/2.0 200 OK") && bye_ok.contains("CSeq: 2 BYE"),
        "{bye_ok}"
    );

    let stats = trunk.stats();
    assert_eq!(
        (stats.invites, stats.answered, stats.acks, stats.byes),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (stats.active_calls, stats.rtp_echoed, stats.rtcp_absorbed),
        (0, 1, 1)
    );
    assert_eq!(stats.retransmissions, 1);
    trunk.shutdown().await;
}

#[tokio::test]
async fn busy_unknown_and_junk_get_the_right_answers() {
    let trunk = BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let sip = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let to = trunk.sip_addr();

    sip.send_to(invite_with(OFFER, "busy-1", "busy").as_bytes(), to)
        .await
        .expect("send");
    assert!(next(&sip).await.starts_with("SIP/2.0 100"));
    assert!(next(&sip).await.starts_with("SIP/2.0 486 Busy Here"));

    let opus = OFFER.replace("8 0 101", "111");
    sip.send_to(invite_with(&opus, "opus-1", "echo").as_bytes(), to)
        .await
        .expect("send");
    assert!(next(&sip).await.starts_with("SIP/2.0 100"));
    assert!(next(&sip).await.starts_with("SIP/2.0 488"));

    sip.send_to(b"garbage\r\n\r\n", to).await.expect("send");
    let bye = in_dialog("BYE", 2, "To: <sip:x@y>;tag=1\r\nCall-ID: nope\r\n");
    sip.send_to(bye.as_bytes(), to).await.expect("send");
    assert!(next(&sip).await.starts_with("SIP/2.0 481"));
    let options = "OPTIONS sip:trunk@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-o\r\n\
                   From: <sip:a@b>;tag=1\r\nTo: <sip:trunk@127.0.0.1>\r\nCall-ID: o-1\r\nCSeq: 1 OPTIONS\r\n\r\n";
    sip.send_to(options.as_bytes(), to).await.expect("send");
    let ok = next(&sip).await;
    assert!(
        ok.starts_with("SIP/2.0 200") && ok.contains("Allow: "),
        "{ok}"
    );

    let stats = trunk.stats();
    assert_eq!(
        (
            stats.invites,
            stats.rejected,
            stats.answered,
            stats.malformed
        ),
        (2, 2, 0, 1)
    );
}

#[tokio::test]
async fn an_unacknowledged_200_is_retransmitted() {
    let trunk = BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let sip = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sip.send_to(
        invite_with(OFFER, "rt-1", "echo").as_bytes(),
        trunk.sip_addr(),
    )
    .await
    .expect("send");
    assert!(next(&sip).await.starts_with("SIP/2.0 100"));
    let ok = next(&sip).await;
    // T1 = 500 ms later, the same 200 again.
    assert_eq!(next(&sip).await, ok);
    assert_eq!(trunk.stats().retransmissions, 1);
    sip.send_to(in_dialog("ACK", 1, &ok).as_bytes(), trunk.sip_addr())
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(trunk.stats().retransmissions, 1, "the ACK stopped them");
    assert_eq!(trunk.stats().active_calls, 1);
    drop(trunk);
}
