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
        sdes: crate::sdp::Sdes::off(),
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

mod sdes {
    use super::*;
    use crate::sdp::{MasterKey, Sdes, SrtpPolicy, SrtpSuite, read_sip_offer};
    use base64::Engine as _;

    const OURS: [MasterKey; 2] = [MasterKey([1; 30]), MasterKey([2; 30])];
    const THEIRS: MasterKey = MasterKey([9; 30]);

    fn b64(key: &MasterKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(key.0)
    }

    fn srtp_offer(policy: SrtpPolicy) -> SipOffer {
        SipOffer {
            sdes: Sdes::new(policy, OURS),
            ..offer()
        }
    }

    fn remote(proto: &str, crypto: &[String]) -> String {
        let mut s = format!(
            "v=0\r\no=pbx 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
             m=audio 4000 {proto} 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        for line in crypto {
            s.push_str(&format!("a=crypto:{line}\r\n"));
        }
        s
    }

    #[test]
    fn mandatory_offers_savp_with_both_suites_and_optional_offers_avp() {
        let text = srtp_offer(SrtpPolicy::Mandatory).render();
        assert!(text.contains("m=audio 30000 RTP/SAVP 8 101\r\n"), "{text}");
        let first = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            b64(&OURS[0])
        );
        let second = format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n",
            b64(&OURS[1])
        );
        let (a, b) = (text.find(&first), text.find(&second));
        assert!(a.is_some() && b.is_some() && a < b, "{text}");
        let text = srtp_offer(SrtpPolicy::Optional).render();
        assert!(text.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains(&first), "{text}");
        let text = offer().render();
        assert!(
            text.contains("RTP/AVP") && !text.contains("a=crypto"),
            "{text}"
        );
    }

    #[test]
    fn the_answers_chosen_suite_and_key_are_taken() -> Result<(), SdpError> {
        let offer = srtp_offer(SrtpPolicy::Mandatory);
        let line = format!("2 AES_CM_128_HMAC_SHA1_32 inline:{}", b64(&THEIRS));
        let answer = read_sip_answer(&remote("RTP/SAVP", &[line]), &offer)?;
        let keys = answer.srtp.ok_or(SdpError::NoCrypto)?;
        assert_eq!(
            (keys.suite, keys.tag, keys.local, keys.remote),
            (SrtpSuite::AesCm128HmacSha1_32, 2, OURS[1], THEIRS)
        );
        // After settling, re-offers restate only the chosen line.
        let mut offer = offer;
        offer.sdes.settle(Some(&keys));
        let text = offer.render();
        assert_eq!(text.matches("a=crypto").count(), 1, "{text}");
        assert!(text.contains(&format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}",
            b64(&OURS[1])
        )));
        Ok(())
    }

    #[test]
    fn answers_without_usable_crypto() {
        let plain = remote("RTP/AVP", &[]);
        assert_eq!(
            read_sip_answer(&plain, &srtp_offer(SrtpPolicy::Mandatory)),
            Err(SdpError::NoCrypto)
        );
        assert_eq!(
            read_sip_answer(&plain, &srtp_offer(SrtpPolicy::Optional)).map(|a| a.srtp),
            Ok(None)
        );
        // A tag or suite we did not offer, a wrong key length, an MKI: unusable.
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 29]);
        for line in [
            format!("3 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&THEIRS)),
            format!("1 AES_CM_128_HMAC_SHA1_32 inline:{}", b64(&THEIRS)),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{short}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4", b64(&THEIRS)),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}|1:4", b64(&THEIRS)),
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{}", b64(&THEIRS)),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{} KDR=1", b64(&THEIRS)),
            "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64".to_string(),
            "x AES_CM_128_HMAC_SHA1_80".to_string(),
            String::new(),
        ] {
            let text = remote("RTP/SAVP", std::slice::from_ref(&line));
            assert_eq!(
                read_sip_answer(&text, &srtp_offer(SrtpPolicy::Mandatory)),
                Err(SdpError::NoCrypto),
                "{line}"
            );
            assert_eq!(
                read_sip_answer(&text, &srtp_offer(SrtpPolicy::Optional)),
                Err(SdpError::NoCrypto),
                "an RTP/SAVP answer without usable crypto cannot be relayed: {line}"
            );
        }
        // A lifetime is fine.
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^31", b64(&THEIRS));
        let answer = read_sip_answer(
            &remote("RTP/SAVP", &[line]),
            &srtp_offer(SrtpPolicy::Mandatory),
        );
        assert!(
            matches!(answer, Ok(SipAnswer { srtp: Some(_), .. })),
            "{answer:?}"
        );
    }

    #[test]
    fn offers_from_the_pbx() -> Result<(), SdpError> {
        let unknown = format!("1 F8_128_HMAC_SHA1_80 inline:{}", b64(&THEIRS));
        let good = format!("5 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&THEIRS));
        let savp = remote("RTP/SAVP", &[unknown.clone(), good]);
        // Off: RTP/SAVP is refused, RTP/AVP with crypto is plain RTP.
        let mut local = offer();
        assert_eq!(read_sip_offer(&savp, &mut local), Err(SdpError::SrtpOff));
        assert_eq!(local, offer(), "a refused offer leaves our SDP as it was");
        let avp = remote(
            "RTP/AVP",
            &[format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&THEIRS))],
        );
        assert_eq!(read_sip_offer(&avp, &mut local)?.srtp, None);
        assert!(!local.render().contains("a=crypto"));
        // Optional: the first usable line wins; the answer mirrors profile and tag.
        let mut local = srtp_offer(SrtpPolicy::Optional);
        let keys = read_sip_offer(&savp, &mut local)?
            .srtp
            .ok_or(SdpError::NoCrypto)?;
        assert_eq!((keys.tag, keys.local, keys.remote), (5, OURS[0], THEIRS));
        let text = local.render();
        assert!(text.contains("RTP/SAVP"), "{text}");
        assert_eq!(text.matches("a=crypto").count(), 1, "{text}");
        assert!(text.contains(&format!(
            "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:{}",
            b64(&OURS[0])
        )));
        // Optional, plain offer: a plain answer.
        let mut local = srtp_offer(SrtpPolicy::Optional);
        assert_eq!(
            read_sip_offer(&remote("RTP/AVP", &[]), &mut local)?.srtp,
            None
        );
        let text = local.render();
        assert!(
            text.contains("RTP/AVP") && !text.contains("a=crypto"),
            "{text}"
        );
        // Mandatory: no usable crypto, 488.
        let mut local = srtp_offer(SrtpPolicy::Mandatory);
        assert_eq!(
            read_sip_offer(&remote("RTP/AVP", &[]), &mut local),
            Err(SdpError::NoCrypto)
        );
        assert_eq!(
            read_sip_offer(&remote("RTP/SAVP", &[unknown]), &mut local),
            Err(SdpError::NoCrypto)
        );
        Ok(())
    }

    #[test]
    fn crypto_garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"0123456789 |:^;/+=AES_CMHinlne2x\t";
        for len in 0..400 {
            let line: String = (0..len % 90)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize] as char
                })
                .collect();
            let text = remote("RTP/SAVP", &[line]);
            let _ = read_sip_answer(&text, &srtp_offer(SrtpPolicy::Mandatory));
            let _ = read_sip_offer(&text, &mut srtp_offer(SrtpPolicy::Optional));
        }
    }
}
