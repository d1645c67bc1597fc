//! CPU time and memory of a process from Linux `/proc`: callgate's (`--gateway-pid`) and the
//! load generator's own, read the same way so the two can be compared and never confused.
//!
//! The parsers are pure functions of the file text; [`read`] does the IO.

use std::io;
use std::time::Duration;

/// Clock ticks per second of the CPU times in `/proc/PID/stat`: `USER_HZ`, which the Linux ABI
/// fixes at 100 on every architecture whatever the kernel's internal `HZ`.
pub const USER_HZ: u64 = 100;

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The load generator itself (`/proc/self`).
    Myself,
    /// Another process, by id.
    Pid(u32),
}

impl Process {
    fn dir(self) -> String {
        match self {
            Process::Myself => "/proc/self".to_string(),
            Process::Pid(pid) => format!("/proc/{pid}"),
        }
    }
}

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User plus system CPU time of all its threads so far.
    pub cpu: Duration,
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub rss_peak_bytes: u64,
    /// The anonymous part of the resident set (`RssAnon`: heap, stacks), in bytes; 0 where
    /// the kernel does not report it. Unlike `VmRSS` it leaves out the executable's pages,
    /// which a run faults in as calls exercise new code: a fixed cost, not a per-call one.
    pub rss_anon_bytes: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status` of `process`.
pub fn read(process: Process) -> io::Result<ProcSample> {
    let dir = process.dir();
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}/{what}"));
    Ok(ProcSample {
        cpu: cpu_time(&stat).ok_or_else(|| bad("stat"))?,
        rss_bytes: status_kib(&status, "VmRSS").ok_or_else(|| bad("status VmRSS"))? * 1024,
        // Kernel threads and zombies have no VmHWM; fall back to VmRSS.
        rss_peak_bytes: status_kib(&status, "VmHWM").map_or(0, |kib| kib * 1024),
        rss_anon_bytes: status_kib(&status, "RssAnon").map_or(0, |kib| kib * 1024),
    })
}

/// Where the whole machine's CPU time went so far (`/proc/stat`, all CPUs together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineSample {
    /// Time spent running anything (user, nice, system, irq, softirq, steal).
    pub busy: Duration,
    /// Time spent idle or waiting for IO.
    pub idle: Duration,
    /// CPUs of the machine (`cpuN` lines), whatever this process's affinity.
    pub cpus: usize,
}

/// Reads `/proc/stat`.
pub fn read_machine() -> io::Result<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    machine_times(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat: no cpu line"))
}

/// Busy and idle time from the `cpu` line of `/proc/stat` (guest time is already counted in
/// user time, so it is not added again).
pub fn machine_times(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map_while(|v| v.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let idle = at(3) + at(4);
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    (ticks.len() >= 4).then(|| MachineSample {
        busy: Duration::from_millis(busy.saturating_mul(1000 / USER_HZ)),
        idle: Duration::from_millis(idle.saturating_mul(1000 / USER_HZ)),
        cpus,
    })
}

/// The kernel's UDP counters for this network namespace (`/proc/net/snmp`), cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpCounters {
    /// Datagrams dropped because a socket's receive buffer was full (`RcvbufErrors`).
    pub receive_buffer_errors: u64,
    /// Datagrams not sent because a socket's send buffer was full (`SndbufErrors`).
    pub send_buffer_errors: u64,
    /// Datagrams that could not be delivered, receive-buffer drops included (`InErrors`).
    pub in_errors: u64,
}

/// Reads `/proc/net/snmp`.
pub fn read_udp() -> io::Result<UdpCounters> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    udp_counters(&snmp)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/net/snmp: no Udp lines"))
}

/// The `Udp:` header and value lines of `/proc/net/snmp`, by column name.
pub fn udp_counters(snmp: &str) -> Option<UdpCounters> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_ascii_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_ascii_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let at = names.iter().position(|n| *n == name)?;
        values.get(at)?.parse().ok()
    };
    Some(UdpCounters {
        receive_buffer_errors: get("RcvbufErrors")?,
        send_buffer_errors: get("SndbufErrors").unwrap_or(0),
        in_errors: get("InErrors").unwrap_or(0),
    })
}

/// The soft limit on open files of `process` (`/proc/PID/limits`), if it has one.
pub fn open_files_limit(process: Process) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("{}/limits", process.dir())).ok()?;
    soft_limit(&limits, "Max open files")
}

/// User plus system time from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so fields are counted after the last `)`: utime and stime are fields 14 and 15.
pub fn cpu_time(stat: &str) -> Option<Duration> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(ticks.checked_mul(1000 / USER_HZ)?))
}

/// A `Name:   1234 kB` line of `/proc/PID/status`, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// The soft limit of one line of `/proc/PID/limits` (`None` when `unlimited`).
pub fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line.get(name.len()..)?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
