//! SIPp harness: a real SIP peer (the "PBX") for the gateway's integration tests.
//!
//! Each [`SippUas`] runs one `sipp` child process with one scenario from
//! `gateway/tests/sipp/`, on loopback only, on free ports picked at start, for
//! one call (`-m 1`), with its logs in a directory of its own under
//! `target/tmp/sipp/`. [`SippUas::wait`] returns a [`SippOutcome`] whose
//! `report` says what SIPp saw (errors log, its closing screens, the last SIP
//! messages); the child is killed on drop. [`SippUac`] runs a SIPp caller the
//! same way (used by the self-tests in `sipp_selftest.rs`).
//!
//! SIPp facts this harness relies on (SIPp 3.6.1, Debian `sip-tester`):
//! - Exit codes: 0 all calls succeeded, 1 at least one failed, 97 internal
//!   command exit, 99 normal exit without calls, 253 RTP check failure,
//!   255 fatal error (-1), 254 fatal error binding a socket (-2). SIGTERM
//!   makes SIPp exit 0 when no call *failed*, even when none finished: a run
//!   stopped by [`SippUas::wait`]'s timeout is reported as failed whatever
//!   its exit code.
//! - `-mp P` binds RTP echo sockets on P *and* P+2 (a second "video" stream)
//!   and gives up at once if either is taken; `-rtp_echo` sends each datagram
//!   back to its source address, from start to exit, whatever the SDP says.
//! - `-i 127.0.0.1` makes SIPp bind its SIP socket on 127.0.0.1; `-ci
//!   127.0.0.1` keeps its UDP control socket (8888 and up) off other
//!   interfaces.
//! - Without a terminal, SIPp prints its screens once, at exit, to stdout.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

/// Loopback: every SIPp socket lives here.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How often the harness polls the child process and `/proc/net`.
const POLL: Duration = Duration::from_millis(20);

/// How long SIPp may take to bind its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a start is retried when SIPp could not bind a picked port
/// (another process took it between the probe and SIPp's bind).
const START_ATTEMPTS: u32 = 3;

/// SIPp's exit code for "fatal error binding a socket" (-2).
const EXIT_BIND_FAILED: i32 = 254;

/// The SIP transport SIPp listens on / connects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP, one socket (`-t u1`).
    #[default]
    Udp,
    /// TCP, one connection (`-t t1`).
    Tcp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// Options for one SIPp run.
#[derive(Debug, Clone)]
pub struct SippOptions {
    /// SIP transport (default UDP).
    pub transport: Transport,
    /// Digest credentials: passed as `-au user -ap password` (what a SIPp
    /// UAC's `[authentication]` uses) and as `-key auth_user user -key
    /// auth_pass password` (what the UAS scenarios check against).
    pub auth: Option<(String, String)>,
    /// Extra `-key name value` pairs (`[name]` in the scenario). SIPp keeps
    /// the first value given for a name.
    pub keys: BTreeMap<String, String>,
    /// Echo RTP on the media port (`-rtp_echo`, default on).
    pub rtp_echo: bool,
    /// SIPp's own global timeout (`-timeout`, with `-timeout_error`), so that a
    /// SIPp left behind by a killed test process still ends by itself.
    pub sipp_timeout: Duration,
    /// Any other SIPp arguments, appended last (e.g. `-d 1000`).
    pub extra_args: Vec<String>,
}

impl Default for SippOptions {
    fn default() -> Self {
        SippOptions {
            transport: Transport::Udp,
            auth: None,
            keys: BTreeMap::new(),
            rtp_echo: true,
            sipp_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
        }
    }
}

impl SippOptions {
    /// Sets digest credentials (see [`SippOptions::auth`]).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Adds `-key name value`.
    pub fn key(mut self, name: &str, value: impl ToString) -> Self {
        self.keys.insert(name.to_owned(), value.to_string());
        self
    }

    /// Appends raw SIPp arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Turns `-rtp_echo` on or off.
    pub fn rtp_echo(mut self, on: bool) -> Self {
        self.rtp_echo = on;
        self
    }

    /// Sets SIPp's own global timeout.
    pub fn sipp_timeout(mut self, timeout: Duration) -> Self {
        self.sipp_timeout = timeout;
        self
    }
}

/// The result of one SIPp run.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// SIPp exited 0 (all calls succeeded) before the wait's timeout.
    pub success: bool,
    /// SIPp's exit code; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// The wait's timeout ran out and the harness stopped SIPp.
    pub timed_out: bool,
    /// Human-readable account of the run: exit status, command line, SIPp's
    /// stderr, errors log, closing screens, `<log>` actions and the last SIP
    /// messages.
    pub report: String,
    /// Where the log files are (kept when the run failed, removed with the
    /// harness value when it succeeded).
    pub log_dir: PathBuf,
    /// The SIP messages SIPp sent and received (`-trace_msg`), in order.
    pub messages: String,
    /// The lines written by the scenario's `<log>` actions (`-trace_logs`).
    pub scenario_log: String,
}

impl SippOutcome {
    /// Panics with the report unless SIPp succeeded.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.success, "SIPp run failed\n{}", self.report);
    }

    /// Panics with the report unless SIPp reported at least one failed call
    /// (exit code 1).
    #[track_caller]
    pub fn assert_failed_call(&self) {
        assert!(
            !self.timed_out && self.exit_code == Some(1),
            "expected SIPp to report a failed call (exit code 1)\n{}",
            self.report
        );
    }
}

/// Finds the `sipp` executable: `$SIPP` if set, else `sipp` on `PATH`.
///
/// Panics when there is none: these tests never skip silently.
pub fn sipp_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SIPP") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "$SIPP={} is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("sipp"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`sipp` not found on PATH: install sip-tester (apt-get install -y sip-tester), \
                 or set SIPP to the binary"
            )
        })
}

/// The path of a scenario file in `gateway/tests/sipp/`; panics if missing.
pub fn scenario_path(file_name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
        .join(file_name);
    assert!(path.is_file(), "no SIPp scenario {}", path.display());
    path
}

/// A SIPp UAS (the simulated PBX) running one scenario for one call.
#[derive(Debug)]
pub struct SippUas {
    run: SippRun,
}

impl SippUas {
    /// Starts `sipp -sf <scenario>` as a UAS on free loopback ports and
    /// returns once its SIP and media sockets are bound.
    ///
    /// Command line: `sipp -sf <file> -t u1|t1 -i 127.0.0.1 -mi 127.0.0.1
    /// -ci 127.0.0.1 -p <sip_port> -mp <media_port> [-rtp_echo] -m 1 -nostdin
    /// -timeout <s>s -timeout_error <trace options> [-au u -ap p -key auth_user
    /// u -key auth_pass p] [-key k v]... [extra]`.
    pub fn start(scenario_file_name: &str, opts: SippOptions) -> SippUas {
        SippUas {
            run: SippRun::start(scenario_file_name, None, &opts),
        }
    }

    /// Where SIPp listens for SIP (send the INVITE here).
    pub fn sip_addr(&self) -> SocketAddr {
        self.run.sip_addr
    }

    /// SIPp's RTP port (`[media_port]` in its SDP; echoed when `-rtp_echo`).
    pub fn media_addr(&self) -> SocketAddr {
        self.run.media_addr
    }

    /// The directory with this run's logs.
    pub fn log_dir(&self) -> &Path {
        &self.run.dir
    }

    /// Waits for SIPp to exit, at most `timeout`; then stops it.
    pub fn wait(&mut self, timeout: Duration) -> SippOutcome {
        self.run.wait(timeout)
    }
}

/// A SIPp UAC (a simulated caller) running one scenario for one call.
#[derive(Debug)]
pub struct SippUac {
    run: SippRun,
}

impl SippUac {
    /// Starts `sipp <target> -sf <scenario>` as a UAC on free loopback ports;
    /// it places one call to `target` at once.
    pub fn start(scenario_file_name: &str, target: SocketAddr, opts: SippOptions) -> SippUac {
        SippUac {
            run: SippRun::start(scenario_file_name, Some(target), &opts),
        }
    }

    /// The SIP address the UAC sends from.
    pub fn sip_addr(&self) -> SocketAddr {
        self.run.sip_addr
    }

    /// The UAC's RTP port (`[media_port]` in its SDP).
    pub fn media_addr(&self) -> SocketAddr {
        self.run.media_addr
    }

    /// Waits for SIPp to exit, at most `timeout`; then stops it.
    pub fn wait(&mut self, timeout: Duration) -> SippOutcome {
        self.run.wait(timeout)
    }
}

/// One SIPp child process and its log directory.
#[derive(Debug)]
struct SippRun {
    child: Child,
    command_line: String,
    sip_addr: SocketAddr,
    media_addr: SocketAddr,
    dir: PathBuf,
    /// Set when a wait saw SIPp succeed: the logs are then removed on drop.
    succeeded: bool,
}

impl SippRun {
    fn start(scenario_file_name: &str, target: Option<SocketAddr>, opts: &SippOptions) -> SippRun {
        let binary = sipp_binary();
        let scenario = scenario_path(scenario_file_name);
        let mut last_report = String::new();
        for _ in 0..START_ATTEMPTS {
            let (sip_port, media_port) = pick_ports();
            let dir = new_log_dir(scenario_file_name);
            let args = sipp_args(&scenario, target, sip_port, media_port, &dir, opts);
            let command_line = format!("{} {}", binary.display(), args.join(" "));
            let child = Command::new(&binary)
                .args(&args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(file_for(&dir, "stdout.log"))
                .stderr(file_for(&dir, "stderr.log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {command_line}: {e}"));
            let mut run = SippRun {
                child,
                command_line,
                sip_addr: SocketAddr::V4(SocketAddrV4::new(LOOPBACK, sip_port)),
                media_addr: SocketAddr::V4(SocketAddrV4::new(LOOPBACK, media_port)),
                dir,
                succeeded: false,
            };
            match run.wait_ready(opts.transport, target.is_none()) {
                Ok(()) => return run,
                // A UAC may be done before its sockets were seen: wait()
                // reports it.
                Err(status) if target.is_some() && matches!(status.code(), Some(0 | 1)) => {
                    return run;
                }
                Err(status) => {
                    let report = run.report(Some(status), false);
                    if status.code() != Some(EXIT_BIND_FAILED) {
                        panic!("SIPp exited while starting\n{report}");
                    }
                    last_report = report;
                }
            }
        }
        panic!("SIPp could not bind its ports in {START_ATTEMPTS} attempts\n{last_report}");
    }

    /// Returns once SIPp's SIP and media sockets are bound, or SIPp's exit
    /// status if it exited first.
    fn wait_ready(&mut self, transport: Transport, listens: bool) -> Result<(), ExitStatus> {
        let sip_port = self.sip_addr.port();
        let media_port = self.media_addr.port();
        if !proc_net_readable() {
            // Cannot see sockets (not Linux?): give SIPp a moment instead.
            thread::sleep(Duration::from_millis(300));
            return self.try_wait().map_or(Ok(()), Err);
        }
        for _ in 0..polls(READY_TIMEOUT) {
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            let sip_ready = match (transport, listens) {
                (Transport::Udp, _) => udp_port_bound(sip_port),
                (Transport::Tcp, true) => tcp_port_listening(sip_port),
                // A TCP UAC binds its port only when it connects.
                (Transport::Tcp, false) => true,
            };
            if sip_ready && udp_port_bound(media_port) {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        let status = self.stop();
        let report = self.report(Some(status), true);
        panic!(
            "SIPp did not bind {} (SIP) and {} (media) within {READY_TIMEOUT:?}\n{report}",
            self.sip_addr, self.media_addr
        );
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on the SIPp child")
    }

    fn wait(&mut self, timeout: Duration) -> SippOutcome {
        let mut status = None;
        for _ in 0..polls(timeout) {
            status = self.try_wait();
            if status.is_some() {
                break;
            }
            thread::sleep(POLL);
        }
        let timed_out = status.is_none();
        let status = match status {
            Some(status) => status,
            None => self.stop(),
        };
        let success = !timed_out && status.success();
        self.succeeded = success;
        SippOutcome {
            success,
            exit_code: status.code(),
            timed_out,
            report: self.report(Some(status), timed_out),
            log_dir: self.dir.clone(),
            messages: self.read_log("messages.log"),
            scenario_log: self.read_log("actions.log"),
        }
    }

    /// SIGTERM first (SIPp then writes its closing screens and logs), SIGKILL
    /// if it is still there a second later.
    fn stop(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for _ in 0..polls(Duration::from_secs(1)) {
            if let Some(status) = self.try_wait() {
                return status;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait on the killed SIPp child")
    }

    fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn report(&self, status: Option<ExitStatus>, timed_out: bool) -> String {
        let mut out = String::new();
        let verdict = match (timed_out, status.and_then(|s| s.code())) {
            (true, _) => "timed out: stopped by the harness".to_owned(),
            (false, Some(code)) => format!("exit code {code} ({})", exit_meaning(code)),
            (false, None) => "killed by a signal".to_owned(),
        };
        out.push_str(&format!("SIPp {verdict}\n"));
        out.push_str(&format!("command: {}\n", self.command_line));
        out.push_str(&format!("logs: {}\n", self.dir.display()));
        for (title, file, max_lines) in [
            ("stderr", "stderr.log", 30),
            ("errors log (-trace_err)", "errors.log", 60),
            ("scenario <log> actions", "actions.log", 30),
            ("closing screens (stdout)", "stdout.log", 60),
            ("last SIP messages (-trace_msg)", "messages.log", 120),
        ] {
            let text = self.read_log(file);
            if text.trim().is_empty() {
                continue;
            }
            out.push_str(&format!("---- {title} ----\n{}\n", tail(&text, max_lines)));
        }
        out
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.succeeded {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn sipp_args(
    scenario: &Path,
    target: Option<SocketAddr>,
    sip_port: u16,
    media_port: u16,
    dir: &Path,
    opts: &SippOptions,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if let Some(target) = target {
        args.push(target.to_string());
    }
    let log = |name: &str| dir.join(name).display().to_string();
    let timeout_s = opts.sipp_timeout.as_secs().max(1);
    for arg in [
        "-sf",
        &scenario.display().to_string(),
        "-t",
        opts.transport.sipp_flag(),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-ci",
        "127.0.0.1",
        "-p",
        &sip_port.to_string(),
        "-mp",
        &media_port.to_string(),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        &format!("{timeout_s}s"),
        "-timeout_error",
        "-trace_err",
        "-error_file",
        &log("errors.log"),
        "-trace_msg",
        "-message_file",
        &log("messages.log"),
        "-trace_screen",
        "-screen_file",
        &log("screens.log"),
        "-trace_logs",
        "-log_file",
        &log("actions.log"),
    ] {
        args.push(arg.to_owned());
    }
    if opts.rtp_echo {
        args.push("-rtp_echo".to_owned());
    }
    if let Some((user, password)) = &opts.auth {
        for arg in [
            "-au",
            user,
            "-ap",
            password,
            "-key",
            "auth_user",
            user,
            "-key",
            "auth_pass",
            password,
        ] {
            args.push(arg.to_owned());
        }
    }
    for (name, value) in &opts.keys {
        args.extend(["-key".to_owned(), name.clone(), value.clone()]);
    }
    args.extend(opts.extra_args.iter().cloned());
    args
}

fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "all calls succeeded",
        1 => "at least one call failed",
        97 => "exit on internal command",
        99 => "normal exit without calls processed",
        253 => "RTP validation failure",
        254 => "fatal error binding a socket",
        255 => "fatal error (or -timeout reached with -timeout_error)",
        _ => "unknown",
    }
}

/// Picks a free SIP port (free for both UDP and TCP) and a free even media
/// port P with P+1 and P+2 free too (SIPp binds P and P+2), all on loopback.
/// The probe sockets are held until all ports are chosen, so the ports differ.
fn pick_ports() -> (u16, u16) {
    let mut held = Vec::new();
    let media_port = (0..200)
        .find_map(|_| {
            let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind UDP 127.0.0.1:0");
            let port = socket.local_addr().expect("local_addr").port();
            held.push(socket);
            if !port.is_multiple_of(2) || port > u16::MAX - 2 {
                return None;
            }
            let rtcp = UdpSocket::bind((LOOPBACK, port + 1)).ok()?;
            let second = UdpSocket::bind((LOOPBACK, port + 2)).ok()?;
            held.push(rtcp);
            held.push(second);
            Some(port)
        })
        .expect("no free even UDP port pair on 127.0.0.1");
    let mut held_tcp = Vec::new();
    let sip_port = (0..200)
        .find_map(|_| {
            let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind UDP 127.0.0.1:0");
            let port = socket.local_addr().expect("local_addr").port();
            held.push(socket);
            let tcp = TcpListener::bind((LOOPBACK, port)).ok()?;
            held_tcp.push(tcp);
            Some(port)
        })
        .expect("no free UDP+TCP port on 127.0.0.1");
    (sip_port, media_port)
}

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

static PRUNE_STALE: Once = Once::new();

/// `target/tmp/sipp/<scenario>-<pid>-<seq>`. The first call in a test process
/// removes the directories of test processes that are gone (failed runs keep
/// their logs only until the next test run).
fn new_log_dir(scenario_file_name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sipp");
    PRUNE_STALE.call_once(|| prune_stale_log_dirs(&root));
    let stem = Path::new(scenario_file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario");
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("{stem}-{}-{seq}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn prune_stale_log_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.rsplit('-').nth(1));
        let alive = pid.is_none_or(|pid| Path::new("/proc").join(pid).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn file_for(dir: &Path, name: &str) -> fs::File {
    let path = dir.join(name);
    fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

fn polls(timeout: Duration) -> u128 {
    (timeout.as_millis() / POLL.as_millis()).max(1)
}

fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    out.push_str(&lines[start..].join("\n"));
    out
}

fn proc_net_readable() -> bool {
    Path::new("/proc/net/udp").is_file()
}

/// Whether some UDP socket is bound to `port` on this host.
fn udp_port_bound(port: u16) -> bool {
    proc_net_has(&["/proc/net/udp", "/proc/net/udp6"], port, None)
}

/// Whether some TCP socket listens on `port` on this host.
fn tcp_port_listening(port: u16) -> bool {
    proc_net_has(&["/proc/net/tcp", "/proc/net/tcp6"], port, Some("0A"))
}

/// Scans `/proc/net/{udp,tcp}[6]`: `sl local_address rem_address st ...`,
/// addresses as `HEXIP:HEXPORT`, `st` 0A = LISTEN.
fn proc_net_has(files: &[&str], port: u16, state: Option<&str>) -> bool {
    let wanted = format!("{port:04X}");
    files.iter().any(|file| {
        let text = fs::read_to_string(file).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st)) = (cols.get(1), cols.get(3)) else {
                return false;
            };
            local.rsplit(':').next() == Some(wanted.as_str()) && state.is_none_or(|s| s == *st)
        })
    })
}
