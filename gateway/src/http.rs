//! The browser-facing HTTP edge: `/ws` (the protocol), `/metrics`, `/healthz`, `/readyz`,
//! and the demo page at `/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::Services;

/// The demo page: a minimal phone on the raw protocol (the full softphone bar is served by
/// the web client).
const DEMO_PAGE: &str = include_str!("../../web-client/dev/call.html");

/// All routes.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DEMO_PAGE) }))
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(services)
}

async fn websocket(upgrade: WebSocketUpgrade, State(services): State<Arc<Services>>) -> Response {
    upgrade
        // Frames up to twice the protocol limit reach the parser, which answers
        // `message_too_large`; anything larger closes the socket.
        .max_message_size(2 * signaling::MAX_MESSAGE_BYTES)
        .max_frame_size(2 * signaling::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| crate::session::run(socket, services))
}

async fn metrics(State(services): State<Arc<Services>>) -> impl IntoResponse {
    services
        .metrics
        .set_sip_malformed(services.sip.malformed_count());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        services.metrics.render(),
    )
}

async fn ready(State(services): State<Arc<Services>>) -> impl IntoResponse {
    if services.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
