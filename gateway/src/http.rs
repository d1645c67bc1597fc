//! The browser-facing HTTP edge: `/ws` (the protocol), `/metrics`, `/healthz`, `/readyz`,
//! the softphone bar at `/` and the JS SDK under `/sdk/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::Services;

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
    services
        .metrics
        .set_registrations(services.sip.registered_count());
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
    } else if services.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
