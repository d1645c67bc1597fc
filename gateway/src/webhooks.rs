//! CRM webhooks: call events (ringing, answered, ended) with CDR fields, POSTed as JSON and
//! signed with HMAC-SHA256, retried with back-off by one background task. A call never
//! waits for the CRM: events go through a bounded queue and are dropped (and counted) when
//! it is full.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::http_client::HttpClient;

/// What the CRM is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    /// The far end is alerting (outbound) or the agent is offered a call (inbound).
    Ringing,
    /// The call was answered.
    Answered,
    /// The call is over; carries the CDR.
    Ended,
}

/// One webhook body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    /// The event.
    pub event: CallEventKind,
    /// callgate's call id.
    pub call_id: String,
    /// The CRM's call UUID (outbound calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_uuid: Option<String>,
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The agent's extension.
    pub agent: String,
    /// The other party's number.
    pub remote_number: String,
    /// Unix milliseconds when the call started.
    pub started_at_ms: u64,
    /// Unix milliseconds of this event.
    pub at_ms: u64,
    /// For `ended`: talk seconds of an answered call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// For `ended`: the end cause (`normal_clearing`, `busy`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// For `ended`: which side ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<signaling::EndedBy>,
    /// For `ended`: the SIP status of a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// For `ended`: media quality of an answered call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<signaling::CallQuality>,
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http(s)://host:port/path` of the CRM endpoint.
    pub url: hyper::Uri,
    /// HMAC key; the signature header is omitted without one.
    pub secret: Option<String>,
    /// Attempts per event (first try included).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub first_retry: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Events waiting at most; beyond that new events are dropped.
    pub queue: usize,
}

/// Cheap handle the sessions use; cloning shares the queue.
#[derive(Clone)]
pub struct Webhooks {
    queue: mpsc::Sender<CallEvent>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"): the timestamp makes a replayed
/// body detectable by the CRM.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

impl Webhooks {
    /// Starts the delivery task on the shared HTTP(S) client (`crate::http_client`), so an
    /// `https://` endpoint behind a private CA works with `http_client.extra_ca_file`.
    pub fn start(client: HttpClient, config: WebhookConfig) -> Webhooks {
        let (queue, mut events) = mpsc::channel::<CallEvent>(config.queue.max(1));
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                deliver(&client, &config, &event).await;
            }
        });
        Webhooks { queue, dropped }
    }

    /// Queues an event; never waits. Returns false when the queue was full (the event is lost
    /// and counted).
    pub fn send(&self, event: CallEvent) -> bool {
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn deliver(client: &HttpClient, config: &WebhookConfig, event: &CallEvent) {
    let body = match serde_json::to_vec(event) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            warn!(error = %e, "cannot encode a webhook");
            return;
        }
    };
    let mut delay = config.first_retry;
    for attempt in 1..=config.max_attempts.max(1) {
        let timestamp = crate::clock::since_unix_epoch().as_secs();
        let mut request = hyper::Request::post(config.url.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("callgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(
                "x-callgate-event",
                format!("{:?}", event.event).to_ascii_lowercase(),
            )
            .header("x-callgate-timestamp", timestamp.to_string());
        if let Some(secret) = &config.secret {
            request = request.header("x-callgate-signature", signature(secret, timestamp, &body));
        }
        let Ok(request) = request.body(Full::new(body.clone())) else {
            warn!("cannot build the webhook request");
            return;
        };
        let outcome = tokio::time::timeout(config.timeout, client.request(request)).await;
        match outcome {
            Ok(Ok(response)) if response.status().is_success() => {
                let _ = response.into_body().collect().await;
                debug!(call_id = %event.call_id, attempt, "webhook delivered");
                return;
            }
            Ok(Ok(response)) => debug!(status = %response.status(), attempt, "webhook refused"),
            Ok(Err(e)) => debug!(error = ?e, attempt, "webhook failed"),
            Err(_) => debug!(attempt, "webhook timed out"),
        }
        if attempt < config.max_attempts {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(Duration::from_secs(60));
        }
    }
    warn!(call_id = %event.call_id, event = ?event.event, "webhook given up after all attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // RFC 4231 style check: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        let sig = signature("key", 0, b"x");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_ne!(signature("key", 1, b"x"), sig, "the timestamp is signed");
        assert_ne!(signature("other", 0, b"x"), sig, "the key matters");
        // Known vector: HMAC_SHA256("key", "0.x") computed independently.
        assert_eq!(sig, known_vector());
    }

    fn known_vector() -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").expect("key");
        mac.update(b"0.x");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    }
}
