//! Prometheus metrics (text exposition at `/metrics`). Control-plane metrics are updated at
//! event time; media counters are owned by the workers and read here only at scrape time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::media::WorkerSnapshot;

type Labels = Vec<(&'static str, String)>;

/// Reads the media workers' counters at scrape time.
pub type MediaSource = Arc<dyn Fn() -> Vec<WorkerSnapshot> + Send + Sync>;

/// All of callgate's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open browser WebSockets.
    pub ws_connections: Gauge,
    /// Calls from `call` request until `call_ended`.
    pub calls_active: Gauge,
    calls_total: Family<Labels, Counter>,
    /// Seconds from the `call` request to the answer or final failure.
    pub call_setup_seconds: Histogram,
    sip_responses_total: Family<Labels, Counter>,
    browser_errors_total: Family<Labels, Counter>,
    media: Arc<MediaCollector>,
}

#[derive(Default)]
struct MediaCollector {
    source: OnceLock<MediaSource>,
    sip_malformed: AtomicI64,
}

impl std::fmt::Debug for MediaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaCollector")
    }
}

impl Collector for MediaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots = self.source.get().map(|source| source()).unwrap_or_default();
        let sum = |f: fn(&WorkerSnapshot) -> u64| snapshots.iter().map(f).sum::<u64>();
        let packets = [
            ("webrtc", "in", sum(|s| s.webrtc_in)),
            ("webrtc", "out", sum(|s| s.webrtc_out)),
            ("sip", "in", sum(|s| s.sip_in)),
            ("sip", "out", sum(|s| s.sip_out)),
        ];
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "callgate_rtp_packets",
            "Media datagrams per leg and direction (webrtc counts all SRTP/STUN/DTLS datagrams)",
            None,
            counter.metric_type(),
        )?;
        for (leg, direction, value) in packets {
            let labels = [("leg", leg), ("direction", direction)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let mut errors: Vec<(&'static str, u64)> = Vec::new();
        for snapshot in &snapshots {
            for (kind, value) in &snapshot.errors {
                match errors.iter_mut().find(|(k, _)| k == kind) {
                    Some(entry) => entry.1 += value,
                    None => errors.push((kind, *value)),
                }
            }
        }
        errors.push((
            "sip_malformed",
            self.sip_malformed.load(Ordering::Relaxed).max(0) as u64,
        ));
        errors.push(("rtcp_consumed", sum(|s| s.rtcp_in)));
        let mut family = encoder.encode_descriptor(
            "callgate_media_errors",
            "Media and SIP datagrams dropped or refused, by kind (rtcp_consumed is informational)",
            None,
            counter.metric_type(),
        )?;
        for (kind, value) in errors {
            let labels = [("kind", kind)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let bridges = snapshots.iter().map(|s| s.bridges as i64).sum::<i64>();
        let gauge = ConstGauge::new(bridges);
        let metric = encoder.encode_descriptor(
            "callgate_media_bridges",
            "Bridges owned by the media workers",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let ws_connections = Gauge::default();
        registry.register(
            "callgate_ws_connections",
            "Open browser WebSocket connections",
            ws_connections.clone(),
        );
        let calls_active = Gauge::default();
        registry.register(
            "callgate_calls_active",
            "Calls in progress",
            calls_active.clone(),
        );
        let calls_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_calls",
            "Finished calls by result (answered, or the end cause)",
            calls_total.clone(),
        );
        let call_setup_seconds = Histogram::new([
            0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "callgate_call_setup_seconds",
            "Time from the browser's call request to the PBX's answer or final failure",
            call_setup_seconds.clone(),
        );
        let sip_responses_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_sip_responses",
            "SIP responses received, by status code",
            sip_responses_total.clone(),
        );
        let browser_errors_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_browser_errors",
            "Error replies sent to browsers, by code",
            browser_errors_total.clone(),
        );
        let media = Arc::new(MediaCollector::default());
        registry.register_collector(Box::new(media.clone()));
        Metrics {
            registry,
            ws_connections,
            calls_active,
            calls_total,
            call_setup_seconds,
            sip_responses_total,
            browser_errors_total,
            media,
        }
    }

    /// Connects the media workers' counters (once, at start-up).
    pub fn set_media_source(&self, source: MediaSource) {
        let _ = self.media.source.set(source);
    }

    /// Publishes the SIP edge's malformed-datagram count.
    pub fn set_sip_malformed(&self, count: u64) {
        self.media
            .sip_malformed
            .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Counts a finished call.
    pub fn call_finished(&self, result: &'static str) {
        self.calls_total
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Counts a SIP response by status.
    pub fn sip_response(&self, status: u16) {
        self.sip_responses_total
            .get_or_create(&vec![("code", status.to_string())])
            .inc();
    }

    /// Counts an error reply to a browser.
    pub fn browser_error(&self, code: signaling::ErrorCode) {
        self.browser_errors_total
            .get_or_create(&vec![("code", code.as_str().to_string())])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_required_family() {
        let m = Metrics::new();
        m.set_media_source(Arc::new(|| {
            vec![WorkerSnapshot {
                webrtc_in: 3,
                sip_out: 2,
                errors: vec![("unknown_source", 1)],
                bridges: 1,
                ..Default::default()
            }]
        }));
        m.call_finished("answered");
        m.sip_response(486);
        m.call_setup_seconds.observe(0.012);
        m.ws_connections.inc();
        let text = m.render();
        for needle in [
            "callgate_ws_connections 1",
            "callgate_calls_active 0",
            "callgate_calls_total{result=\"answered\"} 1",
            "callgate_call_setup_seconds_bucket{le=\"0.02\"} 1",
            "callgate_sip_responses_total{code=\"486\"} 1",
            "callgate_rtp_packets_total{leg=\"webrtc\",direction=\"in\"} 3",
            "callgate_rtp_packets_total{leg=\"sip\",direction=\"out\"} 2",
            "callgate_media_errors_total{kind=\"unknown_source\"} 1",
            "callgate_media_bridges 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
