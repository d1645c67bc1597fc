//! SIP over TLS to the PBX (`sip.transport = "tls"`).
//!
//! callgate keeps one TLS connection to the proxy and dials it **from its SIP listen address**
//! (the TCP side of `sip.listen` is not listened on in this mode). So the Via and Contact it
//! advertises (`sip:…@<listen>;transport=tls`) name that very connection, and any PBX that
//! reuses connections by address (Kamailio, Asterisk, FreeSWITCH do) sends its INVITEs, BYEs
//! and re-INVITEs back on it: callgate needs no certificate of its own. When the connection
//! closes it is dialled again from the same address, so registered Contacts stay valid.
//!
//! The PBX's certificate is verified against `sip.tls_ca_file` (or the system CA bundle) and
//! must name `sip.tls_server_name` (default: the proxy's IP address), which is also the SNI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rsipstack::transport::tls::{TlsConfig, TlsConnection};
use rsipstack::transport::{SipAddr, SipConnection};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::link::DIAL_TIMEOUT;

/// What the TLS leg needs from the settings.
#[derive(Debug, Clone, Default)]
pub struct SipTlsSettings {
    /// PEM CA certificates trusted for the PBX; `None`: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Name the PBX's certificate must carry; `None`: the proxy's IP.
    pub server_name: Option<String>,
}

/// Opens TLS connections to the proxy from the SIP listen address.
pub(super) struct Dialer {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    local: SocketAddr,
    proxy: SocketAddr,
}

impl Dialer {
    /// Reads the trust anchors and checks the server name; also returns the same trust for
    /// rsipstack's own dialling (used only if a message leaves while our connection is down).
    pub(super) fn new(
        settings: &SipTlsSettings,
        local: SocketAddr,
        proxy: SocketAddr,
    ) -> Result<(Dialer, TlsConfig), String> {
        let ca = crate::tls::ca_bundle(settings.ca_file.as_deref())?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| format!("CA file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file: unusable certificate: {e}"))?;
        }
        let name = settings
            .server_name
            .clone()
            .unwrap_or_else(|| proxy.ip().to_string());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("sip.tls_server_name {name:?}: {e}"))?;
        let config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let fallback = TlsConfig {
            ca_certs: Some(ca),
            sni_hostname: Some(name),
            ..TlsConfig::default()
        };
        Ok((
            Dialer {
                config: Arc::new(config),
                server_name,
                local,
                proxy,
            },
            fallback,
        ))
    }

    /// The proxy this dialer connects to.
    pub(super) fn proxy(&self) -> SocketAddr {
        self.proxy
    }

    /// The proxy as rsipstack keys its connections.
    fn remote(&self) -> SipAddr {
        SipAddr {
            r#type: Some(rsipstack::sip::transport::Transport::Tls),
            addr: self.proxy.into(),
        }
    }

    async fn dial(&self) -> Result<TlsStream<TcpStream>, String> {
        let socket = match self.local {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        // The previous connection from this address may linger in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        socket
            .bind(self.local)
            .map_err(|e| format!("bind {}: {e}", self.local))?;
        let dial = async {
            let tcp = socket
                .connect(self.proxy)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            // SIP messages often leave in twos (an ACK and a BYE, a response and a
            // request): with Nagle on the second waits for the PBX's delayed ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                warn!(error = %e, "TCP_NODELAY not set on the SIP TLS connection");
            }
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))
        };
        tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    /// Dials a connection for rsipstack, which reads it and sends on it until `token` fires
    /// (rsipstack fires it when it retires the connection).
    pub(super) async fn open(&self, token: CancellationToken) -> Result<SipConnection, String> {
        let stream = self.dial().await?;
        let connection = TlsConnection::from_client_stream(stream, self.remote(), Some(token))
            .await
            .map_err(|e| e.to_string())?;
        Ok(SipConnection::Tls(connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections to the PBXs (the primary and a secondary) are dialled from the listen
    /// address with Nagle off and verified against the configured CA and name; both can be
    /// up at once from that one address.
    #[tokio::test]
    async fn dials_each_proxy_from_the_listen_address_with_nagle_off() {
        let generated = rcgen::generate_simple_self_signed(vec!["pbx.test".to_string()])
            .expect("rcgen generates");
        let dir = std::env::temp_dir().join(format!("callgate-sip-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, generated.cert.pem()).expect("write");
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![generated.cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                    .expect("a key"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port");
        let settings = SipTlsSettings {
            ca_file: Some(ca_file),
            server_name: Some("pbx.test".into()),
        };
        let mut kept = Vec::new();
        for _ in ["primary", "secondary"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let proxy = listener.local_addr().expect("address");
            let acceptor = acceptor.clone();
            let pbx = tokio::spawn(async move {
                let (tcp, peer) = listener.accept().await.expect("accept");
                (acceptor.accept(tcp).await.expect("handshake"), peer)
            });
            let (dialer, _) = Dialer::new(&settings, local, proxy).expect("dialer");
            let stream = dialer.dial().await.expect("dialled");
            assert!(stream.get_ref().0.nodelay().expect("read TCP_NODELAY"));
            let (pbx_side, peer) = pbx.await.expect("pbx task");
            assert_eq!(peer, local);
            kept.push((stream, pbx_side));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
