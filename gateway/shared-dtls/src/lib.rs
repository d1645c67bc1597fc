//! str0m's DTLS, with one dimpl configuration for the whole process: callgate's browser legs
//! and loadtest's simulated browsers both use it.
//!
//! str0m's aws-lc-rs crypto provider builds a new dimpl `Config` for every peer connection,
//! and dimpl validates its crypto provider on every build: a test ECDH key exchange and an
//! ECDSA verification. Profiled at 200 new calls per second, that self-test was a third of
//! the control plane's CPU (~1 ms per call), before a single DTLS packet was exchanged.
//! This provider builds and validates the configuration once and shares it; each connection
//! still gets its own dimpl engine, with the same crypto (aws-lc-rs) as before. Everything
//! else in the crypto provider (SRTP, STUN HMAC, hashes) is str0m's own.
//!
//! Use: `Rtc::builder().set_crypto_provider(shared_dtls::crypto_provider())`.
//!
//! It also lets the one who builds an `Rtc` keep a copy of the SRTP keys its handshake
//! exports ([`with_key_tap`]): str0m keeps them to itself, and callgate's media worker
//! protects and unprotects the browser's RTP with them without going through str0m.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's crypto provider from its feature flags, with [`SharedConfigDtls`] as the DTLS
/// provider. Built once; every `Rtc` of the process shares it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = str0m::crypto::from_feature_flags();
            provider.dtls_provider = &SHARED_CONFIG_DTLS;
            Arc::new(provider)
        })
        .clone()
}

/// A self-signed DTLS certificate from str0m's own provider, made once per process and
/// shared like a browser profile's: generating one per connection costs a key pair and a
/// signature each time. `None` if generation failed (then str0m makes one per connection).
pub fn shared_certificate() -> Option<DtlsCert> {
    static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERT.get_or_init(|| SHARED_CONFIG_DTLS.generate_certificate())
        .clone()
}

/// Builds and validates a DTLS configuration now, so that a crypto provider dimpl refuses is a
/// start-up error instead of a panic inside str0m on the first call (str0m expects its DTLS
/// to initialise). The configuration connections use is still built on first use, per MTU.
pub fn check() -> Result<(), String> {
    build_config(None).map(|_| ())
}

/// The SRTP keys one DTLS handshake exported, as str0m receives them: the keying material
/// (RFC 5764 §4.2: client key, server key, client salt, server salt), the profile the
/// handshake chose, and whether this end was the DTLS client (which picks its half).
#[derive(Clone, PartialEq, Eq)]
pub struct ExportedSrtpKeys {
    /// The exporter's output, `2 × (key + salt)` bytes of the profile.
    pub material: Vec<u8>,
    /// The SRTP protection profile the handshake agreed.
    pub profile: SrtpProfile,
    /// True when this end was the DTLS client.
    pub active: bool,
}

impl std::fmt::Debug for ExportedSrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys must never reach a log.
        f.debug_struct("ExportedSrtpKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where one connection's exported SRTP keys land, shared between its DTLS engine (which
/// fills it once, when the handshake completes) and whoever built the `Rtc`.
#[derive(Debug, Clone, Default)]
pub struct KeyTap(Arc<OnceLock<ExportedSrtpKeys>>);

impl KeyTap {
    /// A tap already holding `keys`: for benchmarks and tests that install keys of their
    /// own choosing on both ends, as str0m's `_set_srtp_keys` does.
    pub fn filled(keys: ExportedSrtpKeys) -> KeyTap {
        KeyTap(Arc::new(OnceLock::from(keys)))
    }

    /// The keys, once the handshake has exported them.
    pub fn get(&self) -> Option<&ExportedSrtpKeys> {
        self.0.get()
    }
}

thread_local! {
    /// The tap the next DTLS engine built on this thread takes (see [`with_key_tap`]).
    static NEXT_TAP: RefCell<Option<KeyTap>> = const { RefCell::new(None) };
}

/// Runs `build` (which builds one `Rtc` with [`crypto_provider`]) and returns what it built
/// with a tap on the SRTP keys of the DTLS engine built inside it. str0m builds an `Rtc`'s
/// DTLS engine synchronously in `RtcConfig::build`, on the calling thread, which is how the
/// tap reaches the right engine. If `build` built no engine, the tap stays empty.
pub fn with_key_tap<R>(build: impl FnOnce() -> R) -> (R, KeyTap) {
    let tap = KeyTap::default();
    NEXT_TAP.with(|next| *next.borrow_mut() = Some(tap.clone()));
    let built = build();
    NEXT_TAP.with(|next| next.borrow_mut().take());
    (built, tap)
}

static SHARED_CONFIG_DTLS: SharedConfigDtls = SharedConfigDtls {
    configs: Mutex::new(Vec::new()),
};

/// A DTLS provider whose connections share one validated dimpl configuration.
#[derive(Debug)]
pub struct SharedConfigDtls {
    /// One validated configuration per MTU str0m asked for (in practice one: str0m's
    /// default MTU, the same for every connection).
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

/// dimpl's configuration for `mtu`, as str0m's provider configures it: no server cookie
/// (ICE has already proved the browser's address before DTLS starts).
fn build_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, String> {
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| format!("dimpl config creation failed: {e}"))
}

impl SharedConfigDtls {
    /// The shared configuration for `mtu`, built and validated on its first use. A failed
    /// build is not kept: the next connection tries again and gets the same clear error.
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        // A poisoned lock only means another thread panicked between two lines below; the
        // list is still a valid cache.
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        let config = build_config(mtu).map_err(CryptoError::Other)?;
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {other}"
                )));
            }
        };
        let tap = NEXT_TAP.with(|next| next.borrow_mut().take());
        Ok(Box::new(Connection { dtls, tap }))
    }
}

/// One browser's DTLS engine.
struct Connection {
    dtls: dimpl::Dtls,
    /// Gets a copy of the exported SRTP keys, when the `Rtc` was built with a tap.
    tap: Option<KeyTap>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl DtlsInstance for Connection {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.dtls.poll_output(buf);
        if let (DtlsOutput::KeyingMaterial(material, profile), Some(tap)) = (&output, &self.tap) {
            // Set once: a second export (none happens without renegotiation, which dimpl
            // does not do) would leave the first keys, and the worker's check of the
            // browser's first packet would then fall back to str0m.
            let _ = tap.0.set(ExportedSrtpKeys {
                material: material.to_vec(),
                profile: *profile,
                active: self.dtls.is_active(),
            });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_one_validated_config() {
        let first = SHARED_CONFIG_DTLS
            .config(None)
            .expect("the default config builds");
        let second = SHARED_CONFIG_DTLS
            .config(None)
            .expect("the default config builds");
        assert!(Arc::ptr_eq(&first, &second), "built once, then shared");
        let other = SHARED_CONFIG_DTLS
            .config(Some(1200))
            .expect("an MTU config builds");
        assert!(!Arc::ptr_eq(&first, &other), "another MTU has its own");
        let again = SHARED_CONFIG_DTLS
            .config(Some(1200))
            .expect("an MTU config builds");
        assert!(Arc::ptr_eq(&other, &again), "also built once");
    }

    #[test]
    fn a_refused_configuration_is_an_error_with_dimpls_reason() {
        assert_eq!(check(), Ok(()), "aws-lc-rs passes dimpl's self-check");
        let refused = SHARED_CONFIG_DTLS
            .config(Some(10))
            .expect_err("dimpl refuses a 10-byte MTU");
        assert!(
            refused.to_string().contains("dimpl config creation failed"),
            "{refused}"
        );
        // Not cached: the next connection asking for it gets the same error again.
        assert!(SHARED_CONFIG_DTLS.config(Some(10)).is_err());
    }

    /// Runs a DTLS handshake between two engines built with taps, in memory.
    #[test]
    #[allow(clippy::disallowed_methods)] // a test at the edge: the instances need a start time
    fn a_tap_gets_the_keys_its_own_handshake_exported() {
        let provider = crypto_provider();
        let dtls = provider.dtls_provider;
        let cert = shared_certificate().expect("a certificate");
        let now = Instant::now();
        let build = || {
            dtls.new_dtls(&cert, now, DtlsVersion::Dtls12, None)
                .expect("an instance")
        };
        let (mut client, client_tap) = with_key_tap(build);
        let (mut server, server_tap) = with_key_tap(build);
        client.set_active(true);
        server.set_active(false);
        let mut buf = vec![0u8; 2000];
        for round in 0..20u64 {
            let at = now + std::time::Duration::from_millis(10 * round);
            let _ = client.handle_timeout(at);
            let _ = server.handle_timeout(at);
            for client_sends in [true, false] {
                let (from, to) = if client_sends {
                    (&mut client, &mut server)
                } else {
                    (&mut server, &mut client)
                };
                loop {
                    match from.poll_output(&mut buf) {
                        DtlsOutput::Packet(packet) => {
                            let packet = packet.to_vec();
                            let _ = to.handle_packet(&packet);
                        }
                        DtlsOutput::Timeout(_) => break,
                        _ => {}
                    }
                }
            }
            if client_tap.get().is_some() && server_tap.get().is_some() {
                break;
            }
        }
        let (Some(at_client), Some(at_server)) = (client_tap.get(), server_tap.get()) else {
            panic!("both ends exported keys");
        };
        assert_eq!(
            at_client.material, at_server.material,
            "one exporter output"
        );
        assert_eq!(at_client.profile, at_server.profile);
        assert!(at_client.active && !at_server.active, "each knows its side");
        assert_eq!(
            at_client.material.len(),
            match at_client.profile {
                SrtpProfile::AEAD_AES_256_GCM => 2 * (32 + 12),
                SrtpProfile::AEAD_AES_128_GCM => 2 * (16 + 12),
                _ => 2 * (16 + 14),
            }
        );
        assert!(!format!("{at_client:?}").contains(&format!("{:?}", at_client.material)));
        // A tap is taken by the one engine built inside `with_key_tap`, never by later ones.
        let (_, empty) = with_key_tap(|| ());
        assert!(empty.get().is_none());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test at the edge: the instance needs a start time
    fn the_provider_keeps_str0m_crypto_and_swaps_only_dtls() {
        let provider = crypto_provider();
        assert!(Arc::ptr_eq(&provider, &crypto_provider()));
        let dtls: &dyn DtlsProvider = provider.dtls_provider;
        assert!(std::ptr::eq(
            dtls as *const dyn DtlsProvider as *const u8,
            &SHARED_CONFIG_DTLS as *const SharedConfigDtls as *const u8
        ));
        let cert = dtls.generate_certificate().expect("a certificate");
        let instance = dtls
            .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None)
            .expect("an instance");
        assert!(!instance.is_closed());
    }
}
