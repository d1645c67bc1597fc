//! Real-time scheduling for the media workers (`webrtc.realtime_priority`): a worker thread
//! running SCHED_FIFO runs as soon as a packet wakes it instead of waiting for whatever else
//! shares its core to use up its time slice (docs/benchmarks.md: with a busy neighbour on the
//! core, the relay delay's mean falls from 1.5–2 ms to 0.14–0.3 ms; on an idle core no
//! measurable change). Asterisk (`-p`) and FreeSWITCH offer the same for their media threads.
#![allow(
    unsafe_code,
    reason = "sched_setscheduler has no safe std wrapper; one call, confined here"
)]

use std::io;

/// Puts the calling thread in SCHED_FIFO at `priority` (1-99).
pub fn make_current_thread_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: pid 0 names the calling thread; `param` is a live, initialised sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_priority_out_of_range_is_refused_by_the_kernel_not_panicking() {
        // In a thread of its own, so a success (when the tests run as root) stays there.
        let outcome = std::thread::spawn(|| make_current_thread_realtime(100))
            .join()
            .expect("thread");
        let e = outcome.expect_err("SCHED_FIFO priorities stop at 99");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
