use proptest::prelude::*;

use super::*;

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 12 + payload.len()];
    let n = write_rtp(&mut buf, false, pt, seq, ts, ssrc, payload).expect("fits");
    buf.truncate(n);
    buf
}

#[test]
fn written_packets_parse_back() {
    let p = packet(8, 65535, 0xdead_beef, 42, &[1, 2, 3]);
    let h = parse_rtp(&p).expect("valid");
    assert_eq!(
        (h.payload_type, h.sequence, h.timestamp, h.ssrc),
        (8, 65535, 0xdead_beef, 42)
    );
    assert_eq!(
        &p[h.payload_offset..h.payload_offset + h.payload_len],
        &[1, 2, 3]
    );
    assert_eq!(classify(&p), PacketKind::Rtp);
}

#[test]
fn csrc_extension_and_padding_are_skipped() {
    let mut p = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9]; // padding+ext, 1 CSRC
    p.extend_from_slice(&[0, 0, 0, 7]); // CSRC
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
    p.extend_from_slice(&[5, 6, 7]); // payload
    p.extend_from_slice(&[0, 2]); // 2 bytes of padding
    let h = parse_rtp(&p).expect("valid");
    assert_eq!(
        &p[h.payload_offset..h.payload_offset + h.payload_len],
        &[5, 6, 7]
    );
}

#[test]
fn classification_follows_rfc7983() {
    assert_eq!(classify(&[0, 1, 0, 0]), PacketKind::Stun);
    assert_eq!(classify(&[22, 254, 253]), PacketKind::Dtls);
    assert_eq!(classify(&[0x80, 200, 0, 6]), PacketKind::Rtcp);
    assert_eq!(classify(&[0x80, 0]), PacketKind::Unknown);
    assert_eq!(classify(&[]), PacketKind::Unknown);
    assert_eq!(classify(b"INVITE sip:x"), PacketKind::Unknown);
}

#[test]
fn malformed_headers_are_refused() {
    assert_eq!(parse_rtp(&[0x80; 11]), None);
    assert_eq!(parse_rtp(&[0x40; 12]), None, "version 1");
    let mut ext_too_long = packet(0, 1, 1, 1, &[]);
    ext_too_long[0] |= 0x10;
    ext_too_long.extend_from_slice(&[0, 0, 0xff, 0xff]);
    assert_eq!(parse_rtp(&ext_too_long), None);
    let mut bad_padding = packet(0, 1, 1, 1, &[1]);
    bad_padding[0] |= 0x20;
    *bad_padding.last_mut().expect("non-empty") = 200;
    assert_eq!(parse_rtp(&bad_padding), None);
}

#[test]
fn payload_map_drops_what_was_not_negotiated() {
    let map = PayloadMap::new(&[(0, 0), (126, 101)]);
    assert_eq!(map.map(0), Some(0));
    assert_eq!(map.map(126), Some(101));
    assert_eq!(map.map(13), None);
    assert_eq!(map.map(255), None);
}

#[test]
fn rewriter_is_continuous_across_source_changes() {
    let mut r = StreamRewriter::new(1000, 5000);
    let a = r.rewrite(1, 60000, 100, false).expect("first");
    assert_eq!((a.sequence, a.timestamp, a.marker), (1000, 5000, true));
    let b = r.rewrite(1, 60001, 260, false).expect("next");
    assert_eq!((b.sequence, b.timestamp, b.marker), (1001, 5160, false));
    let reordered = r.rewrite(1, 60000, 100, false).expect("late packet");
    assert_eq!(reordered.sequence, 1000);
    let c = r.rewrite(2, 7, 999_999, false).expect("new source");
    assert_eq!((c.sequence, c.timestamp, c.marker), (1002, 5320, true));
    let d = r.rewrite(2, 8, 999_999 + 160, false).expect("continues");
    assert_eq!((d.sequence, d.timestamp), (1003, 5480));
}

#[test]
fn rewriter_extends_sequence_across_wrap() {
    let mut r = StreamRewriter::new(65534, 0);
    let mut last = 0;
    for i in 0..5u16 {
        last = r
            .rewrite(9, 65534u16.wrapping_add(i), u32::from(i) * 160, false)
            .expect("ok")
            .sequence;
    }
    assert_eq!(last, 65538, "extended past 16 bits");
}

#[test]
fn rewriter_drops_packets_older_than_the_stream_start() {
    let mut r = StreamRewriter::new(0, 0);
    r.rewrite(1, 100, 0, false).expect("first");
    assert_eq!(r.rewrite(1, 99, 0, false), None);
}

#[test]
fn injected_packets_continue_the_stream() {
    let mut r = StreamRewriter::new(100, 1000);
    r.rewrite(7, 1, 0, false).expect("first");
    let dtmf = r.inject();
    assert_eq!((dtmf.sequence, dtmf.timestamp), (101, 1000));
    assert_eq!(r.inject().sequence, 102);
    r.advance(800);
    let audio = r.rewrite(7, 2, 160, false).expect("audio resumes");
    assert_eq!(
        (audio.sequence, audio.timestamp, audio.marker),
        (103, 1960, true)
    );
}

#[test]
fn telephone_events_round_trip() {
    let e = TelephoneEvent {
        event: 11,
        end: true,
        volume: 10,
        duration: 800,
    };
    assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Some(e));
    assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    for (c, code) in [
        ('0', 0),
        ('9', 9),
        ('*', 10),
        ('#', 11),
        ('A', 12),
        ('d', 15),
    ] {
        assert_eq!(dtmf_event(c), Some(code));
        assert_eq!(dtmf_char(code), Some(c.to_ascii_uppercase()));
    }
    assert_eq!(dtmf_event('x'), None);
    assert_eq!(dtmf_char(16), None);
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = classify(&bytes);
        if let Some(h) = parse_rtp(&bytes) {
            prop_assert!(h.payload_offset + h.payload_len <= bytes.len());
        }
    }

    #[test]
    fn rewriter_never_panics(steps in proptest::collection::vec((0u32..3, any::<u16>(), any::<u32>()), 0..64)) {
        let mut r = StreamRewriter::new(0, 0);
        for (ssrc, seq, ts) in steps {
            let _ = r.rewrite(ssrc, seq, ts, false);
        }
    }
}
