//! RTP/RTCP header reading and the per-stream rewrite that keeps sequence numbers and
//! timestamps continuous across source changes. Pure, allocation-free, never panics.

/// Length of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;

/// What a datagram on a media socket is, by its first bytes (RFC 7983, RFC 5761).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// STUN (first byte 0..=3).
    Stun,
    /// DTLS (first byte 20..=63).
    Dtls,
    /// RTP (version 2, payload type not in the RTCP range).
    Rtp,
    /// RTCP (version 2, packet type 192..=223 in the second byte).
    Rtcp,
    /// Anything else: counted and dropped.
    Unknown,
}

/// Classifies a datagram without parsing it.
pub fn classify(packet: &[u8]) -> PacketKind {
    let Some(&first) = packet.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        128..=191 => match packet.get(1) {
            Some(second) if (192..=223).contains(second) => PacketKind::Rtcp,
            Some(_) if packet.len() >= RTP_HEADER_LEN => PacketKind::Rtp,
            _ => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

/// The fields of an RTP header callgate rewrites, plus where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Offset of the payload (after CSRCs and the extension).
    pub payload_offset: usize,
    /// Payload length without padding.
    pub payload_len: usize,
}

/// Parses an RTP header; `None` for anything malformed (short, bad version, bad lengths).
pub fn parse_rtp(packet: &[u8]) -> Option<RtpHeader> {
    if packet.len() < RTP_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let padding = packet[0] & 0x20 != 0;
    let extension = packet[0] & 0x10 != 0;
    let csrc_count = usize::from(packet[0] & 0x0f);
    let mut offset = RTP_HEADER_LEN + 4 * csrc_count;
    if extension {
        let words = packet.get(offset + 2..offset + 4)?;
        offset += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if padding {
        let pad = usize::from(*packet.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    if offset > end {
        return None;
    }
    Some(RtpHeader {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7f,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        payload_offset: offset,
        payload_len: end - offset,
    })
}

/// Writes a fixed 12-byte header followed by `payload` into `out`; returns the length, or
/// `None` when `out` is too small. No CSRC, no extension: the SIP leg gets a clean stream.
pub fn write_rtp(
    out: &mut [u8],
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &[u8],
) -> Option<usize> {
    let total = RTP_HEADER_LEN + payload.len();
    let out = out.get_mut(..total)?;
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    out[2..4].copy_from_slice(&sequence.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    out[RTP_HEADER_LEN..].copy_from_slice(payload);
    Some(total)
}

/// Maps an incoming payload type to the outgoing one, decided when the bridge is built.
/// Unmapped types are dropped (e.g. comfort noise the other side never negotiated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMap {
    table: [u8; 128],
}

impl PayloadMap {
    const DROP: u8 = 0xff;

    /// A map from `(incoming, outgoing)` pairs.
    pub fn new(pairs: &[(u8, u8)]) -> PayloadMap {
        let mut table = [Self::DROP; 128];
        for &(from, to) in pairs {
            if from < 128 && to < 128 {
                table[usize::from(from)] = to;
            }
        }
        PayloadMap { table }
    }

    /// The outgoing payload type, or `None` to drop the packet.
    pub fn map(&self, incoming: u8) -> Option<u8> {
        match self.table[usize::from(incoming & 0x7f)] {
            Self::DROP => None,
            pt => Some(pt),
        }
    }
}

/// Samples in one 20 ms G.711 frame: the timestamp step assumed across a source change.
const FRAME_SAMPLES: u32 = 160;

/// Keeps one outgoing stream's sequence numbers and timestamps continuous while the
/// incoming side changes SSRC (early media → answer, re-INVITE, PBX transfer), so the far
/// end's jitter buffer never sees a jump. Sequence numbers are extended to 64 bits (str0m
/// takes extended sequence numbers and derives the SRTP rollover counter from them).
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    source: Option<Source>,
    out_sequence: u64,
    out_timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
}

/// One rewritten header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended outgoing sequence number.
    pub sequence: u64,
    /// Outgoing timestamp.
    pub timestamp: u32,
    /// Set on the first packet after a source change (a new talk spurt for the receiver).
    pub marker: bool,
}

impl StreamRewriter {
    /// Starts an outgoing stream at the given (random) initial sequence and timestamp.
    pub fn new(initial_sequence: u16, initial_timestamp: u32) -> StreamRewriter {
        StreamRewriter {
            source: None,
            out_sequence: u64::from(initial_sequence),
            out_timestamp: initial_timestamp,
        }
    }

    /// Rewrites one packet's header fields. Reordered packets keep their relative position;
    /// a packet older than the stream start is dropped (`None`).
    pub fn rewrite(
        &mut self,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        marker: bool,
    ) -> Option<Rewritten> {
        match self.source {
            Some(src) if src.ssrc == ssrc => {
                let seq_delta = i64::from(sequence.wrapping_sub(src.sequence) as i16);
                let ts_delta = timestamp.wrapping_sub(src.timestamp);
                let out_sequence = u64::try_from(self.out_sequence as i64 + seq_delta).ok()?;
                let out_timestamp = self.out_timestamp.wrapping_add(ts_delta);
                if seq_delta > 0 {
                    self.source = Some(Source {
                        ssrc,
                        sequence,
                        timestamp,
                    });
                    self.out_sequence = out_sequence;
                    self.out_timestamp = out_timestamp;
                }
                Some(Rewritten {
                    sequence: out_sequence,
                    timestamp: out_timestamp,
                    marker,
                })
            }
            Some(_) => {
                self.out_sequence += 1;
                self.out_timestamp = self.out_timestamp.wrapping_add(FRAME_SAMPLES);
                self.source = Some(Source {
                    ssrc,
                    sequence,
                    timestamp,
                });
                Some(Rewritten {
                    sequence: self.out_sequence,
                    timestamp: self.out_timestamp,
                    marker: true,
                })
            }
            None => {
                self.source = Some(Source {
                    ssrc,
                    sequence,
                    timestamp,
                });
                Some(Rewritten {
                    sequence: self.out_sequence,
                    timestamp: self.out_timestamp,
                    marker: true,
                })
            }
        }
    }
}

impl StreamRewriter {
    /// Takes the next sequence number for a packet callgate originates in this stream (an
    /// RFC 4733 event) at the current timestamp; the next relayed packet then continues
    /// after it as if from a new source.
    pub fn inject(&mut self) -> Rewritten {
        self.out_sequence += 1;
        if let Some(src) = self.source.as_mut() {
            // Force the "new source" path for the next relayed packet.
            src.ssrc = src.ssrc.wrapping_add(0x5a5a_5a5a);
        }
        Rewritten {
            sequence: self.out_sequence,
            timestamp: self.out_timestamp,
            marker: false,
        }
    }

    /// The timestamp of the last packet sent (for RTCP sender reports).
    pub fn current_timestamp(&self) -> u32 {
        self.out_timestamp
    }

    /// The sequence number of the last packet sent (the one [`Self::inject`] already took).
    pub fn peek_sequence(&self) -> u64 {
        self.out_sequence
    }

    /// Moves the stream's clock forward by `samples` (after an injected event), so relayed
    /// audio resumes with a timestamp past the event.
    pub fn advance(&mut self, samples: u32) {
        self.out_timestamp = self.out_timestamp.wrapping_add(samples);
    }
}

/// One RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub event: u8,
    /// End of the event.
    pub end: bool,
    /// Volume in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a 4-byte payload (ignores redundant trailing events).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// The DTMF character of an RFC 4733 event code.
pub fn dtmf_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF character.
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
