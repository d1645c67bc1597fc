//! SRTP for the browser's RTP, done by the media worker itself with the keys of the browser
//! leg's DTLS handshake (RFC 5764), so that relayed audio skips str0m's general-purpose RTP
//! stack: str0m still runs ICE, DTLS and RTCP for the leg; only RTP goes around it.
//!
//! The profiles are the three a DTLS-SRTP handshake can agree: AEAD-AES-128-GCM and
//! AEAD-AES-256-GCM (RFC 7714, sealed by aws-lc-rs, which str0m links already) and
//! AES-CM-128-HMAC-SHA1-80 (the SIP leg's [`super::srtp`] code). Each packet is protected
//! or unprotected in the caller's buffer, with no allocation. SRTCP too (RFC 7714 §9, RFC
//! 3711 §3.4): once the worker keeps the leg without str0m, its RTCP reports are its own.

use std::fmt;

use aes::{Aes128, Aes256};
use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ctr::cipher::{KeyIvInit, StreamCipher};
use shared_dtls::ExportedSrtpKeys;
use str0m::crypto::dtls::SrtpProfile;

use super::srtp::{
    self, KEY_SALT_LEN, MasterKey, ReplayWindow, SrtpError, SrtpReceiver, SrtpSender, SrtpSuite,
};

/// Bytes of an AEAD tag (RFC 7714 §7.1: 16 octets).
const GCM_TAG_LEN: usize = 16;
/// Bytes of an AEAD master and session salt (RFC 7714 §12).
const GCM_SALT_LEN: usize = 12;
/// The most protection adds to an RTP packet with any profile (the AEAD tag).
pub const MAX_TRAILER: usize = GCM_TAG_LEN;
/// The most protection adds to an RTCP packet with any profile: the AEAD tag and the
/// E flag + SRTCP index (AES-CM: the index and its 10-byte tag, fewer).
pub const MAX_RTCP_TRAILER: usize = GCM_TAG_LEN + 4;

/// One direction of the browser leg's SRTP for RTP.
pub struct BrowserSrtp {
    profile: SrtpProfile,
    cipher: Cipher,
}

enum Cipher {
    Gcm {
        /// Which half this context runs: a context only seals or only opens.
        direction: Direction,
        key: LessSafeKey,
        salt: [u8; GCM_SALT_LEN],
        /// Receiving: what was accepted (unused when sending).
        window: ReplayWindow,
        /// SRTCP's own session key and salt (RFC 3711 labels 3 and 5).
        rtcp_key: LessSafeKey,
        rtcp_salt: [u8; GCM_SALT_LEN],
        /// Sending: the next SRTCP index. Receiving: unused.
        rtcp_index: u32,
        /// Receiving: the SRTCP indices accepted.
        rtcp_window: ReplayWindow,
    },
    CmSend(Box<SrtpSender>),
    CmReceive(Box<SrtpReceiver>),
}

impl fmt::Debug for BrowserSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys must never reach a log.
        f.debug_struct("BrowserSrtp")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Which half of the exported keys a context uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What this end sends (the DTLS client's keys if it was the client).
    Send,
    /// What the browser sends.
    Receive,
}

impl BrowserSrtp {
    /// The context for `direction` from a handshake's exported keys (RFC 5764 §4.2: the
    /// client's key and salt are the left halves). `None` for a profile callgate does not
    /// know or keying material of the wrong length.
    pub fn new(keys: &ExportedSrtpKeys, direction: Direction) -> Option<BrowserSrtp> {
        let (key_len, salt_len) = match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => (16, GCM_SALT_LEN),
            SrtpProfile::AEAD_AES_256_GCM => (32, GCM_SALT_LEN),
            SrtpProfile::AES128_CM_SHA1_80 => (16, KEY_SALT_LEN - 16),
            _ => return None,
        };
        if keys.material.len() != 2 * (key_len + salt_len) {
            return None;
        }
        // The client's half: what the client sends, what the server receives.
        let client_half = keys.active == (direction == Direction::Send);
        let key_at = if client_half { 0 } else { key_len };
        let salt_at = 2 * key_len + if client_half { 0 } else { salt_len };
        let master_key = &keys.material[key_at..key_at + key_len];
        let master_salt = &keys.material[salt_at..salt_at + salt_len];
        let cipher = match keys.profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let mut both = [0u8; KEY_SALT_LEN];
                both[..16].copy_from_slice(master_key);
                both[16..].copy_from_slice(master_salt);
                let master = MasterKey(both);
                let suite = SrtpSuite::AesCm128HmacSha1_80;
                match direction {
                    Direction::Send => {
                        Cipher::CmSend(Box::new(SrtpSender::new(suite, &master).ok()?))
                    }
                    Direction::Receive => {
                        Cipher::CmReceive(Box::new(SrtpReceiver::new(suite, &master).ok()?))
                    }
                }
            }
            _ => {
                let mut session_key = [0u8; 32];
                let session_key = &mut session_key[..key_len];
                derive(master_key, master_salt, LABEL_RTP_ENCRYPTION, session_key)?;
                let mut salt = [0u8; GCM_SALT_LEN];
                derive(master_key, master_salt, LABEL_RTP_SALT, &mut salt)?;
                let algorithm = if key_len == 16 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let key = LessSafeKey::new(UnboundKey::new(algorithm, session_key).ok()?);
                derive(master_key, master_salt, LABEL_RTCP_ENCRYPTION, session_key)?;
                let rtcp_key = LessSafeKey::new(UnboundKey::new(algorithm, session_key).ok()?);
                session_key.fill(0);
                let mut rtcp_salt = [0u8; GCM_SALT_LEN];
                derive(master_key, master_salt, LABEL_RTCP_SALT, &mut rtcp_salt)?;
                Cipher::Gcm {
                    direction,
                    key,
                    salt,
                    window: ReplayWindow::default(),
                    rtcp_key,
                    rtcp_salt,
                    rtcp_index: 0,
                    rtcp_window: ReplayWindow::default(),
                }
            }
        };
        Some(BrowserSrtp {
            profile: keys.profile,
            cipher,
        })
    }

    /// The profile this context runs.
    #[cfg(test)]
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Encrypts and authenticates the RTP packet in `buf[..len]` in place; `buf` must have
    /// room for [`MAX_TRAILER`] bytes after it. `index` is the packet's SRTP index (ROC ·
    /// 2^16 + its sequence number): the caller's extended sequence number, the one str0m
    /// used for the stream's first packets. Returns the protected length.
    pub fn protect_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match &mut self.cipher {
            Cipher::CmSend(sender) => sender.protect_rtp_at(buf, len, index),
            Cipher::CmReceive(_) => Err(SrtpError::Crypto),
            Cipher::Gcm { direction, .. } if *direction != Direction::Send => {
                Err(SrtpError::Crypto)
            }
            Cipher::Gcm { key, salt, .. } => {
                if buf.len() < len + GCM_TAG_LEN {
                    return Err(SrtpError::NoRoom);
                }
                let header = srtp::header_len_at_index(&buf[..len], index)?;
                let nonce = gcm_nonce(salt, srtp::ssrc_at(buf, 8), index);
                let (head, rest) = buf.split_at_mut(header);
                let (payload, trailer) = rest.split_at_mut(len - header);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), payload)
                    .map_err(|_| SrtpError::Crypto)?;
                trailer[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                Ok(len + GCM_TAG_LEN)
            }
        }
    }

    /// Checks the tag and the replay window of the SRTP packet in `buf`, then decrypts it in
    /// place. Returns the plain RTP length. A packet that fails leaves the state untouched.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        match &mut self.cipher {
            Cipher::CmReceive(receiver) => receiver.unprotect_rtp(buf),
            Cipher::CmSend(_) => Err(SrtpError::Crypto),
            Cipher::Gcm { direction, .. } if *direction != Direction::Receive => {
                Err(SrtpError::Crypto)
            }
            Cipher::Gcm {
                key, salt, window, ..
            } => {
                let len = buf
                    .len()
                    .checked_sub(GCM_TAG_LEN)
                    .ok_or(SrtpError::Malformed)?;
                let header = srtp::rtp_header_len(&buf[..len]).ok_or(SrtpError::Malformed)?;
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let index = srtp::estimate_index(window.highest(), seq);
                window.check(index)?;
                let nonce = gcm_nonce(salt, srtp::ssrc_at(buf, 8), index);
                let (head, sealed) = buf.split_at_mut(header);
                key.open_in_place(nonce, Aad::from(&*head), sealed)
                    .map_err(|_| SrtpError::AuthFailed)?;
                window.accept(index);
                Ok(len)
            }
        }
    }

    /// Starts this sending context's SRTCP indices at `next`: str0m sent the leg's first
    /// reports with the same keys, from index 0, and an index must never repeat under a key
    /// (with AES-GCM a repeat would reveal the key stream and the authentication key).
    pub fn continue_rtcp_after(&mut self, next: u32) {
        match &mut self.cipher {
            Cipher::Gcm { rtcp_index, .. } => *rtcp_index = (*rtcp_index).max(next),
            Cipher::CmSend(sender) => sender.continue_rtcp_after(next),
            Cipher::CmReceive(_) => {}
        }
    }

    /// Encrypts and authenticates the RTCP compound packet in `buf[..len]` in place (E flag
    /// set); `buf` must have room for [`MAX_RTCP_TRAILER`] more bytes. Returns the SRTCP
    /// length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        match &mut self.cipher {
            Cipher::CmSend(sender) => sender.protect_rtcp(buf, len),
            Cipher::CmReceive(_) => Err(SrtpError::Crypto),
            Cipher::Gcm { direction, .. } if *direction != Direction::Send => {
                Err(SrtpError::Crypto)
            }
            Cipher::Gcm {
                rtcp_key,
                rtcp_salt,
                rtcp_index,
                ..
            } => {
                if buf.len() < len + MAX_RTCP_TRAILER {
                    return Err(SrtpError::NoRoom);
                }
                if len < 8 || buf[0] >> 6 != 2 {
                    return Err(SrtpError::Malformed);
                }
                if *rtcp_index >= SRTCP_ENCRYPTED - 1 {
                    return Err(SrtpError::Exhausted);
                }
                let index = *rtcp_index;
                let word = (SRTCP_ENCRYPTED | index).to_be_bytes();
                let nonce = gcm_rtcp_nonce(rtcp_salt, srtp::ssrc_at(buf, 4), index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&word);
                let (payload, trailer) = buf[8..].split_at_mut(len - 8);
                let tag = rtcp_key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), payload)
                    .map_err(|_| SrtpError::Crypto)?;
                *rtcp_index += 1;
                trailer[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                trailer[GCM_TAG_LEN..GCM_TAG_LEN + 4].copy_from_slice(&word);
                Ok(len + MAX_RTCP_TRAILER)
            }
        }
    }

    /// Checks the SRTCP packet in `buf` (tag and replay window) and decrypts it in place.
    /// Returns the plain RTCP length. A packet that fails leaves the state untouched.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        match &mut self.cipher {
            Cipher::CmReceive(receiver) => receiver.unprotect_rtcp(buf),
            Cipher::CmSend(_) => Err(SrtpError::Crypto),
            Cipher::Gcm { direction, .. } if *direction != Direction::Receive => {
                Err(SrtpError::Crypto)
            }
            Cipher::Gcm {
                rtcp_key,
                rtcp_salt,
                rtcp_window,
                ..
            } => {
                let sealed_end = buf
                    .len()
                    .checked_sub(4)
                    .filter(|end| *end >= 8 + GCM_TAG_LEN)
                    .ok_or(SrtpError::Malformed)?;
                if buf[0] >> 6 != 2 {
                    return Err(SrtpError::Malformed);
                }
                let word: [u8; 4] = [
                    buf[sealed_end],
                    buf[sealed_end + 1],
                    buf[sealed_end + 2],
                    buf[sealed_end + 3],
                ];
                let e_index = u32::from_be_bytes(word);
                let index = e_index & !SRTCP_ENCRYPTED;
                rtcp_window.check(u64::from(index))?;
                let nonce = gcm_rtcp_nonce(rtcp_salt, srtp::ssrc_at(buf, 4), index);
                let plain_len = sealed_end - GCM_TAG_LEN;
                if e_index & SRTCP_ENCRYPTED != 0 {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&word);
                    rtcp_key
                        .open_in_place(nonce, Aad::from(aad), &mut buf[8..sealed_end])
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // Authenticated only (RFC 7714 §9.3): the whole packet and the index
                    // word are the additional data of an empty plaintext.
                    let (packet, rest) = buf.split_at_mut(plain_len);
                    let mut aad = [0u8; 1500 + 4];
                    let aad = aad.get_mut(..plain_len + 4).ok_or(SrtpError::Malformed)?;
                    aad[..plain_len].copy_from_slice(packet);
                    aad[plain_len..].copy_from_slice(&word);
                    rtcp_key
                        .open_in_place(nonce, Aad::from(&*aad), &mut rest[..GCM_TAG_LEN])
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
                rtcp_window.accept(u64::from(index));
                Ok(plain_len)
            }
        }
    }
}

/// RFC 3711 §4.3.1 labels (key derivation rate 0).
const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_ENCRYPTION: u8 = 3;
const LABEL_RTCP_SALT: u8 = 5;
/// The E flag of the SRTCP index word: the packet is encrypted.
const SRTCP_ENCRYPTED: u32 = 0x8000_0000;

/// RFC 3711 §4.3 key derivation with AES-CM keyed by the master key (AES-256 for a 256-bit
/// master key, RFC 6188 §7); the 96-bit AEAD master salt is padded with zeros to 112 bits
/// (RFC 7714 §11).
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Option<()> {
    let mut iv = [0u8; 16];
    iv.get_mut(..master_salt.len())?
        .copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    match master_key.len() {
        16 => ctr::Ctr128BE::<Aes128>::new_from_slices(master_key, &iv)
            .ok()?
            .apply_keystream(out),
        32 => ctr::Ctr128BE::<Aes256>::new_from_slices(master_key, &iv)
            .ok()?
            .apply_keystream(out),
        _ => return None,
    }
    Some(())
}

/// RFC 7714 §8.1: `00 00 || SSRC || ROC || SEQ`, XORed with the session salt.
fn gcm_nonce(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u64) -> Nonce {
    let mut iv = [0u8; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.1: `00 00 || SSRC || 00 00 || 0 || SRTCP index`, XORed with the SRTCP
/// session salt.
fn gcm_rtcp_nonce(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & !SRTCP_ENCRYPTED).to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::_internal_test_exports::TestSrtp;
    use str0m::crypto::dtls::KeyingMaterial;
    use str0m::rtp::{ExtensionMap, RtpHeader};

    const PROFILES: [SrtpProfile; 3] = [
        SrtpProfile::AEAD_AES_128_GCM,
        SrtpProfile::AEAD_AES_256_GCM,
        SrtpProfile::AES128_CM_SHA1_80,
    ];

    fn material_len(profile: SrtpProfile) -> usize {
        match profile {
            SrtpProfile::AEAD_AES_128_GCM => 2 * (16 + 12),
            SrtpProfile::AEAD_AES_256_GCM => 2 * (32 + 12),
            _ => 2 * (16 + 14),
        }
    }

    fn keys(profile: SrtpProfile, active: bool) -> ExportedSrtpKeys {
        let material = (0..material_len(profile))
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        ExportedSrtpKeys {
            material,
            profile,
            active,
        }
    }

    fn plain(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    fn protect(tx: &mut BrowserSrtp, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + MAX_TRAILER, 0);
        let index = u64::from(u16::from_be_bytes([packet[2], packet[3]]));
        let len = tx.protect_rtp(&mut buf, packet.len(), index)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// What str0m's own SRTP (the browser side of every other test) sends as the DTLS
    /// client, callgate opens as the DTLS server: same key halves, IV, AAD and tag.
    #[test]
    fn opens_what_str0m_sealed_with_every_profile() -> Result<(), SrtpError> {
        let crypto = shared_dtls::crypto_provider();
        for profile in PROFILES {
            let exported = keys(profile, false);
            let mut str0m_side =
                TestSrtp::new(&crypto, profile, &KeyingMaterial::new(&exported.material));
            let mut rx =
                BrowserSrtp::new(&exported, Direction::Receive).ok_or(SrtpError::Crypto)?;
            assert_eq!(rx.profile(), profile);
            // Across a sequence-number wrap, so the rollover counter enters the IV.
            for (i, seq) in [65_533u16, 65_534, 65_535, 0, 1].into_iter().enumerate() {
                let payload = [i as u8; 160];
                let header = RtpHeader {
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 160,
                    ssrc: 0x1234_5678.into(),
                    payload_type: 0.into(),
                    has_extension: true,
                    ..Default::default()
                };
                let index = if seq > 100 {
                    u64::from(seq)
                } else {
                    65_536 + u64::from(seq)
                };
                let mut sealed =
                    str0m_side.protect(header, index, &payload, &ExtensionMap::empty());
                let len = rx.unprotect_rtp(&mut sealed)?;
                // str0m writes an (empty) one-byte-header extension block: 16-byte header.
                let mut expected = plain(seq, &[0xbe, 0xde, 0, 0]);
                expected[0] |= 0x10;
                expected.extend_from_slice(&payload);
                assert_eq!(&sealed[..len], expected.as_slice(), "{profile:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn round_trip_tamper_replay_and_the_wrong_half() -> Result<(), SrtpError> {
        for profile in PROFILES {
            // The browser as DTLS client sends with the client's half; callgate, the
            // server, receives with it.
            let mut browser_tx =
                BrowserSrtp::new(&keys(profile, true), Direction::Send).ok_or(SrtpError::Crypto)?;
            let mut gateway_rx = BrowserSrtp::new(&keys(profile, false), Direction::Receive)
                .ok_or(SrtpError::Crypto)?;
            let mut gateway_tx = BrowserSrtp::new(&keys(profile, false), Direction::Send)
                .ok_or(SrtpError::Crypto)?;
            let packet = plain(7, &[0xd5; 160]);
            let sealed = protect(&mut browser_tx, &packet)?;
            assert_ne!(&sealed[12..172], &packet[12..], "encrypted");
            let mut copy = sealed.clone();
            let len = gateway_rx.unprotect_rtp(&mut copy)?;
            assert_eq!(&copy[..len], packet.as_slice());
            let mut again = sealed.clone();
            assert_eq!(
                gateway_rx.unprotect_rtp(&mut again),
                Err(SrtpError::Replayed)
            );
            let mut tampered = protect(&mut browser_tx, &plain(8, &[0xd5; 160]))?;
            tampered[20] ^= 1;
            assert_eq!(
                gateway_rx.unprotect_rtp(&mut tampered),
                Err(SrtpError::AuthFailed)
            );
            // The header is authenticated too (AEAD additional data, or the HMAC).
            let mut header_changed = protect(&mut browser_tx, &plain(9, &[0xd5; 160]))?;
            header_changed[1] = 8;
            assert_eq!(
                gateway_rx.unprotect_rtp(&mut header_changed),
                Err(SrtpError::AuthFailed)
            );
            // What callgate sends is keyed with the other half: its own receiver refuses it.
            let mut ours = protect(&mut gateway_tx, &plain(10, &[0xd5; 160]))?;
            assert_eq!(
                gateway_rx.unprotect_rtp(&mut ours),
                Err(SrtpError::AuthFailed),
                "{profile:?}"
            );
            assert!(gateway_rx.unprotect_rtp(&mut [0x80; 20]).is_err());
            assert!(gateway_rx.unprotect_rtp(&mut []).is_err());
            assert_eq!(
                gateway_tx.protect_rtp(&mut [0x80; 20], 20, 0x8080),
                Err(SrtpError::NoRoom)
            );
            // An index that is not the packet's sequence number is refused, not sealed.
            let mut wrong = plain(11, &[0xd5; 160]);
            let len = wrong.len();
            wrong.resize(len + MAX_TRAILER, 0);
            assert_eq!(
                gateway_tx.protect_rtp(&mut wrong, len, 12),
                Err(SrtpError::Malformed)
            );
            assert!(!format!("{gateway_tx:?}").contains("0x"), "no key bytes");
        }
        Ok(())
    }

    /// The bridge's stream towards the browser starts in str0m and continues here: the
    /// index it is given carries the rollover counter str0m's packets had reached.
    #[test]
    fn a_fresh_sender_continues_the_rollover_counter_it_is_given() -> Result<(), SrtpError> {
        for profile in PROFILES {
            let mut before = BrowserSrtp::new(&keys(profile, false), Direction::Send)
                .ok_or(SrtpError::Crypto)?;
            let mut after = BrowserSrtp::new(&keys(profile, false), Direction::Send)
                .ok_or(SrtpError::Crypto)?;
            let mut browser_rx = BrowserSrtp::new(&keys(profile, true), Direction::Receive)
                .ok_or(SrtpError::Crypto)?;
            for index in 65_533u64..65_540 {
                let tx = if index < 65_536 {
                    &mut before
                } else {
                    &mut after
                };
                let packet = plain(index as u16, &[0xd5; 160]);
                let mut buf = packet.clone();
                buf.resize(packet.len() + MAX_TRAILER, 0);
                let len = tx.protect_rtp(&mut buf, packet.len(), index)?;
                let plain_len = browser_rx.unprotect_rtp(&mut buf[..len])?;
                assert_eq!(&buf[..plain_len], packet.as_slice(), "{profile:?} {index}");
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// Whatever arrives on the browser's address with an RTP-looking first byte: never a
        /// panic, and never accepted (only a packet sealed with the key opens).
        #[test]
        fn garbage_never_panics_and_never_opens(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            index in proptest::prelude::any::<u64>(),
            profile_at in 0usize..3,
        ) {
            let profile = PROFILES[profile_at];
            let (Some(mut rx), Some(mut tx)) = (
                BrowserSrtp::new(&keys(profile, false), Direction::Receive),
                BrowserSrtp::new(&keys(profile, false), Direction::Send),
            ) else {
                panic!("keys of the right length build");
            };
            if let Some(first) = bytes.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            proptest::prop_assert!(rx.unprotect_rtp(&mut bytes.clone()).is_err());
            let len = bytes.len();
            let _ = tx.protect_rtp(&mut bytes.clone(), len, index);
            bytes.resize(len + MAX_TRAILER, 0);
            let _ = tx.protect_rtp(&mut bytes, len, index);
            // The wrong direction's context refuses instead of misusing its key.
            proptest::prop_assert!(tx.unprotect_rtp(&mut bytes).is_err());
            proptest::prop_assert!(rx.protect_rtp(&mut bytes, len, index).is_err());
            proptest::prop_assert!(rx.unprotect_rtcp(&mut bytes.clone()).is_err());
            let _ = tx.protect_rtcp(&mut bytes, len);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    /// A context keyed with session keys as given (RFC 7714's vectors give session keys,
    /// not master keys), for RTP and RTCP alike.
    fn with_session_key(key: &[u8], salt: &[u8], direction: Direction) -> BrowserSrtp {
        let algorithm = if key.len() == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let build = || LessSafeKey::new(UnboundKey::new(algorithm, key).expect("key length"));
        let mut session_salt = [0u8; GCM_SALT_LEN];
        session_salt.copy_from_slice(salt);
        BrowserSrtp {
            profile: SrtpProfile::AEAD_AES_128_GCM,
            cipher: Cipher::Gcm {
                direction,
                key: build(),
                salt: session_salt,
                window: ReplayWindow::default(),
                rtcp_key: build(),
                rtcp_salt: session_salt,
                rtcp_index: 0,
                rtcp_window: ReplayWindow::default(),
            },
        }
    }

    /// RFC 7714 §17.3–17.5 and §17.7–17.9 (and str0m's own tests): the same SRTCP bytes
    /// for the encrypted and the authenticated-only form, with a 128- and a 256-bit key.
    #[test]
    fn srtcp_matches_the_rfc_7714_vectors() -> Result<(), SrtpError> {
        let salt = hex("517569642070726f2071756f");
        let plain = hex(
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef",
        );
        let cases = [
            (
                hex("000102030405060708090a0b0c0d0e0f"),
                hex(
                    "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
                     c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
                     45d9eade 800005d4",
                ),
                hex("841dd968 3dd78ec9 2ae58790 125f62b3"),
            ),
            (
                hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
                hex(
                    "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
                     a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c
                     b26ac3be 800005d4",
                ),
                hex("91db4afb feee5a97 8fab4393 ed2615fe"),
            ),
        ];
        for (key, sealed, auth_only_tag) in cases {
            let mut tx = with_session_key(&key, &salt, Direction::Send);
            tx.continue_rtcp_after(0x5d4);
            let mut buf = plain.clone();
            buf.resize(plain.len() + MAX_RTCP_TRAILER, 0);
            let len = tx.protect_rtcp(&mut buf, plain.len())?;
            assert_eq!(&buf[..len], sealed.as_slice(), "key of {} bytes", key.len());

            let mut rx = with_session_key(&key, &salt, Direction::Receive);
            let mut copy = sealed.clone();
            let len = rx.unprotect_rtcp(&mut copy)?;
            assert_eq!(&copy[..len], plain.as_slice());
            assert_eq!(
                rx.unprotect_rtcp(&mut sealed.clone()),
                Err(SrtpError::Replayed)
            );

            let mut auth_only = plain.clone();
            auth_only.extend_from_slice(&auth_only_tag);
            auth_only.extend_from_slice(&[0, 0, 0x05, 0xd4]);
            let mut rx = with_session_key(&key, &salt, Direction::Receive);
            let mut tampered = auth_only.clone();
            tampered[30] ^= 1;
            assert_eq!(rx.unprotect_rtcp(&mut tampered), Err(SrtpError::AuthFailed));
            let len = rx.unprotect_rtcp(&mut auth_only)?;
            assert_eq!(&auth_only[..len], plain.as_slice());
        }
        Ok(())
    }

    /// Reports both ways with every profile: the browser (DTLS client) seals, callgate opens;
    /// callgate seals from the index it was told to continue after, and nothing else opens
    /// its packets but the browser's receiving context.
    #[test]
    fn srtcp_round_trip_tamper_replay_and_index_continuation() -> Result<(), SrtpError> {
        let report = hex("80c80006 11223344 e8000000 00000000 00000000 00000010 00000a00");
        for profile in PROFILES {
            let mut browser_tx =
                BrowserSrtp::new(&keys(profile, true), Direction::Send).ok_or(SrtpError::Crypto)?;
            let mut browser_rx = BrowserSrtp::new(&keys(profile, true), Direction::Receive)
                .ok_or(SrtpError::Crypto)?;
            let mut gateway_rx = BrowserSrtp::new(&keys(profile, false), Direction::Receive)
                .ok_or(SrtpError::Crypto)?;
            let mut gateway_tx = BrowserSrtp::new(&keys(profile, false), Direction::Send)
                .ok_or(SrtpError::Crypto)?;
            let seal = |tx: &mut BrowserSrtp| -> Result<Vec<u8>, SrtpError> {
                let mut buf = report.clone();
                buf.resize(report.len() + MAX_RTCP_TRAILER, 0);
                let len = tx.protect_rtcp(&mut buf, report.len())?;
                buf.truncate(len);
                Ok(buf)
            };
            let sealed = seal(&mut browser_tx)?;
            assert_ne!(
                &sealed[8..report.len()],
                &report[8..],
                "{profile:?} encrypted"
            );
            let mut copy = sealed.clone();
            let len = gateway_rx.unprotect_rtcp(&mut copy)?;
            assert_eq!(&copy[..len], report.as_slice(), "{profile:?}");
            assert_eq!(
                gateway_rx.unprotect_rtcp(&mut sealed.clone()),
                Err(SrtpError::Replayed)
            );
            let mut tampered = seal(&mut browser_tx)?;
            tampered[12] ^= 1;
            assert_eq!(
                gateway_rx.unprotect_rtcp(&mut tampered),
                Err(SrtpError::AuthFailed)
            );

            gateway_tx.continue_rtcp_after(7);
            gateway_tx.continue_rtcp_after(3); // never backwards
            let ours = seal(&mut gateway_tx)?;
            let word_at = match profile {
                SrtpProfile::AES128_CM_SHA1_80 => ours.len() - 14,
                _ => ours.len() - 4,
            };
            assert_eq!(&ours[word_at..word_at + 4], &[0x80, 0, 0, 7], "{profile:?}");
            assert_eq!(
                gateway_rx.unprotect_rtcp(&mut ours.clone()),
                Err(SrtpError::AuthFailed),
                "{profile:?}: the other half's key"
            );
            let mut copy = ours.clone();
            let len = browser_rx.unprotect_rtcp(&mut copy)?;
            assert_eq!(&copy[..len], report.as_slice(), "{profile:?}");

            assert!(gateway_rx.unprotect_rtcp(&mut [0x80; 12]).is_err());
            assert!(gateway_rx.unprotect_rtcp(&mut []).is_err());
            assert!(gateway_rx.protect_rtcp(&mut [0x80; 64], 28).is_err());
            assert_eq!(
                gateway_tx.protect_rtcp(&mut [0x80; 30], 28),
                Err(SrtpError::NoRoom)
            );
        }
        Ok(())
    }

    #[test]
    fn refuses_keying_material_of_the_wrong_length() {
        let mut short = keys(SrtpProfile::AEAD_AES_128_GCM, false);
        short.material.pop();
        assert!(BrowserSrtp::new(&short, Direction::Receive).is_none());
    }
}
