//! The `loadtest` command line: flags → validated [`Options`], with errors that say what is
//! wrong and exit with code 2. Kept in the library so the parser is unit tested.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

use crate::config::{
    Rate, RunConfig, WsUrl, parse_calls, parse_concurrency, parse_loopback_addr, parse_number,
    parse_positive_seconds, parse_seconds,
};
use crate::procfs::{self, Process};

/// Where the calls go after callgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrunkMode {
    /// This process runs a minimal SIP trunk (UAS over UDP, echoes RTP) on `--trunk-bind`;
    /// callgate must use it as its proxy (`--sip-proxy`).
    Builtin,
    /// callgate's proxy is something else: SIPp, the demo PBX of `callgate demo`, a PBX.
    External,
}

/// Drive simulated browsers (WebSocket + WebRTC with full ICE, DTLS-SRTP, G.711 frames
/// carrying sequence numbers and send times) against a running callgate, and report.
///
/// Loopback only; the run is bounded by --duration-limit and stops by itself.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    /// callgate's WebSocket endpoint (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws", value_parser = WsUrl::parse)]
    url: WsUrl,
    /// Calls to place in total [default: 10; 10000 with --soak].
    #[arg(long, value_parser = parse_calls)]
    calls: Option<u64>,
    /// Most calls up at the same time; also the number of simulated agents.
    #[arg(long, default_value = "10", value_parser = parse_concurrency)]
    concurrency: NonZeroU32,
    /// New calls per second (after the ramp).
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = Rate::parse)]
    rate: Rate,
    /// Seconds over which the call rate grows linearly from 0 to --rate.
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = parse_seconds)]
    ramp: Duration,
    /// Talk time of each call in seconds (answer → hangup), sending G.711 frames.
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = parse_seconds)]
    hold: Duration,
    /// Hard bound on the run in seconds: then no call starts, calls in progress are hung up,
    /// and the report is printed (at most ~9 s later: 5 s for hangups, then callgate's /metrics).
    #[arg(long, default_value = "60", allow_negative_numbers = true, value_parser = parse_positive_seconds)]
    duration_limit: Duration,
    /// Seconds a call may take to be answered and get its media connected.
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = parse_positive_seconds)]
    setup_timeout: Duration,
    /// The number every call dials.
    #[arg(long, default_value = "echo", value_parser = parse_number)]
    to: String,
    /// Agent i says hello as extension extension-base + i.
    #[arg(long, default_value_t = 2000)]
    extension_base: u32,
    /// SIP password the agents send in hello.
    #[arg(
        long,
        default_value = "loadtest",
        env = "LOADTEST_PASSWORD",
        hide_env_values = true
    )]
    password: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Also draw callgate's CPU and the echo round trip against concurrent calls, as SVG, to
    /// this file (`.svg`).
    #[arg(long, value_parser = parse_chart_path, conflicts_with = "idle_agents")]
    chart: Option<PathBuf>,
    /// callgate's process id: its CPU time and RSS are read from /proc/PID.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// builtin: run a minimal SIP trunk in this process; external: SIPp, the demo PBX, a PBX.
    #[arg(long, value_enum, default_value_t = TrunkMode::Builtin)]
    trunk: TrunkMode,
    /// SIP address of the builtin trunk (loopback) [default: 127.0.0.1:5090].
    #[arg(long, value_parser = parse_loopback_addr)]
    trunk_bind: Option<SocketAddr>,
    /// Worker threads of the load generator [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// PEM CA certificates trusted for a wss:// --url (e.g. a private CA) instead of the
    /// system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Each agent registers with the PBX through callgate after hello (and unregisters
    /// before it leaves).
    #[arg(long)]
    register: bool,
    /// Each agent closes its WebSocket and connects again after this many calls (session and
    /// registration churn).
    #[arg(long, value_parser = parse_calls)]
    reconnect_every: Option<u64>,
    /// Send each call's audio frames at their exact slot instants from one pacing thread,
    /// spread over the 20 ms frame interval as real browsers' arrive, instead of on the
    /// runtime's 1 ms timer ticks (which hand callgate ~calls/20 frames at once).
    #[arg(long, conflicts_with = "idle_agents")]
    pace_frames: bool,
    /// Soak: read callgate's descriptors, threads, gauges and memory after a warm-up and
    /// again after the run, and say whether every count returned to its baseline.
    #[arg(long)]
    soak: bool,
    /// Idle agents: open this many WebSockets (hello, and register with --register), keep
    /// them idle for --hold seconds, report callgate's RSS per agent; no calls.
    #[arg(long, value_parser = parse_idle_agents, conflicts_with = "soak")]
    idle_agents: Option<u32>,
    /// Calls of the soak's warm-up run before the baseline [default: --concurrency].
    #[arg(long, value_parser = parse_calls, requires = "soak")]
    soak_warmup: Option<u64>,
    /// How long the soak's end reading waits for the counts to come back.
    #[arg(long, default_value = "15", allow_negative_numbers = true, value_parser = parse_seconds, requires = "soak")]
    soak_settle: Duration,
}

/// Everything the binary needs, validated.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run itself.
    pub run: RunConfig,
    /// Which trunk, and for `Builtin` where it listens.
    pub trunk: TrunkMode,
    /// The builtin trunk's SIP address.
    pub trunk_bind: SocketAddr,
    /// Where to write the JSON report.
    pub report_json: Option<PathBuf>,
    /// Where to write the SVG chart.
    pub chart: Option<PathBuf>,
    /// Worker threads of the runtime.
    pub threads: usize,
    /// Things worth saying before the run (not errors).
    pub notes: Vec<String>,
    /// `--soak`: warm-up calls and settling time.
    pub soak: Option<SoakOptions>,
    /// `--idle-agents`: the idle-agent memory measurement instead of a load run.
    pub idle: Option<crate::idle::IdleConfig>,
}

/// The soak's own settings (`--soak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakOptions {
    /// Calls before the baseline.
    pub warmup_calls: u64,
    /// Longest wait for the counts to come back after the run.
    pub settle: Duration,
}

/// Parses `--idle-agents`: 1 to [`crate::config::MAX_CONCURRENCY`].
fn parse_idle_agents(text: &str) -> Result<u32, String> {
    let value: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("must be a whole number of agents, 1 or more (got {text:?})"))?;
    match value {
        0 => Err("must be at least 1 (got 0)".into()),
        v if v > crate::config::MAX_CONCURRENCY => Err(format!(
            "must be at most {} (got {v})",
            crate::config::MAX_CONCURRENCY
        )),
        v => Ok(v),
    }
}

/// Parses `--chart`: an `.svg` file in a directory that exists (checked before the run, so a
/// typo does not cost a whole run's chart).
fn parse_chart_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("svg"))
    {
        return Err(format!(
            "the chart is SVG: give a file ending in .svg (got {text:?})"
        ));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("directory {} does not exist", dir.display()));
    }
    Ok(path)
}

/// `--calls` of a soak when not given (issue 6: 10,000 call cycles).
pub const DEFAULT_SOAK_CALLS: u64 = 10_000;

/// The builtin trunk's default SIP address.
pub const DEFAULT_TRUNK_BIND: &str = "127.0.0.1:5090";

/// Parses the command line (`args` includes the program name).
///
/// On error the `clap::Error` prints itself (`err.print()`) and says its exit code
/// (`err.exit_code()`: 2 for bad flags, 0 for `--help` and `--version`).
pub fn parse_args<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let invalid = |kind: ErrorKind, message: String| Cli::command().error(kind, message);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = match cli.threads {
        None => cpus,
        Some(0) => {
            return Err(invalid(
                ErrorKind::ValueValidation,
                "--threads must be at least 1 (got 0)".into(),
            ));
        }
        Some(n) if n > 4 * cpus => {
            return Err(invalid(
                ErrorKind::ValueValidation,
                format!("--threads {n} is more than 4 per core ({cpus} cores)"),
            ));
        }
        Some(n) => n,
    };
    let calls = cli
        .calls
        .unwrap_or(if cli.soak { DEFAULT_SOAK_CALLS } else { 10 });
    let agents = u64::from(cli.concurrency.get()).min(calls);
    if u64::from(cli.extension_base) + agents > u64::from(u32::MAX) {
        return Err(invalid(
            ErrorKind::ValueValidation,
            format!(
                "--extension-base {} leaves no room for {agents} agents' extensions",
                cli.extension_base
            ),
        ));
    }
    if cli.trunk == TrunkMode::External && cli.trunk_bind.is_some() {
        return Err(invalid(
            ErrorKind::ArgumentConflict,
            "--trunk-bind only applies to --trunk builtin".into(),
        ));
    }
    if let Some(pid) = cli.gateway_pid
        && let Err(e) = procfs::read(Process::Pid(pid))
    {
        return Err(invalid(
            ErrorKind::ValueValidation,
            format!("--gateway-pid {pid}: cannot read /proc/{pid} ({e}); is callgate running?"),
        ));
    }
    let trunk_bind = match cli.trunk_bind {
        Some(addr) => addr,
        None => parse_loopback_addr(DEFAULT_TRUNK_BIND)
            .map_err(|e| invalid(ErrorKind::ValueValidation, e))?,
    };

    let ca_pem = match &cli.ca_file {
        None => None,
        Some(_) if !cli.url.is_tls() => {
            return Err(invalid(
                ErrorKind::ArgumentConflict,
                "--ca-file only applies to a wss:// --url".into(),
            ));
        }
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            invalid(
                ErrorKind::ValueValidation,
                format!("--ca-file {}: {e}", path.display()),
            )
        })?),
    };
    let mut run = RunConfig::new(cli.url);
    run.ca_pem = ca_pem;
    run.calls = calls;
    run.register = cli.register;
    run.reconnect_every = cli.reconnect_every;
    run.pace_frames = cli.pace_frames;
    run.concurrency = cli.concurrency;
    run.rate = cli.rate;
    run.ramp = cli.ramp;
    run.hold = cli.hold;
    run.duration_limit = cli.duration_limit;
    run.setup_timeout = cli.setup_timeout;
    run.to = cli.to;
    run.extension_base = cli.extension_base;
    run.password = cli.password;
    run.gateway_pid = cli.gateway_pid;
    run.generator_threads = Some(threads);

    let mut notes = Vec::new();
    let needed = run.schedule_length() + run.hold;
    if needed > run.duration_limit {
        notes.push(format!(
            "the schedule needs at least {:.1} s (last call due at {:.1} s + {:.1} s hold) but \
             --duration-limit is {:.1} s: the run will be cut short",
            needed.as_secs_f64(),
            run.schedule_length().as_secs_f64(),
            run.hold.as_secs_f64(),
            run.duration_limit.as_secs_f64()
        ));
    }
    let idle = cli.idle_agents.map(|agents| crate::idle::IdleConfig {
        url: run.url.clone(),
        agents,
        extension_base: run.extension_base,
        password: run.password.clone(),
        register: run.register,
        hold: run.hold,
        gateway_pid: run.gateway_pid,
    });
    Ok(Options {
        idle,
        run,
        trunk: cli.trunk,
        trunk_bind,
        report_json: cli.report_json,
        chart: cli.chart,
        threads,
        notes,
        soak: cli.soak.then(|| SoakOptions {
            warmup_calls: cli.soak_warmup.unwrap_or(agents),
            settle: cli.soak_settle,
        }),
    })
}

#[cfg(test)]
mod tests;
