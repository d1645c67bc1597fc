//! Just enough STUN to route a browser's first packet to its bridge: the local ICE ufrag
//! in a Binding request's USERNAME (`"<our ufrag>:<browser ufrag>"`, RFC 8445 §7.2.2).
//! str0m does the real STUN work once the packet reaches the right `Rtc`.

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;

/// The local ufrag named by a STUN Binding request, or `None` for anything else.
pub fn binding_request_local_ufrag(packet: &[u8]) -> Option<&str> {
    if packet.len() < HEADER_LEN || packet[4..8] != MAGIC_COOKIE {
        return None;
    }
    if u16::from_be_bytes([packet[0], packet[1]]) != BINDING_REQUEST {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let mut attrs = packet.get(HEADER_LEN..HEADER_LEN + body_len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (len + 3) & !3;
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn binding(username: &[u8]) -> Vec<u8> {
        let padded = (username.len() + 3) & !3;
        let mut p = vec![0, 1];
        p.extend_from_slice(&((4 + padded + 8) as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&[0x80, 0x2a, 0, 4, 1, 2, 3, 4]); // ICE-CONTROLLING-ish attribute first
        p.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        p.extend_from_slice(&(username.len() as u16).to_be_bytes());
        p.extend_from_slice(username);
        p.resize(p.len() + padded - username.len(), 0);
        p
    }

    #[test]
    fn finds_the_local_ufrag_after_other_attributes() {
        let p = binding(b"gw7Kq2:brw1");
        let fixed_len = p.len() - HEADER_LEN;
        let mut p = p;
        p[2..4].copy_from_slice(&(fixed_len as u16).to_be_bytes());
        assert_eq!(binding_request_local_ufrag(&p), Some("gw7Kq2"));
    }

    #[test]
    fn ignores_non_requests_and_truncations() {
        let mut p = binding(b"a:b");
        let fixed_len = p.len() - HEADER_LEN;
        p[2..4].copy_from_slice(&(fixed_len as u16).to_be_bytes());
        let mut response = p.clone();
        response[0..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(binding_request_local_ufrag(&response), None);
        assert_eq!(binding_request_local_ufrag(&p[..p.len() - 2]), None);
        assert_eq!(binding_request_local_ufrag(&[0; 19]), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = binding_request_local_ufrag(&bytes);
        }

        #[test]
        fn never_panics_with_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..64), len in any::<u16>()) {
            let mut p = vec![0, 1];
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&MAGIC_COOKIE);
            p.extend_from_slice(&[0; 12]);
            p.extend_from_slice(&tail);
            let _ = binding_request_local_ufrag(&p);
        }
    }
}
