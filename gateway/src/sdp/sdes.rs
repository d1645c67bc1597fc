//! SDES (RFC 4568): `a=crypto` lines in the SIP leg's SDP. Which lines callgate offers, which
//! answer it accepts, and what it answers to the PBX's offer; the negotiated keys go to the
//! media core as [`SrtpKeys`]. Pure: keys come in from the caller (a CSPRNG at the edge).
//!
//! Conventions (what PBXs interoperate with): `mandatory` offers `RTP/SAVP`; `optional` offers
//! `RTP/AVP` with `a=crypto` ("best-effort SRTP", as FreeSWITCH's `rtp_secure_media=optional`
//! and Asterisk's `media_encryption_optimistic` do) and falls back to plain RTP when the
//! answer has no crypto. An answer mirrors the offer's profile. Lines with an MKI, session
//! parameters, several keys or an unknown suite are unusable and skipped.

use std::fmt::Write as _;

use base64::Engine as _;

use super::{AudioDescription, MasterKey, SdpError, SrtpSuite};
use crate::media::srtp::KEY_SALT_LEN;

/// The operator's SRTP policy for the SIP leg (`sip.srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only.
    #[default]
    Off,
    /// SRTP when the PBX takes it, plain RTP otherwise.
    Optional,
    /// SRTP or no call.
    Mandatory,
}

/// One usable `a=crypto` line of the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The line's tag (answers name the offer's line by it).
    pub tag: u32,
    /// Its suite.
    pub suite: SrtpSuite,
    /// The PBX's master key and salt.
    pub key: MasterKey,
}

/// Keys SDES negotiated for one call: what the media core needs to protect what it sends
/// (`local`) and check what it receives (`remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The suite both sides use.
    pub suite: SrtpSuite,
    /// The tag of the negotiated `a=crypto` line.
    pub tag: u32,
    /// Our master key (we encrypt with it).
    pub local: MasterKey,
    /// The PBX's master key (it encrypts with it).
    pub remote: MasterKey,
}

/// What the next SDP of ours carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rendering {
    /// No crypto.
    Plain,
    /// Every suite, tags 1.. in [`SrtpSuite::ALL`] order (an offer before any agreement).
    Offer,
    /// The one negotiated line.
    Chosen { tag: u32, suite: SrtpSuite },
}

/// One call's SDES state on the SIP leg: the policy, our keys (one per suite, fixed for the
/// call so re-INVITEs keep them) and what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdes {
    policy: SrtpPolicy,
    keys: [MasterKey; 2],
    rendering: Rendering,
    savp: bool,
}

impl Sdes {
    /// Plain RTP (`sip.srtp = "off"`).
    pub fn off() -> Sdes {
        Sdes {
            policy: SrtpPolicy::Off,
            keys: [MasterKey([0; KEY_SALT_LEN]); 2],
            rendering: Rendering::Plain,
            savp: false,
        }
    }

    /// A call's state under `policy` with our fresh keys, one per suite of
    /// [`SrtpSuite::ALL`].
    pub fn new(policy: SrtpPolicy, keys: [MasterKey; 2]) -> Sdes {
        if policy == SrtpPolicy::Off {
            return Sdes::off();
        }
        Sdes {
            policy,
            keys,
            rendering: Rendering::Offer,
            savp: policy == SrtpPolicy::Mandatory,
        }
    }

    /// The policy.
    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    fn key_for(&self, suite: SrtpSuite) -> MasterKey {
        match suite {
            SrtpSuite::AesCm128HmacSha1_80 => self.keys[0],
            SrtpSuite::AesCm128HmacSha1_32 => self.keys[1],
        }
    }

    /// The m-line's transport.
    pub(super) fn proto(&self) -> &'static str {
        if self.savp && self.rendering != Rendering::Plain {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    }

    /// Appends our `a=crypto` lines.
    pub(super) fn render_crypto(&self, s: &mut String) {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut line = |tag: u32, suite: SrtpSuite| {
            let _ = write!(
                s,
                "a=crypto:{tag} {} inline:{}\r\n",
                suite.name(),
                engine.encode(self.key_for(suite).0)
            );
        };
        match self.rendering {
            Rendering::Plain => {}
            Rendering::Offer => {
                for (tag, suite) in (1..).zip(SrtpSuite::ALL) {
                    line(tag, suite);
                }
            }
            Rendering::Chosen { tag, suite } => line(tag, suite),
        }
    }

    fn offered(&self) -> impl Iterator<Item = (u32, SrtpSuite)> {
        let (all, one) = match self.rendering {
            Rendering::Plain => (false, None),
            Rendering::Offer => (true, None),
            Rendering::Chosen { tag, suite } => (false, Some((tag, suite))),
        };
        (1..).zip(SrtpSuite::ALL).filter(move |_| all).chain(one)
    }

    /// The keys of the PBX's answer to our latest offer.
    pub(super) fn read_answer(
        &self,
        audio: &AudioDescription,
    ) -> Result<Option<SrtpKeys>, SdpError> {
        if self.policy == SrtpPolicy::Off {
            return Ok(None);
        }
        let agreed = audio.crypto.iter().find_map(|c| {
            self.offered()
                .any(|(tag, suite)| tag == c.tag && suite == c.suite)
                .then_some(SrtpKeys {
                    suite: c.suite,
                    tag: c.tag,
                    local: self.key_for(c.suite),
                    remote: c.key,
                })
        });
        match agreed {
            Some(keys) => Ok(Some(keys)),
            None if self.policy == SrtpPolicy::Mandatory
                || (audio.secure && self.rendering != Rendering::Plain) =>
            {
                Err(SdpError::NoCrypto)
            }
            None => Ok(None),
        }
    }

    /// The keys for the PBX's offer, and how our answer renders (applied with
    /// [`Sdes::answer_with`] once the whole offer is acceptable).
    pub(super) fn read_offer(
        &self,
        audio: &AudioDescription,
    ) -> Result<(Option<SrtpKeys>, AnswerPlan), SdpError> {
        let plain = AnswerPlan {
            rendering: Rendering::Plain,
            savp: false,
        };
        if self.policy == SrtpPolicy::Off {
            return if audio.secure {
                Err(SdpError::SrtpOff)
            } else {
                Ok((None, plain))
            };
        }
        match audio.crypto.first() {
            Some(c) => Ok((
                Some(SrtpKeys {
                    suite: c.suite,
                    tag: c.tag,
                    local: self.key_for(c.suite),
                    remote: c.key,
                }),
                AnswerPlan {
                    rendering: Rendering::Chosen {
                        tag: c.tag,
                        suite: c.suite,
                    },
                    savp: audio.secure,
                },
            )),
            None if audio.secure || self.policy == SrtpPolicy::Mandatory => Err(SdpError::NoCrypto),
            None => Ok((None, plain)),
        }
    }

    /// Our next SDP answers (or re-offers) what [`Sdes::read_offer`] chose.
    pub(super) fn answer_with(&mut self, plan: AnswerPlan) {
        self.rendering = plan.rendering;
        self.savp = plan.savp;
    }

    /// After the PBX answered our offer with `keys`, later offers restate only that line
    /// (same tag, suite and key), so a re-INVITE keeps the SRTP session.
    pub fn settle(&mut self, keys: Option<&SrtpKeys>) {
        if let Some(keys) = keys {
            self.rendering = Rendering::Chosen {
                tag: keys.tag,
                suite: keys.suite,
            };
        }
    }
}

/// How our answer to the PBX's offer renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AnswerPlan {
    rendering: Rendering,
    savp: bool,
}

/// Reads the value of `a=crypto:` (RFC 4568 §9.1); `None` for a line callgate cannot use.
pub(super) fn parse_crypto(value: &str) -> Option<Crypto> {
    let mut fields = value.split_ascii_whitespace();
    let tag = fields.next()?;
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag = tag.parse().ok()?;
    let suite = SrtpSuite::from_name(fields.next()?)?;
    let key_params = fields.next()?;
    if fields.next().is_some() {
        // Session parameters (KDR, UNENCRYPTED_SRTP, …): not supported.
        return None;
    }
    if key_params.contains(';') {
        // Several keys (they would need an MKI each).
        return None;
    }
    let mut parts = key_params.strip_prefix("inline:")?.split('|');
    let key = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => {}
        (Some(lifetime), None, _) if valid_lifetime(lifetime) => {}
        // An MKI (with or without lifetime), or garbage.
        _ => return None,
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .ok()
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(key)
                .ok()
        })?;
    let key: [u8; KEY_SALT_LEN] = bytes.try_into().ok()?;
    Some(Crypto {
        tag,
        suite,
        key: MasterKey(key),
    })
}

/// `2^N` or a decimal packet count (RFC 4568 §6.1). callgate never re-keys, so a lifetime
/// only has to be well-formed; calls end long before 2^31 packets.
fn valid_lifetime(text: &str) -> bool {
    match text.strip_prefix("2^") {
        Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 48),
        None => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.len() <= 15,
    }
}
