//! Wiring: builds every edge from [`Settings`], serves until told to stop, and shuts down
//! in order (browsers told, calls ended, SIP and media stopped).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::media::{EngineConfig, MediaEngine, PortPool, WebRtcFactory};
use crate::metrics::Metrics;
use crate::sip::{SipEdge, SipEdgeConfig};

/// Everything a session needs, shared read-only (the engine and SIP edge are handles).
pub struct Services {
    /// The validated configuration.
    pub settings: Settings,
    /// Media workers.
    pub media: MediaEngine,
    /// Browser-leg factory (shared DTLS certificate).
    pub webrtc: WebRtcFactory,
    /// SIP-leg RTP ports.
    pub ports: PortPool,
    /// The SIP endpoint.
    pub sip: SipEdge,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the process begins to shut down.
    pub shutdown: CancellationToken,
    /// Cancelled when draining starts: no new calls, `/readyz` 503, active calls continue.
    pub draining: CancellationToken,
    /// CRM webhooks, when configured.
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// Which numbers agents may dial.
    pub dialplan: crate::dialplan::Dialplan,
    /// Which logins are accepted; token verification and credential lookup.
    pub auth: crate::auth::Authenticator,
    /// Open WebSockets per client IP (for `limits.max_connections_per_ip`).
    pub connections: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Sessions a reconnecting browser may resume, by resume token.
    pub resumable: crate::session::Resumable,
    /// This node's name in resume tokens (`http.node_id` or the host name).
    pub node_id: String,
}

/// `http.node_id`, else the host name reduced to the characters a token may carry.
fn node_id(settings: &Settings) -> String {
    if let Some(node) = &settings.http.node_id {
        return node.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(63)
        .collect();
    if cleaned.is_empty() {
        "callgate".into()
    } else {
        cleaned
    }
}

impl Services {
    /// The sizes of the long-lived tables, for the `callgate_table_entries` gauge.
    pub fn table_sizes(&self) -> crate::metrics::TableSizes {
        let (sip_transactions, sip_waiting_ack, agent_routes) = self.sip.table_sizes();
        let workers = self.media.snapshots();
        crate::metrics::TableSizes {
            sip_dialogs: self.sip.dialog_count(),
            sip_transactions,
            sip_waiting_ack,
            agent_routes,
            rtp_ports: self.ports.leased(),
            client_ips: self.connections.lock().map(|c| c.len()).unwrap_or(0),
            media_addresses: workers.iter().map(|w| w.routed_addresses).sum(),
            media_ufrags: workers.iter().map(|w| w.routed_ufrags).sum(),
            media_sip_sources: workers.iter().map(|w| w.routed_sip_sources).sum(),
            media_timers: workers.iter().map(|w| w.timers).sum(),
            media_str0m_legs: workers.iter().map(|w| w.str0m_legs).sum(),
            resumable_sessions: self.resumable.len(),
            token_jtis: self.auth.replay_entries(),
        }
    }
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound or a component refused its settings.
    #[error("{0}")]
    Component(String),
}

/// A running gateway.
pub struct Gateway {
    services: Arc<Services>,
    http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds every socket and starts serving; returns once all listeners are up.
    pub async fn start(settings: Settings) -> Result<Gateway, StartError> {
        crate::tls::install_default_provider();
        let node_id = node_id(&settings);
        let shutdown = CancellationToken::new();
        // Certificates first: a missing or broken file fails start-up before any socket.
        let https = match (&settings.http.tls_cert_file, &settings.http.tls_key_file) {
            (Some(cert), Some(key)) => {
                let cert = crate::tls::ServerCert::load(cert, key)
                    .map_err(|e| StartError::Component(format!("http TLS: {e}")))?;
                let config = cert
                    .server_config()
                    .map_err(|e| StartError::Component(format!("http TLS: {e}")))?;
                Some((cert, config))
            }
            _ => None,
        };
        let metrics = Arc::new(Metrics::with_process_metrics());
        let media = MediaEngine::start(EngineConfig {
            webrtc_bind: settings.webrtc.bind,
            advertised_ip: settings.advertised_webrtc_ip(),
            workers: settings.worker_count(),
            inactivity_timeout: settings.rtp.inactivity_timeout,
            shared_rtp: settings.shared_rtp_base(),
            realtime_priority: settings.webrtc.realtime_priority,
            busy_poll: Duration::from_micros(settings.webrtc.busy_poll_us.into()),
            drain_interval: settings.drain_interval(),
            direct_srtp: settings.webrtc.direct_srtp,
        })
        .map_err(|e| {
            StartError::Component(format!("media workers on {}: {e}", settings.webrtc.bind))
        })?;
        let webrtc = WebRtcFactory::new().map_err(|e| StartError::Component(e.to_string()))?;
        // Shared sockets take the range's first pairs, one per worker; calls lease the rest
        // with per-call sockets.
        let ports = match settings.shared_rtp_base() {
            Some(base) => {
                let first_free = usize::from(base.port()) + 2 * settings.worker_count();
                let min = u16::try_from(first_free).unwrap_or(u16::MAX);
                PortPool::new(settings.rtp.ip, min, settings.rtp.port_max.max(min))
            }
            None => PortPool::new(
                settings.rtp.ip,
                settings.rtp.port_min,
                settings.rtp.port_max,
            ),
        };
        let observer_metrics = metrics.clone();
        let sip = SipEdge::start(
            SipEdgeConfig {
                listen: settings.sip.listen,
                transport: settings.sip.transport,
                proxy: settings.sip.proxy,
                secondary_proxy: settings.sip.secondary_proxy,
                domain: settings.sip_domain(),
                header_prefixes: settings.sip.header_prefixes.clone(),
                hep: settings.hep.collector.map(|c| (c, settings.hep.capture_id)),
                trusted_sources: if settings.sip.trusted_sources.is_empty() {
                    std::iter::once(settings.sip.proxy.ip())
                        .chain(settings.sip.secondary_proxy.map(|p| p.ip()))
                        .collect()
                } else {
                    settings.sip.trusted_sources.clone()
                },
                keepalive_interval: settings.sip.keepalive_interval,
                tls: crate::sip::SipTlsSettings {
                    ca_file: settings.sip.tls_ca_file.clone(),
                    server_name: settings.sip.tls_server_name.clone(),
                },
            },
            Arc::new(move |status| observer_metrics.sip_response(status)),
            shutdown.child_token(),
        )
        .await
        .map_err(|e| StartError::Component(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(settings.http.listen)
            .await
            .map_err(|e| StartError::Component(format!("HTTP on {}: {e}", settings.http.listen)))?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| StartError::Component(e.to_string()))?;
        let http_client =
            if settings.webhooks.url.is_some() || settings.auth.credentials_url.is_some() {
                Some(
                    crate::http_client::build(settings.http_client.extra_ca_file.as_deref())
                        .map_err(|e| StartError::Component(format!("http_client: {e}")))?,
                )
            } else {
                None
            };
        let auth = crate::auth::Authenticator::new(&settings.auth, http_client.clone())
            .map_err(StartError::Component)?;
        let webhooks = match (&settings.webhooks.url, &http_client) {
            (Some(url), Some(client)) => {
                let url = url
                    .parse()
                    .map_err(|e| StartError::Component(format!("webhooks.url: {e}")))?;
                Some(crate::webhooks::Webhooks::start(
                    client.clone(),
                    crate::webhooks::WebhookConfig {
                        url,
                        secret: settings.webhooks.secret.clone(),
                        max_attempts: settings.webhooks.max_attempts,
                        first_retry: Duration::from_millis(settings.webhooks.first_retry_ms),
                        timeout: Duration::from_secs(settings.webhooks.timeout_secs),
                        queue: settings.webhooks.queue,
                    },
                ))
            }
            _ => None,
        };
        let dialplan = crate::dialplan::Dialplan::new(&settings.dialplan)
            .map_err(|e| StartError::Component(format!("dialplan: {e}")))?;
        let services = Arc::new(Services {
            settings,
            media,
            webrtc,
            ports,
            sip,
            metrics,
            shutdown,
            draining: CancellationToken::new(),
            webhooks,
            dialplan,
            auth,
            connections: std::sync::Mutex::default(),
            resumable: crate::session::Resumable::default(),
            node_id,
        });
        // The metrics live inside the services: their sources hold them weakly, or the
        // services (every table, the media engine) would keep themselves alive for ever.
        let engine = Arc::downgrade(&services);
        services.metrics.set_media_source(Arc::new(move || {
            engine
                .upgrade()
                .map(|services| services.media.snapshots())
                .unwrap_or_default()
        }));
        let tables = Arc::downgrade(&services);
        services.metrics.set_table_source(Arc::new(move || {
            tables
                .upgrade()
                .map(|services| services.table_sizes())
                .unwrap_or_default()
        }));
        let router = crate::http::router(services.clone());
        let stop = services.shutdown.clone();
        crate::memory::spawn_trim(stop.clone());
        // One SIGHUP listener for every file callgate reloads.
        let hangups = crate::reload::listen_for_hangups(stop.clone());
        if let Some(file) = services.auth.credentials_file() {
            crate::auth::credentials::spawn_watch(
                file,
                services.settings.auth.credentials_reload_interval,
                services.metrics.clone(),
                hangups.clone(),
                stop.clone(),
            );
        }
        let scheme = if https.is_some() { "https" } else { "http" };
        let http_task = match https {
            None => tokio::spawn(async move {
                use axum::serve::ListenerExt as _;
                let served = axum::serve(
                    listener.tap_io(crate::http::send_without_delay),
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }),
            Some((cert, config)) => {
                crate::tls::spawn_watch(
                    cert,
                    services.settings.http.tls_reload_interval,
                    services.metrics.clone(),
                    hangups.clone(),
                    stop.clone(),
                );
                let listener = crate::tls::TlsListener::new(listener, config, stop.clone())
                    .map_err(|e| StartError::Component(format!("HTTPS: {e}")))?;
                tokio::spawn(async move {
                    // `tap_io` only so that axum provides `ConnectInfo<SocketAddr>` for a
                    // listener of ours (its impl covers tapped listeners of any type).
                    use axum::serve::ListenerExt as _;
                    let served = axum::serve(
                        listener.tap_io(|_| {}),
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                    if let Err(e) = served.await {
                        tracing::error!(error = %e, "HTTPS server failed");
                    }
                })
            }
        };
        info!(http = %http_addr, %scheme, sip = %services.sip.local_addr(), webrtc = %services.media.candidate(0), "callgate ready");
        Ok(Gateway {
            services,
            http_addr,
            http_task,
        })
    }

    /// The bound HTTP address (`/ws`, `/metrics`, …).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound SIP address.
    pub fn sip_addr(&self) -> SocketAddr {
        self.services.sip.local_addr()
    }

    /// The shared services (tests read metrics and leak counters from here).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Stops taking calls and waits until the active ones have ended or `timeout` passed;
    /// `/readyz` reports 503 from the first moment so load balancers move new agents away.
    pub async fn drain(&self, timeout: Duration) {
        info!(
            timeout_secs = timeout.as_secs(),
            "draining: new calls refused"
        );
        self.services.draining.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.services.metrics.calls_active.get() > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info!(
            remaining_calls = self.services.metrics.calls_active.get(),
            "drain finished"
        );
    }

    /// Ends every call (CANCEL/BYE), closes browsers, then stops the listeners and the media
    /// workers.
    pub async fn shutdown(mut self) {
        info!("shutting down");
        self.services.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.http_task).await;
        // Let the SIP tasks send their CANCEL/BYE before the endpoint stops.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.services.sip.shutdown();
        // Dropping `self` stops the media workers.
    }
}

impl Drop for Gateway {
    /// A gateway dropped (shut down or not) stops its tasks and media workers at once: tasks
    /// may still hold the services for a while, and without this the workers kept their
    /// sockets, the shared SIP-leg RTP pair among them, for the life of the process.
    fn drop(&mut self) {
        self.services.shutdown.cancel();
        self.services.media.stop();
    }
}
