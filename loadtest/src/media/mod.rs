//! The audio a simulated browser sends, and the checks it runs on what comes back.
//!
//! Each frame is one 20 ms G.711 packet: 160 payload bytes at 8 kHz. The payload is not sound;
//! it is a self-describing record so the far end's echo can be verified byte for byte:
//!
//! ```text
//! bytes 0..4    frame sequence number, u32 big-endian (0, 1, 2, ... per call)
//! bytes 4..12   send time, u64 big-endian microseconds since the call started
//! bytes 12..160 pseudo-random bytes derived from the sequence number alone
//! ```
//!
//! A frame that comes back with a plausible header (a sequence number we sent, a send time not
//! in the future) but different bytes is *corrupted*; one whose header is implausible is
//! *foreign* (ringback, announcements, someone else's audio). Both are counted, never trusted.
//!
//! Everything here is pure: no clock reads, no sockets. The call task feeds it times.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Payload bytes of one frame: 20 ms of G.711 at 8000 samples/s, one byte per sample.
pub const FRAME_BYTES: usize = 160;

/// Time between two frames; also what one frame's RTP timestamp step (160) represents.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);

/// RTP timestamp increment per frame (8 kHz clock).
pub const SAMPLES_PER_FRAME: u64 = 160;

/// Bytes of the frame header (sequence number and send time) before the pattern starts.
const HEADER_BYTES: usize = 12;

/// How many recent sequence numbers the duplicate detector remembers (a multiple of 64).
const WINDOW: u32 = 1024;

/// Most DTMF digits kept in [`MediaStats::dtmf_received`]; a bound, not a protocol limit.
const MAX_DTMF_KEPT: usize = 64;

/// The G.711 variant negotiated for a call; callgate relays only these, never transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// μ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

impl G711 {
    /// The static RTP payload type (RFC 3551), the same on every leg.
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }
}

/// Builds the payload of frame `seq`, sent `sent_us` microseconds after the call started.
pub fn encode_frame(seq: u32, sent_us: u64) -> [u8; FRAME_BYTES] {
    let mut frame = [0u8; FRAME_BYTES];
    frame[0..4].copy_from_slice(&seq.to_be_bytes());
    frame[4..12].copy_from_slice(&sent_us.to_be_bytes());
    fill_pattern(seq, &mut frame[HEADER_BYTES..]);
    frame
}

/// Deterministic bytes for `seq` (xorshift32): cheap, and a flipped bit anywhere shows.
fn fill_pattern(seq: u32, out: &mut [u8]) {
    // Any non-zero seed works for xorshift; mixing spreads neighbouring sequence numbers.
    let mut x = seq.wrapping_mul(0x9E37_79B9) ^ 0xA5A5_A5A5;
    if x == 0 {
        x = 1;
    }
    for chunk in out.chunks_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// The verdict on one received audio payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// One of ours, intact, seen for the first time.
    Fresh {
        /// Its sequence number.
        seq: u32,
        /// Whether a higher sequence number arrived before it.
        reordered: bool,
    },
    /// One of ours, intact, already received once.
    Duplicate,
    /// Looks like one of ours but its bytes differ from what was sent.
    Corrupted,
    /// Not a frame of ours at all.
    Foreign,
}

/// Classifies received frames and remembers which sequence numbers it has seen.
///
/// Lives in the call task (it is not part of the published [`MediaStats`]); ~160 bytes.
#[derive(Debug, Clone)]
pub struct FrameChecker {
    highest: Option<u32>,
    /// Transit time (receive minus embedded send time, µs) of the previous fresh frame.
    last_transit_us: Option<u64>,
    /// RFC 3550 §6.4.1 interarrival jitter in µs, scaled by 16 (appendix A.8's integer form).
    jitter_x16: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within `WINDOW` of `highest`) was received.
    seen: [u64; (WINDOW / 64) as usize],
}

impl Default for FrameChecker {
    fn default() -> Self {
        FrameChecker {
            highest: None,
            last_transit_us: None,
            jitter_x16: 0,
            seen: [0; (WINDOW / 64) as usize],
        }
    }
}

impl FrameChecker {
    /// Judges `payload` given how many frames we have sent so far and when it arrived
    /// (microseconds since the call started), and updates `stats` accordingly. Returns the
    /// frame's round trip in µs when it was a fresh, intact echo.
    pub fn check(
        &mut self,
        stats: &mut MediaStats,
        payload: &[u8],
        received_us: u64,
    ) -> Option<u64> {
        match self.classify(payload, stats.frames_sent, received_us) {
            FrameVerdict::Fresh { reordered, .. } => {
                stats.frames_received += 1;
                if reordered {
                    stats.reordered += 1;
                }
                let sent_us = header(payload).map_or(received_us, |(_, sent)| sent);
                let transit = received_us.saturating_sub(sent_us);
                stats.rtt.record(transit);
                // RFC 3550 §6.4.1 with the embedded send times as the sender's clock: how much
                // the arrival spacing of consecutive frames differs from their send spacing.
                if let Some(last) = self.last_transit_us {
                    let d = transit.abs_diff(last);
                    self.jitter_x16 =
                        self.jitter_x16.saturating_add(d) - ((self.jitter_x16 + 8) >> 4);
                    stats.jitter_us = self.jitter_x16 >> 4;
                    stats.max_transit_delta_us = stats.max_transit_delta_us.max(d);
                }
                self.last_transit_us = Some(transit);
                return Some(transit);
            }
            FrameVerdict::Duplicate => stats.duplicates += 1,
            FrameVerdict::Corrupted => stats.corrupted += 1,
            FrameVerdict::Foreign => stats.foreign += 1,
        }
        None
    }

    /// The verdict alone, updating only the seen-set; `frames_sent` and `received_us` bound
    /// what a genuine header may say.
    pub fn classify(&mut self, payload: &[u8], frames_sent: u64, received_us: u64) -> FrameVerdict {
        let Some((seq, sent_us)) = header(payload) else {
            return FrameVerdict::Foreign;
        };
        if u64::from(seq) >= frames_sent || sent_us > received_us {
            return FrameVerdict::Foreign;
        }
        let mut expected = [0u8; FRAME_BYTES - HEADER_BYTES];
        fill_pattern(seq, &mut expected);
        if payload.len() != FRAME_BYTES || payload[HEADER_BYTES..] != expected[..] {
            return FrameVerdict::Corrupted;
        }
        self.mark(seq)
    }

    /// Records `seq` as received and says whether it was new and in order.
    fn mark(&mut self, seq: u32) -> FrameVerdict {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.set(seq);
            return FrameVerdict::Fresh {
                seq,
                reordered: false,
            };
        };
        if seq > highest {
            // Forget the bits that now fall out of the window: highest+1 ..= seq.
            if seq - highest >= WINDOW {
                self.seen = [0; (WINDOW / 64) as usize];
            } else {
                for s in highest + 1..=seq {
                    self.clear(s);
                }
            }
            self.highest = Some(seq);
            self.set(seq);
            return FrameVerdict::Fresh {
                seq,
                reordered: false,
            };
        }
        if highest - seq >= WINDOW {
            // Too old to tell a duplicate from a very late frame; count it as late.
            return FrameVerdict::Fresh {
                seq,
                reordered: true,
            };
        }
        if self.is_set(seq) {
            return FrameVerdict::Duplicate;
        }
        self.set(seq);
        FrameVerdict::Fresh {
            seq,
            reordered: true,
        }
    }

    fn set(&mut self, seq: u32) {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn clear(&mut self, seq: u32) {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] &= !(1 << (bit % 64));
    }

    fn is_set(&self, seq: u32) -> bool {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }
}

/// Reads the sequence number and send time, if the payload is long enough to hold them.
fn header(payload: &[u8]) -> Option<(u32, u64)> {
    let seq = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    Some((seq, sent))
}

/// Why a call's media task stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEnd {
    /// [`crate::SimCall::stop`] closed it (DTLS close_notify sent).
    Stopped,
    /// The [`crate::SimCall`] was dropped without stopping.
    Dropped,
    /// The gateway closed DTLS (or SCTP): the gateway tore the media down.
    RemoteClosed,
    /// ICE consent failed: the gateway stopped answering STUN.
    IceDisconnected,
    /// str0m or the socket reported an error; the text says which.
    Failed(String),
}

/// A snapshot of one call's media, published by the call task as things happen.
///
/// Counters are cumulative since the call started. `frames_received` counts distinct intact
/// frames of ours; the loss so far is [`MediaStats::lost`] (frames in flight count as lost
/// until they land).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStats {
    /// When the `call` request was prepared; embedded send times count from here.
    pub started_at: Instant,
    /// When ICE and DTLS completed (str0m's `Event::Connected`); audio starts then.
    pub connected_at: Option<Instant>,
    /// The G.711 codec we send with, if the answer left one.
    pub codec: Option<G711>,
    /// Frames handed to str0m.
    pub frames_sent: u64,
    /// Distinct intact frames of ours that came back.
    pub frames_received: u64,
    /// Frames with a plausible header whose bytes differ from what was sent.
    pub corrupted: u64,
    /// Audio payloads that are not frames of ours (e.g. ringback or another call's audio).
    pub foreign: u64,
    /// Intact frames received more than once.
    pub duplicates: u64,
    /// Intact frames that arrived after a higher-numbered one.
    pub reordered: u64,
    /// Audio packets on a payload type other than PCMU/PCMA/telephone-event.
    pub other_payload: u64,
    /// Frame slots skipped because the task woke too late to catch up (scheduler overload).
    pub skipped_slots: u64,
    /// Datagrams the socket refused to send (buffer full) or str0m refused to write.
    pub send_errors: u64,
    /// DTMF events we started (each becomes several RFC 4733 packets).
    pub dtmf_sent: u64,
    /// DTMF digits received (RFC 4733 end-of-event, repeats collapsed), first 64 kept.
    pub dtmf_received: String,
    /// Round-trip times of intact frames: receive time minus embedded send time.
    pub rtt: RttHistogram,
    /// Interarrival jitter of the intact frames that came back, in µs (RFC 3550 §6.4.1 with
    /// the embedded send times as timestamps): the smoothed difference between their arrival
    /// spacing and their send spacing, i.e. round-trip variation.
    pub jitter_us: u64,
    /// Largest difference seen between consecutive frames' round trips, in µs.
    pub max_transit_delta_us: u64,
    /// The round trip str0m last measured from the far end's RTCP receiver reports on our
    /// sender reports (callgate's own reports once it keeps the leg), in µs.
    pub peer_rtt_us: Option<u64>,
    /// Set once the media task has stopped, with the reason.
    pub ended: Option<MediaEnd>,
}

impl MediaStats {
    /// Empty statistics for a call that started at `started_at`.
    pub fn new(started_at: Instant) -> Self {
        MediaStats {
            started_at,
            connected_at: None,
            codec: None,
            frames_sent: 0,
            frames_received: 0,
            corrupted: 0,
            foreign: 0,
            duplicates: 0,
            reordered: 0,
            other_payload: 0,
            skipped_slots: 0,
            send_errors: 0,
            dtmf_sent: 0,
            dtmf_received: String::new(),
            rtt: RttHistogram::default(),
            jitter_us: 0,
            max_transit_delta_us: 0,
            peer_rtt_us: None,
            ended: None,
        }
    }

    /// Frames sent that have not (yet) come back.
    pub fn lost(&self) -> u64 {
        self.frames_sent.saturating_sub(self.frames_received)
    }

    /// Median round-trip time, if any frame came back.
    pub fn rtt_p50(&self) -> Option<Duration> {
        self.rtt.quantile(0.50)
    }

    /// 99th-percentile round-trip time, if any frame came back.
    pub fn rtt_p99(&self) -> Option<Duration> {
        self.rtt.quantile(0.99)
    }

    /// Time from preparing the call to ICE+DTLS connected.
    pub fn time_to_connect(&self) -> Option<Duration> {
        self.connected_at
            .map(|at| at.saturating_duration_since(self.started_at))
    }

    /// Appends a received DTMF digit, up to the bound.
    pub(crate) fn push_dtmf(&mut self, digit: char) {
        if self.dtmf_received.len() < MAX_DTMF_KEPT {
            self.dtmf_received.push(digit);
        }
    }
}

/// Sub-buckets per power of two: values are kept to within 1/16 (6 %).
const SUB_BUCKETS: u64 = 16;
/// Bits of `SUB_BUCKETS`.
const SUB_BITS: u32 = 4;
/// Largest recorded value: 2^32 µs (71 minutes); larger ones are clamped.
const MAX_BITS: u32 = 32;
/// Values below `SUB_BUCKETS` get exact buckets, then `SUB_BUCKETS` per octave.
const BUCKETS: usize = (SUB_BUCKETS + (MAX_BITS - SUB_BITS) as u64 * SUB_BUCKETS) as usize;

/// A log-linear histogram of microsecond values (HdrHistogram's idea, 6 % resolution).
///
/// Fixed size (~1.8 KB) whatever the call length, and mergeable, so the load generator can
/// keep one per call and add them up for the run.
#[derive(Clone, PartialEq, Eq)]
pub struct RttHistogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
    max_us: u64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_us: 0,
        }
    }
}

impl std::fmt::Debug for RttHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RttHistogram")
            .field("count", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl RttHistogram {
    /// Adds one value in microseconds.
    pub fn record(&mut self, us: u64) {
        let slot = &mut self.counts[bucket_of(us)];
        *slot = slot.saturating_add(1);
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every value of `other` (to aggregate calls).
    pub fn merge(&mut self, other: &RttHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded, exactly.
    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_micros(self.max_us))
    }

    /// The value below which a fraction `q` (0.0..=1.0) of the values lie, rounded up to
    /// its bucket's upper edge (never above the maximum seen).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Rank of the wanted value, 1-based; float precision is plenty for a percentile.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                let upper = bucket_upper(index).min(self.max_us);
                return Some(Duration::from_micros(upper));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }
}

/// Round trips of every call since the last [`RttWindow::take`]: the report's timeline reads
/// it at each sample, so latency can be set against the load of that moment. Lock-free (one
/// relaxed increment per echo), shared by all the calls of a run.
pub struct RttWindow {
    counts: Vec<AtomicU32>,
    max_us: AtomicU64,
}

impl Default for RttWindow {
    fn default() -> Self {
        RttWindow {
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for RttWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RttWindow").finish_non_exhaustive()
    }
}

impl RttWindow {
    /// Adds one round trip in microseconds.
    pub fn record(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The round trips recorded since the last take, and a fresh window. A value recorded
    /// while this runs lands in this window or the next, never in neither.
    pub fn take(&self) -> RttHistogram {
        let mut histogram = RttHistogram::default();
        for (slot, count) in histogram.counts.iter_mut().zip(&self.counts) {
            *slot = count.swap(0, Ordering::Relaxed);
            histogram.total += u64::from(*slot);
        }
        histogram.max_us = self.max_us.swap(0, Ordering::Relaxed);
        histogram
    }
}

/// The bucket holding `us`.
fn bucket_of(us: u64) -> usize {
    let us = us.min((1u64 << MAX_BITS) - 1);
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let sub = (us >> shift) & (SUB_BUCKETS - 1);
    (SUB_BUCKETS + u64::from(shift) * SUB_BUCKETS + sub) as usize
}

/// The largest value that lands in bucket `index`.
fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
    let lower = (SUB_BUCKETS + sub) << shift;
    lower + (1u64 << shift) - 1
}

/// The RFC 4733 event code of a DTMF digit (`0-9`, `*`, `#`, `A-D`).
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The digit of an RFC 4733 event code, for codes 0-15.
pub fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}
