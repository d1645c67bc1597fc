//! SRTP and SRTCP (RFC 3711) for the SIP leg when SDES (RFC 4568) keyed it: the two suites
//! PBXs offer, `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32`. Pure and in place:
//! a context is built once per key (session-key derivation, AES key schedule, HMAC key state)
//! and each packet is protected or unprotected inside the caller's buffer, with no allocation.
//!
//! Crypto comes from RustCrypto (`aes` with AES-NI, `ctr`, `hmac`, `sha1` with SHA-NI), picked
//! by measurement over aws-lc-rs (which str0m links): one protect plus unprotect of a G.711
//! packet took ~1,000 ns through aws-lc-rs's `cipher`/`hmac` API and ~560 ns with RustCrypto
//! on the project's machine (docs/benchmarks.md). The key derivation rate is 0 (the SDES
//! default), no MKI.

use std::fmt;

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha1::Sha1;

type AesCtr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// Bytes of an AES-128 master key.
pub const MASTER_KEY_LEN: usize = 16;
/// Bytes of a master salt.
pub const MASTER_SALT_LEN: usize = 14;
/// Master key and salt together, as SDES's `inline:` carries them.
pub const KEY_SALT_LEN: usize = MASTER_KEY_LEN + MASTER_SALT_LEN;
/// The longest trailer protection adds to an RTP packet (the 80-bit tag).
pub const MAX_RTP_TRAILER: usize = 10;
/// What protection adds to an RTCP packet: E flag and index (4) and the 80-bit tag.
pub const RTCP_TRAILER: usize = 4 + 10;

const AUTH_KEY_LEN: usize = 20;
const RTCP_TAG_LEN: usize = 10;
const REPLAY_WINDOW: u64 = 64;

/// The SDES crypto suites callgate speaks (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag: what every PBX offers first.
    AesCm128HmacSha1_80,
    /// The same with a 32-bit RTP tag (SRTCP keeps 80 bits, RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// Every suite, in callgate's order of preference.
    pub const ALL: [SrtpSuite; 2] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite an `a=crypto` name stands for (names are case-sensitive, RFC 4568 §9.2).
    pub fn from_name(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Bytes of the RTP authentication tag.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// A master key and salt. Its `Debug` never shows the bytes: keys must not reach a log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey(pub [u8; KEY_SALT_LEN]);

impl MasterKey {
    /// A fresh key from the operating system's CSPRNG (`getrandom`).
    pub fn random() -> Result<MasterKey, SrtpError> {
        let mut bytes = [0u8; KEY_SALT_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| SrtpError::Crypto)?;
        Ok(MasterKey(bytes))
    }

    fn key(&self) -> &[u8] {
        &self.0[..MASTER_KEY_LEN]
    }

    fn salt(&self) -> [u8; MASTER_SALT_LEN] {
        let mut salt = [0u8; MASTER_SALT_LEN];
        salt.copy_from_slice(&self.0[MASTER_KEY_LEN..]);
        salt
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Shorter than a header plus the trailer, or not RTP/RTCP version 2.
    #[error("packet too short or malformed for SRTP")]
    Malformed,
    /// The caller's buffer has no room for the trailer.
    #[error("no room for the SRTP trailer")]
    NoRoom,
    /// The authentication tag does not match: tampered, or another key.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// An index already received, or older than the replay window.
    #[error("SRTP replay")]
    Replayed,
    /// The crypto library refused (never expected with valid keys).
    #[error("SRTP crypto failure")]
    Crypto,
    /// The SRTCP index space is exhausted (2^31 packets): the key must not be used further.
    #[error("SRTCP index exhausted")]
    Exhausted,
}

/// One direction's session keys for RTP or RTCP.
struct SessionKeys {
    cipher: Aes128,
    /// HMAC-SHA1 with the session auth key absorbed (cloned per packet).
    auth: HmacSha1,
    salt: [u8; MASTER_SALT_LEN],
}

impl SessionKeys {
    /// RFC 3711 §4.3 with key derivation rate 0: labels 0-2 for SRTP, 3-5 for SRTCP.
    fn derive(master: &MasterKey, first_label: u8) -> Result<SessionKeys, SrtpError> {
        let prf = Aes128::new_from_slice(master.key()).map_err(|_| SrtpError::Crypto)?;
        let salt = master.salt();
        let mut enc = [0u8; MASTER_KEY_LEN];
        derive_into(&prf, &salt, first_label, &mut enc);
        let mut auth = [0u8; AUTH_KEY_LEN];
        derive_into(&prf, &salt, first_label + 1, &mut auth);
        let mut session_salt = [0u8; MASTER_SALT_LEN];
        derive_into(&prf, &salt, first_label + 2, &mut session_salt);
        let keys = SessionKeys {
            cipher: Aes128::new_from_slice(&enc).map_err(|_| SrtpError::Crypto)?,
            auth: <HmacSha1 as KeyInit>::new_from_slice(&auth).map_err(|_| SrtpError::Crypto)?,
            salt: session_salt,
        };
        enc.fill(0);
        auth.fill(0);
        Ok(keys)
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data` (RFC 3711 §4.1.1).
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = counter_iv(&self.salt, ssrc, index);
        keystream(&self.cipher, iv, data);
    }

    /// HMAC-SHA1 over `parts`, its leftmost `tag.len()` bytes written into `tag`.
    fn tag(&self, parts: [&[u8]; 2], tag: &mut [u8]) {
        let full = self.mac(parts).finalize().into_bytes();
        let n = tag.len().min(full.len());
        tag[..n].copy_from_slice(&full[..n]);
    }

    /// Checks a (truncated) tag over `parts` in constant time.
    fn verify(&self, parts: [&[u8]; 2], tag: &[u8]) -> Result<(), SrtpError> {
        self.mac(parts)
            .verify_truncated_left(tag)
            .map_err(|_| SrtpError::AuthFailed)
    }

    fn mac(&self, parts: [&[u8]; 2]) -> HmacSha1 {
        let mut mac = self.auth.clone();
        mac.update(parts[0]);
        mac.update(parts[1]);
        mac
    }
}

/// AES-128 in counter mode from `iv` (the low 16 bits count blocks; a packet never has
/// 2^16 blocks, so the big-endian 128-bit counter of `ctr` is the same thing).
fn keystream(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let mut ctr = AesCtr::from_core(ctr::CtrCore::inner_iv_init(cipher.clone(), &iv.into()));
    ctr.apply_keystream(data);
}

/// `IV = (salt · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16)`.
fn counter_iv(salt: &[u8; MASTER_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

fn derive_into(prf: &Aes128, master_salt: &[u8; MASTER_SALT_LEN], label: u8, out: &mut [u8]) {
    // key_id = label || index DIV kdr (0 here), right-aligned and XORed into the salt.
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    keystream(prf, iv, out);
}

/// Length of an RTP header with its CSRCs and extension; `None` when it does not fit.
pub(super) fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

/// The header length of the RTP packet to protect as `index`, refusing an index whose low
/// 16 bits are not the packet's sequence number (the caller's count went astray: sealing it
/// would make the peer's rollover counter disagree for good).
pub(super) fn header_len_at_index(packet: &[u8], index: u64) -> Result<usize, SrtpError> {
    let header = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
    if index & 0xffff != u64::from(u16::from_be_bytes([packet[2], packet[3]])) {
        return Err(SrtpError::Malformed);
    }
    Ok(header)
}

pub(super) fn ssrc_at(packet: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([
        packet[offset],
        packet[offset + 1],
        packet[offset + 2],
        packet[offset + 3],
    ])
}

/// The sending half of one SRTP session: our master key, the RTP rollover counter and the
/// SRTCP index.
pub struct SrtpSender {
    suite: SrtpSuite,
    master: MasterKey,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Highest RTP index sent (ROC · 2^16 + SEQ).
    highest: Option<u64>,
    rtcp_index: u32,
}

impl SrtpSender {
    /// A sender for `suite` keyed with `master`.
    pub fn new(suite: SrtpSuite, master: &MasterKey) -> Result<SrtpSender, SrtpError> {
        Ok(SrtpSender {
            suite,
            master: *master,
            rtp: SessionKeys::derive(master, 0)?,
            rtcp: SessionKeys::derive(master, 3)?,
            highest: None,
            rtcp_index: 0,
        })
    }

    /// True when this sender already runs with `suite` and `master` (a re-INVITE that kept
    /// the key keeps the rollover counter).
    pub fn uses(&self, suite: SrtpSuite, master: &MasterKey) -> bool {
        self.suite == suite && self.master == *master
    }

    /// Encrypts and authenticates the RTP packet in `buf[..len]` in place; `buf` must have
    /// room for the tag after it. Returns the protected length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let seq = u16::from_be_bytes([*buf.get(2).unwrap_or(&0), *buf.get(3).unwrap_or(&0)]);
        let index = estimate_index(self.highest, seq);
        self.protect_rtp_at(buf, len, index)
    }

    /// [`SrtpSender::protect_rtp`] with the packet's index (ROC · 2^16 + SEQ) given by the
    /// caller, who counts it already (the browser leg's rewriter, whose first packets str0m
    /// protected with the same index).
    pub fn protect_rtp_at(
        &mut self,
        buf: &mut [u8],
        len: usize,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let header = header_len_at_index(&buf[..len], index)?;
        let ssrc = ssrc_at(buf, 8);
        self.rtp.apply_keystream(ssrc, index, &mut buf[header..len]);
        let roc = ((index >> 16) as u32).to_be_bytes();
        let (packet, rest) = buf.split_at_mut(len);
        self.rtp.tag([packet, &roc], &mut rest[..tag_len]);
        if self.highest.is_none_or(|h| index > h) {
            self.highest = Some(index);
        }
        Ok(len + tag_len)
    }

    /// Starts the SRTCP indices at `next` at the earliest: another sender (str0m) used these
    /// keys from index 0 first, and an index must not repeat under a key.
    pub fn continue_rtcp_after(&mut self, next: u32) {
        self.rtcp_index = self.rtcp_index.max(next);
    }

    /// Encrypts and authenticates the RTCP compound packet in `buf[..len]` in place (E flag
    /// set, RFC 3711 §3.4); `buf` must have room for [`RTCP_TRAILER`] more bytes.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if buf.len() < len + RTCP_TRAILER {
            return Err(SrtpError::NoRoom);
        }
        if len < 8 || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        if self.rtcp_index >= 0x7fff_ffff {
            return Err(SrtpError::Exhausted);
        }
        let index = self.rtcp_index;
        self.rtcp_index += 1;
        let ssrc = ssrc_at(buf, 4);
        self.rtcp
            .apply_keystream(ssrc, u64::from(index), &mut buf[8..len]);
        buf[len..len + 4].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let (packet, rest) = buf.split_at_mut(len + 4);
        self.rtcp.tag([packet, &[]], &mut rest[..RTCP_TAG_LEN]);
        Ok(len + RTCP_TRAILER)
    }
}

/// RFC 3711 Appendix A: the index of `seq` given the highest index seen so far.
pub(super) fn estimate_index(highest: Option<u64>, seq: u16) -> u64 {
    let Some(highest) = highest else {
        return u64::from(seq);
    };
    let roc = highest >> 16;
    let s_l = (highest & 0xffff) as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.wrapping_sub(1)
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    // A ROC of -1 (a packet from before the first one received, across a wrap) is
    // represented as a huge value and then fails the replay check, as it should.
    (v << 16) | u64::from(seq)
}

/// A 64-packet sliding replay window over an index space (RFC 3711 §3.3.2).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: `highest - i` was received.
    mask: u64,
}

impl ReplayWindow {
    /// The highest index accepted so far.
    pub(super) fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub(super) fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            // A ROC of "-1" wrapped around: far beyond anything real.
            if index - highest > 1 << 47 {
                return Err(SrtpError::Replayed);
            }
            return Ok(());
        }
        let age = highest - index;
        if age >= REPLAY_WINDOW || self.mask & (1 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    pub(super) fn accept(&mut self, index: u64) {
        match self.highest {
            None => {
                self.highest = Some(index);
                self.mask = 1;
            }
            Some(highest) if index > highest => {
                let shift = index - highest;
                self.mask = if shift >= REPLAY_WINDOW {
                    1
                } else {
                    (self.mask << shift) | 1
                };
                self.highest = Some(index);
            }
            Some(highest) => self.mask |= 1 << (highest - index),
        }
    }
}

/// The receiving half of one SRTP session: the PBX's master key, the rollover counter
/// estimate and the replay windows.
pub struct SrtpReceiver {
    suite: SrtpSuite,
    master: MasterKey,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_window: ReplayWindow,
    rtcp_window: ReplayWindow,
}

impl SrtpReceiver {
    /// A receiver for `suite` keyed with the peer's `master`.
    pub fn new(suite: SrtpSuite, master: &MasterKey) -> Result<SrtpReceiver, SrtpError> {
        Ok(SrtpReceiver {
            suite,
            master: *master,
            rtp: SessionKeys::derive(master, 0)?,
            rtcp: SessionKeys::derive(master, 3)?,
            rtp_window: ReplayWindow::default(),
            rtcp_window: ReplayWindow::default(),
        })
    }

    /// True when this receiver already runs with `suite` and `master`.
    pub fn uses(&self, suite: SrtpSuite, master: &MasterKey) -> bool {
        self.suite == suite && self.master == *master
    }

    /// Checks the tag and the replay window of the SRTP packet in `buf`, then decrypts it in
    /// place. Returns the length of the plain RTP packet (the tag cut off). A packet that
    /// fails leaves the state untouched.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = buf.len().checked_sub(tag_len).ok_or(SrtpError::Malformed)?;
        let header = rtp_header_len(&buf[..len]).ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = ssrc_at(buf, 8);
        let index = estimate_index(self.rtp_window.highest, seq);
        self.rtp_window.check(index)?;
        let roc = ((index >> 16) as u32).to_be_bytes();
        self.rtp.verify([&buf[..len], &roc], &buf[len..])?;
        self.rtp.apply_keystream(ssrc, index, &mut buf[header..len]);
        self.rtp_window.accept(index);
        Ok(len)
    }

    /// Checks and decrypts the SRTCP packet in `buf` in place; returns the length of the
    /// plain RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let Some(len) = buf.len().checked_sub(RTCP_TRAILER) else {
            return Err(SrtpError::Malformed);
        };
        if len < 8 || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let e_index = u32::from_be_bytes([buf[len], buf[len + 1], buf[len + 2], buf[len + 3]]);
        let index = u64::from(e_index & 0x7fff_ffff);
        self.rtcp_window.check(index)?;
        self.rtcp.verify([&buf[..len + 4], &[]], &buf[len + 4..])?;
        if e_index & 0x8000_0000 != 0 {
            let ssrc = ssrc_at(buf, 4);
            self.rtcp.apply_keystream(ssrc, index, &mut buf[8..len]);
        }
        self.rtcp_window.accept(index);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn master(key: &str, salt: &str) -> MasterKey {
        let mut bytes = [0u8; KEY_SALT_LEN];
        bytes[..16].copy_from_slice(&hex(key));
        bytes[16..].copy_from_slice(&hex(salt));
        MasterKey(bytes)
    }

    #[test]
    fn rfc3711_b2_aes_cm_keystream() -> Result<(), SrtpError> {
        // B.2: session key, session salt, SSRC 0 and index 0 give these keystream blocks.
        let mut salt = [0u8; MASTER_SALT_LEN];
        salt.copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let keys = SessionKeys {
            cipher: Aes128::new_from_slice(&hex("2B7E151628AED2A6ABF7158809CF4F3C"))
                .map_err(|_| SrtpError::Crypto)?,
            auth: <HmacSha1 as KeyInit>::new_from_slice(&[0; 20]).map_err(|_| SrtpError::Crypto)?,
            salt,
        };
        let mut stream = vec![0u8; 16 * 0xff02];
        keys.apply_keystream(0, 0, &mut stream);
        assert_eq!(stream[..16], hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(stream[16..32], hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(stream[32..48], hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        let last = 16 * 0xfeff;
        assert_eq!(
            stream[last..last + 16],
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4")
        );
        assert_eq!(
            stream[last + 16..last + 32],
            hex("362B7C3C6773516318A077D7FC5073AE")
        );
        assert_eq!(
            stream[last + 32..last + 48],
            hex("6A2CC3787889374FBEB4C81B17BA6C44")
        );
        Ok(())
    }

    #[test]
    fn rfc3711_b3_key_derivation() -> Result<(), SrtpError> {
        let m = master(
            "E1F97A0D3E018BE0D64FA32C06DE4139",
            "0EC675AD498AFEEBB6960B3AABE6",
        );
        let prf = Aes128::new_from_slice(m.key()).map_err(|_| SrtpError::Crypto)?;
        let mut enc = [0u8; 16];
        derive_into(&prf, &m.salt(), 0, &mut enc);
        assert_eq!(enc[..], hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive_into(&prf, &m.salt(), 2, &mut salt);
        assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive_into(&prf, &m.salt(), 1, &mut auth);
        assert_eq!(
            auth[..],
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
        Ok(())
    }

    fn rtp_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn protect(sender: &mut SrtpSender, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + MAX_RTP_TRAILER, 0);
        let n = sender.protect_rtp(&mut buf, plain.len())?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn round_trip_tamper_and_replay() -> Result<(), SrtpError> {
        for suite in SrtpSuite::ALL {
            let key = MasterKey::random()?;
            let mut tx = SrtpSender::new(suite, &key)?;
            let mut rx = SrtpReceiver::new(suite, &key)?;
            let plain = rtp_packet(7, 0x1234_5678, &[0x55; 160]);
            let protected = protect(&mut tx, &plain)?;
            assert_eq!(protected.len(), plain.len() + suite.rtp_tag_len());
            assert_ne!(protected[12..172], plain[12..]);
            let mut tampered = protected.clone();
            tampered[40] ^= 1;
            assert_eq!(rx.unprotect_rtp(&mut tampered), Err(SrtpError::AuthFailed));
            let mut good = protected.clone();
            let n = rx.unprotect_rtp(&mut good)?;
            assert_eq!(good[..n], plain[..]);
            let mut again = protected.clone();
            assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
            let mut wrong = SrtpReceiver::new(suite, &MasterKey::random()?)?;
            let mut other = protected.clone();
            assert_eq!(wrong.unprotect_rtp(&mut other), Err(SrtpError::AuthFailed));
        }
        Ok(())
    }

    #[test]
    fn rollover_is_tracked_and_reordering_within_the_window_passes() -> Result<(), SrtpError> {
        let key = MasterKey::random()?;
        let mut tx = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &key)?;
        let mut rx = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &key)?;
        let seqs: Vec<u16> = (65500u16..=65535).chain(0..40).collect();
        let mut packets = Vec::new();
        for &seq in &seqs {
            packets.push((
                seq,
                protect(&mut tx, &rtp_packet(seq, 9, &[seq as u8; 20]))?,
            ));
        }
        // Deliver pairs swapped: 1 0 3 2 ... across the wrap.
        for pair in packets
            .chunks(2)
            .map(|c| c.iter().rev().collect::<Vec<_>>())
        {
            for (seq, p) in pair {
                let mut buf = p.clone();
                let n = rx.unprotect_rtp(&mut buf)?;
                assert_eq!(buf[12..n], [*seq as u8; 20]);
            }
        }
        assert_eq!(rx.rtp_window.highest, Some((1 << 16) | 39));
        // Older than the window: refused even though the tag is good.
        let mut old = packets[0].1.clone();
        assert_eq!(rx.unprotect_rtp(&mut old), Err(SrtpError::Replayed));
        Ok(())
    }

    #[test]
    fn srtcp_round_trip_tamper_and_replay() -> Result<(), SrtpError> {
        let key = MasterKey::random()?;
        let mut tx = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_32, &key)?;
        let mut rx = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_32, &key)?;
        let mut plain = vec![0x80, 200, 0, 6];
        plain.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        plain.extend_from_slice(&[7u8; 20]);
        let mut buf = plain.clone();
        buf.resize(plain.len() + RTCP_TRAILER, 0);
        let n = tx.protect_rtcp(&mut buf, plain.len())?;
        assert_eq!(n, plain.len() + RTCP_TRAILER);
        assert_ne!(buf[8..plain.len()], plain[8..]);
        let mut tampered = buf.clone();
        tampered[10] ^= 0x80;
        assert_eq!(rx.unprotect_rtcp(&mut tampered), Err(SrtpError::AuthFailed));
        let mut good = buf.clone();
        let m = rx.unprotect_rtcp(&mut good)?;
        assert_eq!(good[..m], plain[..]);
        let mut again = buf.clone();
        assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        Ok(())
    }

    #[test]
    fn garbage_never_panics() -> Result<(), SrtpError> {
        let key = MasterKey::random()?;
        let mut rx = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &key)?;
        let mut tx = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &key)?;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200usize {
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if len > 0 {
                buf[0] = 0x80 | (buf[0] & 0x3f);
            }
            let _ = rx.unprotect_rtp(&mut buf.clone());
            let _ = rx.unprotect_rtcp(&mut buf.clone());
            let _ = tx.protect_rtp(&mut buf.clone(), len);
            let _ = tx.protect_rtcp(&mut buf.clone(), len.saturating_sub(14));
            buf.resize(len + 16, 0);
            let _ = tx.protect_rtp(&mut buf, len);
        }
        Ok(())
    }

    #[test]
    fn keys_are_never_printed() -> Result<(), SrtpError> {
        let key = MasterKey([0xab; KEY_SALT_LEN]);
        assert!(!format!("{key:?}").to_lowercase().contains("ab"));
        Ok(())
    }
}
