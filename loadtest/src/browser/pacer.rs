//! Sends every call's audio frames at their own slot instants from one OS thread.
//!
//! Real browsers' frames reach a gateway spread over the 20 ms frame interval: each call has
//! its own phase and its own clock. The simulated calls' tokio timers cannot do that: a tokio
//! sleep ends on the runtime's next 1 ms tick, so the frames of the calls whose slots fall in
//! the same millisecond leave together (~10 at once with 200 calls). The gateway then finds
//! ~10 datagrams per wake-up, which makes its CPU per packet look cheaper than real traffic
//! would (issue 5; docs/benchmarks.md §3). With pacing, each call task prepares its frame
//! [`LEAD`] ahead of its slot and hands the sealed datagram here; this thread sends it at the
//! slot instant (within the kernel's timer slack) and measures how late it was.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock;

/// How far ahead of its slot a call task prepares a paced frame: more than a tokio timer's
/// rounding to the next 1 ms tick plus a busy runtime's scheduling delay.
pub const LEAD: Duration = Duration::from_millis(6);

/// SCHED_FIFO priority the pacing thread asks for: above the runtime's threads (normal
/// scheduling), below callgate's media workers should they run real-time
/// (`webrtc.realtime_priority`, 10 in the docs' runs), so the generator never preempts them.
const PACER_PRIORITY: u8 = 5;

/// Upper bounds (µs) of the lateness buckets; the last bucket is everything later.
const LATE_BOUNDS_US: [u64; 5] = [50, 100, 250, 500, 1_000];

/// One datagram to send at `at`.
struct Paced {
    at: Instant,
    /// Ties keep the order the datagrams were handed in.
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    datagram: Vec<u8>,
}

impl PartialEq for Paced {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Paced {}
impl PartialOrd for Paced {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Paced {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Counters the pacing thread keeps and [`FramePacer::stats`] reads.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    send_errors: AtomicU64,
    /// Handed in already past their slot (the call task itself was late).
    handed_late: AtomicU64,
    /// Audio frames str0m produced only after their slot: sent at once by the call task.
    unpaced: AtomicU64,
    /// Why the pacing thread runs at normal priority, when it does.
    not_realtime: Mutex<Option<String>>,
    late: [AtomicU64; LATE_BOUNDS_US.len() + 1],
    max_late_us: AtomicU64,
}

/// How precisely the paced frames left (the report's `generator.frame_pacing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PacingStats {
    /// Datagrams sent by the pacing thread.
    pub sent: u64,
    /// Datagrams the socket refused.
    pub send_errors: u64,
    /// Datagrams a call task handed in after their slot had already passed.
    pub handed_late: u64,
    /// Audio frames that left without the pacer: str0m produced them after their slot had
    /// passed (the call task ran late), so the call task sent them at once.
    pub unpaced: u64,
    /// Why the pacing thread ran at normal priority (it asks for SCHED_FIFO, which needs
    /// CAP_SYS_NICE or an RLIMIT_RTPRIO); `None` when it ran real-time.
    pub not_realtime: Option<String>,
    /// Lateness against the slot, 99th percentile, as the upper bound of its bucket (µs;
    /// `None` when beyond the last bound, 1 ms).
    pub late_p99_at_most_us: Option<u64>,
    /// Datagrams sent more than 1 ms after their slot.
    pub late_over_1ms: u64,
    /// The latest one, µs after its slot.
    pub max_late_us: u64,
}

/// What call tasks hand to the pacing thread.
#[derive(Default)]
struct Inbox {
    handed: Vec<Paced>,
    /// When the pacing thread will wake by itself: a datagram due later needs no wake-up.
    wakes_at: Option<Instant>,
    /// The thread is asleep with nothing queued (only a new datagram wakes it).
    idle: bool,
    closed: bool,
}

/// The queue shared by the call tasks and the pacing thread. A mutex and a condition
/// variable rather than a channel: std's channels spin before they park, which, on the one
/// core the generator is given, takes CPU from the tasks that prepare the frames.
#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
}

/// The pacing thread and its queue; shared by every call of a run (`Arc`).
pub struct FramePacer {
    shared: Arc<Shared>,
    order: AtomicU64,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for FramePacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePacer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl FramePacer {
    /// Starts the pacing thread.
    pub fn start() -> std::io::Result<Arc<FramePacer>> {
        let shared = Arc::new(Shared::default());
        let counters = Arc::new(Counters::default());
        let (thread_shared, thread_counters) = (shared.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("frame-pacer".into())
            .spawn(move || pace(&thread_shared, &thread_counters))?;
        Ok(Arc::new(FramePacer {
            shared,
            order: AtomicU64::new(0),
            counters,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues `datagram` to leave `socket` for `to` at `at` (at once if `at` has passed).
    /// False once the pacer is stopped.
    pub fn send_at(
        &self,
        at: Instant,
        socket: &Arc<UdpSocket>,
        to: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if at < clock::now() {
            self.counters.handed_late.fetch_add(1, Ordering::Relaxed);
        }
        let paced = Paced {
            at,
            order: self.order.fetch_add(1, Ordering::Relaxed),
            socket: socket.clone(),
            to,
            datagram: datagram.to_vec(),
        };
        let mut inbox = lock(&self.shared.inbox);
        if inbox.closed {
            return false;
        }
        inbox.handed.push(paced);
        let sooner = inbox.idle || inbox.wakes_at.is_some_and(|wake| at < wake);
        drop(inbox);
        if sooner {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Counts an audio frame that left without the pacer (its slot had passed).
    pub fn count_unpaced(&self) {
        self.counters.unpaced.fetch_add(1, Ordering::Relaxed);
    }

    /// What was sent so far and how late.
    pub fn stats(&self) -> PacingStats {
        let c = &self.counters;
        let buckets: Vec<u64> = c.late.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = buckets.iter().sum();
        let mut p99 = None;
        if total > 0 {
            // The smallest bound under which at least 99 % of the datagrams fell.
            let wanted = total - total / 100;
            let mut seen = 0;
            for (i, count) in buckets.iter().enumerate() {
                seen += count;
                if seen >= wanted {
                    p99 = LATE_BOUNDS_US.get(i).copied();
                    break;
                }
            }
        }
        PacingStats {
            sent: c.sent.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            handed_late: c.handed_late.load(Ordering::Relaxed),
            unpaced: c.unpaced.load(Ordering::Relaxed),
            not_realtime: lock(&c.not_realtime).clone(),
            late_p99_at_most_us: p99,
            late_over_1ms: buckets.last().copied().unwrap_or(0),
            max_late_us: c.max_late_us.load(Ordering::Relaxed),
        }
    }

    /// Sends what is queued and stops the thread (also done on drop).
    pub fn stop(&self) {
        lock(&self.shared.inbox).closed = true;
        self.shared.wake.notify_one();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for FramePacer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A poisoned lock still holds usable data here (counters and a queue of datagrams).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pacing thread: sends what is due, sleeps until the next slot or a sooner datagram.
fn pace(shared: &Shared, counters: &Counters) {
    if let Err(e) = super::realtime::make_current_thread_realtime(PACER_PRIORITY) {
        *lock(&counters.not_realtime) = Some(format!("SCHED_FIFO refused: {e}"));
    }
    // Sleeps end within 1 µs of their deadline rather than the default 50 µs. Best effort:
    // a refusal shows in the lateness figures.
    let _ = set_own_timer_slack(1_000);
    let mut queue: BinaryHeap<Reverse<Paced>> = BinaryHeap::new();
    loop {
        let now = clock::now();
        while queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(paced)) = queue.pop() else {
                break;
            };
            send(&paced, counters);
        }
        let mut inbox = lock(&shared.inbox);
        if inbox.handed.is_empty() {
            let next = queue.peek().map(|Reverse(p)| p.at);
            if inbox.closed && next.is_none() {
                return;
            }
            inbox.wakes_at = next;
            inbox.idle = next.is_none();
            inbox = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(clock::now());
                    match shared.wake.wait_timeout(inbox, wait) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    }
                }
                None => shared.wake.wait(inbox).unwrap_or_else(|e| e.into_inner()),
            };
            inbox.wakes_at = None;
            inbox.idle = false;
        }
        queue.extend(inbox.handed.drain(..).map(Reverse));
    }
}

/// Sets the calling thread's timer slack (how late the kernel may end its sleeps to batch
/// wake-ups). The per-thread file is `/proc/<tid>/timerslack_ns`: `/proc/thread-self` has
/// none, and `/proc/self`'s is the main thread's.
fn set_own_timer_slack(nanos: u64) -> std::io::Result<()> {
    // "<pid>/task/<tid>"
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .ok_or_else(|| std::io::Error::other("/proc/thread-self names no thread"))?;
    let path = std::path::Path::new("/proc")
        .join(tid)
        .join("timerslack_ns");
    std::fs::write(path, nanos.to_string())
}

fn send(paced: &Paced, counters: &Counters) {
    let late_us = u64::try_from(clock::now().saturating_duration_since(paced.at).as_micros())
        .unwrap_or(u64::MAX);
    match paced.socket.send_to(&paced.datagram, paced.to) {
        Ok(_) => {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            counters.send_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let bucket = LATE_BOUNDS_US
        .iter()
        .position(|&bound| late_us <= bound)
        .unwrap_or(LATE_BOUNDS_US.len());
    if let Some(count) = counters.late.get(bucket) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    counters.max_late_us.fetch_max(late_us, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_leave_in_slot_order_at_their_slot() -> std::io::Result<()> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
        let to = receiver.local_addr()?;
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let pacer = FramePacer::start()?;
        let start = clock::now() + Duration::from_millis(20);
        // Handed in out of order: 3 ms, 1 ms, 2 ms after `start`.
        for ms in [3u8, 1, 2] {
            assert!(pacer.send_at(
                start + Duration::from_millis(u64::from(ms)),
                &sender,
                to,
                &[ms]
            ));
        }
        let mut buf = [0u8; 8];
        for expected in [1u8, 2, 3] {
            let (n, _) = receiver.recv_from(&mut buf)?;
            let arrived = clock::now();
            assert_eq!(buf.get(..n), Some(&[expected][..]));
            // Never early: sent at or after its slot.
            assert!(arrived >= start + Duration::from_millis(u64::from(expected)));
        }
        pacer.stop();
        let stats = pacer.stats();
        assert_eq!(
            (stats.sent, stats.send_errors, stats.handed_late),
            (3, 0, 0)
        );
        assert!(!pacer.send_at(clock::now(), &sender, to, &[9]));
        Ok(())
    }

    #[test]
    fn a_thread_sets_its_own_timer_slack_not_the_process_s() -> std::io::Result<()> {
        let main_slack = std::fs::read_to_string("/proc/self/timerslack_ns")?;
        let outcome = std::thread::spawn(|| {
            set_own_timer_slack(1_000)?;
            let link = std::fs::read_link("/proc/thread-self")?;
            let tid = link
                .file_name()
                .map(|t| t.to_os_string())
                .unwrap_or_default();
            std::fs::read_to_string(
                std::path::Path::new("/proc")
                    .join(tid)
                    .join("timerslack_ns"),
            )
        })
        .join()
        .map_err(|_| std::io::Error::other("the thread panicked"))?;
        match outcome {
            Ok(slack) => assert_eq!(slack.trim(), "1000"),
            // Some kernels want CAP_SYS_NICE even for a thread's own slack.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
        }
        assert_eq!(
            std::fs::read_to_string("/proc/self/timerslack_ns")?,
            main_slack
        );
        Ok(())
    }

    #[test]
    fn stopping_sends_what_is_still_queued() -> std::io::Result<()> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let pacer = FramePacer::start()?;
        let at = clock::now() + Duration::from_millis(30);
        assert!(pacer.send_at(at, &sender, receiver.local_addr()?, b"last"));
        pacer.stop();
        let mut buf = [0u8; 8];
        let (n, _) = receiver.recv_from(&mut buf)?;
        assert_eq!(buf.get(..n), Some(&b"last"[..]));
        assert_eq!(pacer.stats().sent, 1);
        Ok(())
    }
}
