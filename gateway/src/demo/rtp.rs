//! RTP echo and RFC 4733 telephone-event detection for demo calls.
//!
//! The parsing half is pure (bytes in, values out) so it can be property
//! tested; the socket half is one small tokio task per call that owns its
//! socket and ends with the call's cancellation token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Keep at most this many recorded digits; the oldest are dropped first.
pub(crate) const MAX_RECORDED_DTMF: usize = 4096;

/// The fields of an RTP header the demo needs (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpPacket<'a> {
    pub(crate) payload_type: u8,
    pub(crate) timestamp: u32,
    pub(crate) ssrc: u32,
    pub(crate) payload: &'a [u8],
}

/// Parse an RTP packet; `None` for anything that is not RTP version 2 with a
/// consistent header (including RTCP, payload types 72–76 with the marker).
pub(crate) fn parse_rtp(buf: &[u8]) -> Option<RtpPacket<'_>> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let second = buf[1];
    // RTCP SR/RR/SDES/BYE/APP share the port under rtcp-mux: 200..=204.
    if (200..=204).contains(&second) {
        return None;
    }
    let csrc_count = usize::from(buf[0] & 0x0f);
    let mut offset = 12 + 4 * csrc_count;
    if buf[0] & 0x10 != 0 {
        // Header extension: 2 bytes profile, 2 bytes length in 32-bit words.
        let ext = buf.get(offset..offset + 4)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
    }
    let mut end = buf.len();
    if buf[0] & 0x20 != 0 {
        let pad = usize::from(*buf.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = buf.get(offset..end)?;
    Some(RtpPacket {
        payload_type: second & 0x7f,
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload,
    })
}

/// One RFC 4733 §2.3 named-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TelephoneEvent {
    pub(crate) event: u8,
    pub(crate) end: bool,
}

/// Parse a telephone-event payload (4 bytes; more are tolerated).
pub(crate) fn parse_telephone_event(payload: &[u8]) -> Option<TelephoneEvent> {
    let [event, flags, _, _, ..] = *payload else {
        return None;
    };
    Some(TelephoneEvent {
        event,
        end: flags & 0x80 != 0,
    })
}

/// The DTMF character of an RFC 4733 §3.2 event code (0–15).
pub(crate) fn event_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

/// Turns a stream of RTP packets into DTMF digits: one digit per event, on
/// its first end packet. The end packet is normally sent three times with the
/// same RTP timestamp (RFC 4733 §2.5.1.4), so `(ssrc, timestamp)` dedupes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DtmfDetector {
    payload_type: Option<u8>,
    last_end: Option<(u32, u32)>,
}

impl DtmfDetector {
    /// A detector for telephone-event on `payload_type` (None: never fires).
    pub(crate) fn new(payload_type: Option<u8>) -> Self {
        Self {
            payload_type,
            last_end: None,
        }
    }

    /// Feed one datagram; returns the digit it completes, if any.
    pub(crate) fn on_packet(&mut self, buf: &[u8]) -> Option<char> {
        let pt = self.payload_type?;
        let rtp = parse_rtp(buf)?;
        if rtp.payload_type != pt {
            return None;
        }
        let ev = parse_telephone_event(rtp.payload)?;
        if !ev.end {
            return None;
        }
        let key = (rtp.ssrc, rtp.timestamp);
        if self.last_end == Some(key) {
            return None;
        }
        self.last_end = Some(key);
        event_char(ev.event)
    }
}

/// Where echo tasks record the digits they see, shared with `DemoPbx`.
pub(crate) type DtmfSink = Arc<Mutex<Vec<(String, char)>>>;

/// Echo every datagram received on `socket` back to its source (symmetric
/// RTP, bytes untouched) until `cancel` fires; the socket is closed when the
/// task returns.
pub(crate) async fn echo_loop(
    socket: UdpSocket,
    call_id: String,
    mut detector: DtmfDetector,
    sink: DtmfSink,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    let mut echoed: u64 = 0;
    let mut last_peer: Option<SocketAddr> = None;
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, peer) = match received {
            Ok(v) => v,
            Err(e) => {
                // Unconnected UDP sockets only fail transiently (ICMP errors
                // surfaced on some platforms); do not spin on them.
                debug!(%call_id, error = %e, "rtp recv error");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(std::time::Duration::from_millis(5)) => continue,
                }
            }
        };
        let packet = &buf[..len];
        if last_peer != Some(peer) {
            debug!(%call_id, %peer, "rtp peer");
            last_peer = Some(peer);
        }
        if let Some(digit) = detector.on_packet(packet) {
            info!(%call_id, %digit, "dtmf received");
            let mut digits = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if digits.len() >= MAX_RECORDED_DTMF {
                digits.remove(0);
            }
            digits.push((call_id.clone(), digit));
        }
        if let Err(e) = socket.send_to(packet, peer).await {
            debug!(%call_id, error = %e, "rtp echo send failed");
        } else {
            echoed += 1;
        }
    }
    debug!(%call_id, echoed, "rtp echo stopped");
}
