//! Returns the heap that glibc keeps after load back to the OS.
//!
//! glibc gives each busy thread its own arena and shrinks a non-main arena only from its top,
//! so after a burst of calls the tokio worker threads' arenas keep their peak size although
//! almost nothing in them is in use: measured after 4,000 soak cycles, 96 MiB of arena memory
//! held 4.4 MiB of live allocations, and RSS stayed at 105 MiB against a 24 MiB baseline.
//! `malloc_trim(0)` returns the free pages of every arena (RSS 105 → 42 MiB in that run).
//! The task runs it once per [`TRIM_INTERVAL`]; each arena is locked only while its own free
//! pages are given back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often the heap is trimmed: often enough that RSS follows load down within a minute,
/// rarely enough that the arena locks it takes are negligible.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the trimming task (glibc only; other allocators return memory themselves).
pub fn spawn_trim(stop: CancellationToken) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let trimmed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            debug!(trimmed, "heap trimmed");
        }
    });
}

/// Gives the free pages of every malloc arena back to the OS; true if any were released.
#[allow(unsafe_code, reason = "the one FFI call; see the SAFETY note")]
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
        // pointer from us and is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// A freed large working set spread over many allocations is returned to the OS.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_releases_freed_heap() {
        // Allocate ~64 MiB in small chunks (below the mmap threshold, so they live in an
        // arena), keep every 64th so the arena cannot shrink from its top, free the rest.
        let mut chunks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = chunks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(chunks);
        assert!(super::trim(), "malloc_trim released nothing");
        assert_eq!(kept.len(), 256);
    }
}
