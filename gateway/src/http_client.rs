//! The one outbound HTTP(S) client (hyper + rustls on aws-lc-rs, the crypto stack str0m
//! already brings): CRM webhooks and the token-mode credential lookup both use it, so TLS
//! roots and the private-CA setting are configured in one place.

use std::path::Path;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A pooled client for `http://` and `https://` URLs with a full-body request type.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the client. Server certificates are checked against the Mozilla roots
/// (webpki-roots), the system's roots (when readable) and, when given, every certificate in
/// `extra_ca_file` (PEM), so a CRM behind a private CA works without touching the system
/// store.
pub fn build(extra_ca_file: Option<&Path>) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system store is a bonus: a container without one still has the Mozilla roots.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca_file {
        let mut added = 0usize;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad PEM in CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host: what the client can
/// reach. Used by the settings' validation.
pub fn is_reachable_url(url: &str) -> bool {
    match url.parse::<hyper::Uri>() {
        Ok(uri) => matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        assert!(is_reachable_url("https://crm.example.com/hook"));
        assert!(is_reachable_url("http://127.0.0.1:8080/x"));
        assert!(!is_reachable_url("ftp://crm.example.com/"));
        assert!(!is_reachable_url("/relative"));
        assert!(!is_reachable_url("not a url"));
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("callgate-ca-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(build(Some(&dir.join("missing.pem"))).is_err());
            let err = build(Some(&empty)).expect_err("no certificate");
            assert!(err.contains("no certificate"), "{err}");
            assert!(build(None).is_ok());
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
