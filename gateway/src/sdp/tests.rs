use proptest::prelude::*;

use super::*;

const CHROME_OFFER: &str = "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=mid:0\r\na=sendrecv\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\na=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n";

#[test]
fn chrome_offer_yields_pcmu_and_8k_telephone_event() {
    let audio = parse_audio(CHROME_OFFER).expect("parses");
    assert_eq!(audio.preferred_g711(), Some(G711::Pcmu));
    assert_eq!(audio.telephone_event(), Some(126));
    assert_eq!(audio.direction, Direction::SendRecv);
    assert_eq!(check_browser_offer(CHROME_OFFER), Ok(G711::Pcmu));
}

#[test]
fn offers_without_g711_or_audio_are_refused() {
    let opus_only = CHROME_OFFER.replace(" 9 0 8 13 110 126", " 110");
    assert_eq!(check_browser_offer(&opus_only), Err(SdpError::NoG711));
    let video = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n";
    assert_eq!(check_browser_offer(video), Err(SdpError::NoAudio));
    assert!(matches!(
        check_browser_offer("hello"),
        Err(SdpError::Malformed(_))
    ));
    assert!(matches!(
        check_browser_offer(""),
        Err(SdpError::Malformed(_))
    ));
}

fn offer() -> SipOffer {
    SipOffer {
        session_id: 42,
        version: 1,
        rtp: "127.0.0.1:30000".parse().expect("addr"),
        codecs: vec![G711::Pcma],
        telephone_event: Some(SIP_TELEPHONE_EVENT_PT),
        direction: Direction::SendRecv,
    }
}

#[test]
fn rendered_offer_reads_back() {
    let text = offer().render();
    assert!(text.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{text}");
    assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    assert!(text.contains("a=rtcp:30001\r\n"));
    let audio = parse_audio(&text).expect("our own offer parses");
    assert_eq!(audio.preferred_g711(), Some(G711::Pcma));
    assert_eq!(audio.telephone_event(), Some(101));
    assert_eq!(audio.address, Some("127.0.0.1".parse().expect("ip")));
}

#[test]
fn answer_gives_target_codec_and_hold_state() {
    let answer = "v=0\r\no=pbx 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n\
                  m=audio 4000 RTP/AVP 0 8 96\r\na=rtpmap:96 telephone-event/8000\r\n";
    let a = read_sip_answer(answer, &offer()).expect("reads");
    assert_eq!(a.remote_rtp, "10.1.1.1:4000".parse().expect("addr"));
    assert_eq!(a.codec, G711::Pcma, "skips PCMU, which we did not offer");
    assert_eq!(a.telephone_event, Some(96));
    assert!(!a.on_hold);

    let held = answer.replace("c=IN IP4 10.1.1.1", "c=IN IP4 0.0.0.0");
    assert!(read_sip_answer(&held, &offer()).expect("reads").on_hold);
    let sendonly = format!("{answer}a=sendonly\r\n");
    assert!(read_sip_answer(&sendonly, &offer()).expect("reads").on_hold);

    let pcmu_only = answer.replace("0 8 96", "0");
    assert_eq!(read_sip_answer(&pcmu_only, &offer()), Err(SdpError::NoG711));
    let no_c = answer.replace("c=IN IP4 10.1.1.1\r\n", "");
    assert_eq!(
        read_sip_answer(&no_c, &offer()),
        Err(SdpError::NoConnection)
    );
}

#[test]
fn media_level_connection_wins_and_rejected_streams_are_skipped() {
    let text = "v=0\r\no=x 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\n\
                m=audio 0 RTP/AVP 0\r\nm=audio 5000 RTP/AVP 8\r\nc=IN IP4 2.2.2.2\r\n";
    let audio = parse_audio(text).expect("parses");
    assert_eq!(audio.port, 5000);
    assert_eq!(audio.address, Some("2.2.2.2".parse().expect("ip")));
}

proptest! {
    #[test]
    fn parser_never_panics(text in "(v=0\r\n)?([a-z]=[ -~]{0,40}\r\n){0,12}") {
        let _ = parse_audio(&text);
        let _ = read_sip_answer(&text, &offer());
    }

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_audio(&String::from_utf8_lossy(&bytes));
    }
}
