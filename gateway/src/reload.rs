//! Re-reading files without a restart (the HTTPS certificate, the credentials file): one
//! SIGHUP listener per gateway shared by every reloader, and the poll-or-signal loop they
//! run in.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// SIGHUPs received since start, as a counter every reloader watches.
pub type Hangups = watch::Receiver<u64>;

/// Starts listening for SIGHUP until `cancel`. The signal is handled from the moment this
/// returns (so a SIGHUP no longer terminates the process).
pub fn listen_for_hangups(cancel: CancellationToken) -> Hangups {
    let (tx, rx) = watch::channel(0u64);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        received = signal.recv() => match received {
                            Some(()) => tx.send_modify(|count| *count += 1),
                            None => return,
                        },
                    }
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP; files reload by polling only"),
    }
    rx
}

/// Calls `check(forced)` every `interval` (zero: never by polling; `forced` false) and at
/// every SIGHUP (`forced` true), until `cancel`.
pub async fn run(
    interval: Duration,
    mut hangups: Hangups,
    cancel: CancellationToken,
    mut check: impl FnMut(bool),
) {
    loop {
        let poll = async {
            if interval.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(interval).await;
        };
        let hangup = async {
            if hangups.changed().await.is_err() {
                // The listener is gone (shutdown, or no signal support): polling only.
                std::future::pending::<()>().await;
            }
        };
        let forced = tokio::select! {
            () = cancel.cancelled() => return,
            () = poll => false,
            () = hangup => true,
        };
        check(forced);
    }
}
