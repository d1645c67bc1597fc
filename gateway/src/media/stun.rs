//! STUN on the browser leg: the local ICE ufrag in a Binding request's USERNAME
//! (`"<our ufrag>:<browser ufrag>"`, RFC 8445 §7.2.2) routes a browser's first packet to its
//! bridge, whose `Rtc` runs ICE through the handshake; once the worker keeps the leg without
//! str0m, [`answer_consent_check`] answers the browser's consent checks (RFC 7675) as an
//! ICE-lite agent. Parsing and encoding are str0m's STUN codec (`str0m::ice`).

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use str0m::ice::{StunMessage, StunMessageBuilder};

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

/// What [`answer_consent_check`] made of a browser's STUN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentCheck {
    /// An authentic Binding request: its success response is `out[..len]`, for its source.
    Answered {
        /// The response's length in `out`.
        len: usize,
        /// It carried USE-CANDIDATE: the browser picked this address pair.
        nominated: bool,
    },
    /// A Binding request that failed authentication: the error response (400 without
    /// credentials, 401 with wrong ones; RFC 5389 §10.1.2) is `out[..len]`.
    Refused {
        /// The response's length in `out`.
        len: usize,
    },
    /// Not a Binding request (an indication, a response, not STUN at all): nothing to send.
    Ignored,
}

/// Answers a browser's Binding request to this ICE-lite agent: the USERNAME must name our
/// ufrag and MESSAGE-INTEGRITY must verify with our password (short-term credentials, RFC
/// 8445 §7.3); the success response carries XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and
/// FINGERPRINT. Writes the response into `out` (a few hundred bytes suffice).
pub fn answer_consent_check(
    packet: &[u8],
    local_ufrag: &str,
    local_password: &str,
    source: SocketAddr,
    out: &mut [u8],
) -> ConsentCheck {
    let Ok(message) = StunMessage::parse(packet) else {
        return ConsentCheck::Ignored;
    };
    if !message.is_binding_request() {
        return ConsentCheck::Ignored;
    }
    let refuse = |code: u16, reason: &str, out: &mut [u8]| {
        let reply = StunMessageBuilder::new()
            .binding()
            .failure()
            .error_code(code, reason)
            .build(message.trans_id());
        match reply.to_bytes(None, out, sha1_hmac) {
            Ok(len) => ConsentCheck::Refused { len },
            Err(_) => ConsentCheck::Ignored,
        }
    };
    let Some((ours, _theirs)) = message.split_username() else {
        return refuse(400, "Bad Request", out);
    };
    if ours != local_ufrag || !message.verify(local_password.as_bytes(), sha1_hmac) {
        return refuse(401, "Unauthorized", out);
    }
    let reply = StunMessage::binding_reply(message.trans_id(), source);
    match reply.to_bytes(Some(local_password.as_bytes()), out, sha1_hmac) {
        Ok(len) => ConsentCheck::Answered {
            len,
            nominated: message.use_candidate(),
        },
        Err(_) => ConsentCheck::Ignored,
    }
}

/// HMAC-SHA1 over `parts` (STUN's MESSAGE-INTEGRITY), in the shape str0m's codec asks for.
fn sha1_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
        // HMAC takes keys of any length: never reached.
        return [0; 20];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
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

    fn request(username: &str, password: &str, use_candidate: bool) -> Vec<u8> {
        let message = StunMessage::binding_request(
            username,
            str0m::ice::TransId::new(),
            true,
            7,
            0x6e7f_00ff,
            use_candidate,
        );
        let mut out = vec![0u8; 256];
        let len = message
            .to_bytes(Some(password.as_bytes()), &mut out, sha1_hmac)
            .expect("fits");
        out.truncate(len);
        out
    }

    const UFRAG: &str = "gw7Kq2";
    const PASSWORD: &str = "the-local-password-of-22";

    /// A check answered with this test's local credentials.
    fn answer_ours(packet: &[u8], source: SocketAddr, out: &mut [u8]) -> ConsentCheck {
        answer_consent_check(packet, UFRAG, PASSWORD, source, out)
    }

    /// What a browser (here str0m's STUN codec, as its ICE agent would) sends, answered:
    /// the reply verifies with our password and maps the browser's address.
    #[test]
    fn answers_an_authentic_check_and_refuses_wrong_credentials() {
        let source: SocketAddr = "127.0.0.1:50123".parse().expect("address");
        let v6: SocketAddr = "[::1]:50124".parse().expect("address");
        let mut out = [0u8; 256];
        for (addr, nominate) in [(source, false), (v6, true)] {
            let check = request("gw7Kq2:brw1", PASSWORD, nominate);
            let ConsentCheck::Answered { len, nominated } = answer_ours(&check, addr, &mut out)
            else {
                panic!("an authentic check is answered");
            };
            assert_eq!(nominated, nominate);
            let reply = StunMessage::parse(&out[..len]).expect("a STUN message");
            assert!(reply.is_successful_binding_response());
            assert_eq!(
                reply.trans_id(),
                StunMessage::parse(&check).expect("request").trans_id()
            );
            assert_eq!(reply.mapped_address(), Some(addr));
            assert!(reply.verify(PASSWORD.as_bytes(), sha1_hmac));
            assert!(!reply.verify(b"another-password", sha1_hmac));
        }

        let wrong_password = request("gw7Kq2:brw1", "not-the-password", false);
        let wrong_ufrag = request("other:brw1", PASSWORD, false);
        for check in [wrong_password, wrong_ufrag] {
            let ConsentCheck::Refused { len } = answer_ours(&check, source, &mut out) else {
                panic!("refused");
            };
            let reply = StunMessage::parse(&out[..len]).expect("a STUN message");
            assert!(reply.is_failed_binding_response());
            assert_eq!(reply.error_code().map(|(code, _)| code), Some(401));
        }
        let mut tampered = request("gw7Kq2:brw1", PASSWORD, false);
        tampered[24] ^= 1;
        assert!(!matches!(
            answer_ours(&tampered, source, &mut out),
            ConsentCheck::Answered { .. }
        ));
        // A success response, an indication-like garbage, a truncated request: nothing.
        let check = request("gw7Kq2:brw1", PASSWORD, false);
        let ConsentCheck::Answered { len, .. } = answer_ours(&check, source, &mut out) else {
            panic!("answered");
        };
        let response = out[..len].to_vec();
        assert_eq!(
            answer_ours(&response, source, &mut out),
            ConsentCheck::Ignored
        );
        assert_eq!(
            answer_ours(&check[..30], source, &mut out),
            ConsentCheck::Ignored
        );
        assert_eq!(
            answer_ours(&check, source, &mut [0u8; 16]),
            ConsentCheck::Ignored,
            "no room for the answer"
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = binding_request_local_ufrag(&bytes);
            let mut out = [0u8; 256];
            let source: SocketAddr = "127.0.0.1:9".parse().expect("address");
            let _ = answer_consent_check(&bytes, "a", "b", source, &mut out);
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
