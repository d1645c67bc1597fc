//! Kamailio harness: a real SIP registrar + proxy with digest authentication,
//! for the gateway's interop tests (issue 3).
//!
//! [`Kamailio::start`] writes a configuration from the template
//! `gateway/tests/kamailio/kamailio.cfg.in` and a db_text subscriber table
//! (one row per test user, plaintext password) into a directory of its own
//! under `target/tmp/kamailio/`, runs Debian's `kamailio` in the foreground on
//! a free loopback port (UDP and TCP), and returns once Kamailio answers an
//! OPTIONS on that port. The process group is killed on drop; the directory
//! is removed too unless the test is panicking (then its logs stay for the
//! failure report, until the next test run). What Kamailio does with each
//! request is described at the top of the template.
//!
//! ```text
//! let mut kam = Kamailio::start(&[("1001", "secret1"), ("1002", "secret2")]);
//! // point the gateway (or SIPp) at kam.sip_addr(); register as 1001 ...
//! let contacts = kam.wait_registered("1001", Duration::from_secs(5));
//! // a SIPp UAS reachable as 2000 (needs a ("2000", pw) subscriber):
//! let uas = SippUas::start(&scenario("uas_proxied_echo.xml"), SippOptions::default());
//! kam.register_contact("2000", pw, &format!("sip:2000@{}", uas.sip_addr()));
//! // on failure: panic!("...\n{}", kam.report());
//! ```
//!
//! The scenarios for SIPp behind or in front of Kamailio live in
//! `gateway/tests/kamailio/` (see its README.md); [`scenario`] gives their
//! absolute path for the SIPp harness.
//!
//! Facts this harness relies on (Kamailio 5.6.3, Debian 12 package
//! `kamailio`; every module used — tm, tmx, sl, rr, pv, maxfwd, textops,
//! siputils, xlog, db_text, usrloc, registrar, auth, auth_db — is in that one
//! package, no `kamailio-extra-modules` needed; only the TLS option's `tls`
//! module comes from `kamailio-tls-modules`; the compiled-in module path,
//! `/usr/lib/x86_64-linux-gnu/kamailio/modules` on amd64, is used as is):
//! - Command line: `timeout -s TERM -k 5 <lifetime>s kamailio -f <dir>/kamailio.cfg
//!   -DD -E -m 32 -M 4 -Y <dir>/run -P <dir>/run/kamailio.pid -w <dir>`, in a
//!   process group of its own, stdout and stderr into `<dir>/kamailio.log`.
//!   `-DD`: do not daemonize (the main process stays our child and still
//!   forks its workers: 9 processes with `children=2`, `tcp_children=2`);
//!   `-E`: log to stderr; `-m`/`-M`: shared/private memory in MB; `-Y`: a
//!   private runtime dir, so that instances run side by side; `timeout`
//!   bounds the life of an instance whose test process was killed.
//! - Kamailio binds its UDP and TCP sockets in the main process before forking,
//!   and prints "Address already in use" when a port is taken: the harness
//!   then retries on another port.
//! - db_text: a database is a directory (`text:///abs/dir`), a table a file
//!   whose first line declares the columns (`name(type[,null|auto])`), one row
//!   per line, fields separated by `:`, with `:`, `\`, newline, CR, tab and NUL
//!   escaped by a backslash. auth_db checks the `version` table
//!   (`subscriber:7` for 5.6). With `calculate_ha1` on, HA1 is computed per
//!   request from the plaintext `password` and the realm of the credentials.
//! - SIGTERM to the main process stops all of Kamailio's processes ("Thank
//!   you for flying kamailio"); the harness sends it through `timeout`, which
//!   forwards it, and SIGKILLs the whole process group if anything is left
//!   after two seconds.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use crate::sipp::{SippOptions, SippUac};

/// Loopback: Kamailio listens here and nowhere else.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How often the harness polls the child process and probes Kamailio.
const POLL: Duration = Duration::from_millis(50);

/// How long one probe waits for Kamailio's answer.
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// How long Kamailio may take to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports are tried when another process takes a picked port first.
const START_ATTEMPTS: u32 = 3;

/// Shared (`-m`) and private (`-M`) memory, in MB: small, so it starts fast.
const SHM_MB: u32 = 32;
const PKG_MB: u32 = 4;

/// How long [`Kamailio::register_contact`] registers for (with the default
/// `max_expires`).
pub const REGISTRATION_EXPIRES: Duration = Duration::from_secs(3600);

/// The `subscriber` table version Kamailio 5.6's auth_db expects.
const SUBSCRIBER_TABLE_VERSION: u32 = 7;

/// Options for one Kamailio instance.
#[derive(Debug, Clone)]
pub struct KamailioOptions {
    /// The SIP domain: an alias of Kamailio (so `sip:user@<domain>` is local)
    /// and the digest realm of its challenges. Default `callgate.test`.
    pub domain: String,
    /// Challenge with `qop="auth"` (client nonce and nonce count required).
    /// Default off, like Kamailio's shipped configuration.
    pub qop_auth: bool,
    /// Kamailio's `debug` level: 1 warnings, 2 info (default: one line per
    /// request and relay from the script), 3 debug.
    pub debug: u8,
    /// Registrar `min_expires` (lower requests are raised to it). Default 5 s.
    pub min_expires: u32,
    /// Registrar `max_expires` (higher requests are lowered to it). Default
    /// 3600 s.
    pub max_expires: u32,
    /// tm `fr_inv_timer`: how long an INVITE may ring before Kamailio gives
    /// up with 408. Default 30 s.
    pub ring_timeout: Duration,
    /// The longest this instance may live: `timeout` stops it then, should
    /// the test process die without dropping it. Default 300 s.
    pub lifetime: Duration,
    /// Also listen on TLS (a port of its own, [`Kamailio::tls_addr`]) with this
    /// certificate. Needs Debian's `kamailio-tls-modules`. Default off.
    pub tls: Option<KamailioTls>,
}

/// Kamailio's TLS server certificate (PEM files); clients are not asked for one.
#[derive(Debug, Clone)]
pub struct KamailioTls {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

impl Default for KamailioOptions {
    fn default() -> Self {
        KamailioOptions {
            domain: "callgate.test".to_owned(),
            qop_auth: false,
            debug: 2,
            min_expires: 5,
            max_expires: 3600,
            ring_timeout: Duration::from_secs(30),
            lifetime: Duration::from_secs(300),
            tls: None,
        }
    }
}

impl KamailioOptions {
    /// Sets the domain (alias and realm).
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_owned();
        self
    }

    /// Turns `qop="auth"` challenges on or off.
    pub fn qop_auth(mut self, on: bool) -> Self {
        self.qop_auth = on;
        self
    }

    /// Sets Kamailio's debug level.
    pub fn debug(mut self, level: u8) -> Self {
        self.debug = level;
        self
    }

    /// Sets the registrar's minimum and maximum expires, in seconds.
    pub fn expires_range(mut self, min: u32, max: u32) -> Self {
        self.min_expires = min;
        self.max_expires = max;
        self
    }

    /// Adds a TLS listener with this certificate.
    pub fn tls(mut self, tls: KamailioTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets how long an INVITE may ring (tm `fr_inv_timer`).
    pub fn ring_timeout(mut self, timeout: Duration) -> Self {
        self.ring_timeout = timeout;
        self
    }
}

/// One contact of a user, as Kamailio's location table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The contact URI (as registered, without angle brackets).
    pub uri: String,
    /// Seconds left before it expires.
    pub expires: i64,
}

/// A running Kamailio registrar + proxy on `127.0.0.1:<port>` (UDP and TCP).
#[derive(Debug)]
pub struct Kamailio {
    child: Child,
    port: u16,
    tls_port: Option<u16>,
    domain: String,
    dir: PathBuf,
    command_line: String,
}

impl Kamailio {
    /// Starts Kamailio with these `(user, password)` subscribers and default
    /// options; returns once it answers on its port.
    pub fn start(users: &[(&str, &str)]) -> Kamailio {
        Kamailio::start_with(users, KamailioOptions::default())
    }

    /// Starts Kamailio with these subscribers and options.
    pub fn start_with(users: &[(&str, &str)], opts: KamailioOptions) -> Kamailio {
        check_users(users);
        let binary = kamailio_binary();
        let template = fs::read_to_string(template_path())
            .unwrap_or_else(|e| panic!("read {}: {e}", template_path().display()));
        let mut last_report = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = pick_port();
            let tls_port = opts.tls.as_ref().map(|_| pick_port());
            let dir = new_run_dir();
            write_database(&dir, users, &opts.domain);
            let config = render_config(&template, port, tls_port, &dir, &opts);
            fs::write(dir.join("kamailio.cfg"), config).expect("write kamailio.cfg");
            let (program, args) = command(&binary, &dir, &opts);
            let command_line = format!("{} {}", program.display(), args.join(" "));
            fs::write(dir.join("command.txt"), format!("{command_line}\n"))
                .expect("write command.txt");
            let log = fs::File::create(dir.join("kamailio.log")).expect("create kamailio.log");
            let child = Command::new(&program)
                .args(&args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file handle"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {command_line}: {e}"));
            let mut kamailio = Kamailio {
                child,
                port,
                tls_port,
                domain: opts.domain.clone(),
                dir,
                command_line,
            };
            match kamailio.wait_ready() {
                Ok(()) => return kamailio,
                Err(status) => {
                    let report = kamailio.report_with(Some(status));
                    if !kamailio.logs().contains("Address already in use") {
                        panic!("Kamailio exited while starting\n{report}");
                    }
                    last_report = report;
                }
            }
        }
        panic!("Kamailio could not bind a port in {START_ATTEMPTS} attempts\n{last_report}");
    }

    /// Where Kamailio listens, for UDP and TCP alike.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(LOOPBACK, self.port))
    }

    /// Where Kamailio listens for TLS, when started with the TLS option.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .map(|port| SocketAddr::V4(SocketAddrV4::new(LOOPBACK, port)))
    }

    /// Kamailio's port (UDP and TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SIP domain (a local alias) and digest realm.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `sip:<user>@127.0.0.1:<port>`: the user's address of record on this
    /// Kamailio (what To/R-URI carry to reach a registered user).
    pub fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.sip_addr())
    }

    /// The directory with the configuration, database and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The exact command line Kamailio was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Everything Kamailio wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    /// A report for failure messages: state, command line, directory and the
    /// last lines of the log.
    pub fn report(&mut self) -> String {
        let status = self.try_wait();
        self.report_with(status)
    }

    /// The user's current contacts in Kamailio's location table (empty when
    /// not registered). Asks Kamailio with an OPTIONS it answers itself.
    pub fn contacts(&self, user: &str) -> Vec<Contact> {
        for _ in 0..5 {
            let call_id = format!("harness-probe-{}-{}", std::process::id(), next_seq());
            let request = format!(
                "OPTIONS {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {{local}};branch=z9hG4bK{call_id}\r\n\
                 From: <sip:harness@{{local}}>;tag=harness\r\n\
                 To: <{uri}>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Max-Forwards: 70\r\n\
                 X-Harness-Probe: registered\r\n\
                 Content-Length: 0\r\n\r\n",
                uri = self.aor(user),
            );
            if let Some(reply) = sip_exchange(self.sip_addr(), &request, &call_id) {
                return parse_contacts(&reply);
            }
        }
        panic!(
            "Kamailio did not answer a registration probe for {user}\n{}",
            self.report_with(None)
        );
    }

    /// Registers `contact` (a SIP URI) as `user` with a third-party REGISTER
    /// sent by SIPp (`uac_register_contact.xml`: 401, then digest auth), for
    /// [`REGISTRATION_EXPIRES`]; returns once Kamailio holds it. Makes any
    /// SIPp UAS on its own port (e.g. `uas_proxied_echo.xml`) reachable as
    /// `user` through Kamailio. Panics with both reports on failure.
    pub fn register_contact(&mut self, user: &str, password: &str, contact: &str) -> Vec<Contact> {
        let opts = SippOptions::default()
            .rtp_echo(false)
            .auth(user, password)
            .key("contact", contact)
            .key("expires", REGISTRATION_EXPIRES.as_secs());
        let mut uac = SippUac::start(&scenario("uac_register_contact.xml"), self.sip_addr(), opts);
        let outcome = uac.wait(Duration::from_secs(10));
        if !outcome.success {
            panic!(
                "third-party REGISTER of {contact} as {user} failed\n{}\n{}",
                outcome.report,
                self.report()
            );
        }
        let contacts = self.wait_registered(user, Duration::from_secs(5));
        assert!(
            contacts.iter().any(|c| c.uri == contact),
            "{user} registered, but not at {contact}: {contacts:?}"
        );
        contacts
    }

    /// Waits until `user` has at least one contact; returns the contacts.
    /// Panics with the report after `timeout`.
    pub fn wait_registered(&mut self, user: &str, timeout: Duration) -> Vec<Contact> {
        for _ in 0..polls(timeout) {
            let contacts = self.contacts(user);
            if !contacts.is_empty() {
                return contacts;
            }
            thread::sleep(POLL);
        }
        panic!(
            "{user} did not register with Kamailio within {timeout:?}\n{}",
            self.report()
        );
    }

    /// Waits until `user` has no contact left. Panics with the report after
    /// `timeout`.
    pub fn wait_unregistered(&mut self, user: &str, timeout: Duration) {
        for _ in 0..polls(timeout) {
            if self.contacts(user).is_empty() {
                return;
            }
            thread::sleep(POLL);
        }
        panic!(
            "{user} is still registered with Kamailio after {timeout:?}\n{}",
            self.report()
        );
    }

    /// Returns once Kamailio answers an OPTIONS on UDP and accepts a TCP
    /// connection, or with its exit status if it exited first.
    fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        // An attempt costs up to PROBE_WAIT (no answer before Kamailio binds:
        // an unconnected UDP socket never sees the ICMP error) plus POLL.
        let attempts = READY_TIMEOUT.as_millis() / (PROBE_WAIT + POLL).as_millis();
        for attempt in 0..attempts {
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            let call_id = format!("harness-ready-{}-{attempt}", std::process::id());
            let request = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {{local}};branch=z9hG4bK{call_id}\r\n\
                 From: <sip:harness@{{local}}>;tag=harness\r\n\
                 To: <sip:{addr}>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Max-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                addr = self.sip_addr(),
            );
            let answered = sip_exchange(self.sip_addr(), &request, &call_id)
                .is_some_and(|reply| reply.starts_with("SIP/2.0 200 "));
            if answered && TcpStream::connect_timeout(&self.sip_addr(), PROBE_WAIT).is_ok() {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        if let Some(status) = self.try_wait() {
            return Err(status);
        }
        self.stop();
        panic!(
            "Kamailio did not answer on {} within {READY_TIMEOUT:?}\n{}",
            self.sip_addr(),
            self.report_with(None)
        );
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .expect("try_wait on the Kamailio child")
    }

    /// SIGTERM (forwarded by `timeout` to Kamailio, which stops its workers),
    /// then SIGKILL to the whole process group if anything is left.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        if self.try_wait().is_none() {
            signal("-TERM", &pid);
            for _ in 0..polls(Duration::from_secs(2)) {
                if self.try_wait().is_some() {
                    break;
                }
                thread::sleep(POLL);
            }
        }
        // The group (id = the child's pid) may still hold workers even when
        // the main process is gone.
        signal("-KILL", &format!("-{pid}"));
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn report_with(&self, status: Option<ExitStatus>) -> String {
        let mut out = String::new();
        let state = match status {
            None => "running".to_owned(),
            Some(status) => match status.code() {
                Some(code) => format!("exited with code {code}"),
                None => "killed by a signal".to_owned(),
            },
        };
        let _ = writeln!(out, "Kamailio on {} ({state})", self.sip_addr());
        let _ = writeln!(out, "command: {}", self.command_line);
        let _ = writeln!(out, "dir: {}", self.dir.display());
        let _ = writeln!(out, "---- kamailio.log ----\n{}", tail(&self.logs(), 150));
        out
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The absolute path of a SIPp scenario in `gateway/tests/kamailio/`, for
/// the SIPp harness: `sipp::scenario_path` joins the name it is given onto
/// `gateway/tests/sipp/`, and `Path::join` with an absolute path yields that
/// path.
pub fn scenario(file_name: &str) -> String {
    let path = kamailio_dir().join(file_name);
    assert!(path.is_file(), "no scenario {}", path.display());
    path.display().to_string()
}

/// Finds the `kamailio` executable: `$KAMAILIO` if set, else `kamailio` on
/// `PATH` or in `/usr/sbin`, `/usr/local/sbin`, `/sbin`.
///
/// Panics when there is none: these tests never skip silently.
pub fn kamailio_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KAMAILIO") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "$KAMAILIO={} is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("kamailio"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`kamailio` not found: install it (apt-get install -y kamailio), \
                 or set KAMAILIO to the binary"
            )
        })
}

fn kamailio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("kamailio")
}

fn template_path() -> PathBuf {
    kamailio_dir().join("kamailio.cfg.in")
}

/// `timeout ... kamailio ...` (or `kamailio ...` when there is no `timeout`).
fn command(binary: &Path, dir: &Path, opts: &KamailioOptions) -> (PathBuf, Vec<String>) {
    let path = |p: &Path| p.display().to_string();
    let run = dir.join("run");
    fs::create_dir_all(&run).expect("create the runtime dir");
    let kamailio_args = vec![
        "-f".to_owned(),
        path(&dir.join("kamailio.cfg")),
        "-DD".to_owned(),
        "-E".to_owned(),
        "-m".to_owned(),
        SHM_MB.to_string(),
        "-M".to_owned(),
        PKG_MB.to_string(),
        "-Y".to_owned(),
        path(&run),
        "-P".to_owned(),
        path(&run.join("kamailio.pid")),
        "-w".to_owned(),
        path(dir),
    ];
    let Some(timeout) = ["/usr/bin/timeout", "/bin/timeout"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
    else {
        return (binary.to_path_buf(), kamailio_args);
    };
    let mut args = vec![
        "-s".to_owned(),
        "TERM".to_owned(),
        "-k".to_owned(),
        "5".to_owned(),
        format!("{}s", opts.lifetime.as_secs().max(1)),
        path(binary),
    ];
    args.extend(kamailio_args);
    (timeout, args)
}

/// Fills the template's `{{NAME}}` placeholders; panics on one left over.
fn render_config(
    template: &str,
    port: u16,
    tls_port: Option<u16>,
    dir: &Path,
    opts: &KamailioOptions,
) -> String {
    assert!(
        opts.domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
        "domain {:?}: letters, digits, dots and dashes only",
        opts.domain
    );
    let db_dir = dir.join("db");
    let values = [
        ("PORT", port.to_string()),
        ("DEBUG", opts.debug.to_string()),
        ("DOMAIN", opts.domain.clone()),
        ("REALM", opts.domain.clone()),
        (
            "QOP_FLAGS",
            if opts.qop_auth { "1" } else { "0" }.to_owned(),
        ),
        ("MIN_EXPIRES", opts.min_expires.to_string()),
        ("MAX_EXPIRES", opts.max_expires.to_string()),
        (
            "RING_TIMEOUT_MS",
            opts.ring_timeout.as_millis().max(1000).to_string(),
        ),
        ("DB_DIR", db_dir.display().to_string()),
        (
            "TLS_GLOBALS",
            match tls_port {
                Some(tls_port) => format!("enable_tls=yes\nlisten=tls:127.0.0.1:{tls_port}"),
                None => "disable_tls=yes".to_owned(),
            },
        ),
        (
            "TLS_MODULE",
            match &opts.tls {
                Some(tls) => format!(
                    "loadmodule \"tls.so\"\n\
                     modparam(\"tls\", \"certificate\", \"{}\")\n\
                     modparam(\"tls\", \"private_key\", \"{}\")\n\
                     modparam(\"tls\", \"tls_method\", \"TLSv1.2+\")\n\
                     modparam(\"tls\", \"verify_certificate\", 0)\n\
                     modparam(\"tls\", \"require_certificate\", 0)",
                    tls.cert_file.display(),
                    tls.key_file.display()
                ),
                None => String::new(),
            },
        ),
    ];
    let mut config = template.to_owned();
    for (name, value) in values {
        config = config.replace(&format!("{{{{{name}}}}}"), &value);
    }
    if let Some(at) = config.find("{{") {
        let line = config[at..].lines().next().unwrap_or_default();
        panic!("kamailio.cfg.in: unknown placeholder at {line:?}");
    }
    config
}

/// Usernames: what a SIP URI user part can carry without escaping, and what
/// the test can write in a SIPp `-au`. Passwords: anything but control
/// characters other than tab.
fn check_users(users: &[(&str, &str)]) {
    let mut seen = BTreeSet::new();
    for (user, password) in users {
        assert!(
            !user.is_empty()
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+-!~*'()&=$,;?/".contains(c)),
            "Kamailio test user {user:?}: use letters, digits and unreserved characters"
        );
        assert!(
            !password.is_empty() && password.chars().all(|c| c == '\t' || !c.is_control()),
            "password of Kamailio test user {user:?}: non-empty, no control characters"
        );
        assert!(
            seen.insert(*user),
            "Kamailio test user {user:?} given twice"
        );
    }
}

/// `db/version` and `db/subscriber` (db_text).
fn write_database(dir: &Path, users: &[(&str, &str)], domain: &str) {
    let db = dir.join("db");
    fs::create_dir_all(&db).expect("create the db_text dir");
    let version = format!(
        "table_name(str) table_version(int)\n\
         version:1\n\
         subscriber:{SUBSCRIBER_TABLE_VERSION}\n"
    );
    fs::write(db.join("version"), version).expect("write db/version");
    let mut subscriber = String::from(
        "id(int,auto) username(str) domain(str) password(str) ha1(str,null) ha1b(str,null)\n",
    );
    for (id, (user, password)) in users.iter().enumerate() {
        let _ = writeln!(
            subscriber,
            "{}:{}:{}:{}::",
            id + 1,
            db_text_escape(user),
            db_text_escape(domain),
            db_text_escape(password)
        );
    }
    fs::write(db.join("subscriber"), subscriber).expect("write db/subscriber");
}

/// db_text string escaping: `\`, `:`, newline, CR, tab and NUL.
fn db_text_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ':' => out.push_str("\\:"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

/// Sends `request` (with `{local}` replaced by the sending socket's address)
/// from a fresh loopback UDP socket and returns the first final response
/// carrying `call_id`, if one comes within [`PROBE_WAIT`].
fn sip_exchange(to: SocketAddr, request: &str, call_id: &str) -> Option<String> {
    let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind UDP 127.0.0.1:0");
    let local = socket.local_addr().expect("local_addr");
    socket
        .set_read_timeout(Some(PROBE_WAIT))
        .expect("set_read_timeout");
    let request = request.replace("{local}", &local.to_string());
    socket.send_to(request.as_bytes(), to).ok()?;
    let mut buf = vec![0u8; 65_535];
    // At most a few datagrams: 1xx and strays, then give up.
    for _ in 0..8 {
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let status = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        if status.is_some_and(|code| code >= 200) && text.contains(call_id) {
            return Some(text);
        }
    }
    None
}

/// The `X-Contact: <uri>;expires=N` headers of a registration probe's 200
/// (none in its 404).
fn parse_contacts(reply: &str) -> Vec<Contact> {
    if !reply.starts_with("SIP/2.0 200 ") {
        return Vec::new();
    }
    reply
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("X-Contact") {
                return None;
            }
            let value = value.trim();
            let (uri, params) = value.strip_prefix('<')?.split_once('>')?;
            let expires = params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            Some(Contact {
                uri: uri.to_owned(),
                expires,
            })
        })
        .collect()
}

/// A port free for both UDP and TCP on loopback (probed, then released).
fn pick_port() -> u16 {
    let mut held = Vec::new();
    (0..200)
        .find_map(|_| {
            let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind UDP 127.0.0.1:0");
            let port = socket.local_addr().expect("local_addr").port();
            held.push(socket);
            TcpListener::bind((LOOPBACK, port)).ok().map(|_| port)
        })
        .expect("no free UDP+TCP port on 127.0.0.1")
}

fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

static PRUNE_STALE: Once = Once::new();

/// `target/tmp/kamailio/kamailio-<pid>-<seq>`. The first call in a test
/// process removes the directories of test processes that are gone, after
/// stopping a Kamailio still running from one of them (by the pid in its pid
/// file, when that process is still the Kamailio of that directory).
fn new_run_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kamailio");
    PRUNE_STALE.call_once(|| prune_stale_dirs(&root));
    let dir = root.join(format!("kamailio-{}-{}", std::process::id(), next_seq()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn prune_stale_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name.to_str().and_then(|n| n.rsplit('-').nth(1));
        if owner.is_none_or(process_running) {
            continue;
        }
        let dir = entry.path();
        let pid_file = dir.join("run").join("kamailio.pid");
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            let pid = pid.trim();
            let cmdline =
                fs::read(Path::new("/proc").join(pid).join("cmdline")).unwrap_or_default();
            let config = dir.join("kamailio.cfg").display().to_string();
            if String::from_utf8_lossy(&cmdline).contains(&config) {
                signal("-TERM", pid);
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Whether process `pid` exists and is not a zombie (the state field of
/// `/proc/<pid>/stat`, after the parenthesised command name).
pub fn process_running(pid: &str) -> bool {
    fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

fn polls(timeout: Duration) -> u128 {
    (timeout.as_millis() / POLL.as_millis()).max(1)
}

fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut out = String::new();
    if start > 0 {
        let _ = writeln!(out, "[... {start} earlier lines ...]");
    }
    out.push_str(&lines[start..].join("\n"));
    out
}
