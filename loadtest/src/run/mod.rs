//! One load run: simulated agents place calls at a given rate, up to a concurrency, hold them
//! while checking the echoed audio, hang up, and the results become a [`Report`].
//!
//! Shape (each part owns its state; they talk over channels):
//! - one **agent task** per simulated agent (one WebSocket, extension `base + i`, one call at a
//!   time), placing a call per ticket it is handed and sending a [`CallOutcome`] for each;
//! - the **pacer** (the `run` future itself) hands out tickets on schedule
//!   ([`crate::config::schedule_offset`]) to idle agents, which is what bounds concurrency;
//! - a **collector** task folds outcomes into the aggregate as they arrive, so memory does not
//!   grow with the number of calls;
//! - a **sampler** task reads `/proc` for callgate and for this process.
//!
//! Every wait is bounded: at `duration_limit` no call starts any more, calls in progress are
//! hung up, and whatever is still running [`WIND_DOWN`] later is aborted.

mod agent;
pub(crate) mod sampler;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{RunConfig, schedule_offset};
use crate::procfs::{self, Process};
use crate::report::{Aggregate, Report, RunFacts};

pub(crate) use agent::register;
pub use agent::{CallOutcome, CallResult};

/// How long calls in progress get to hang up cleanly once the duration limit is reached (or
/// the run is stopped) before their tasks are aborted.
pub const WIND_DOWN: Duration = Duration::from_secs(5);
/// Most WebSocket handshakes in flight at once while the agents connect.
const CONNECT_PARALLELISM: usize = 64;
/// Wait before reading callgate's `/metrics` after the last call, so its media workers have
/// published their final counts (they do every 250 ms).
const METRICS_SETTLE: Duration = Duration::from_millis(500);
/// A call handed to an agent more than this after its slot, although an agent was idle,
/// counts as a late start: the generator could not keep up with its own schedule.
pub const LATE_START: Duration = Duration::from_millis(50);

/// Runs the load described by `config` and reports; never fails as a whole (every failure is
/// a counted outcome) and returns within `duration_limit` + [`WIND_DOWN`] + ~3.5 s (settling
/// and reading callgate's `/metrics`, bounded by a 3 s timeout).
pub async fn run(config: RunConfig) -> Report {
    run_until(config, CancellationToken::new()).await
}

/// [`run`], stopping early (like reaching the duration limit) when `stop` is cancelled, e.g.
/// on Ctrl-C.
pub async fn run_until(config: RunConfig, stop: CancellationToken) -> Report {
    let started = clock::now();
    let deadline = started + config.duration_limit;
    let config = Arc::new(config);
    // Cancelled at the deadline or on request: everyone winds down.
    let cancel = stop.child_token();
    let limit_reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limiter = {
        let cancel = cancel.clone();
        let limit_reached = limit_reached.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {
                    limit_reached.store(true, Ordering::Relaxed);
                    cancel.cancel();
                }
                () = cancel.cancelled() => {}
            }
        })
    };

    let (pacer, pacing_error) = match config.pace_frames.then(crate::browser::FramePacer::start) {
        Some(Ok(pacer)) => (Some(pacer), None),
        Some(Err(e)) => (None, Some(format!("frame pacer thread: {e}"))),
        None => (None, None),
    };
    let active = Arc::new(Active {
        pacer: pacer.clone(),
        ..Active::default()
    });
    let sampler =
        sampler::Sampler::start(config.gateway_pid, config.sample_interval, active.clone());

    // Agents.
    let agents = config.agents();
    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(outcome_rx));
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    let connect_slots = Arc::new(tokio::sync::Semaphore::new(CONNECT_PARALLELISM));
    let mut tickets = Vec::with_capacity(agents as usize);
    let mut tasks = JoinSet::new();
    for index in 0..agents {
        let (ticket_tx, ticket_rx) = mpsc::channel(1);
        tickets.push(ticket_tx);
        tasks.spawn(
            agent::Agent::new(
                index,
                config.clone(),
                ticket_rx,
                idle_tx.clone(),
                outcome_tx.clone(),
                active.clone(),
                cancel.clone(),
                connect_slots.clone(),
            )
            .run(),
        );
    }
    drop(idle_tx);
    drop(outcome_tx);

    // Wait until every agent has connected (or failed to).
    let mut idle: VecDeque<u32> = VecDeque::new();
    let mut agent_failures = std::collections::BTreeMap::<String, u64>::new();
    let mut reported = 0u32;
    while reported < agents {
        let message = tokio::select! {
            m = idle_rx.recv() => m,
            () = cancel.cancelled() => None,
        };
        match message {
            Some(AgentMsg::Idle(i)) => idle.push_back(i),
            Some(AgentMsg::Lost(reason)) => *agent_failures.entry(reason).or_default() += 1,
            None => break,
        }
        reported += 1;
    }
    let agents_connected = u64::try_from(idle.len()).unwrap_or(u64::MAX);

    // The schedule.
    let metrics_before = crate::scrape::fetch(&config.url, config.ca_pem.as_deref()).await;
    let schedule_start = clock::now();
    let baseline = sampler.baseline();
    let mut issued = 0u64;
    let mut late_starts = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut concurrency_waits = 0u64;
    let mut alive = agents_connected;
    'schedule: for k in 0..config.calls {
        if alive == 0 {
            break;
        }
        let due = schedule_start + schedule_offset(k, config.rate, config.ramp);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            () = cancel.cancelled() => break 'schedule,
        }
        // Drain what the agents reported meanwhile.
        while let Ok(message) = idle_rx.try_recv() {
            match message {
                AgentMsg::Idle(i) => idle.push_back(i),
                AgentMsg::Lost(reason) => {
                    *agent_failures.entry(reason).or_default() += 1;
                    alive = alive.saturating_sub(1);
                }
            }
        }
        let agent = match idle.pop_front() {
            Some(agent) => {
                let lag = clock::now().saturating_duration_since(due);
                max_lag = max_lag.max(lag);
                if lag > LATE_START {
                    late_starts += 1;
                }
                agent
            }
            None => {
                // Every agent is in a call: the concurrency bound holds this call back.
                concurrency_waits += 1;
                loop {
                    let message = tokio::select! {
                        m = idle_rx.recv() => m,
                        () = cancel.cancelled() => break 'schedule,
                    };
                    match message {
                        Some(AgentMsg::Idle(i)) => break i,
                        Some(AgentMsg::Lost(reason)) => {
                            *agent_failures.entry(reason).or_default() += 1;
                            alive = alive.saturating_sub(1);
                            if alive == 0 {
                                break 'schedule;
                            }
                        }
                        None => break 'schedule,
                    }
                }
            }
        };
        let Some(sender) = tickets.get(agent as usize) else {
            continue;
        };
        if sender.send(Ticket { index: k, due }).await.is_ok() {
            issued += 1;
        }
    }
    let schedule_end = clock::now();
    // No more tickets: agents finish their call and close.
    drop(tickets);
    let wind_down_until = async {
        cancel.cancelled().await;
        tokio::time::sleep(WIND_DOWN).await;
    };
    tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => {}
        () = wind_down_until => tasks.abort_all(),
    }
    while tasks.join_next().await.is_some() {}
    let calls_end = clock::now();
    cancel.cancel();
    limiter.abort();
    let aggregate = collector.await.unwrap_or_default();
    let samples = sampler.finish().await;
    if metrics_before.is_ok() {
        // The media workers publish their counters every 250 ms.
        tokio::time::sleep(METRICS_SETTLE).await;
    }
    let gateway_counters = match (
        metrics_before,
        crate::scrape::fetch(&config.url, config.ca_pem.as_deref()).await,
    ) {
        (Ok(before), Ok(after)) => Ok(crate::scrape::increase(
            &crate::scrape::counters(&before),
            &crate::scrape::counters(&after),
        )),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let facts = RunFacts {
        config: &config,
        wall: calls_end.saturating_duration_since(started),
        calls_window: calls_end.saturating_duration_since(schedule_start),
        schedule_window: schedule_end.saturating_duration_since(schedule_start),
        stopped_by_limit: limit_reached.load(Ordering::Relaxed),
        stopped_by_request: stop.is_cancelled(),
        agents_requested: u64::from(agents),
        agents_connected,
        agent_failures,
        issued,
        late_starts,
        max_start_lag: max_lag,
        concurrency_waits,
        peak_active: active.peak.load(Ordering::Relaxed),
        baseline,
        samples,
        generator_pid: std::process::id(),
        open_files_limit: procfs::open_files_limit(Process::Myself),
        gateway_counters,
        pacing: match (pacer, pacing_error) {
            (Some(pacer), _) => {
                pacer.stop();
                Some(Ok(pacer.stats()))
            }
            (None, Some(error)) => Some(Err(error)),
            (None, None) => None,
        },
    };
    Report::build(facts, aggregate)
}

/// Calls up right now and the most there were, and the round trips since the last sample,
/// shared by the agents and the sampler.
#[derive(Debug, Default)]
pub(crate) struct Active {
    now: AtomicU64,
    peak: AtomicU64,
    /// Every call's echoes, taken at each sample (the timeline's latency).
    pub(crate) rtt: Arc<crate::media::RttWindow>,
    /// The run's frame pacer (`--pace-frames`).
    pub(crate) pacer: Option<Arc<crate::browser::FramePacer>>,
}

impl Active {
    /// A call is established.
    pub(crate) fn up(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// An established call ended.
    pub(crate) fn down(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls up now.
    pub(crate) fn current(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

/// One call to place, handed to an idle agent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// 0-based call number.
    pub index: u64,
    /// When the schedule wanted it to start.
    pub due: Instant,
}

/// What agents tell the pacer.
#[derive(Debug)]
pub(crate) enum AgentMsg {
    /// Agent `i` is connected and has no call.
    Idle(u32),
    /// An agent is gone (could not connect, or its WebSocket broke), with why.
    Lost(String),
}

/// Folds outcomes into the aggregate until every sender is gone.
async fn collect(mut outcomes: mpsc::UnboundedReceiver<CallOutcome>) -> Aggregate {
    let mut aggregate = Aggregate::default();
    while let Some(outcome) = outcomes.recv().await {
        aggregate.add(outcome);
    }
    aggregate
}
