//! SIP capture to Homer (HEP v3, the `sipcapture.org` encapsulation): every SIP message the
//! stack sends or receives is copied, best effort, to a collector over UDP. Never blocks and
//! never fails a call: a send error is dropped.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Encodes one HEP v3 packet; returns `None` when `out` is too small.
pub fn encode(
    out: &mut Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
    since_unix: Duration,
    capture_id: u32,
    tcp: bool,
    payload: &[u8],
) {
    out.clear();
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&[0, 0]); // total length, patched below
    let chunk = |out: &mut Vec<u8>, kind: u16, value: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&((6 + value.len()) as u16).to_be_bytes());
        out.extend_from_slice(value);
    };
    let family = if source.is_ipv4() { 2u8 } else { 10u8 };
    chunk(out, 0x0001, &[family]);
    chunk(out, 0x0002, &[if tcp { 6 } else { 17 }]);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(out, 0x0003, &s.octets());
            chunk(out, 0x0004, &d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            chunk(out, 0x0005, &v6(s));
            chunk(out, 0x0006, &v6(d));
        }
    }
    chunk(out, 0x0007, &source.port().to_be_bytes());
    chunk(out, 0x0008, &destination.port().to_be_bytes());
    chunk(out, 0x0009, &(since_unix.as_secs() as u32).to_be_bytes());
    chunk(out, 0x000a, &since_unix.subsec_micros().to_be_bytes());
    chunk(out, 0x000b, &[1]); // SIP
    chunk(out, 0x000c, &capture_id.to_be_bytes());
    chunk(out, 0x000f, payload);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&total.to_be_bytes());
}

/// A UDP sender to the collector.
pub struct HepSender {
    socket: UdpSocket,
    collector: SocketAddr,
    capture_id: u32,
}

impl HepSender {
    /// Binds an ephemeral UDP socket on the collector's address family.
    pub fn new(collector: SocketAddr, capture_id: u32) -> std::io::Result<HepSender> {
        let bind: SocketAddr = if collector.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap_or_else(|_| unreachable!("constant address"));
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        Ok(HepSender {
            socket,
            collector,
            capture_id,
        })
    }

    /// Copies one SIP message to the collector (best effort).
    pub fn capture(&self, source: SocketAddr, destination: SocketAddr, tcp: bool, message: &[u8]) {
        let mut packet = Vec::with_capacity(message.len() + 128);
        encode(
            &mut packet,
            source,
            destination,
            crate::clock::since_unix_epoch(),
            self.capture_id,
            tcp,
            message,
        );
        let _ = self.socket.send_to(&packet, self.collector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_hep3_chunks() {
        let mut out = Vec::new();
        let src: SocketAddr = "10.0.0.1:5060".parse().expect("addr");
        let dst: SocketAddr = "10.0.0.2:5080".parse().expect("addr");
        encode(
            &mut out,
            src,
            dst,
            Duration::new(1_700_000_000, 5_000),
            2001,
            false,
            b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        );
        assert_eq!(&out[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
        // Walk the chunks and collect them by type.
        let mut at = 6;
        let mut seen = std::collections::BTreeMap::new();
        while at + 6 <= out.len() {
            let kind = u16::from_be_bytes([out[at + 2], out[at + 3]]);
            let len = usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]));
            seen.insert(kind, out[at + 6..at + len].to_vec());
            at += len;
        }
        assert_eq!(at, out.len());
        assert_eq!(seen[&0x0003], vec![10, 0, 0, 1]);
        assert_eq!(seen[&0x0008], 5080u16.to_be_bytes().to_vec());
        assert_eq!(seen[&0x000a], 5u32.to_be_bytes().to_vec());
        assert_eq!(seen[&0x000c], 2001u32.to_be_bytes().to_vec());
        assert!(seen[&0x000f].starts_with(b"OPTIONS"));
    }
}
