//! TLS for the browser-facing listener (HTTPS + `wss://`) and the PBX's trust anchors for SIP
//! over TLS.
//!
//! The HTTP listener's certificate lives in a [`ServerCert`]: rustls asks it for the
//! certificate at every handshake, and [`watch`] swaps in a changed certificate/key pair
//! (checked every `http.tls_reload_interval` and on SIGHUP). A handshake uses whatever is
//! current when it starts; established connections — and the WebSocket sessions and calls
//! on them — never notice a reload. A pair that does not load is logged and counted, and the
//! previous certificate stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// How long a client may take to complete its TLS handshake before the connection is closed
/// (a slow or silent client never holds up other handshakes: each runs in its own task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completed handshakes waiting for the HTTP server to take them.
const ACCEPT_QUEUE: usize = 64;

/// Where CA bundles live on common Linux distributions (Debian/Ubuntu, Fedora/RHEL,
/// Alpine/Arch), for SIP over TLS without `sip.tls_ca_file`.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The crypto provider of every TLS configuration callgate builds: ring, the one rsipstack's
/// TLS transport is compiled with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide rustls provider. rsipstack builds its client configuration
/// with the process default, which rustls cannot pick by itself once another dependency
/// enables a second provider; a provider already installed is kept.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a PEM certificate chain and its private key and checks that they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("certificate file: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key file: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key do not make a usable pair: {e}"))
}

/// The HTTPS listener's current certificate, replaceable while the server runs.
#[derive(Debug)]
pub struct ServerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last examined, so an unchanged (or unchanged broken) pair is not
    /// parsed, logged and counted again at every check.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// What a check of the certificate files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Same contents as last time.
    Unchanged,
    /// A new pair is served to new connections.
    Reloaded,
    /// The files changed but cannot be used; the previous certificate stays.
    Failed(String),
}

impl ServerCert {
    /// Loads the pair; start-up fails on an error, unlike a reload.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerCert>, String> {
        let (cert_pem, key_pem) = read_pair(cert_file, key_file)?;
        let key = certified_key(&cert_pem, &key_pem)?;
        Ok(Arc::new(ServerCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Reads the files; when they changed since the last check (or `force`), loads them and
    /// serves them to new connections if they are a valid pair.
    pub fn reload(&self, force: bool) -> Reload {
        let (cert_pem, key_pem) = match read_pair(&self.cert_file, &self.key_file) {
            Ok(pair) => pair,
            Err(e) => {
                // Unreadable: remember that, so the same state is reported once.
                let changed = self.remember(Vec::new(), Vec::new());
                return if changed || force {
                    Reload::Failed(e)
                } else {
                    Reload::Unchanged
                };
            }
        };
        let changed = self.remember(cert_pem.clone(), key_pem.clone());
        if !changed && !force {
            return Reload::Unchanged;
        }
        match certified_key(&cert_pem, &key_pem) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Records the contents examined; true when they differ from the previous ones.
    fn remember(&self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let changed = seen.0 != cert_pem || seen.1 != key_pem;
        *seen = (cert_pem, key_pem);
        changed
    }

    /// The rustls server configuration that asks this value for its certificate (HTTP/1.1
    /// only: WebSockets upgrade over HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

/// Both files' contents. These are a few kilobytes read every few seconds, so plain blocking
/// reads on the runtime are cheaper than a thread hop.
fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    Ok((read(cert_file)?, read(key_file)?))
}

/// Starts reloading `cert` when its files change (every `interval`; zero: never by polling)
/// and on every SIGHUP (`hangups`, the gateway's one listener), until `cancel`; each outcome
/// is logged and counted.
pub fn spawn_watch(
    cert: Arc<ServerCert>,
    interval: Duration,
    metrics: Arc<Metrics>,
    hangups: crate::reload::Hangups,
    cancel: CancellationToken,
) {
    tokio::spawn(crate::reload::run(
        interval,
        hangups,
        cancel,
        move |force| match cert.reload(force) {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                metrics.tls_reload("ok");
                info!(cert_file = %cert.cert_file.display(), "TLS certificate reloaded; new connections use it");
            }
            Reload::Failed(error) => {
                metrics.tls_reload("failed");
                warn!(%error, "TLS certificate not reloaded; the previous one stays in use");
            }
        },
    ));
}

/// An HTTPS listener for `axum::serve`: TCP connections are accepted and their handshakes
/// completed in tasks of their own; `accept` hands out finished TLS streams.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` until `cancel` (or until the listener is dropped).
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        cancel: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (mut stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // E.g. out of file descriptors: do not spin.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                crate::http::send_without_delay(&mut stream);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The PEM CA certificates trusted for the PBX: `file`, or the system bundle.
pub fn ca_bundle(file: Option<&Path>) -> Result<Vec<u8>, String> {
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .ok_or("no system CA bundle found; set sip.tls_ca_file")?,
    };
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let count = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if count == 0 {
        return Err(format!("{}: no CERTIFICATE block", path.display()));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests;
