//! The soak ("nothing leaks", issue 6): many call cycles with session and registration churn
//! against a running callgate, with callgate's resources read before and after.
//!
//! [`soak`] takes its baseline of descriptors, threads and memory after a short warm-up run
//! (first-use growth such as allocator arenas, lazily built tables and runtime threads is not
//! a leak) and its baseline of gauges before any call (idle), runs the load, then reads again
//! until every count is back to the baseline or `settle` has passed: open file
//! descriptors and threads from `/proc/PID` (or callgate's `process_*` metrics without a pid),
//! and every `callgate_*` gauge of `/metrics` (sessions, calls, bridges, registrations, SIP
//! dialogs, RTP ports, routing tables). Resident memory is reported, not judged: the allocator
//! keeps freed pages, so RSS settles near, not at, its baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{RunConfig, WsUrl};
use crate::report::Report;

/// How often the end reading is retried while counts settle.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// callgate's resources at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reading {
    /// `VmRSS` of `/proc/PID/status` (or `process_resident_memory_bytes`), in bytes.
    pub rss_bytes: Option<u64>,
    /// Entries of `/proc/PID/fd` (or `process_open_fds`).
    pub open_fds: Option<u64>,
    /// `Threads` of `/proc/PID/status` (or `process_threads`).
    pub threads: Option<u64>,
    /// Every `callgate_*` gauge sample of `/metrics`, `name{labels}` → value.
    pub gauges: BTreeMap<String, f64>,
}

impl Reading {
    /// The counts that must return exactly to the baseline, by name.
    fn counts(&self) -> BTreeMap<String, f64> {
        let mut counts = self.gauges.clone();
        if let Some(fds) = self.open_fds {
            counts.insert("open_fds".into(), fds as f64);
        }
        if let Some(threads) = self.threads {
            counts.insert("threads".into(), threads as f64);
        }
        counts
    }
}

/// A count that did not come back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// `open_fds`, `threads` or a gauge sample.
    pub what: String,
    /// Before the load.
    pub baseline: Option<f64>,
    /// After the load (and the settling time).
    pub end: Option<f64>,
}

/// What the soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Calls of the warm-up run before the baseline.
    pub warmup_calls: u64,
    /// After the warm-up, before the load.
    pub baseline: Reading,
    /// After the load, once counts settled (or `settle` passed).
    pub end: Reading,
    /// How long the end reading waited for the counts to settle.
    pub settled_after_ms: u64,
    /// Counts (fds, threads, gauges) not back at their baseline; empty when nothing leaked.
    pub differences: Vec<Difference>,
    /// True when `differences` is empty and both readings could be taken.
    pub returned_to_baseline: bool,
    /// End RSS minus baseline RSS, in bytes (reported, not judged).
    pub rss_growth_bytes: Option<i64>,
    /// `rss_growth_bytes` per call cycle of the load.
    pub rss_growth_per_cycle_bytes: Option<f64>,
    /// Problems reading callgate.
    pub errors: Vec<String>,
    /// The load run itself.
    pub run: Report,
}

/// Reads callgate's resources: `/proc/PID` when `pid` is given, `/metrics` always (over
/// TLS for `wss://`, trusting `ca_pem` or the system's CAs).
pub async fn read(url: &WsUrl, ca_pem: Option<&[u8]>, pid: Option<u32>) -> Result<Reading, String> {
    let text = crate::scrape::fetch(url, ca_pem).await?;
    let gauges = crate::scrape::gauges(&text);
    let process = crate::scrape::samples(&text, "process_");
    let from_metrics = |name: &str| process.get(name).map(|v| *v as u64);
    let mut reading = Reading {
        rss_bytes: from_metrics("process_resident_memory_bytes"),
        open_fds: from_metrics("process_open_fds"),
        threads: from_metrics("process_threads"),
        gauges,
    };
    if let Some(pid) = pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
            .count();
        reading.rss_bytes = crate::procfs::status_kib(&status, "VmRSS").map(|kib| kib * 1024);
        reading.threads = crate::procfs::status_kib(&status, "Threads");
        reading.open_fds = Some(fds as u64);
    }
    Ok(reading)
}

/// The counts of `end` that differ from `baseline`.
pub fn differences(baseline: &Reading, end: &Reading) -> Vec<Difference> {
    let before = baseline.counts();
    let after = end.counts();
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.get(name).copied(), after.get(name).copied());
            (b != a).then(|| Difference {
                what: name.clone(),
                baseline: b,
                end: a,
            })
        })
        .collect()
}

/// Runs the soak: a warm-up of `warmup_calls` calls (same settings), the baseline, the load
/// of `config`, then the end reading, retried for up to `settle` until the counts are back.
pub async fn soak(
    config: RunConfig,
    warmup_calls: u64,
    settle: Duration,
    stop: CancellationToken,
) -> SoakReport {
    let mut errors = Vec::new();
    // The idle gauges come from before any call: a warm-up's SIP transactions linger for
    // their RFC timers (up to 32 s) and are no baseline.
    let idle = match read(&config.url, config.ca_pem.as_deref(), config.gateway_pid).await {
        Ok(reading) => Some(reading),
        Err(e) => {
            errors.push(format!("idle reading: {e}"));
            None
        }
    };
    if warmup_calls > 0 {
        let mut warmup = config.clone();
        warmup.calls = warmup_calls;
        let _ = crate::run::run_until(warmup, stop.child_token()).await;
    }
    // Let the warm-up's hangups and unregistrations finish before the baseline.
    let baseline = settled(&config, None, settle).await;
    let baseline = match baseline {
        Ok((mut reading, _)) => {
            if let Some(idle) = idle {
                reading.gauges = idle.gauges;
            }
            reading
        }
        Err(e) => {
            errors.push(format!("baseline: {e}"));
            Reading::default()
        }
    };
    let cycles = config.calls;
    let report = crate::run::run_until(config.clone(), stop).await;
    let (end, settled_after) = match settled(&config, Some(&baseline), settle).await {
        Ok(result) => result,
        Err(e) => {
            errors.push(format!("end: {e}"));
            (Reading::default(), settle)
        }
    };
    let differences = differences(&baseline, &end);
    let rss_growth = match (baseline.rss_bytes, end.rss_bytes) {
        (Some(b), Some(e)) => Some(e as i64 - b as i64),
        _ => None,
    };
    SoakReport {
        warmup_calls,
        returned_to_baseline: differences.is_empty() && errors.is_empty(),
        baseline,
        end,
        settled_after_ms: u64::try_from(settled_after.as_millis()).unwrap_or(u64::MAX),
        differences,
        rss_growth_bytes: rss_growth,
        rss_growth_per_cycle_bytes: rss_growth.map(|g| g as f64 / cycles.max(1) as f64),
        errors,
        run: report,
    }
}

/// Reads until the counts equal `target` (or, without a target, stop changing between two
/// readings), for at most `settle`.
async fn settled(
    config: &RunConfig,
    target: Option<&Reading>,
    settle: Duration,
) -> Result<(Reading, Duration), String> {
    let started = clock::now();
    let mut previous: Option<Reading> = None;
    loop {
        let reading = read(&config.url, config.ca_pem.as_deref(), config.gateway_pid).await?;
        let waited = clock::now().saturating_duration_since(started);
        let done = match (target, &previous) {
            (Some(target), _) => differences(target, &reading).is_empty(),
            (None, Some(previous)) => differences(previous, &reading).is_empty(),
            (None, None) => false,
        };
        if done || waited >= settle {
            return Ok((reading, waited));
        }
        previous = Some(reading);
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

impl SoakReport {
    /// The human summary printed after the run's table.
    pub fn to_table(&self) -> String {
        let mut out = String::from("\nsoak (callgate before and after the load)\n");
        let mib =
            |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let num = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        out.push_str(&format!(
            "  warm-up calls {}, cycles {}, settled after {:.1} s\n",
            self.warmup_calls,
            self.run.calls.attempted,
            self.settled_after_ms as f64 / 1000.0
        ));
        out.push_str(&format!("  {:<44} {:>14} {:>14}\n", "", "baseline", "end"));
        out.push_str(&format!(
            "  {:<44} {:>14} {:>14}\n",
            "rss",
            mib(self.baseline.rss_bytes),
            mib(self.end.rss_bytes)
        ));
        out.push_str(&format!(
            "  {:<44} {:>14} {:>14}\n",
            "open fds",
            num(self.baseline.open_fds),
            num(self.end.open_fds)
        ));
        out.push_str(&format!(
            "  {:<44} {:>14} {:>14}\n",
            "threads",
            num(self.baseline.threads),
            num(self.end.threads)
        ));
        for (name, value) in &self.baseline.gauges {
            let end = self
                .end
                .gauges
                .get(name)
                .map_or("-".into(), |v| v.to_string());
            out.push_str(&format!("  {name:<44} {value:>14} {end:>14}\n"));
        }
        if let (Some(growth), Some(per_cycle)) =
            (self.rss_growth_bytes, self.rss_growth_per_cycle_bytes)
        {
            out.push_str(&format!(
                "  rss growth {:.1} KiB ({:.1} bytes per cycle; reported, not judged)\n",
                growth as f64 / 1024.0,
                per_cycle
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        if self.returned_to_baseline {
            out.push_str("  every count returned to its baseline\n");
        } else {
            for d in &self.differences {
                out.push_str(&format!(
                    "  NOT BACK: {} {:?} -> {:?}\n",
                    d.what, d.baseline, d.end
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_what_did_not_come_back() {
        let mut baseline = Reading {
            rss_bytes: Some(10),
            open_fds: Some(20),
            threads: Some(8),
            gauges: BTreeMap::from([("callgate_calls_active".to_string(), 0.0)]),
        };
        let mut end = baseline.clone();
        end.rss_bytes = Some(99);
        assert!(differences(&baseline, &end).is_empty(), "RSS is not judged");
        end.open_fds = Some(21);
        end.gauges.insert("callgate_calls_active".into(), 1.0);
        let found: Vec<String> = differences(&baseline, &end)
            .into_iter()
            .map(|d| d.what)
            .collect();
        assert_eq!(found, ["callgate_calls_active", "open_fds"]);
        baseline.gauges.insert("callgate_new".into(), 1.0);
        assert_eq!(
            differences(&baseline, &end).len(),
            3,
            "a gauge that vanished"
        );
    }
}
