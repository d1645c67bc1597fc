use std::time::Duration;

use super::*;

fn stats_after_sending(n: u64) -> MediaStats {
    let mut stats = MediaStats::new(crate::clock::now());
    stats.frames_sent = n;
    stats
}

#[test]
fn a_frame_round_trips_and_every_flipped_byte_is_caught() {
    let frame = encode_frame(7, 1_000);
    let mut checker = FrameChecker::default();
    assert_eq!(
        checker.classify(&frame, 8, 2_000),
        FrameVerdict::Fresh {
            seq: 7,
            reordered: false
        }
    );
    for i in HEADER_BYTES..FRAME_BYTES {
        let mut bad = frame;
        bad[i] ^= 0x01;
        let mut checker = FrameChecker::default();
        assert_eq!(
            checker.classify(&bad, 8, 2_000),
            FrameVerdict::Corrupted,
            "byte {i}"
        );
    }
}

#[test]
fn patterns_differ_between_frames() {
    let a = encode_frame(1, 0);
    let b = encode_frame(2, 0);
    assert_ne!(a[HEADER_BYTES..], b[HEADER_BYTES..]);
}

#[test]
fn truncated_frames_are_corrupted_and_unknown_audio_is_foreign() {
    let mut checker = FrameChecker::default();
    let frame = encode_frame(3, 10);
    assert_eq!(
        checker.classify(&frame[..100], 10, 20),
        FrameVerdict::Corrupted
    );
    // Silence in μ-law (0xFF) decodes to an absurd sequence number.
    assert_eq!(
        checker.classify(&[0xFF; FRAME_BYTES], 10, 20),
        FrameVerdict::Foreign
    );
    // A sequence number we have not sent yet, or a send time in the future.
    assert_eq!(checker.classify(&frame, 3, 20), FrameVerdict::Foreign);
    assert_eq!(checker.classify(&frame, 10, 5), FrameVerdict::Foreign);
    assert_eq!(checker.classify(&[], 10, 20), FrameVerdict::Foreign);
}

#[test]
fn duplicates_and_reordering_are_counted() {
    let mut stats = stats_after_sending(10);
    let mut checker = FrameChecker::default();
    for seq in [0u32, 1, 3, 2, 3, 4, 0] {
        let frame = encode_frame(seq, 100);
        checker.check(&mut stats, &frame, 600);
    }
    assert_eq!(stats.frames_received, 5);
    assert_eq!(stats.duplicates, 2);
    assert_eq!(stats.reordered, 1);
    assert_eq!(stats.corrupted, 0);
    assert_eq!(stats.lost(), 5);
    assert_eq!(stats.rtt.count(), 5);
    assert_eq!(stats.rtt_p50(), Some(Duration::from_micros(500)));
}

#[test]
fn the_window_forgets_old_frames_without_false_duplicates() {
    let mut stats = stats_after_sending(5_000);
    let mut checker = FrameChecker::default();
    for seq in 0..3_000u32 {
        checker.check(&mut stats, &encode_frame(seq, 0), 1);
    }
    assert_eq!(stats.frames_received, 3_000);
    assert_eq!(stats.duplicates, 0);
    // A jump larger than the window clears it; the next frames are still fresh.
    checker.check(&mut stats, &encode_frame(4_500, 0), 1);
    checker.check(&mut stats, &encode_frame(4_499, 0), 1);
    checker.check(&mut stats, &encode_frame(4_499, 0), 1);
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.reordered, 1);
    // Far older than the window: counted as late, not as a duplicate.
    checker.check(&mut stats, &encode_frame(10, 0), 1);
    assert_eq!(stats.reordered, 2);
}

#[test]
fn histogram_quantiles_are_within_a_bucket() {
    let mut h = RttHistogram::default();
    assert_eq!(h.quantile(0.5), None);
    for us in 1..=1_000u64 {
        h.record(us);
    }
    let p50 = h.quantile(0.5).map(|d| d.as_micros() as u64);
    let p99 = h.quantile(0.99).map(|d| d.as_micros() as u64);
    let within =
        |got: Option<u64>, want: u64| got.is_some_and(|g| g >= want && g <= want * 17 / 16);
    assert!(within(p50, 500), "{p50:?}");
    assert!(within(p99, 990), "{p99:?}");
    assert_eq!(h.max(), Some(Duration::from_micros(1_000)));
    assert_eq!(h.quantile(1.0), Some(Duration::from_micros(1_000)));

    let mut other = RttHistogram::default();
    other.record(u64::MAX);
    h.merge(&other);
    assert_eq!(h.count(), 1_001);
    assert!(h.quantile(1.0).is_some());
}

#[test]
fn buckets_are_monotonic_and_contain_their_values() {
    let mut last = 0;
    for us in (0..100_000u64).chain([1 << 31, (1 << 32) - 1, u64::MAX]) {
        let b = bucket_of(us);
        assert!(b < BUCKETS);
        assert!(b >= last);
        last = b;
        assert!(bucket_upper(b) >= us.min((1 << 32) - 1), "{us}");
    }
}

#[test]
fn dtmf_digits_map_both_ways() {
    for digit in "0123456789*#ABCD".chars() {
        let event = dtmf_event(digit);
        assert_eq!(event.and_then(dtmf_digit), Some(digit));
    }
    assert_eq!(dtmf_event('x'), None);
    assert_eq!(dtmf_digit(16), None);
}

#[test]
fn jitter_follows_the_spacing_of_arrivals_not_their_delay() {
    // A constant round trip, however long, is no jitter.
    let mut stats = stats_after_sending(400);
    let mut checker = FrameChecker::default();
    for seq in 0..100u32 {
        let sent = u64::from(seq) * 20_000;
        checker.check(&mut stats, &encode_frame(seq, sent), sent + 5_000);
    }
    assert_eq!((stats.jitter_us, stats.max_transit_delta_us), (0, 0));
    // Round trips alternating 5 ms / 6 ms: every spacing is off by 1 ms, and the RFC 3550
    // estimate converges on that.
    for seq in 100..400u32 {
        let sent = u64::from(seq) * 20_000;
        let extra = if seq % 2 == 0 { 1_000 } else { 0 };
        checker.check(&mut stats, &encode_frame(seq, sent), sent + 5_000 + extra);
    }
    assert!(
        (950..=1_000).contains(&stats.jitter_us),
        "{}",
        stats.jitter_us
    );
    assert_eq!(stats.max_transit_delta_us, 1_000);
}
