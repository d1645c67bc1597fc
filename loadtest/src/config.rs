//! What a load run is asked to do, as validated values: a [`RunConfig`] cannot hold a
//! non-loopback URL, a zero concurrency or a non-positive rate (design.md §2.7). The parsers
//! here are shared by the command line (`cli`) and by library callers such as tests.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

/// Longest accepted `--duration-limit`, `--hold` or `--ramp`: one day.
pub const MAX_SECONDS: f64 = 86_400.0;
/// Highest accepted `--rate` (new calls per second).
pub const MAX_RATE: f64 = 10_000.0;
/// Highest accepted `--concurrency`: each simulated call holds two loopback UDP sockets (its
/// own and the builtin trunk's) and each agent a TCP connection.
pub const MAX_CONCURRENCY: u32 = 20_000;
/// Highest accepted `--calls`.
pub const MAX_CALLS: u64 = 10_000_000;

/// A `ws://` URL on a loopback host, e.g. `ws://127.0.0.1:8080/ws`.
///
/// Loopback only: the simulated browsers bind their media sockets on 127.0.0.1, and the load
/// generator is a lab tool, not something to point at a production node (design.md §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl(String);

impl WsUrl {
    /// Parses and checks `text`; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<WsUrl, String> {
        const EXPECTED: &str = "expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH on loopback, \
             e.g. ws://127.0.0.1:8080/ws";
        let lower = text.to_ascii_lowercase();
        let scheme_len = if lower.starts_with("ws://") {
            "ws://".len()
        } else if lower.starts_with("wss://") {
            "wss://".len()
        } else {
            return Err(format!("not a WebSocket URL: {text:?}; {EXPECTED}"));
        };
        let rest = text.get(scheme_len..).unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if path.is_empty() {
            return Err(format!(
                "{text:?} has no path (callgate serves /ws); {EXPECTED}"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not supported; {EXPECTED}"
            ));
        }
        let host = host_of(authority)
            .ok_or_else(|| format!("{text:?} has no valid HOST[:PORT]; {EXPECTED}"))?;
        if !is_loopback_host(host) {
            return Err(format!(
                "{text:?} is not on loopback ({host}): the load generator runs on loopback only; {EXPECTED}"
            ));
        }
        Ok(WsUrl(text.to_string()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the URL is `wss://` (callgate serves HTTPS; `/metrics` is fetched over TLS too).
    pub fn is_tls(&self) -> bool {
        self.0.to_ascii_lowercase().starts_with("wss://")
    }

    /// `HOST[:PORT]` of the URL: where callgate's HTTP endpoints (`/metrics`) are too.
    pub fn authority(&self) -> &str {
        let scheme_len = if self.is_tls() { "wss://" } else { "ws://" }.len();
        let rest = self.0.get(scheme_len..).unwrap_or_default();
        rest.split('/').next().unwrap_or(rest)
    }
}

impl std::fmt::Display for WsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host of `host[:port]` or `[v6]:port`, if the port (when present) is a number.
fn host_of(authority: &str) -> Option<&str> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some(host),
            port => port.strip_prefix(':')?.parse::<u16>().ok().map(|_| host),
        };
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    Some(host)
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// New calls per second: finite, above zero, at most [`MAX_RATE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    /// Checks `per_second`.
    pub fn new(per_second: f64) -> Result<Rate, String> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!(
                "must be a number of calls per second above 0 (got {per_second})"
            ));
        }
        if per_second > MAX_RATE {
            return Err(format!(
                "must be at most {MAX_RATE} calls per second (got {per_second})"
            ));
        }
        Ok(Rate(per_second))
    }

    /// Parses a command-line value.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("must be a number of calls per second above 0 (got {text:?})"))?;
        Rate::new(value)
    }

    /// Calls per second.
    pub fn per_second(self) -> f64 {
        self.0
    }
}

/// Parses seconds (`3`, `0.5`): finite, at least 0, at most [`MAX_SECONDS`].
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("must be a number of seconds (got {text:?})"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "must be a number of seconds, 0 or more (got {text:?})"
        ));
    }
    if value > MAX_SECONDS {
        return Err(format!(
            "must be at most {MAX_SECONDS} seconds (got {text:?})"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Like [`parse_seconds`], but 0 is refused (a time limit or timeout of zero ends at once).
pub fn parse_positive_seconds(text: &str) -> Result<Duration, String> {
    let seconds = parse_seconds(text)?;
    if seconds.is_zero() {
        return Err(format!("must be more than 0 seconds (got {text:?})"));
    }
    Ok(seconds)
}

/// Parses `--concurrency`: 1 to [`MAX_CONCURRENCY`].
pub fn parse_concurrency(text: &str) -> Result<NonZeroU32, String> {
    let value: u32 = text.trim().parse().map_err(|_| {
        format!("must be a whole number of simultaneous calls, 1 or more (got {text:?})")
    })?;
    if value > MAX_CONCURRENCY {
        return Err(format!("must be at most {MAX_CONCURRENCY} (got {value})"));
    }
    NonZeroU32::new(value).ok_or_else(|| "must be at least 1 (got 0)".to_string())
}

/// Parses `--calls`: 1 to [`MAX_CALLS`].
pub fn parse_calls(text: &str) -> Result<u64, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("must be a whole number of calls, 1 or more (got {text:?})"))?;
    match value {
        0 => Err("must be at least 1 (got 0)".to_string()),
        v if v > MAX_CALLS => Err(format!("must be at most {MAX_CALLS} (got {v})")),
        v => Ok(v),
    }
}

/// Parses `--to`: a SIP user part without spaces or URI punctuation (`echo`, `+4930123`).
pub fn parse_number(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "must be a dialable number or name: 1-64 of A-Z a-z 0-9 + - _ . * # (got {text:?})"
        ))
    }
}

/// Parses a loopback `IP:PORT` (the builtin trunk's SIP address).
pub fn parse_loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("must be IP:PORT, e.g. 127.0.0.1:5090 (got {text:?})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the builtin trunk runs on loopback only"
        ));
    }
    Ok(addr)
}

/// Everything one load run needs; the binary builds it from flags, tests build it directly
/// (start from [`RunConfig::new`]).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// callgate's WebSocket endpoint.
    pub url: WsUrl,
    /// Calls to place in total.
    pub calls: u64,
    /// Most calls up at once; also the number of simulated agents (one call each at a time).
    pub concurrency: NonZeroU32,
    /// New calls per second once the ramp is over.
    pub rate: Rate,
    /// The rate grows linearly from 0 to `rate` over this time.
    pub ramp: Duration,
    /// Talk time of each call, from `call_answered` to our hangup.
    pub hold: Duration,
    /// Hard bound on the run: no call starts after it, calls in progress are hung up and the
    /// run reports within a few seconds more (see `run::WIND_DOWN`).
    pub duration_limit: Duration,
    /// The number every call dials.
    pub to: String,
    /// Agent `i` says hello as extension `extension_base + i`.
    pub extension_base: u32,
    /// The SIP password every agent sends in `hello`.
    pub password: String,
    /// callgate's process id, to read its CPU time and RSS from `/proc`.
    pub gateway_pid: Option<u32>,
    /// How long a call may take from the `call` request to `call_answered` and then to ICE+DTLS
    /// connected before it counts as failed.
    pub setup_timeout: Duration,
    /// How often `/proc` is sampled.
    pub sample_interval: Duration,
    /// PEM CA certificates trusted for a `wss://` URL instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Worker threads of the runtime the generator runs on, for the bottleneck verdict (the
    /// binary sets it; `None` means all cores).
    pub generator_threads: Option<usize>,
    /// Each agent sends `register` after `hello` (and `unregister` before it leaves).
    pub register: bool,
    /// Each agent closes its WebSocket and connects again (hello, and register when
    /// `register`) after this many calls: session and registration churn for the soak.
    pub reconnect_every: Option<u64>,
    /// Send every call's audio frames at their exact slot instants from one pacing thread
    /// (spread over the frame interval, as real browsers' arrive) instead of on the
    /// runtime's 1 ms timer ticks, which bunch them (see `browser::FramePacer`).
    pub pace_frames: bool,
}

impl RunConfig {
    /// Defaults for everything but the URL: 10 calls, 10 at once, 10 per second, 10 s hold,
    /// a 60 s limit, dialling `echo` as extensions 2000…
    pub fn new(url: WsUrl) -> RunConfig {
        RunConfig {
            url,
            calls: 10,
            concurrency: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            rate: Rate(10.0),
            ramp: Duration::ZERO,
            hold: Duration::from_secs(10),
            duration_limit: Duration::from_secs(60),
            to: "echo".into(),
            extension_base: 2000,
            password: "loadtest".into(),
            gateway_pid: None,
            setup_timeout: Duration::from_secs(10),
            sample_interval: Duration::from_millis(500),
            ca_pem: None,
            generator_threads: None,
            register: false,
            reconnect_every: None,
            pace_frames: false,
        }
    }

    /// Simulated agents the run opens: one per concurrent call, no more than there are calls.
    pub fn agents(&self) -> u32 {
        let calls = u32::try_from(self.calls).unwrap_or(u32::MAX);
        self.concurrency.get().min(calls.max(1))
    }

    /// When the last call is scheduled to start (ignoring the concurrency bound), from the
    /// start of the schedule.
    pub fn schedule_length(&self) -> Duration {
        schedule_offset(self.calls.saturating_sub(1), self.rate, self.ramp)
    }
}

/// When call `k` (0-based) is due, counted from the start of the schedule: the rate grows
/// linearly from 0 to `rate` over `ramp`, then stays at `rate`. Call `k` is due when the
/// integral of the rate reaches `k`, so call 0 is due at once.
pub fn schedule_offset(k: u64, rate: Rate, ramp: Duration) -> Duration {
    let r = rate.per_second();
    let ramp_s = ramp.as_secs_f64();
    let k = k as f64;
    // Calls placed during the ramp: the area of the triangle.
    let ramp_calls = r * ramp_s / 2.0;
    let seconds = if k <= ramp_calls && ramp_s > 0.0 {
        (2.0 * k * ramp_s / r).sqrt()
    } else {
        ramp_s + (k - ramp_calls) / r
    };
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}
