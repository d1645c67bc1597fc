//! Settings: a TOML file, overridden by environment variables, overridden by flags.
//!
//! One typed [`Settings`] value is built at start-up and validated as a whole, so a bad
//! deployment fails before binding any socket, with every problem listed at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

/// The whole configuration of one callgate process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Browser-facing HTTP and WebSocket server.
    pub http: HttpSettings,
    /// The WebRTC (browser) media leg.
    pub webrtc: WebRtcSettings,
    /// The SIP signalling leg towards the PBX.
    pub sip: SipSettings,
    /// The plain RTP media leg towards the PBX.
    pub rtp: RtpSettings,
    /// Limits on calls.
    pub calls: CallSettings,
    /// Logging.
    pub log: LogSettings,
    /// CRM webhooks (off without a URL).
    pub webhooks: WebhookSettings,
    /// SIP capture to Homer (off without a collector).
    pub hep: HepSettings,
    /// Abuse limits.
    pub limits: LimitSettings,
    /// Which numbers agents may dial.
    pub dialplan: DialplanSettings,
    /// How browsers log in: SIP password mode and/or CRM-minted tokens.
    pub auth: AuthSettings,
    /// The outbound HTTP(S) client (webhooks, credential lookup).
    pub http_client: HttpClientSettings,
}

/// Login modes. Token mode is on when a token key is configured; password mode (the seed
/// SDK's extension + SIP password) stays available unless switched off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Accept `sip_credentials` hellos (the SIP password comes from the page); false refuses
    /// them with `auth_mode_disabled`.
    pub password_mode: bool,
    /// HS256 shared secret (at least 32 bytes) for CRM-minted tokens; enables token mode.
    pub token_secret: Option<String>,
    /// PEM file with the CRM's ES256 public key; enables token mode.
    pub token_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    pub token_issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub token_audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub token_leeway_secs: u64,
    /// TOML file mapping extension to SIP password (or `{ password, auth_user }`) for token
    /// logins.
    pub credentials_file: Option<PathBuf>,
    /// CRM endpoint answering `{"password": …, "auth_user"?: …}` for an extension (`{extension}`
    /// in the URL is replaced, otherwise `?extension=` is appended); `http://` or `https://`.
    pub credentials_url: Option<String>,
    /// Bearer token callgate sends to `credentials_url`.
    pub credentials_bearer: Option<String>,
    /// Milliseconds a credential lookup may take before the login fails with
    /// `credentials_unavailable`.
    pub credentials_timeout_ms: u64,
    /// How often `credentials_file` is checked for changes (agents added, passwords
    /// rotated, extensions removed) without a restart; SIGHUP always re-reads it. 0: on SIGHUP
    /// only.
    #[serde(with = "secs")]
    pub credentials_reload_interval: Duration,
    /// Seconds before a session token's `exp` that the page is sent `token_expiring` (at most
    /// half the token's remaining lifetime, so very short tokens are warned too).
    pub token_expiry_warning_secs: u64,
    /// Accept each token once: tokens must carry a `jti`, remembered (per node) until the
    /// token's `exp`; a second login or refresh with it gets `token_replayed`. Pages then need
    /// a fresh token for every reconnect (the SDK's `getToken`).
    pub single_use_tokens: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            password_mode: true,
            token_secret: None,
            token_public_key_file: None,
            token_issuer: None,
            token_audience: None,
            token_leeway_secs: 30,
            credentials_file: None,
            credentials_url: None,
            credentials_bearer: None,
            credentials_timeout_ms: 3000,
            credentials_reload_interval: Duration::from_secs(5),
            token_expiry_warning_secs: 60,
            single_use_tokens: false,
        }
    }
}

impl AuthSettings {
    /// Whether a token key is configured.
    pub fn token_mode(&self) -> bool {
        self.token_secret.is_some() || self.token_public_key_file.is_some()
    }
}

/// The outbound HTTP(S) client used for webhooks and the credential lookup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClientSettings {
    /// PEM file of extra CA certificates trusted for `https://` (a CRM behind a private CA),
    /// in addition to the Mozilla and system roots.
    pub extra_ca_file: Option<PathBuf>,
}

/// Limits that keep one browser or agent from hurting the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// WebSocket `Origin` values allowed to connect (e.g. `https://crm.example.com`); empty
    /// allows any origin.
    pub allowed_origins: Vec<String>,
    /// Open WebSockets per client IP address.
    pub max_connections_per_ip: usize,
    /// Calls one agent may place per minute.
    pub calls_per_minute: u32,
    /// Calls the whole gateway carries at once.
    pub max_calls: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            allowed_origins: Vec::new(),
            max_connections_per_ip: 100,
            calls_per_minute: 30,
            max_calls: 10_000,
        }
    }
}

/// The dial plan: regular expressions a dialled number must match entirely. Checked before
/// any INVITE leaves, so a stolen session cannot be used for toll fraud.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanSettings {
    /// Patterns for every agent; empty allows every number.
    pub allow: Vec<String>,
    /// Per-extension patterns that replace `allow` for that agent.
    pub agents: std::collections::BTreeMap<String, Vec<String>>,
}

/// Parses one `EXT=PATTERN` item of `--dialplan-agents`, so a typo fails at start-up.
fn parse_agent_pattern(item: &str) -> Result<(String, String), String> {
    match item.split_once('=') {
        Some((extension, pattern)) if !extension.trim().is_empty() && !pattern.is_empty() => {
            Ok((extension.trim().to_string(), pattern.to_string()))
        }
        _ => Err(format!("expected EXTENSION=PATTERN, got {item:?}")),
    }
}

/// HEP v3 SIP capture for Homer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HepSettings {
    /// UDP address of the Homer collector (heplify-server); none = off.
    pub collector: Option<SocketAddr>,
    /// Capture agent id shown in Homer.
    pub capture_id: u32,
}

impl Default for HepSettings {
    fn default() -> Self {
        HepSettings {
            collector: None,
            capture_id: 2001,
        }
    }
}

/// CRM webhooks: call events with CDR fields, HMAC-signed, retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://…` or `https://…` endpoint receiving `ringing`, `answered` and `ended` events;
    /// none = off.
    pub url: Option<String>,
    /// HMAC-SHA256 key for `X-Callgate-Signature`.
    pub secret: Option<String>,
    /// Delivery attempts per event.
    pub max_attempts: u32,
    /// Milliseconds before the first retry (doubling after each).
    pub first_retry_ms: u64,
    /// Per-attempt timeout in seconds.
    pub timeout_secs: u64,
    /// Events held at most while the CRM is slow; newer ones are dropped and counted.
    pub queue: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            url: None,
            secret: None,
            max_attempts: 5,
            first_retry_ms: 1000,
            timeout_secs: 5,
            queue: 10_000,
        }
    }
}

/// HTTP/WebSocket listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address serving `/ws`, `/metrics`, `/healthz`, `/readyz` and the web client.
    pub listen: SocketAddr,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// This node's name in resume tokens and `welcome.node`, so a load balancer can send a
    /// reconnecting browser back to the node that kept its calls; defaults to the host name.
    pub node_id: Option<String>,
    /// PEM certificate chain (server certificate first); with `tls_key_file`, the listener
    /// speaks HTTPS and `wss://` only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate and key files are checked for changes; new connections get
    /// a changed pair, open ones keep theirs. 0: only on SIGHUP (which always reloads).
    #[serde(with = "secs")]
    pub tls_reload_interval: Duration,
}

/// WebRTC leg: one UDP port per media worker shared by every browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcSettings {
    /// Local address the media workers bind; worker `i` binds `port + i`. Port 0 lets the
    /// OS choose (tests).
    pub bind: SocketAddr,
    /// Address advertised in ICE candidates; set it to the public IP behind NAT.
    pub public_ip: Option<IpAddr>,
    /// Number of media worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Real-time priority (SCHED_FIFO, 1-99) for the media worker threads, so a worker is
    /// never kept waiting behind the control plane on its core; 0 = off (normal
    /// scheduling). Needs CAP_SYS_NICE or an RLIMIT_RTPRIO that allows it: without it
    /// callgate warns and runs the workers normally.
    pub realtime_priority: u8,
    /// Microseconds a media worker keeps polling its sockets without sleeping after the
    /// last datagram it read (0 = off: it sleeps as soon as nothing is ready). Removes the
    /// wake-up from the latency a packet sees while calls are up, at the price of the
    /// worker's core (it spins while packets keep coming); see docs/scaling.md.
    pub busy_poll_us: u32,
    /// While datagrams keep coming, a media worker reads its sockets every this many
    /// microseconds instead of waking for each one (0 = off: it wakes when a socket becomes
    /// readable; ignored while `busy_poll_us` is set). Under real traffic, whose packets
    /// arrive spread out, a wake-up per packet costs more than the relaying itself: at 350 µs
    /// about a fifth less CPU per packet (median of 5 runs), each packet held up to the
    /// interval (docs/benchmarks.md §3 "Real traffic's timing", docs/scaling.md).
    pub drain_interval_us: u32,
    /// The media workers protect and unprotect the browser's RTP themselves, with the SRTP
    /// keys of the leg's DTLS handshake, instead of passing every packet through str0m's RTP
    /// stack (which still runs ICE, DTLS and RTCP): about half the CPU per relayed packet
    /// (docs/benchmarks.md). `false` sends every packet through str0m, as callgate did
    /// before this setting.
    pub direct_srtp: bool,
}

/// The longest `webrtc.busy_poll_us`: a G.711 call sends every 20 ms, so a longer spin
/// would keep a worker busy after its last call has ended for no gain.
pub const MAX_BUSY_POLL_US: u32 = 10_000;

/// The accepted `webrtc.drain_interval_us` besides 0: shorter intervals save few wake-ups,
/// longer ones hold every packet longer than the 1 ms of added latency callgate aims for
/// (5 ms is for a CPU-starved node that knowingly trades latency for calls).
pub const DRAIN_INTERVAL_US: std::ops::RangeInclusive<u32> = 50..=5_000;

/// The default `webrtc.drain_interval_us`: with spread arrivals at 200 calls on one core it
/// took a median 20 % (6–37 % between runs) of the CPU per relayed packet off, and
/// 99.4–99.7 % of the packets stayed within 1 ms at 200 and 400 calls; 500 µs saved a third
/// at 200 calls but let the p99 pass 1 ms at 400 (docs/benchmarks.md §3, "Real traffic's
/// timing").
pub const DEFAULT_DRAIN_INTERVAL_US: u32 = 350;

/// SIP transport protocol towards the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// SIP over UDP (RFC 3261 default).
    Udp,
    /// SIP over TCP (a kept connection to each proxy, which the PBX may reuse; `sip.listen`
    /// accepts too).
    Tcp,
    /// SIP over TLS (one client connection to each proxy; the PBX's requests come back on it).
    Tls,
}

/// SIP leg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    /// Local SIP address (UDP and TCP listen here).
    pub listen: SocketAddr,
    /// Transport used for requests callgate originates.
    pub transport: SipTransport,
    /// The PBX or outbound proxy every request is sent to.
    pub proxy: SocketAddr,
    /// A second proxy new requests go to while the primary does not answer the OPTIONS
    /// keepalive (and back when it answers again); none by default.
    pub secondary_proxy: Option<SocketAddr>,
    /// SIP domain used in From/To/Request-URI (defaults to the proxy's IP).
    pub domain: Option<String>,
    /// Prefixes a browser-supplied header name must start with (case-insensitive).
    pub header_prefixes: Vec<String>,
    /// How long an unanswered outbound call may ring before callgate cancels it.
    #[serde(with = "secs")]
    pub ring_timeout: Duration,
    /// Header carrying the call UUID on outbound INVITEs, so the PBX's CDR matches the CRM.
    pub call_uuid_header: String,
    /// Registration expiry asked of the PBX, in seconds.
    pub register_expires: u32,
    /// An inbound call the agent does not answer is refused with 480 after this long.
    #[serde(with = "secs")]
    pub answer_timeout: Duration,
    /// How the agent's DTMF reaches the PBX.
    pub dtmf_mode: DtmfModeSetting,
    /// SRTP keyed by SDES (RFC 4568 `a=crypto`) on the SIP leg: off, optional (offer
    /// RTP/AVP with `a=crypto`, plain RTP when the PBX declines) or mandatory (offer RTP/SAVP,
    /// refuse calls without usable crypto).
    pub srtp: SrtpSetting,
    /// Source addresses allowed to send INVITE/MESSAGE to agents; empty means the proxies only.
    pub trusted_sources: Vec<IpAddr>,
    /// OPTIONS keepalive to the PBX every this long; `/readyz` fails while it goes
    /// unanswered. 0 turns it off.
    #[serde(with = "secs")]
    pub keepalive_interval: Duration,
    /// PEM CA certificates trusted for the PBX's TLS certificate (`transport = "tls"`);
    /// unset: the system's CA bundle.
    pub tls_ca_file: Option<PathBuf>,
    /// Name the PBX's TLS certificate must carry (DNS name or IP; also sent as SNI);
    /// unset: the proxy's IP address.
    pub tls_server_name: Option<String>,
}

/// DTMF policy towards the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DtmfModeSetting {
    /// RFC 4733 telephone-events in RTP (INFO when the PBX did not accept them).
    Rfc4733,
    /// SIP INFO `application/dtmf-relay`.
    Info,
    /// Both.
    Both,
}

/// SRTP (SDES) policy on the SIP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SrtpSetting {
    /// Plain RTP; inbound RTP/SAVP offers get 488.
    Off,
    /// Best-effort SRTP: RTP/AVP offers carry `a=crypto`; a PBX that ignores it gets plain RTP.
    Optional,
    /// RTP/SAVP only: a call without usable crypto is refused (488) or ended.
    Mandatory,
}

impl From<SrtpSetting> for crate::sdp::SrtpPolicy {
    fn from(setting: SrtpSetting) -> Self {
        match setting {
            SrtpSetting::Off => crate::sdp::SrtpPolicy::Off,
            SrtpSetting::Optional => crate::sdp::SrtpPolicy::Optional,
            SrtpSetting::Mandatory => crate::sdp::SrtpPolicy::Mandatory,
        }
    }
}

/// Plain RTP leg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpSettings {
    /// Local IP the SIP-leg RTP sockets bind to and advertise in SDP.
    pub ip: IpAddr,
    /// Lowest port of the SIP-leg RTP range (even; RTP on even, RTCP on the next odd port).
    pub port_min: u16,
    /// Highest port of the SIP-leg RTP range.
    pub port_max: u16,
    /// Whether calls share each media worker's RTP/RTCP pair (fewer sockets and wake-ups) or
    /// get a pair each (for a PBX that sends every call's RTP from one address).
    pub sockets: RtpSockets,
    /// A leg that receives no media for this long ends the call (`media_timeout`).
    #[serde(with = "secs")]
    pub inactivity_timeout: Duration,
}

/// How SIP-leg RTP sockets are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum RtpSockets {
    /// One RTP/RTCP pair per media worker (the first pairs of the range), shared by all its
    /// calls and demultiplexed by the PBX's RTP source address (from its SDP, latched on the
    /// first packet), then by SSRC when the PBX sends several calls from one address.
    Shared,
    /// One RTP/RTCP pair per call from the range: for a PBX that sends every call from one
    /// address and starts several at once (their SSRCs cannot be told apart), or a firewall
    /// that expects a port per call.
    PerCall,
}

/// Call limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallSettings {
    /// Simultaneous calls one agent session may hold (2 = two lines).
    pub max_per_agent: usize,
    /// On SIGTERM, how long active calls may continue before they are ended (new calls are
    /// refused at once and `/readyz` turns 503). A second SIGTERM ends them immediately.
    #[serde(with = "secs")]
    pub drain_timeout: Duration,
    /// Present a second inbound call while the agent is on a call (call waiting); when false
    /// the PBX gets 486 Busy Here instead.
    pub call_waiting: bool,
    /// How long a session's calls and registration are kept after its WebSocket drops
    /// (network loss, page reload) for the browser to resume it; 0 ends them at once.
    #[serde(with = "secs")]
    pub resume_grace: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Pretty,
    /// One JSON object per line for log shippers.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `gateway=debug,rsipstack=warn`.
    pub level: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            metrics_token: None,
            node_id: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_reload_interval: Duration::from_secs(5),
        }
    }
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 20000)),
            public_ip: None,
            workers: 0,
            realtime_priority: 0,
            busy_poll_us: 0,
            drain_interval_us: DEFAULT_DRAIN_INTERVAL_US,
            direct_srtp: true,
        }
    }
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)),
            transport: SipTransport::Udp,
            proxy: SocketAddr::from((Ipv4Addr::LOCALHOST, 5080)),
            domain: None,
            header_prefixes: vec!["X-".into()],
            ring_timeout: Duration::from_secs(120),
            call_uuid_header: "X-Call-UUID".into(),
            register_expires: 300,
            answer_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            secondary_proxy: None,
            dtmf_mode: DtmfModeSetting::Rfc4733,
            srtp: SrtpSetting::Off,
            trusted_sources: Vec::new(),
            tls_ca_file: None,
            tls_server_name: None,
        }
    }
}

impl Default for RtpSettings {
    fn default() -> Self {
        RtpSettings {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 30000,
            port_max: 39999,
            sockets: RtpSockets::Shared,
            inactivity_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            max_per_agent: 2,
            call_waiting: true,
            drain_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(30),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Pretty,
            level: "info,rsipstack=warn".into(),
        }
    }
}

/// Every setting as a flag and an environment variable; each one given wins over the file.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// HTTP/WebSocket listen address.
    #[arg(long, global = true, env = "CALLGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Bearer token required on /metrics.
    #[arg(
        long,
        global = true,
        env = "CALLGATE_HTTP_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub http_metrics_token: Option<String>,
    /// This node's name in resume tokens (default: the host name).
    #[arg(long, global = true, env = "CALLGATE_HTTP_NODE_ID")]
    pub http_node_id: Option<String>,
    /// PEM certificate chain for HTTPS/wss.
    #[arg(long, global = true, env = "CALLGATE_HTTP_TLS_CERT_FILE")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS/wss.
    #[arg(long, global = true, env = "CALLGATE_HTTP_TLS_KEY_FILE")]
    pub http_tls_key_file: Option<PathBuf>,
    /// Seconds between checks of the certificate files (0 = on SIGHUP only).
    #[arg(long, global = true, env = "CALLGATE_HTTP_TLS_RELOAD_INTERVAL")]
    pub http_tls_reload_interval: Option<u64>,
    /// Allowed WebSocket origins (comma-separated; empty: any).
    #[arg(
        long,
        global = true,
        env = "CALLGATE_LIMITS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub limits_allowed_origins: Option<Vec<String>>,
    /// Open WebSockets per client IP.
    #[arg(long, global = true, env = "CALLGATE_LIMITS_MAX_CONNECTIONS_PER_IP")]
    pub limits_max_connections_per_ip: Option<usize>,
    /// Calls per agent per minute.
    #[arg(long, global = true, env = "CALLGATE_LIMITS_CALLS_PER_MINUTE")]
    pub limits_calls_per_minute: Option<u32>,
    /// Concurrent calls for the whole gateway.
    #[arg(long, global = true, env = "CALLGATE_LIMITS_MAX_CALLS")]
    pub limits_max_calls: Option<usize>,
    /// Dial-plan patterns for every agent (comma-separated regular expressions).
    #[arg(
        long,
        global = true,
        env = "CALLGATE_DIALPLAN_ALLOW",
        value_delimiter = ','
    )]
    pub dialplan_allow: Option<Vec<String>>,
    /// Per-extension dial-plan patterns as `EXT=PATTERN` items separated by `;` (patterns may
    /// contain commas); repeat an extension for several patterns.
    #[arg(
        long,
        global = true,
        env = "CALLGATE_DIALPLAN_AGENTS",
        value_delimiter = ';',
        value_parser = parse_agent_pattern
    )]
    pub dialplan_agents: Option<Vec<(String, String)>>,
    /// Addresses allowed to send INVITE/MESSAGE to agents (comma-separated; default: the proxy).
    #[arg(
        long,
        global = true,
        env = "CALLGATE_SIP_TRUSTED_SOURCES",
        value_delimiter = ','
    )]
    pub sip_trusted_sources: Option<Vec<IpAddr>>,
    /// WebRTC UDP bind address (worker i uses port+i).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_BIND")]
    pub webrtc_bind: Option<SocketAddr>,
    /// Public IP advertised in ICE candidates.
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_PUBLIC_IP")]
    pub webrtc_public_ip: Option<IpAddr>,
    /// Media worker threads (0 = one per core).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_WORKERS")]
    pub webrtc_workers: Option<usize>,
    /// SCHED_FIFO priority of the media workers (1-99; 0 = off).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_REALTIME_PRIORITY")]
    pub webrtc_realtime_priority: Option<u8>,
    /// µs a media worker polls without sleeping after its last datagram (0 = off, at most 10000).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_BUSY_POLL_US")]
    pub webrtc_busy_poll_us: Option<u32>,
    /// While datagrams keep coming, µs between a media worker's reads of its sockets (0 = off: it wakes per datagram; 50-5000; ignored while busy polling).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_DRAIN_INTERVAL_US")]
    pub webrtc_drain_interval_us: Option<u32>,
    /// The media workers relay the browser's RTP with its DTLS-SRTP keys themselves and keep the set-up leg without str0m (true: less CPU and memory) or pass everything through str0m (false).
    #[arg(long, global = true, env = "CALLGATE_WEBRTC_DIRECT_SRTP")]
    pub webrtc_direct_srtp: Option<bool>,
    /// SIP listen address.
    #[arg(long, global = true, env = "CALLGATE_SIP_LISTEN")]
    pub sip_listen: Option<SocketAddr>,
    /// SIP transport for outgoing requests.
    #[arg(long, global = true, env = "CALLGATE_SIP_TRANSPORT")]
    pub sip_transport: Option<SipTransport>,
    /// PBX / outbound proxy address.
    #[arg(long, global = true, env = "CALLGATE_SIP_PROXY")]
    pub sip_proxy: Option<SocketAddr>,
    /// Secondary proxy used while the primary is unreachable.
    #[arg(long, global = true, env = "CALLGATE_SIP_SECONDARY_PROXY")]
    pub sip_secondary_proxy: Option<SocketAddr>,
    /// SIP domain for From/To/Request-URI.
    #[arg(long, global = true, env = "CALLGATE_SIP_DOMAIN")]
    pub sip_domain: Option<String>,
    /// Allowed prefixes for browser-supplied SIP headers (comma-separated).
    #[arg(
        long,
        global = true,
        env = "CALLGATE_SIP_HEADER_PREFIXES",
        value_delimiter = ','
    )]
    pub sip_header_prefixes: Option<Vec<String>>,
    /// Registration expiry asked of the PBX, in seconds.
    #[arg(long, global = true, env = "CALLGATE_SIP_REGISTER_EXPIRES")]
    pub sip_register_expires: Option<u32>,
    /// Seconds an inbound call rings for the agent before 480.
    #[arg(long, global = true, env = "CALLGATE_SIP_ANSWER_TIMEOUT")]
    pub sip_answer_timeout: Option<u64>,
    /// Header carrying the call UUID on outbound INVITEs.
    #[arg(long, global = true, env = "CALLGATE_SIP_CALL_UUID_HEADER")]
    pub sip_call_uuid_header: Option<String>,
    /// DTMF towards the PBX: rfc4733, info or both.
    #[arg(long, global = true, env = "CALLGATE_SIP_DTMF_MODE")]
    pub sip_dtmf_mode: Option<DtmfModeSetting>,
    /// SRTP (SDES) on the SIP leg: off, optional or mandatory.
    #[arg(long, global = true, env = "CALLGATE_SIP_SRTP")]
    pub sip_srtp: Option<SrtpSetting>,
    /// Seconds an outbound call may ring before callgate cancels it.
    #[arg(long, global = true, env = "CALLGATE_SIP_RING_TIMEOUT")]
    pub sip_ring_timeout: Option<u64>,
    /// Seconds between OPTIONS pings to the PBX (0 = off; 1-150 with `sip.transport = "tls"`, whose
    /// connection is closed after 300 s idle).
    #[arg(long, global = true, env = "CALLGATE_SIP_KEEPALIVE_INTERVAL")]
    pub sip_keepalive_interval: Option<u64>,
    /// PEM CA certificates trusted for the PBX's TLS certificate.
    #[arg(long, global = true, env = "CALLGATE_SIP_TLS_CA_FILE")]
    pub sip_tls_ca_file: Option<PathBuf>,
    /// Name verified in the PBX's TLS certificate (default: the proxy's IP).
    #[arg(long, global = true, env = "CALLGATE_SIP_TLS_SERVER_NAME")]
    pub sip_tls_server_name: Option<String>,
    /// Local IP for SIP-leg RTP.
    #[arg(long, global = true, env = "CALLGATE_RTP_IP")]
    pub rtp_ip: Option<IpAddr>,
    /// Lowest SIP-leg RTP port.
    #[arg(long, global = true, env = "CALLGATE_RTP_PORT_MIN")]
    pub rtp_port_min: Option<u16>,
    /// Highest SIP-leg RTP port.
    #[arg(long, global = true, env = "CALLGATE_RTP_PORT_MAX")]
    pub rtp_port_max: Option<u16>,
    /// SIP-leg RTP sockets: shared (per media worker) or per_call.
    #[arg(long, global = true, env = "CALLGATE_RTP_SOCKETS")]
    pub rtp_sockets: Option<RtpSockets>,
    /// Seconds without media on a leg before the call ends.
    #[arg(long, global = true, env = "CALLGATE_RTP_INACTIVITY_TIMEOUT")]
    pub rtp_inactivity_timeout: Option<u64>,
    /// Simultaneous calls per agent.
    #[arg(long, global = true, env = "CALLGATE_CALLS_MAX_PER_AGENT")]
    pub calls_max_per_agent: Option<usize>,
    /// Seconds active calls may continue after SIGTERM.
    #[arg(long, global = true, env = "CALLGATE_CALLS_DRAIN_TIMEOUT")]
    pub calls_drain_timeout: Option<u64>,
    /// Seconds a dropped session's calls wait for the browser to resume (0 = off).
    #[arg(long, global = true, env = "CALLGATE_CALLS_RESUME_GRACE")]
    pub calls_resume_grace: Option<u64>,
    /// Present a second inbound call during a call (false: 486 Busy Here).
    #[arg(long, global = true, env = "CALLGATE_CALLS_CALL_WAITING")]
    pub calls_call_waiting: Option<bool>,
    /// Log format.
    #[arg(long, global = true, env = "CALLGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Homer collector for HEP v3 SIP capture (UDP address).
    #[arg(long, global = true, env = "CALLGATE_HEP_COLLECTOR")]
    pub hep_collector: Option<SocketAddr>,
    /// HEP capture agent id.
    #[arg(long, global = true, env = "CALLGATE_HEP_CAPTURE_ID")]
    pub hep_capture_id: Option<u32>,
    /// Webhook delivery attempts per event.
    #[arg(long, global = true, env = "CALLGATE_WEBHOOKS_MAX_ATTEMPTS")]
    pub webhooks_max_attempts: Option<u32>,
    /// Milliseconds before the first webhook retry.
    #[arg(long, global = true, env = "CALLGATE_WEBHOOKS_FIRST_RETRY_MS")]
    pub webhooks_first_retry_ms: Option<u64>,
    /// Per-attempt webhook timeout in seconds.
    #[arg(long, global = true, env = "CALLGATE_WEBHOOKS_TIMEOUT_SECS")]
    pub webhooks_timeout_secs: Option<u64>,
    /// Webhook events held at most.
    #[arg(long, global = true, env = "CALLGATE_WEBHOOKS_QUEUE")]
    pub webhooks_queue: Option<usize>,
    /// CRM webhook URL (`http://…` or `https://…`).
    #[arg(long, global = true, env = "CALLGATE_WEBHOOKS_URL")]
    pub webhooks_url: Option<String>,
    /// CRM webhook HMAC secret.
    #[arg(
        long,
        global = true,
        env = "CALLGATE_WEBHOOKS_SECRET",
        hide_env_values = true
    )]
    pub webhooks_secret: Option<String>,
    /// Log filter, e.g. `info` or `gateway=debug`.
    #[arg(long, global = true, env = "CALLGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Accept extension + SIP password logins (true/false).
    #[arg(long, global = true, env = "CALLGATE_AUTH_PASSWORD_MODE")]
    pub auth_password_mode: Option<bool>,
    /// HS256 secret for CRM-minted tokens.
    #[arg(
        long,
        global = true,
        env = "CALLGATE_AUTH_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub auth_token_secret: Option<String>,
    /// PEM file with the ES256 public key for CRM-minted tokens.
    #[arg(long, global = true, env = "CALLGATE_AUTH_TOKEN_PUBLIC_KEY_FILE")]
    pub auth_token_public_key_file: Option<PathBuf>,
    /// Required token issuer (`iss`).
    #[arg(long, global = true, env = "CALLGATE_AUTH_TOKEN_ISSUER")]
    pub auth_token_issuer: Option<String>,
    /// Required token audience (`aud`).
    #[arg(long, global = true, env = "CALLGATE_AUTH_TOKEN_AUDIENCE")]
    pub auth_token_audience: Option<String>,
    /// Seconds of clock skew tolerated on token `exp`/`nbf`.
    #[arg(long, global = true, env = "CALLGATE_AUTH_TOKEN_LEEWAY_SECS")]
    pub auth_token_leeway_secs: Option<u64>,
    /// TOML file of SIP credentials per extension for token logins.
    #[arg(long, global = true, env = "CALLGATE_AUTH_CREDENTIALS_FILE")]
    pub auth_credentials_file: Option<PathBuf>,
    /// CRM URL answering SIP credentials for an extension.
    #[arg(long, global = true, env = "CALLGATE_AUTH_CREDENTIALS_URL")]
    pub auth_credentials_url: Option<String>,
    /// Bearer token for the credentials URL.
    #[arg(
        long,
        global = true,
        env = "CALLGATE_AUTH_CREDENTIALS_BEARER",
        hide_env_values = true
    )]
    pub auth_credentials_bearer: Option<String>,
    /// Milliseconds a credential lookup may take.
    #[arg(long, global = true, env = "CALLGATE_AUTH_CREDENTIALS_TIMEOUT_MS")]
    pub auth_credentials_timeout_ms: Option<u64>,
    /// Seconds between checks of the credentials file (0 = on SIGHUP only).
    #[arg(long, global = true, env = "CALLGATE_AUTH_CREDENTIALS_RELOAD_INTERVAL")]
    pub auth_credentials_reload_interval: Option<u64>,
    /// Seconds before a session token's expiry that the page is warned.
    #[arg(long, global = true, env = "CALLGATE_AUTH_TOKEN_EXPIRY_WARNING_SECS")]
    pub auth_token_expiry_warning_secs: Option<u64>,
    /// Accept each token (its jti) only once.
    #[arg(long, global = true, env = "CALLGATE_AUTH_SINGLE_USE_TOKENS")]
    pub auth_single_use_tokens: Option<bool>,
    /// PEM file of extra CA certificates for outbound https (webhooks, credential lookup).
    #[arg(long, global = true, env = "CALLGATE_HTTP_CLIENT_EXTRA_CA_FILE")]
    pub http_client_extra_ca_file: Option<PathBuf>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// Values parse but make no sense together.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Reads `file` (if any), applies `overrides`, then validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let mut settings = match file {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        settings.apply(overrides);
        settings.validate()?;
        Ok(settings)
    }

    /// Parses a TOML file without validating it.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text; the error names the offending key and position.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies every override that was given.
    pub fn apply(&mut self, o: &Overrides) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        set(&mut self.http.listen, &o.http_listen);
        if o.http_metrics_token.is_some() {
            self.http.metrics_token = o.http_metrics_token.clone();
        }
        if o.http_node_id.is_some() {
            self.http.node_id = o.http_node_id.clone();
        }
        if o.http_tls_cert_file.is_some() {
            self.http.tls_cert_file = o.http_tls_cert_file.clone();
        }
        if o.http_tls_key_file.is_some() {
            self.http.tls_key_file = o.http_tls_key_file.clone();
        }
        if let Some(secs) = o.http_tls_reload_interval {
            self.http.tls_reload_interval = Duration::from_secs(secs);
        }
        if o.sip_tls_ca_file.is_some() {
            self.sip.tls_ca_file = o.sip_tls_ca_file.clone();
        }
        if o.sip_tls_server_name.is_some() {
            self.sip.tls_server_name = o.sip_tls_server_name.clone();
        }
        set(&mut self.limits.allowed_origins, &o.limits_allowed_origins);
        set(
            &mut self.limits.max_connections_per_ip,
            &o.limits_max_connections_per_ip,
        );
        set(
            &mut self.limits.calls_per_minute,
            &o.limits_calls_per_minute,
        );
        set(&mut self.limits.max_calls, &o.limits_max_calls);
        set(&mut self.dialplan.allow, &o.dialplan_allow);
        if let Some(pairs) = &o.dialplan_agents {
            let mut agents = std::collections::BTreeMap::<String, Vec<String>>::new();
            for (extension, pattern) in pairs {
                agents
                    .entry(extension.clone())
                    .or_default()
                    .push(pattern.clone());
            }
            self.dialplan.agents = agents;
        }
        set(&mut self.sip.trusted_sources, &o.sip_trusted_sources);
        set(&mut self.webrtc.bind, &o.webrtc_bind);
        if o.webrtc_public_ip.is_some() {
            self.webrtc.public_ip = o.webrtc_public_ip;
        }
        set(&mut self.webrtc.workers, &o.webrtc_workers);
        set(
            &mut self.webrtc.realtime_priority,
            &o.webrtc_realtime_priority,
        );
        set(&mut self.webrtc.busy_poll_us, &o.webrtc_busy_poll_us);
        set(
            &mut self.webrtc.drain_interval_us,
            &o.webrtc_drain_interval_us,
        );
        set(&mut self.webrtc.direct_srtp, &o.webrtc_direct_srtp);
        set(&mut self.sip.listen, &o.sip_listen);
        set(&mut self.sip.transport, &o.sip_transport);
        set(&mut self.sip.proxy, &o.sip_proxy);
        if o.sip_secondary_proxy.is_some() {
            self.sip.secondary_proxy = o.sip_secondary_proxy;
        }
        if o.sip_domain.is_some() {
            self.sip.domain = o.sip_domain.clone();
        }
        set(&mut self.sip.header_prefixes, &o.sip_header_prefixes);
        set(&mut self.sip.call_uuid_header, &o.sip_call_uuid_header);
        set(&mut self.sip.register_expires, &o.sip_register_expires);
        if let Some(secs) = o.sip_answer_timeout {
            self.sip.answer_timeout = Duration::from_secs(secs);
        }
        set(&mut self.sip.dtmf_mode, &o.sip_dtmf_mode);
        set(&mut self.sip.srtp, &o.sip_srtp);
        if let Some(secs) = o.sip_keepalive_interval {
            self.sip.keepalive_interval = Duration::from_secs(secs);
        }
        if let Some(secs) = o.sip_ring_timeout {
            self.sip.ring_timeout = Duration::from_secs(secs);
        }
        set(&mut self.rtp.ip, &o.rtp_ip);
        set(&mut self.rtp.port_min, &o.rtp_port_min);
        set(&mut self.rtp.port_max, &o.rtp_port_max);
        set(&mut self.rtp.sockets, &o.rtp_sockets);
        if let Some(secs) = o.rtp_inactivity_timeout {
            self.rtp.inactivity_timeout = Duration::from_secs(secs);
        }
        set(&mut self.calls.max_per_agent, &o.calls_max_per_agent);
        set(&mut self.calls.call_waiting, &o.calls_call_waiting);
        if let Some(secs) = o.calls_drain_timeout {
            self.calls.drain_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = o.calls_resume_grace {
            self.calls.resume_grace = Duration::from_secs(secs);
        }
        set(&mut self.hep.capture_id, &o.hep_capture_id);
        set(&mut self.webhooks.max_attempts, &o.webhooks_max_attempts);
        set(
            &mut self.webhooks.first_retry_ms,
            &o.webhooks_first_retry_ms,
        );
        set(&mut self.webhooks.timeout_secs, &o.webhooks_timeout_secs);
        set(&mut self.webhooks.queue, &o.webhooks_queue);
        if o.hep_collector.is_some() {
            self.hep.collector = o.hep_collector;
        }
        if o.webhooks_url.is_some() {
            self.webhooks.url = o.webhooks_url.clone();
        }
        if o.webhooks_secret.is_some() {
            self.webhooks.secret = o.webhooks_secret.clone();
        }
        set(&mut self.log.format, &o.log_format);
        set(&mut self.log.level, &o.log_level);
        set(&mut self.auth.password_mode, &o.auth_password_mode);
        set(&mut self.auth.token_leeway_secs, &o.auth_token_leeway_secs);
        set(
            &mut self.auth.credentials_timeout_ms,
            &o.auth_credentials_timeout_ms,
        );
        set(
            &mut self.auth.token_expiry_warning_secs,
            &o.auth_token_expiry_warning_secs,
        );
        set(&mut self.auth.single_use_tokens, &o.auth_single_use_tokens);
        if let Some(secs) = o.auth_credentials_reload_interval {
            self.auth.credentials_reload_interval = Duration::from_secs(secs);
        }
        fn set_some<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                *slot = value.clone();
            }
        }
        set_some(&mut self.auth.token_secret, &o.auth_token_secret);
        set_some(
            &mut self.auth.token_public_key_file,
            &o.auth_token_public_key_file,
        );
        set_some(&mut self.auth.token_issuer, &o.auth_token_issuer);
        set_some(&mut self.auth.token_audience, &o.auth_token_audience);
        set_some(&mut self.auth.credentials_file, &o.auth_credentials_file);
        set_some(&mut self.auth.credentials_url, &o.auth_credentials_url);
        set_some(
            &mut self.auth.credentials_bearer,
            &o.auth_credentials_bearer,
        );
        set_some(
            &mut self.http_client.extra_ca_file,
            &o.http_client_extra_ca_file,
        );
    }

    /// Checks the values together and lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.rtp.port_min > self.rtp.port_max {
            problems.push(format!(
                "rtp.port_min ({}) is above rtp.port_max ({})",
                self.rtp.port_min, self.rtp.port_max
            ));
        }
        if self.rtp.port_min < 1024 {
            problems.push("rtp.port_min must be 1024 or above".into());
        }
        if self.rtp.port_max.saturating_sub(self.rtp.port_min) < 3 {
            problems.push("the RTP port range must hold at least two RTP/RTCP pairs".into());
        }
        if self.rtp.sockets == RtpSockets::Shared
            && self.rtp_pairs() >= 2
            && self.rtp_pairs() < self.worker_count()
        {
            problems.push(format!(
                "rtp.sockets = \"shared\" needs one RTP/RTCP pair per media worker: the range \
                 holds {} pairs for {} workers",
                self.rtp_pairs(),
                self.worker_count()
            ));
        }
        if self.rtp.inactivity_timeout < Duration::from_secs(2) {
            problems.push("rtp.inactivity_timeout must be at least 2 seconds".into());
        }
        if self.rtp.ip.is_unspecified() {
            problems.push("rtp.ip must be a concrete address: it is advertised in SDP".into());
        }
        if self.webrtc.bind.ip().is_unspecified() && self.webrtc.public_ip.is_none() {
            problems
                .push("webrtc.public_ip is required when webrtc.bind is a wildcard address".into());
        }
        if self.webrtc.bind.port() != 0
            && usize::from(self.webrtc.bind.port()) + self.worker_count() > 65536
        {
            problems.push("webrtc.bind port + workers exceeds 65535".into());
        }
        if self.webrtc.realtime_priority > 99 {
            problems.push("webrtc.realtime_priority must be 0 (off) or 1-99 (SCHED_FIFO)".into());
        }
        if self.webrtc.busy_poll_us > MAX_BUSY_POLL_US {
            problems.push(format!(
                "webrtc.busy_poll_us must be 0 (off) to {MAX_BUSY_POLL_US} (10 ms)"
            ));
        }
        let drain = self.webrtc.drain_interval_us;
        if drain != 0 && !DRAIN_INTERVAL_US.contains(&drain) {
            problems.push(format!(
                "webrtc.drain_interval_us must be 0 (off) or {} to {} µs",
                DRAIN_INTERVAL_US.start(),
                DRAIN_INTERVAL_US.end()
            ));
        }

        if self.sip.proxy.port() == 0 {
            problems.push("sip.proxy needs a port".into());
        }
        if let Some(node) = &self.http.node_id
            && (node.is_empty()
                || node.len() > 63
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            problems
                .push("http.node_id must be 1-63 characters of letters, digits, '-' or '_'".into());
        }
        if let Some(secondary) = self.sip.secondary_proxy {
            if secondary.port() == 0 {
                problems.push("sip.secondary_proxy needs a port".into());
            }
            if secondary == self.sip.proxy {
                problems.push("sip.secondary_proxy must differ from sip.proxy".into());
            }
            if self.sip.keepalive_interval.is_zero() {
                problems.push(
                    "sip.secondary_proxy needs sip.keepalive_interval > 0 (the keepalive decides which proxy is up)"
                        .into(),
                );
            }
        }
        // Over TLS the PBX reaches agents only on callgate's own connection, which is closed
        // after `STREAM_IDLE_CLOSE` without a message from the PBX: the OPTIONS answers keep
        // it busy, with room for one lost ping.
        let tls_keepalive_max = crate::sip::STREAM_IDLE_CLOSE / 2;
        if self.sip.transport == SipTransport::Tls
            && (self.sip.keepalive_interval.is_zero()
                || self.sip.keepalive_interval > tls_keepalive_max)
        {
            problems.push(format!(
                "sip.transport = \"tls\" needs sip.keepalive_interval between 1 and {} s: the PBX reaches agents only over callgate's own TLS connection, which is closed after {} s without a message from the PBX",
                tls_keepalive_max.as_secs(),
                crate::sip::STREAM_IDLE_CLOSE.as_secs()
            ));
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            problems.push("http.tls_cert_file and http.tls_key_file go together".into());
        }
        if let Some(name) = &self.sip.tls_server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            problems.push(format!(
                "sip.tls_server_name {name:?} is not a DNS name or an IP address"
            ));
        }
        if self.sip.header_prefixes.iter().any(|p| p.is_empty()) {
            problems.push("sip.header_prefixes must not contain an empty prefix".into());
        }
        let uuid_header_ok = !self.sip.call_uuid_header.is_empty()
            && self
                .sip
                .call_uuid_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !uuid_header_ok {
            problems.push("sip.call_uuid_header must be a header name (letters, digits, -)".into());
        }
        if !(30..=86_400).contains(&self.sip.register_expires) {
            problems.push("sip.register_expires must be 30-86400 seconds".into());
        }
        if self.sip.answer_timeout < Duration::from_secs(5) {
            problems.push("sip.answer_timeout must be at least 5 seconds".into());
        }
        if let Some(url) = &self.webhooks.url
            && !crate::http_client::is_reachable_url(url)
        {
            problems.push(format!(
                "webhooks.url {url:?} must be an http:// or https:// URL with a host"
            ));
        }
        problems.extend(self.auth_problems());
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            problems.push("webhooks.max_attempts and webhooks.queue must be at least 1".into());
        }
        for pattern in self
            .dialplan
            .allow
            .iter()
            .chain(self.dialplan.agents.values().flatten())
        {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!(
                    "dialplan pattern {pattern:?} is not a valid regular expression: {e}"
                ));
            }
        }
        if self.limits.max_connections_per_ip == 0
            || self.limits.calls_per_minute == 0
            || self.limits.max_calls == 0
        {
            problems.push(
                "limits.max_connections_per_ip, calls_per_minute and max_calls must be at least 1"
                    .into(),
            );
        }
        if self.calls.max_per_agent == 0 {
            problems.push("calls.max_per_agent must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// What is wrong with the `[auth]` section.
    fn auth_problems(&self) -> Vec<String> {
        let auth = &self.auth;
        let mut problems = Vec::new();
        if !auth.password_mode && !auth.token_mode() {
            problems.push(
                "auth.password_mode is off and no token key is set: nobody could log in".into(),
            );
        }
        if auth
            .token_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 32)
        {
            problems.push("auth.token_secret must be at least 32 bytes".into());
        }
        match (&auth.credentials_file, &auth.credentials_url) {
            (Some(_), Some(_)) => {
                problems.push("set auth.credentials_file or auth.credentials_url, not both".into())
            }
            (None, None) if auth.token_mode() => problems.push(
                "token mode needs auth.credentials_file or auth.credentials_url (the SIP \
                 password is looked up by callgate)"
                    .into(),
            ),
            _ => {}
        }
        if let Some(url) = &auth.credentials_url
            && !crate::http_client::is_reachable_url(url)
        {
            problems.push(format!(
                "auth.credentials_url {url:?} must be an http:// or https:// URL with a host"
            ));
        }
        if !(100..=10_000).contains(&auth.credentials_timeout_ms) {
            problems.push("auth.credentials_timeout_ms must be 100-10000".into());
        }
        if auth.token_leeway_secs > 300 {
            problems.push("auth.token_leeway_secs must be at most 300".into());
        }
        if auth.single_use_tokens && !auth.token_mode() {
            problems.push(
                "auth.single_use_tokens needs token mode (auth.token_secret or \
                 auth.token_public_key_file)"
                    .into(),
            );
        }
        if !(1..=3600).contains(&auth.token_expiry_warning_secs) {
            problems.push("auth.token_expiry_warning_secs must be 1-3600".into());
        }
        problems
    }

    /// RTP/RTCP pairs (even port and the next) in the configured range.
    pub fn rtp_pairs(&self) -> usize {
        let first = usize::from(self.rtp.port_min).next_multiple_of(2);
        (usize::from(self.rtp.port_max) + 1).saturating_sub(first) / 2
    }

    /// The media workers' shared RTP addresses start here (even port; worker `i` at + 2`i`),
    /// and per-call pairs are leased from the rest of the range; `None` with per-call sockets.
    pub fn shared_rtp_base(&self) -> Option<std::net::SocketAddr> {
        let first = self.rtp.port_min.checked_next_multiple_of(2)?;
        (self.rtp.sockets == RtpSockets::Shared)
            .then(|| std::net::SocketAddr::new(self.rtp.ip, first))
    }

    /// How long a media worker sleeps between two passes while datagrams keep coming: zero
    /// (wake on readiness) when the drain interval is off or busy polling replaces it.
    pub fn drain_interval(&self) -> Duration {
        if self.webrtc.busy_poll_us > 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(self.webrtc.drain_interval_us.into())
        }
    }

    /// Media worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.webrtc.workers > 0 {
            self.webrtc.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The IP put in ICE candidates.
    pub fn advertised_webrtc_ip(&self) -> IpAddr {
        self.webrtc.public_ip.unwrap_or(self.webrtc.bind.ip())
    }

    /// The SIP domain used in URIs.
    pub fn sip_domain(&self) -> String {
        self.sip
            .domain
            .clone()
            .unwrap_or_else(|| self.sip.proxy.ip().to_string())
    }
}

/// One setting as the configuration reference lists it (`docs/configuration.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingReference {
    /// The TOML table, e.g. `sip`.
    pub section: String,
    /// The key inside the table, e.g. `ring_timeout`.
    pub key: String,
    /// The default as a TOML literal; `None` when the default is "unset".
    pub default: Option<String>,
    /// The flag, e.g. `--sip-ring-timeout`; `None` when the setting has none.
    pub flag: Option<String>,
    /// The environment variable, e.g. `CALLGATE_SIP_RING_TIMEOUT`.
    pub env: Option<String>,
    /// The flag's help text (what `callgate --help` prints).
    pub help: String,
    /// `(value, help)` for settings with a closed set of values.
    pub values: Vec<(String, String)>,
}

impl Settings {
    /// Every setting, in declaration order, derived from the types so that the reference
    /// cannot drift: tables and keys come from serde's own list of the fields each table
    /// accepts (the message `deny_unknown_fields` gives for an unknown key), defaults from
    /// `Settings::default()` serialized to TOML, flags, environment variables and help from
    /// the clap arguments of [`Overrides`] (flag `--<table>-<key>`).
    pub fn reference() -> Vec<SettingReference> {
        use clap::Args as _;
        let defaults: toml::Table = toml::to_string(&Settings::default())
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_default();
        let command = Overrides::augment_args(clap::Command::new("callgate"));
        let mut out = Vec::new();
        for section in accepted_fields("") {
            for key in accepted_fields(&format!("[{section}]\n")) {
                let id = format!("{section}_{key}");
                let arg = command.get_arguments().find(|a| a.get_id().as_str() == id);
                let default = defaults
                    .get(&section)
                    .and_then(|table| table.get(&key))
                    .map(|value| value.to_string());
                out.push(SettingReference {
                    default,
                    flag: arg.and_then(|a| a.get_long()).map(|l| format!("--{l}")),
                    env: arg
                        .and_then(|a| a.get_env())
                        .map(|e| e.to_string_lossy().into_owned()),
                    help: arg
                        .and_then(|a| a.get_help())
                        .map(|h| h.to_string())
                        .unwrap_or_default(),
                    values: arg
                        .map(|a| {
                            a.get_possible_values()
                                .iter()
                                .filter(|v| !v.is_hide_set())
                                .map(|v| {
                                    let help = v.get_help().map(|h| h.to_string());
                                    (v.get_name().to_string(), help.unwrap_or_default())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    section: section.clone(),
                    key,
                });
            }
        }
        out
    }

    /// The ids of the [`Overrides`] arguments (`sip_ring_timeout`, …), for checking that
    /// each one names a setting.
    pub fn override_ids() -> Vec<String> {
        use clap::Args as _;
        Overrides::augment_args(clap::Command::new("callgate"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    /// `docs/configuration.md`: every setting with its TOML key, flag, environment
    /// variable, default and help, then the defaults as a file.
    pub fn reference_markdown() -> String {
        use std::fmt::Write as _;
        let cell = |text: &str| text.replace('|', "\\|");
        let mut md = String::new();
        md.push_str(
            "# Configuration reference\n\n\
             <!-- Generated from gateway/src/config (Settings, Overrides) by \
             gateway/tests/it/references.rs. Do not edit: run \
             `UPDATE_REFERENCES=1 cargo test -p gateway --test it references`. -->\n\n\
             callgate reads one TOML file (`--config FILE`, `-c FILE` or `CALLGATE_CONFIG`), \
             then `CALLGATE_*` environment variables, then flags: a flag wins over the \
             environment, which wins over the file. Every key is optional. The whole \
             configuration is validated at once before any socket is bound; \
             `callgate check-config FILE` prints every problem of a file (exit code 2). \
             Durations are whole seconds. A list given as a flag or variable is \
             comma-separated.\n\n\
             Examples: `deploy/callgate.example.toml` (annotated), \
             `deploy/docker/callgate.toml` (the container image's default), \
             `deploy/compose/*/callgate.toml`, and the Helm chart's `config:` value.\n",
        );
        let settings = Settings::reference();
        let mut section = String::new();
        for s in &settings {
            if s.section != section {
                section = s.section.clone();
                let _ = write!(
                    md,
                    "\n## `[{section}]`\n\n\
                     | key | flag | environment | default | meaning |\n\
                     |---|---|---|---|---|\n"
                );
            }
            let mut meaning = cell(&s.help);
            if !meaning.is_empty() && !meaning.ends_with('.') {
                meaning.push('.');
            }
            if !s.values.is_empty() {
                let values: Vec<String> = s
                    .values
                    .iter()
                    .map(|(v, h)| {
                        if h.is_empty() {
                            format!("`{v}`")
                        } else {
                            format!("`{v}` ({})", cell(h))
                        }
                    })
                    .collect();
                let _ = write!(meaning, " One of: {}.", values.join(", "));
            }
            let code = |v: &Option<String>, none: &str| {
                v.as_ref()
                    .map(|v| format!("`{}`", cell(v)))
                    .unwrap_or_else(|| none.to_string())
            };
            let _ = writeln!(
                md,
                "| `{}.{}` | {} | {} | {} | {} |",
                s.section,
                s.key,
                code(&s.flag, "—"),
                code(&s.env, "—"),
                code(&s.default, "unset"),
                meaning.trim()
            );
        }
        let defaults = toml::to_string(&Settings::default()).unwrap_or_default();
        let _ = write!(
            md,
            "\n## The defaults as a file\n\n\
             Settings whose default is \"unset\" are absent.\n\n\
             ```toml\n{}\n```\n",
            defaults.trim()
        );
        md
    }
}

/// The field names a table of the file accepts, in declaration order: serde lists them in
/// the error for an unknown key (`unknown field `…`, expected one of `a`, `b``).
/// `prefix` is the table header (`"[sip]\n"`), or empty for the top level.
fn accepted_fields(prefix: &str) -> Vec<String> {
    const PROBE: &str = "__callgate_reference_probe__";
    let Err(message) = Settings::from_toml(&format!("{prefix}{PROBE} = 0\n")) else {
        return Vec::new();
    };
    let Some((_, expected)) = message.split_once("expected") else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| *name != PROBE)
        .map(str::to_string)
        .collect()
}

/// Durations are whole seconds in the file, the way operators write them.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests;
