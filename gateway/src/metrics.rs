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

/// Reads the sizes of callgate's tables at scrape time.
pub type TableSource = Arc<dyn Fn() -> TableSizes + Send + Sync>;

/// How many entries callgate's long-lived tables hold: each must return to its idle value
/// when calls and sessions end (the soak checks it), so a leak shows on a dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// SIP dialogs the stack tracks.
    pub sip_dialogs: usize,
    /// SIP transactions in progress.
    pub sip_transactions: usize,
    /// Our 2xx responses waiting for their ACK.
    pub sip_waiting_ack: usize,
    /// Agents routed here for inbound calls (registered Contact users).
    pub agent_routes: usize,
    /// SIP-leg RTP/RTCP port pairs leased to single calls (the workers' shared pairs are not).
    pub rtp_ports: usize,
    /// Client IPs with open WebSockets (the per-IP limit's table).
    pub client_ips: usize,
    /// Browser addresses routed to a bridge, over all media workers.
    pub media_addresses: usize,
    /// ICE ufrags routed to a bridge, over all media workers.
    pub media_ufrags: usize,
    /// PBX RTP addresses routed to a bridge on the shared SIP-leg sockets.
    pub media_sip_sources: usize,
    /// Pending media-worker timer entries.
    pub media_timers: usize,
    /// Browser legs whose str0m instance is still alive (in their handshake, or relayed
    /// through str0m); a leg the worker keeps itself has none.
    pub media_str0m_legs: usize,
    /// Sessions listed for resume (attached or kept after a drop).
    pub resumable_sessions: usize,
    /// `jti`s of single-use tokens remembered until their expiry.
    pub token_jtis: usize,
}

impl TableSizes {
    fn entries(&self) -> [(&'static str, usize); 13] {
        [
            ("sip_dialogs", self.sip_dialogs),
            ("sip_transactions", self.sip_transactions),
            ("sip_waiting_ack", self.sip_waiting_ack),
            ("agent_routes", self.agent_routes),
            ("rtp_ports", self.rtp_ports),
            ("client_ips", self.client_ips),
            ("media_addresses", self.media_addresses),
            ("media_ufrags", self.media_ufrags),
            ("media_sip_sources", self.media_sip_sources),
            ("media_timers", self.media_timers),
            ("media_str0m_legs", self.media_str0m_legs),
            ("resumable_sessions", self.resumable_sessions),
            ("token_jtis", self.token_jtis),
        ]
    }
}

#[derive(Default)]
struct TableCollector {
    source: OnceLock<TableSource>,
}

impl std::fmt::Debug for TableCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableCollector")
    }
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sizes = self.source.get().map(|source| source()).unwrap_or_default();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "callgate_table_entries",
            "Entries in callgate's long-lived tables, by table (idle value when no call or session is up)",
            None,
            gauge.metric_type(),
        )?;
        for (table, size) in sizes.entries() {
            let labels = [("table", table)];
            ConstGauge::new(i64::try_from(size).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// All of callgate's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open browser WebSockets.
    pub ws_connections: Gauge,
    /// Calls from `call` request until `call_ended`.
    pub calls_active: Gauge,
    /// Sessions whose WebSocket dropped and which wait for the browser to resume them.
    pub sessions_detached: Gauge,
    session_resumes_total: Family<Labels, Counter>,
    registrations: Gauge,
    pbx_reachable: Gauge,
    proxy_reachable: Family<Labels, Gauge>,
    proxy_active: Family<Labels, Gauge>,
    proxy_failovers: Counter,
    calls_total: Family<Labels, Counter>,
    /// Seconds from the `call` request to the answer or final failure.
    pub call_setup_seconds: Histogram,
    sip_responses_total: Family<Labels, Counter>,
    browser_errors_total: Family<Labels, Counter>,
    refused_connections_total: Family<Labels, Counter>,
    auth_failures_total: Family<Labels, Counter>,
    tls_reloads_total: Family<Labels, Counter>,
    token_refreshes_total: Family<Labels, Counter>,
    /// Token sessions whose token expired without a refresh.
    pub token_expiries_total: Counter,
    credentials_reloads_total: Family<Labels, Counter>,
    call_mos: Histogram,
    call_loss_ratio: Family<Labels, Histogram, fn() -> Histogram>,
    call_jitter_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    call_rtt_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    media: Arc<MediaCollector>,
    tables: Arc<TableCollector>,
}

fn loss_buckets() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
}

fn delay_buckets() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
}

#[derive(Default)]
struct MediaCollector {
    source: OnceLock<MediaSource>,
    sip_malformed: AtomicI64,
    sip_untrusted: AtomicI64,
    sip_tcp_refused: AtomicI64,
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
        let mut family = encoder.encode_descriptor(
            "callgate_browser_rtp_direct_packets",
            "The browser leg's RTP packets callgate protected or unprotected itself with the DTLS-SRTP keys, around str0m (webrtc.direct_srtp)",
            None,
            counter.metric_type(),
        )?;
        for (direction, value) in [("in", sum(|s| s.direct_in)), ("out", sum(|s| s.direct_out))] {
            ConstCounter::new(value).encode(family.encode_family(&[("direction", direction)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "callgate_browser_rtcp_reports",
            "RTCP reports on browser legs the media worker keeps itself once str0m is let go: the browser's opened (in) and ours sent (out)",
            None,
            counter.metric_type(),
        )?;
        for (direction, value) in [
            ("in", sum(|s| s.kept_rtcp_in)),
            ("out", sum(|s| s.kept_rtcp_out)),
        ] {
            ConstCounter::new(value).encode(family.encode_family(&[("direction", direction)])?)?;
        }
        for (name, help, value) in [
            (
                "callgate_browser_consent_checks",
                "Browsers' ICE consent checks (STUN Binding requests) the media workers answered on legs they keep themselves once str0m is let go",
                sum(|s| s.kept_consent_answers),
            ),
            (
                "callgate_media_worker_passes",
                "Passes of the media workers over their sockets: one per wake-up, or per drain interval while packets keep coming (webrtc.drain_interval_us)",
                sum(|s| s.passes),
            ),
            (
                "callgate_media_receive_calls",
                "Receive system calls of the media workers that returned datagrams; callgate_media_received_datagrams_total divided by this is the batching they get",
                sum(|s| s.receive_calls),
            ),
            (
                "callgate_media_received_datagrams",
                "Datagrams the media workers' receive calls returned (every kind: RTP, RTCP, STUN, DTLS)",
                sum(|s| s.datagrams_received),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            ConstCounter::new(value).encode(metric)?;
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
        errors.push((
            "sip_untrusted_source",
            self.sip_untrusted.load(Ordering::Relaxed).max(0) as u64,
        ));
        errors.push((
            "sip_tcp_refused",
            self.sip_tcp_refused.load(Ordering::Relaxed).max(0) as u64,
        ));
        errors.push(("rtcp_consumed", sum(|s| s.rtcp_in)));
        let mut family = encoder.encode_descriptor(
            "callgate_media_errors",
            "Media and SIP datagrams, and SIP TCP connections, dropped or refused, by kind (rtcp_consumed is informational)",
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
        let mut delay = crate::media::relay_delay::RelayDelay::default();
        for snapshot in &snapshots {
            delay.add(&snapshot.relay_delay);
        }
        let mut metric = encoder.encode_descriptor(
            "callgate_media_relay_delay_seconds",
            "How long the media workers held each relayed RTP packet: from its arrival in the socket (kernel timestamp) to the sending of what it produced",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            delay.sum_nanos as f64 / 1e9,
            delay.count,
            &delay.prometheus_buckets(),
            None,
        )?;
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
        let sessions_detached = Gauge::default();
        registry.register(
            "callgate_sessions_detached",
            "Sessions kept after their WebSocket dropped, waiting for the browser to resume",
            sessions_detached.clone(),
        );
        let session_resumes_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_session_resumes",
            "Resume attempts and kept sessions by outcome (resumed; expired: the grace period ran out; refused: another agent's credentials; unknown: the token named no kept session)",
            session_resumes_total.clone(),
        );
        let calls_active = Gauge::default();
        registry.register(
            "callgate_calls_active",
            "Calls in progress",
            calls_active.clone(),
        );
        let registrations = Gauge::default();
        registry.register(
            "callgate_registrations",
            "Agents currently registered with the PBX through callgate",
            registrations.clone(),
        );
        let pbx_reachable = Gauge::default();
        registry.register(
            "callgate_pbx_reachable",
            "1 while the PBX (any configured proxy) answers the OPTIONS keepalive (always 1 with sip.keepalive_interval = 0)",
            pbx_reachable.clone(),
        );
        let proxy_reachable = Family::<Labels, Gauge>::default();
        registry.register(
            "callgate_sip_proxy_reachable",
            "1 while this proxy (primary, secondary) answers the OPTIONS keepalive",
            proxy_reachable.clone(),
        );
        let proxy_active = Family::<Labels, Gauge>::default();
        registry.register(
            "callgate_sip_proxy_active",
            "1 for the proxy new INVITEs, REGISTERs and MESSAGEs go to, 0 for the other",
            proxy_active.clone(),
        );
        let proxy_failovers = Counter::default();
        registry.register(
            "callgate_sip_proxy_failovers",
            "Switches from the primary to the secondary proxy because the primary went silent",
            proxy_failovers.clone(),
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
        let refused_connections_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_refused_connections",
            "WebSocket upgrades refused, by reason (origin, per_ip)",
            refused_connections_total.clone(),
        );
        let auth_failures_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_auth_failures",
            "Refused logins, by reason (signature, expired, audience, unknown_extension, lookup_failed, …)",
            auth_failures_total.clone(),
        );
        let tls_reloads_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_tls_reloads",
            "Changed certificate/key files of the HTTPS listener, by result (ok: now served; \
             failed: unreadable or invalid, the previous certificate stays)",
            tls_reloads_total.clone(),
        );
        let token_refreshes_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_token_refreshes",
            "refresh_token requests by outcome (ok, expired, invalid, mismatch, replayed, \
             credentials, session_expired, mode_disabled)",
            token_refreshes_total.clone(),
        );
        let token_expiries_total = Counter::default();
        registry.register(
            "callgate_token_expiries",
            "Token sessions whose token expired without a refresh (they end once their last \
             call has ended)",
            token_expiries_total.clone(),
        );
        let credentials_reloads_total = Family::<Labels, Counter>::default();
        registry.register(
            "callgate_credentials_reloads",
            "Changed auth.credentials_file contents, by result (ok: now used; failed: \
             unreadable or invalid, the previous entries stay)",
            credentials_reloads_total.clone(),
        );
        let call_mos = Histogram::new([1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4]);
        registry.register(
            "callgate_call_mos",
            "E-model MOS estimate of answered calls at their end",
            call_mos.clone(),
        );
        let call_loss_ratio =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(loss_buckets);
        registry.register(
            "callgate_call_loss_ratio",
            "Packet loss of answered calls at their end, per leg (received side)",
            call_loss_ratio.clone(),
        );
        let call_jitter_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(delay_buckets);
        registry.register(
            "callgate_call_jitter_seconds",
            "RFC 3550 interarrival jitter of answered calls at their end, per leg",
            call_jitter_seconds.clone(),
        );
        let call_rtt_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(delay_buckets);
        registry.register(
            "callgate_call_rtt_seconds",
            "RTCP round-trip time of answered calls at their end, per leg",
            call_rtt_seconds.clone(),
        );
        let media = Arc::new(MediaCollector::default());
        registry.register_collector(Box::new(media.clone()));
        let tables = Arc::new(TableCollector::default());
        registry.register_collector(Box::new(tables.clone()));
        Metrics {
            registry,
            ws_connections,
            calls_active,
            sessions_detached,
            session_resumes_total,
            registrations,
            pbx_reachable,
            proxy_reachable,
            proxy_active,
            proxy_failovers,
            calls_total,
            call_setup_seconds,
            sip_responses_total,
            browser_errors_total,
            refused_connections_total,
            auth_failures_total,
            tls_reloads_total,
            token_refreshes_total,
            token_expiries_total,
            credentials_reloads_total,
            call_mos,
            call_loss_ratio,
            call_jitter_seconds,
            call_rtt_seconds,
            media,
            tables,
        }
    }

    /// Connects the table sizes (once, at start-up).
    pub fn set_table_source(&self, source: TableSource) {
        let _ = self.tables.source.set(source);
    }

    /// Connects the media workers' counters (once, at start-up).
    pub fn set_media_source(&self, source: MediaSource) {
        let _ = self.media.source.set(source);
    }

    /// Publishes how many agents are registered with the PBX.
    pub fn set_registrations(&self, count: i64) {
        self.registrations.set(count);
    }

    /// Publishes whether the PBX answers the OPTIONS keepalive.
    pub fn set_pbx_reachable(&self, reachable: bool) {
        self.pbx_reachable.set(i64::from(reachable));
    }

    /// Publishes which proxies answer the keepalive, which one is active, and the failovers.
    pub fn set_proxy_status(&self, status: crate::sip::proxy::ProxyStatus) {
        use crate::sip::proxy::ProxyRole;
        let reachability = status.reachability;
        let roles = std::iter::once((ProxyRole::Primary, Some(reachability.primary))).chain(
            reachability
                .secondary
                .map(|up| (ProxyRole::Secondary, Some(up))),
        );
        for (role, up) in roles {
            let labels = vec![("proxy", role.label().to_string())];
            self.proxy_reachable
                .get_or_create(&labels)
                .set(i64::from(up.unwrap_or(false)));
            self.proxy_active
                .get_or_create(&labels)
                .set(i64::from(status.active == role));
        }
        let published = self.proxy_failovers.get();
        self.proxy_failovers
            .inc_by(status.failovers.saturating_sub(published));
    }

    /// Publishes the SIP edge's count of requests refused from untrusted addresses.
    pub fn set_sip_untrusted(&self, count: u64) {
        self.media
            .sip_untrusted
            .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Publishes the SIP edge's count of TCP connections closed for want of an untrusted slot.
    pub fn set_sip_tcp_refused(&self, count: u64) {
        self.media
            .sip_tcp_refused
            .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
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

    /// Records the quality of an answered call at its end.
    pub fn call_quality(&self, quality: &signaling::CallQuality) {
        self.call_mos.observe(quality.mos);
        for (leg, q) in [("webrtc", &quality.webrtc), ("sip", &quality.sip)] {
            let labels = vec![("leg", leg.to_string())];
            let expected = q.packets + q.lost;
            if expected > 0 {
                self.call_loss_ratio
                    .get_or_create(&labels)
                    .observe(q.lost as f64 / expected as f64);
            }
            self.call_jitter_seconds
                .get_or_create(&labels)
                .observe(q.jitter_ms / 1000.0);
            if let Some(rtt) = q.rtt_ms {
                self.call_rtt_seconds
                    .get_or_create(&labels)
                    .observe(rtt / 1000.0);
            }
        }
    }

    /// Counts a SIP response by status.
    pub fn sip_response(&self, status: u16) {
        self.sip_responses_total
            .get_or_create(&vec![("code", status.to_string())])
            .inc();
    }

    /// Counts one resume outcome: `resumed`, `expired`, `refused` or `unknown`.
    pub fn session_resume(&self, outcome: &'static str) {
        self.session_resumes_total
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// Counts a refused WebSocket upgrade.
    pub fn connection_refused(&self, reason: &'static str) {
        self.refused_connections_total
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Counts a refused login by reason (the browser only sees the coarse code).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures_total
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Counts a certificate reload of the HTTPS listener (`ok` or `failed`).
    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads_total
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Counts a `refresh_token` request by outcome (one of [`TOKEN_REFRESH_OUTCOMES`]).
    pub fn token_refresh(&self, outcome: &'static str) {
        self.token_refreshes_total
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// Counts a check of the credentials file that found changed contents (`ok` or
    /// `failed`).
    pub fn credentials_reload(&self, result: &'static str) {
        self.credentials_reloads_total
            .get_or_create(&vec![("result", result.to_string())])
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

/// The process metrics of the Prometheus client guidelines (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, …), read from Linux's `/proc/self` at scrape time.
/// Nothing is exported where `/proc` cannot be read. Register it with
/// [`Metrics::with_process_metrics`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

/// `/proc` reports CPU times in clock ticks; Linux fixes USER_HZ at 100 for userspace.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl ProcessCollector {
    fn status_kib(status: &str, field: &str) -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces:
        // index 0 is field 3 (state) of proc(5).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let counter = ConstCounter::new((utime + stime) / CLOCK_TICKS_PER_SECOND);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mut gauges: Vec<(&str, &str, f64)> = Vec::new();
        if let Some(rss) = Self::status_kib(&status, "VmRSS:") {
            gauges.push((
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            ));
        }
        if let Some(size) = Self::status_kib(&status, "VmSize:") {
            gauges.push((
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                size,
            ));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauges.push((
                "process_open_fds",
                "Number of open file descriptors",
                dir.count() as f64,
            ));
        }
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(max) = max_fds {
            gauges.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            ));
        }
        if let Some(threads) = field(20) {
            gauges.push(("process_threads", "Number of OS threads", threads));
        }
        let boot = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            gauges.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                boot + start / CLOCK_TICKS_PER_SECOND,
            ));
        }
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// [`Metrics::new`] plus the [`ProcessCollector`] (CPU, memory, file descriptors).
    pub fn with_process_metrics() -> Metrics {
        let mut metrics = Metrics::new();
        metrics
            .registry
            .register_collector(Box::new(ProcessCollector));
        metrics
    }

    /// `docs/metrics.md`: every family of a fresh registry (name as scraped, type, labels
    /// with their values, help), then the [`ProcessCollector`]'s families. `media` stands
    /// in for the media workers (its error kinds become the `kind` values); every
    /// labelled family is touched once per value the code defines (`result`: `answered`
    /// and every [`EndCause`](crate::call::EndCause); browser `code`: every
    /// [`signaling::ErrorCode`]).
    pub fn catalogue_markdown(media: Vec<WorkerSnapshot>) -> String {
        use std::fmt::Write as _;
        let metrics = Metrics::for_catalogue(Metrics::new(), media);
        let families = catalogue::parse(&metrics.render());
        let mut process_registry = Registry::default();
        process_registry.register_collector(Box::new(ProcessCollector));
        let mut process_text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut process_text, &process_registry);
        let process = catalogue::parse(&process_text);

        let mut md = String::from(
            "# Metrics reference\n\n\
             <!-- Generated from gateway/src/metrics.rs (a fresh registry with a stand-in \
             media source) by gateway/tests/it/references.rs. Do not edit: run \
             `UPDATE_REFERENCES=1 cargo test -p gateway --test it references`. -->\n\n\
             `GET /metrics` on `http.listen` answers in the OpenMetrics text format \
             (Prometheus scrapes it as is). Control-plane metrics change when the event \
             happens; the media counters (`callgate_rtp_packets_total`, \
             `callgate_media_errors_total`, `callgate_media_bridges`, the workers' passes \
             and receive calls) are plain integers \
             owned by the media workers, published every 250 ms and summed over the \
             workers at scrape time, so they lag by at most 250 ms. Counters start at 0 and \
             only reset when the process restarts: graph them with `rate()`.\n\n\
             ## callgate\n\n",
        );
        catalogue::table(&mut md, &families);
        md.push_str("\n### Label values\n\n");
        for family in &families {
            for (label, values) in &family.labels {
                if family.name == "callgate_sip_responses" && label == "code" {
                    let _ = writeln!(
                        md,
                        "- `{}{{{label}}}`: the status code of every SIP response callgate \
                         receives (100-699).",
                        family.sample_name()
                    );
                    continue;
                }
                let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                let _ = writeln!(
                    md,
                    "- `{}{{{label}}}`: {}.",
                    family.sample_name(),
                    values.join(", ")
                );
            }
        }
        md.push_str(
            "\n## Process\n\n\
             Read from `/proc/self` at scrape time by `metrics::ProcessCollector` (Linux \
             only), registered by `Metrics::with_process_metrics()`. These are the \
             conventional names of the Prometheus client libraries, so existing process \
             dashboards work unchanged.\n\n",
        );
        catalogue::table(&mut md, &process);
        md
    }

    /// Every sample name a scrape of [`Metrics::catalogue_markdown`]'s registries can
    /// contain (`callgate_calls_total`, `callgate_call_setup_seconds_bucket`, …, and the
    /// process metrics), for checking dashboards and alerts against the catalogue.
    pub fn catalogue_sample_names(media: Vec<WorkerSnapshot>) -> Vec<String> {
        let metrics = Metrics::for_catalogue(Metrics::with_process_metrics(), media);
        let mut names: Vec<String> = catalogue::parse(&metrics.render())
            .iter()
            .flat_map(|f| f.sample_names())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Every `outcome` label of `callgate_token_refreshes_total`, for the catalogue.
pub const TOKEN_REFRESH_OUTCOMES: &[&str] = &[
    "ok",
    "expired",
    "invalid",
    "mismatch",
    "credentials",
    "session_expired",
    "mode_disabled",
    "replayed",
];

impl Metrics {
    /// `metrics` with `media` as its media source and every labelled family touched once
    /// per label value the code defines: a family without children is not exported at all.
    /// A new labelled family must be touched here to appear in docs/metrics.md
    /// (gateway/tests/it/references.rs checks that every registered name does).
    fn for_catalogue(metrics: Metrics, media: Vec<WorkerSnapshot>) -> Metrics {
        metrics.set_media_source(Arc::new(move || media.clone()));
        metrics.call_finished("answered");
        for cause in crate::call::EndCause::ALL {
            metrics.call_finished(cause.as_str());
        }
        metrics.sip_response(200);
        metrics.set_proxy_status(crate::sip::proxy::ProxyStatus {
            reachability: crate::sip::proxy::Reachability {
                primary: false,
                secondary: Some(true),
            },
            active: crate::sip::proxy::ProxyRole::Secondary,
            failovers: 1,
        });
        for reason in ["origin", "per_ip"] {
            metrics.connection_refused(reason);
        }
        for outcome in ["resumed", "expired", "refused", "unknown"] {
            metrics.session_resume(outcome);
        }
        for result in ["ok", "failed"] {
            metrics.tls_reload(result);
            metrics.credentials_reload(result);
        }
        for outcome in TOKEN_REFRESH_OUTCOMES {
            metrics.token_refresh(outcome);
        }
        for code in signaling::ErrorCode::ALL {
            metrics.browser_error(*code);
        }
        for reason in crate::auth::FAILURE_REASONS {
            metrics.auth_failure(reason);
        }
        let leg = signaling::LegQuality {
            packets: 1,
            lost: 0,
            jitter_ms: 0.0,
            rtt_ms: Some(1.0),
        };
        metrics.call_quality(&signaling::CallQuality {
            webrtc: leg,
            sip: leg,
            mos: 4.4,
        });
        metrics
    }
}

/// Reading the text exposition back into families, for the catalogue.
mod catalogue {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;

    pub(super) struct Family {
        pub name: String,
        pub kind: String,
        pub help: String,
        pub unit: Option<String>,
        /// Label name → values seen, in first-seen order of names.
        pub labels: Vec<(String, BTreeSet<String>)>,
        pub buckets: Vec<String>,
        /// Whether the exposition held any sample of the family (a labelled family whose
        /// children were never created shows none, so its label names are unknown).
        pub sampled: bool,
    }

    impl Family {
        /// The name a query uses (`_total` for counters).
        pub fn sample_name(&self) -> String {
            match self.kind.as_str() {
                "counter" => format!("{}_total", self.name),
                _ => self.name.clone(),
            }
        }

        pub fn sample_names(&self) -> Vec<String> {
            match self.kind.as_str() {
                "counter" => vec![format!("{}_total", self.name)],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{}{s}", self.name))
                    .collect(),
                "info" => vec![format!("{}_info", self.name)],
                _ => vec![self.name.clone()],
            }
        }
    }

    pub(super) fn parse(text: &str) -> Vec<Family> {
        let mut families: Vec<Family> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let value = parts.next().unwrap_or_default().to_string();
                if keyword == "EOF" {
                    continue;
                }
                if families.last().is_none_or(|f| f.name != name) {
                    families.push(Family {
                        name: name.to_string(),
                        kind: "unknown".into(),
                        help: String::new(),
                        unit: None,
                        labels: Vec::new(),
                        buckets: Vec::new(),
                        sampled: false,
                    });
                }
                let Some(family) = families.last_mut() else {
                    continue;
                };
                match keyword {
                    "HELP" => family.help = value,
                    "TYPE" => family.kind = value,
                    "UNIT" => family.unit = Some(value),
                    _ => {}
                }
                continue;
            }
            let Some(family) = families.last_mut() else {
                continue;
            };
            family.sampled = true;
            let Some(labels) = line.split_once('{').and_then(|(_, r)| r.rsplit_once('}')) else {
                continue;
            };
            for (name, value) in parse_labels(labels.0) {
                if name == "le" && family.kind == "histogram" {
                    if !family.buckets.contains(&value) {
                        family.buckets.push(value);
                    }
                    continue;
                }
                match family.labels.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => {
                        values.insert(value);
                    }
                    None => family.labels.push((name, BTreeSet::from([value]))),
                }
            }
        }
        families
    }

    fn parse_labels(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if name.is_empty() || chars.next() != Some('"') {
                break;
            }
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(if escaped == 'n' { '\n' } else { escaped });
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
            out.push((name.trim_start_matches(',').trim().to_string(), value));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out
    }

    pub(super) fn table(md: &mut String, families: &[Family]) {
        md.push_str("| metric | type | labels | help |\n|---|---|---|---|\n");
        for family in families {
            let labels: Vec<String> = family
                .labels
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            let labels = if !family.sampled {
                "labelled (no child in a fresh registry)".to_string()
            } else if labels.is_empty() {
                "—".to_string()
            } else {
                labels.join(", ")
            };
            let mut help = family.help.replace('|', "\\|");
            if !help.ends_with('.') {
                help.push('.');
            }
            if let Some(unit) = &family.unit {
                let _ = write!(help, " (unit: {unit})");
            }
            if !family.buckets.is_empty() {
                let _ = write!(help, " Buckets (`le`): {}.", family.buckets.join(", "));
            }
            let kind = match family.kind.as_str() {
                "histogram" => "histogram (`_bucket`, `_sum`, `_count`)".to_string(),
                other => other.to_string(),
            };
            let _ = writeln!(
                md,
                "| `{}` | {kind} | {labels} | {} |",
                family.sample_name(),
                help.trim()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_required_family() {
        let m = Metrics::new();
        m.set_media_source(Arc::new(|| {
            let mut relay_delay = crate::media::relay_delay::RelayDelay::default();
            relay_delay.observe(std::time::Duration::from_micros(300));
            vec![
                WorkerSnapshot {
                    webrtc_in: 3,
                    sip_out: 2,
                    direct_in: 4,
                    direct_out: 5,
                    passes: 7,
                    receive_calls: 6,
                    datagrams_received: 30,
                    errors: vec![("unknown_source", 1)],
                    bridges: 1,
                    relay_delay,
                    ..Default::default()
                },
                WorkerSnapshot {
                    relay_delay,
                    direct_in: 1,
                    ..Default::default()
                },
            ]
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
            "callgate_browser_rtp_direct_packets_total{direction=\"in\"} 5",
            "callgate_browser_rtp_direct_packets_total{direction=\"out\"} 5",
            "callgate_media_worker_passes_total 7",
            "callgate_media_receive_calls_total 6",
            "callgate_media_received_datagrams_total 30",
            "callgate_media_errors_total{kind=\"unknown_source\"} 1",
            "callgate_media_bridges 1",
            "callgate_media_relay_delay_seconds_bucket{le=\"0.00025\"} 0",
            "callgate_media_relay_delay_seconds_bucket{le=\"0.0005\"} 2",
            "callgate_media_relay_delay_seconds_bucket{le=\"+Inf\"} 2",
            "callgate_media_relay_delay_seconds_count 2",
            "callgate_media_relay_delay_seconds_sum 0.0006",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
