//! The browser-facing HTTP edge: `/ws` (the protocol), `/metrics`, `/healthz`, `/readyz`,
//! the softphone bar at `/` and the JS SDK under `/sdk/`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::Services;

/// Read buffer of a browser WebSocket (tungstenite reads in chunks of this size). Every idle
/// agent keeps one; an offer of a few KiB simply takes a few reads.
const IDLE_READ_BUFFER: usize = 1024;

/// The softphone bar page (web-client/bar/index.html); it loads `sdk/softphone.mjs`.
const SOFTPHONE_PAGE: &str = include_str!("../../web-client/bar/index.html");

/// The web client's bundles, committed under web-client/dist/ so that building callgate never
/// runs npm (web-client/test/build.test.js fails when they are stale): the SDK as an ES
/// module (default export `SipCall`) and as a classic script (global `SipCall`), and the
/// softphone bar likewise (global `CallgateSoftphone`, element `<callgate-phone>`).
const SDK_FILES: &[(&str, &str)] = &[
    (
        "/sdk/sipcall.mjs",
        include_str!("../../web-client/dist/sipcall.mjs"),
    ),
    (
        "/sdk/sipcall.js",
        include_str!("../../web-client/dist/sipcall.js"),
    ),
    (
        "/sdk/softphone.mjs",
        include_str!("../../web-client/dist/softphone.mjs"),
    ),
    (
        "/sdk/softphone.js",
        include_str!("../../web-client/dist/softphone.js"),
    ),
];

/// Turns Nagle's algorithm off on an accepted connection (plain or before its TLS
/// handshake). callgate's messages are small and often come in twos (an ack, then an event):
/// with Nagle on, the second waits for the browser to acknowledge the first, which a
/// delayed ACK holds up to 40 ms (measured: ~45 ms added to call set-up). Browsers set
/// TCP_NODELAY on their side for the same reason.
pub fn send_without_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on a browser connection");
    }
}

/// All routes.
pub fn router(services: Arc<Services>) -> Router {
    let mut router = Router::new().route("/", get(|| async { Html(SOFTPHONE_PAGE) }));
    for &(path, body) in SDK_FILES {
        router = router.route(path, get(move || async move { javascript(body) }));
    }
    router
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(services)
}

/// A bundle with a JavaScript content type (browsers refuse modules served as text/plain)
/// and permissive CORS, so CRM pages on other origins can load the SDK.
fn javascript(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let limits = &services.settings.limits;
    if !limits.allowed_origins.is_empty() {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !limits
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        {
            services.metrics.connection_refused("origin");
            return (
                StatusCode::FORBIDDEN,
                "origin_not_allowed: this page's origin may not use callgate\n",
            )
                .into_response();
        }
    }
    let Some(slot) = ConnectionSlot::take(&services, peer.ip()) else {
        services.metrics.connection_refused("per_ip");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections: this address has too many open WebSockets\n",
        )
            .into_response();
    };
    upgrade
        // Frames up to twice the protocol limit reach the parser, which answers
        // `message_too_large`; anything larger closes the socket.
        .max_message_size(2 * signaling::MAX_MESSAGE_BYTES)
        .max_frame_size(2 * signaling::MAX_MESSAGE_BYTES)
        // Signalling messages are small: tungstenite's default 128 KiB read buffer per
        // connection was ~85 % of an idle agent's memory, 4 KiB still a quarter
        // (docs/benchmarks.md). It grows for a large message; writes go out at once (a flush follows every send anyway).
        .read_buffer_size(IDLE_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| crate::session::run(socket, services, Box::new(slot)))
}

/// One open WebSocket counted against its client address; released on drop.
struct ConnectionSlot {
    services: Arc<Services>,
    ip: IpAddr,
}

impl ConnectionSlot {
    fn take(services: &Arc<Services>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = services.connections.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= services.settings.limits.max_connections_per_ip {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            services: services.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.services.connections.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn metrics(State(services): State<Arc<Services>>, headers: HeaderMap) -> Response {
    if let Some(token) = &services.settings.http.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    services
        .metrics
        .set_sip_malformed(services.sip.malformed_count());
    services
        .metrics
        .set_sip_untrusted(services.sip.untrusted_count());
    services
        .metrics
        .set_sip_tcp_refused(services.sip.tcp_refused_count());
    services
        .metrics
        .set_registrations(services.sip.registered_count());
    services
        .metrics
        .set_pbx_reachable(services.sip.pbx_reachable());
    services
        .metrics
        .set_proxy_status(services.sip.proxy_status());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        services.metrics.render(),
    )
        .into_response()
}

async fn ready(State(services): State<Arc<Services>>) -> impl IntoResponse {
    if services.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if services.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !services.sip.pbx_reachable() {
        (StatusCode::SERVICE_UNAVAILABLE, "pbx unreachable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::{Listener as _, ListenerExt as _};

    /// The plain listener as `app` builds it hands axum connections with Nagle off.
    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("address");
        let mut listener = tcp.tap_io(super::send_without_delay);
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().expect("client address"));
        assert!(accepted.nodelay().expect("read TCP_NODELAY"));
    }
}
