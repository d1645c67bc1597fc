//! Call quality from the packets themselves: RFC 3550 loss and interarrival jitter per
//! received stream, RTCP receiver-report blocks, and an E-model MOS (ITU-T G.107) for G.711.
//! Pure: the caller passes arrival times; nothing allocates per packet.

use std::time::{Duration, Instant};

/// Samples per millisecond of G.711 / telephone-event (8 kHz clock).
const SAMPLES_PER_MS: f64 = 8.0;

/// Loss and jitter of one received RTP stream (RFC 3550 §6.4.1, appendix A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    base_seq: Option<u64>,
    max_seq: u64,
    last_seq16: u16,
    cycles: u64,
    received: u64,
    jitter: f64,
    last_transit: Option<i64>,
    epoch: Option<Instant>,
    /// Expected and received at the last report block (RFC 3550 A.3).
    expected_prior: u64,
    received_prior: u64,
}

/// A snapshot of one leg's quality.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// Packets received.
    pub packets: u64,
    /// Packets expected but not received.
    pub lost: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, when measured.
    pub rtt_ms: Option<f64>,
}

impl LegQuality {
    /// Lost / expected, 0 when nothing was expected.
    pub fn loss_fraction(&self) -> f64 {
        let expected = self.packets + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 / expected as f64
        }
    }
}

impl ReceiveStats {
    /// Records one packet with a 16-bit sequence number (extended here, RFC 3550 A.1).
    pub fn on_packet16(&mut self, seq: u16, rtp_timestamp: u32, arrival: Instant) {
        if self.base_seq.is_some() && seq < 0x1000 && self.last_seq16 > 0xf000 {
            self.cycles += 1 << 16;
        }
        self.last_seq16 = seq;
        let extended = self.cycles + u64::from(seq);
        self.on_packet(extended, rtp_timestamp, arrival);
    }

    /// Records one packet with an already extended sequence number.
    pub fn on_packet(&mut self, extended_seq: u64, rtp_timestamp: u32, arrival: Instant) {
        let base = *self.base_seq.get_or_insert(extended_seq);
        if extended_seq < base {
            return;
        }
        self.max_seq = self.max_seq.max(extended_seq);
        self.received += 1;
        let epoch = *self.epoch.get_or_insert(arrival);
        let arrival_units = (arrival.saturating_duration_since(epoch).as_micros() as f64 / 1000.0
            * SAMPLES_PER_MS) as i64;
        let transit = arrival_units - i64::from(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // Timestamps wrap at 2^32; a real difference is far smaller than half of that.
            let d = (transit - last).rem_euclid(1 << 32);
            let d = if d > (1 << 31) { (1i64 << 32) - d } else { d };
            self.jitter += (d as f64 - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// The stream's quality so far.
    pub fn snapshot(&self) -> LegQuality {
        let expected = self.base_seq.map_or(0, |base| self.max_seq - base + 1);
        LegQuality {
            packets: self.received,
            lost: expected.saturating_sub(self.received),
            jitter_ms: self.jitter / SAMPLES_PER_MS,
            rtt_ms: None,
        }
    }
}

impl ReceiveStats {
    /// The loss figures of the next report block about this stream (RFC 3550 §6.4.1, A.3):
    /// the fraction lost since the previous call, then updates that baseline. `None` before
    /// the first packet.
    pub fn next_report(&mut self) -> Option<ReceptionFigures> {
        let base = self.base_seq?;
        let expected = self.max_seq - base + 1;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |fraction| fraction.min(255) as u8);
        // 24 bits, signed: duplicates can make it negative.
        let cumulative = (expected as i64 - self.received as i64).clamp(-0x80_0000, 0x7f_ffff);
        Some(ReceptionFigures {
            fraction_lost,
            cumulative_lost: cumulative as i32,
            highest_seq: self.max_seq as u32,
            jitter: self.jitter as u32,
        })
    }
}

/// Loss and jitter of a received stream as a report block states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionFigures {
    /// Lost since the previous report, /256.
    pub fraction_lost: u8,
    /// Lost since the start (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// Our report about a stream we receive, for a sender report's report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingBlock {
    /// The stream reported on.
    pub ssrc: u32,
    /// Its loss and jitter.
    pub figures: ReceptionFigures,
    /// Middle 32 bits of the NTP time of its sender's last SR (0 when none came).
    pub last_sr: u32,
    /// Time since that SR arrived, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// What a sender report says about the stream we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Our stream's SSRC.
    pub ssrc: u32,
    /// Wall-clock time now (the NTP timestamp).
    pub since_unix: Duration,
    /// The RTP timestamp matching that instant.
    pub rtp_timestamp: u32,
    /// Packets sent so far.
    pub packets: u32,
    /// Payload octets sent so far.
    pub octets: u32,
}

/// Writes a compound RTCP packet into `out`: a sender report (with one report block when
/// `block` is given), an SDES CNAME chunk when `cname` is not empty (RFC 3550 §6.1 asks for
/// one in every compound packet), and a BYE when `bye`. Returns its length; `None` when
/// `out` is too small or the CNAME longer than 255 bytes.
pub fn write_compound_report(
    out: &mut [u8],
    sender: &SenderInfo,
    block: Option<&OutgoingBlock>,
    cname: &[u8],
    bye: bool,
) -> Option<usize> {
    let ntp_seconds = (sender.since_unix.as_secs() + 2_208_988_800) as u32;
    let fraction = ((u64::from(sender.since_unix.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let sr_len = 28 + if block.is_some() { 24 } else { 0 };
    let sr = out.get_mut(..sr_len)?;
    sr[0] = 0x80 | u8::from(block.is_some());
    sr[1] = 200;
    sr[2..4].copy_from_slice(&((sr_len / 4 - 1) as u16).to_be_bytes());
    sr[4..8].copy_from_slice(&sender.ssrc.to_be_bytes());
    sr[8..12].copy_from_slice(&ntp_seconds.to_be_bytes());
    sr[12..16].copy_from_slice(&fraction.to_be_bytes());
    sr[16..20].copy_from_slice(&sender.rtp_timestamp.to_be_bytes());
    sr[20..24].copy_from_slice(&sender.packets.to_be_bytes());
    sr[24..28].copy_from_slice(&sender.octets.to_be_bytes());
    if let Some(b) = block {
        let lost = (b.figures.cumulative_lost as u32) & 0x00ff_ffff;
        sr[28..32].copy_from_slice(&b.ssrc.to_be_bytes());
        sr[32..36]
            .copy_from_slice(&(u32::from(b.figures.fraction_lost) << 24 | lost).to_be_bytes());
        sr[36..40].copy_from_slice(&b.figures.highest_seq.to_be_bytes());
        sr[40..44].copy_from_slice(&b.figures.jitter.to_be_bytes());
        sr[44..48].copy_from_slice(&b.last_sr.to_be_bytes());
        sr[48..52].copy_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    let mut len = sr_len;
    if !cname.is_empty() {
        let cname_len = u8::try_from(cname.len()).ok()?;
        // SSRC, CNAME item (type, length, text), then a zero end item padded to 32 bits.
        let chunk = 4 + 2 + cname.len() + 1;
        let sdes_len = 4 + chunk.div_ceil(4) * 4;
        let sdes = out.get_mut(len..len + sdes_len)?;
        sdes.fill(0);
        sdes[0] = 0x81;
        sdes[1] = 202;
        sdes[2..4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
        sdes[4..8].copy_from_slice(&sender.ssrc.to_be_bytes());
        sdes[8] = 1;
        sdes[9] = cname_len;
        sdes[10..10 + cname.len()].copy_from_slice(cname);
        len += sdes_len;
    }
    if bye {
        let packet = out.get_mut(len..len + 8)?;
        packet[0] = 0x81;
        packet[1] = 203;
        packet[2..4].copy_from_slice(&1u16.to_be_bytes());
        packet[4..8].copy_from_slice(&sender.ssrc.to_be_bytes());
        len += 8;
    }
    Some(len)
}

/// The sender of the first sender report in a compound RTCP packet and the middle 32 bits
/// of its NTP timestamp (what our next report block echoes as LSR).
pub fn sender_report_ntp(packet: &[u8]) -> Option<(u32, u32)> {
    let mut rest = packet;
    while rest.len() >= 8 {
        let length = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let this = rest.get(..length)?;
        if this[1] == 200 {
            let sr = this.get(..28)?;
            let word = |at: usize| u32::from_be_bytes([sr[at], sr[at + 1], sr[at + 2], sr[at + 3]]);
            return Some((word(4), (word(8) << 16) | (word(12) >> 16)));
        }
        rest = &rest[length..];
    }
    None
}

/// Delay since `since` in RTCP's 1/65536 s units (DLSR), saturating.
pub fn delay_units(delay: Duration) -> u32 {
    u32::try_from(delay.as_micros() * 65_536 / 1_000_000).unwrap_or(u32::MAX)
}

/// One RTCP report block about a stream we send (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The reported source.
    pub ssrc: u32,
    /// Fraction lost since the last report, /256.
    pub fraction_lost: u8,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of our last SR (0 when none was received).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// Finds the report block about `our_ssrc` in a compound RTCP packet (SR or RR).
pub fn report_block_for(packet: &[u8], our_ssrc: u32) -> Option<ReportBlock> {
    let mut rest = packet;
    while rest.len() >= 8 {
        let count = usize::from(rest[0] & 0x1f);
        let kind = rest[1];
        let length = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let this = rest.get(..length)?;
        let blocks_at = match kind {
            200 => 28, // SR: header 8 + sender info 20
            201 => 8,  // RR
            _ => {
                rest = &rest[length..];
                continue;
            }
        };
        for i in 0..count {
            let b = this.get(blocks_at + 24 * i..blocks_at + 24 * (i + 1))?;
            let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            if word(0) == our_ssrc {
                return Some(ReportBlock {
                    ssrc: word(0),
                    fraction_lost: b[4],
                    jitter: word(12),
                    last_sr: word(16),
                    delay_since_last_sr: word(20),
                });
            }
        }
        rest = &rest[length..];
    }
    None
}

/// The middle 32 bits of an NTP timestamp for `since_unix` (RFC 3550 §4).
pub fn ntp_middle32(since_unix: Duration) -> u32 {
    let ntp_seconds = since_unix.as_secs() + 2_208_988_800;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (((ntp_seconds & 0xffff) << 16) | (fraction >> 16)) as u32
}

/// RTT from a report block: now - LSR - DLSR, in milliseconds (`None` without an SR echo).
pub fn rtt_from_report(block: &ReportBlock, now_middle32: u32) -> Option<f64> {
    if block.last_sr == 0 {
        return None;
    }
    let units = now_middle32
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    let ms = f64::from(units) * 1000.0 / 65536.0;
    (ms < 60_000.0).then_some(ms)
}

/// Writes an RTCP sender report (no report blocks) into `out`; returns its length.
pub fn write_sender_report(
    out: &mut [u8],
    ssrc: u32,
    since_unix: Duration,
    rtp_timestamp: u32,
    packets: u32,
    octets: u32,
) -> Option<usize> {
    let sender = SenderInfo {
        ssrc,
        since_unix,
        rtp_timestamp,
        packets,
        octets,
    };
    write_compound_report(out, &sender, None, &[], false)
}

/// Estimated MOS for a G.711 call with packet loss concealment (ITU-T G.107 E-model, G.113
/// Appendix I: Ie = 0, Bpl = 25.1), from the worse leg's loss, jitter and round trip.
pub fn mos(loss_fraction: f64, jitter_ms: f64, rtt_ms: Option<f64>) -> f64 {
    let loss_pct = (loss_fraction * 100.0).clamp(0.0, 100.0);
    // One-way delay: half the round trip (or a LAN guess), plus a jitter buffer of twice the jitter
    // and 20 ms of packetisation.
    let delay = rtt_ms.map_or(20.0, |rtt| rtt / 2.0) + 2.0 * jitter_ms + 20.0;
    let id = 0.024 * delay
        + if delay > 177.3 {
            0.11 * (delay - 177.3)
        } else {
            0.0
        };
    let ie_eff = 95.0 * loss_pct / (loss_pct + 25.1);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
    mos.clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn steady_stream_has_no_loss_and_no_jitter() {
        let start = crate::clock::now() - Duration::from_secs(10);
        let mut stats = ReceiveStats::default();
        for i in 0..100u16 {
            stats.on_packet16(
                i,
                u32::from(i) * 160,
                start + Duration::from_millis(u64::from(i) * 20),
            );
        }
        let q = stats.snapshot();
        assert_eq!((q.packets, q.lost), (100, 0));
        assert!(q.jitter_ms < 0.01, "{q:?}");
    }

    #[test]
    fn every_tenth_packet_lost_is_ten_percent() {
        let start = crate::clock::now() - Duration::from_secs(10);
        let mut stats = ReceiveStats::default();
        for i in (0..200u16).filter(|i| i % 10 != 5) {
            stats.on_packet16(
                i,
                u32::from(i) * 160,
                start + Duration::from_millis(u64::from(i) * 20),
            );
        }
        let q = stats.snapshot();
        assert_eq!((q.packets, q.lost), (180, 20));
        assert!((q.loss_fraction() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn alternating_arrival_offsets_give_the_rfc3550_jitter() {
        // Packets arrive alternately 0 and 10 ms late: |D| = 10 ms = 80 samples each time, so the
        // running estimate converges to 80 samples = 10 ms.
        let start = crate::clock::now() - Duration::from_secs(60);
        let mut stats = ReceiveStats::default();
        for i in 0..2000u32 {
            let late = if i % 2 == 0 { 0 } else { 10 };
            stats.on_packet16(
                i as u16,
                i * 160,
                start + Duration::from_millis(u64::from(i) * 20 + late),
            );
        }
        let q = stats.snapshot();
        assert!((q.jitter_ms - 10.0).abs() < 0.2, "{q:?}");
    }

    #[test]
    fn sequence_wrap_is_extended() {
        let start = crate::clock::now() - Duration::from_secs(10);
        let mut stats = ReceiveStats::default();
        for (n, seq) in (65530u16..=65535).chain(0..5).enumerate() {
            stats.on_packet16(
                seq,
                n as u32 * 160,
                start + Duration::from_millis(n as u64 * 20),
            );
        }
        assert_eq!(stats.snapshot().lost, 0);
        assert_eq!(stats.snapshot().packets, 11);
    }

    #[test]
    fn mos_falls_with_loss_and_delay() {
        let clean = mos(0.0, 0.0, Some(10.0));
        assert!(clean > 4.3, "{clean}");
        let lossy = mos(0.05, 5.0, Some(50.0));
        assert!(lossy < clean && lossy > 2.5, "{lossy}");
        let awful = mos(0.3, 60.0, Some(600.0));
        assert!(awful < 2.0, "{awful}");
    }

    #[test]
    fn report_blocks_count_loss_per_interval_and_in_total() {
        let mut stats = ReceiveStats::default();
        assert_eq!(stats.next_report(), None);
        let t0 = crate::clock::now();
        // 65,530..65,539 across the wrap, two of them missing.
        for (i, seq) in (65_530u32..65_540).enumerate() {
            if seq == 65_533 || seq == 65_537 {
                continue;
            }
            stats.on_packet16(
                seq as u16,
                seq * 160,
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        let first = stats.next_report().expect("packets came");
        assert_eq!(first.fraction_lost, (2 * 256 / 10) as u8);
        assert_eq!(first.cumulative_lost, 2);
        assert_eq!(first.highest_seq, 65_539);
        // Ten more, none lost: the interval's fraction is back to 0, the total stays.
        for seq in 65_540u32..65_550 {
            stats.on_packet16(
                seq as u16,
                seq * 160,
                t0 + Duration::from_millis(20 * u64::from(seq - 65_530)),
            );
        }
        let second = stats.next_report().expect("packets came");
        assert_eq!((second.fraction_lost, second.cumulative_lost), (0, 2));
        assert_eq!(second.highest_seq, 65_549);
    }

    #[test]
    fn a_compound_report_carries_its_block_cname_and_bye() {
        let sender = SenderInfo {
            ssrc: 0x0102_0304,
            since_unix: Duration::from_millis(1_700_000_000_250),
            rtp_timestamp: 8000,
            packets: 50,
            octets: 8000,
        };
        let block = OutgoingBlock {
            ssrc: 0x0a0b_0c0d,
            figures: ReceptionFigures {
                fraction_lost: 13,
                cumulative_lost: -1,
                highest_seq: 70_000,
                jitter: 24,
            },
            last_sr: 0x1234_5678,
            delay_since_last_sr: delay_units(Duration::from_millis(500)),
        };
        let mut out = [0u8; 128];
        let len =
            write_compound_report(&mut out, &sender, Some(&block), b"abcd", true).expect("fits");
        // SR with one block (52), SDES with a 4-byte CNAME (4 + 12), BYE (8).
        assert_eq!(len, 52 + 16 + 8);
        assert_eq!(&out[..4], &[0x81, 200, 0, 12]);
        let rr = report_block_for(&out[..len], 0x0a0b_0c0d).expect("our block");
        assert_eq!(rr.fraction_lost, 13);
        assert_eq!(rr.jitter, 24);
        assert_eq!(rr.last_sr, 0x1234_5678);
        assert_eq!(rr.delay_since_last_sr, 32_768);
        assert_eq!(&out[33..36], &[0xff, 0xff, 0xff], "-1 in 24 bits");
        assert_eq!(&out[52..60], &[0x81, 202, 0, 3, 1, 2, 3, 4]);
        assert_eq!(&out[60..66], &[1, 4, b'a', b'b', b'c', b'd']);
        assert_eq!(&out[66..68], &[0, 0], "end item and padding");
        assert_eq!(&out[68..76], &[0x81, 203, 0, 1, 1, 2, 3, 4]);
        // What a peer echoes back as LSR: the middle of our NTP timestamp.
        assert_eq!(
            sender_report_ntp(&out[..len]),
            Some((0x0102_0304, ntp_middle32(sender.since_unix)))
        );
        assert_eq!(sender_report_ntp(&out[52..len]), None);
        assert_eq!(
            write_compound_report(&mut out[..60], &sender, Some(&block), b"abcd", false),
            None
        );
        assert_eq!(
            write_compound_report(&mut out, &sender, None, &[b'x'; 256], false),
            None
        );
    }

    #[test]
    fn sender_reports_and_receiver_blocks_give_the_round_trip() {
        let mut sr = [0u8; 64];
        let sent_at = Duration::from_secs(1_700_000_000);
        let n = write_sender_report(&mut sr, 7, sent_at, 1234, 10, 1600).expect("fits");
        assert_eq!(n, 28);
        // The peer answers 40 ms later having held it 15 ms: RTT 25 ms.
        let lsr = ntp_middle32(sent_at);
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9];
        rr.extend_from_slice(&7u32.to_be_bytes());
        rr.extend_from_slice(&[26, 0, 0, 3]); // 10% lost, 3 cumulative
        rr.extend_from_slice(&[0, 0, 0, 100]);
        rr.extend_from_slice(&80u32.to_be_bytes()); // jitter 80 samples
        rr.extend_from_slice(&lsr.to_be_bytes());
        rr.extend_from_slice(&((15 * 65536 / 1000) as u32).to_be_bytes());
        let block = report_block_for(&rr, 7).expect("our block");
        assert_eq!((block.fraction_lost, block.jitter), (26, 80));
        let rtt = rtt_from_report(&block, ntp_middle32(sent_at + Duration::from_millis(40)))
            .expect("rtt");
        assert!((rtt - 25.0).abs() < 0.1, "{rtt}");
        assert_eq!(report_block_for(&rr, 8), None);
    }

    proptest! {
        #[test]
        fn rtcp_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), ssrc in any::<u32>()) {
            let _ = sender_report_ntp(&bytes);
            let _ = report_block_for(&bytes, ssrc);
        }

        #[test]
        fn stats_never_panic(steps in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u64..100_000), 0..64)) {
            let start = crate::clock::now();
            let mut stats = ReceiveStats::default();
            for (seq, ts, ms) in steps {
                stats.on_packet16(seq, ts, start + Duration::from_millis(ms));
            }
            let q = stats.snapshot();
            prop_assert!(q.loss_fraction() >= 0.0 && q.loss_fraction() <= 1.0);
            prop_assert!((1.0..=4.5).contains(&mos(q.loss_fraction(), q.jitter_ms, None)));
        }
    }
}
