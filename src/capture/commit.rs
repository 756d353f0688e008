//! Committing a batch: wait for room in the outbox (backpressure), then commit and flush,
//! retrying with backoff (and reopening the store after an I/O error) until it succeeds.
//! Nothing is dropped while commits fail: the bounded channel from the watches fills and
//! the watches wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Capture;
use crate::backoff::Backoff;
use crate::store::Batch;

/// Free space the state directory needs before a failed store is reopened: sled writes a
/// fresh segment (512 KiB) on recovery, and reopening on a full disk only fails again.
const MIN_FREE_TO_REOPEN: u64 = 4 << 20;

/// How often a full outbox is looked at again.
const ROOM_POLL: Duration = Duration::from_millis(200);

impl Capture {
    /// Waits until the outbox has room. False when `shutdown` fired first: the caller then
    /// leaves its observations uncommitted (the checkpoint did not move past them, so the
    /// next run observes them again).
    pub(super) async fn wait_for_room(&self, shutdown: &CancellationToken) -> bool {
        let mut warned = false;
        loop {
            match self.store.outbox_bytes() {
                Ok(b) if b < self.max_outbox_bytes => break,
                Ok(b) => {
                    if !warned {
                        warn!(
                            outbox_bytes = b,
                            max_bytes = self.max_outbox_bytes,
                            "outbox full: watches paused until the slowest sink catches up"
                        );
                        warned = true;
                    }
                }
                Err(e) => warn!(error = %e, "reading outbox size failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(ROOM_POLL) => {}
            }
        }
        if warned {
            info!("outbox has room again: watches resume");
        }
        true
    }

    /// Commits and announces a batch; returns the durable sequence number after it.
    pub(super) async fn commit(&self, batch: Batch) -> u64 {
        if batch.is_empty() {
            return *self.durable.borrow();
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = std::time::Instant::now();
            let result = match self.store.commit(&batch) {
                Ok(last) => self.store.flush().await.map(|_| last),
                Err(e) => Err(e),
            };
            match result {
                Ok(last) => {
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.stats.healthy.store(true, Ordering::Relaxed);
                    if let Some(seq) = last {
                        self.durable.send_replace(seq);
                    }
                    return *self.durable.borrow();
                }
                Err(e) => {
                    self.stats.healthy.store(false, Ordering::Relaxed);
                    self.metrics.error("commit");
                    let wait = backoff.next_delay();
                    error!(error = %e, retry_in = ?wait, "committing changes failed; watches are paused until it succeeds");
                    tokio::time::sleep(wait).await;
                    self.reopen_if_room().await;
                }
            }
        }
    }

    /// sled fails every later operation after an I/O error, even once the cause (a full
    /// disk) is gone: start it afresh once there is room again.
    async fn reopen_if_room(&self) {
        if self
            .store
            .space_available()
            .is_some_and(|b| b < MIN_FREE_TO_REOPEN)
        {
            return;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.reopen()).await {
            Ok(Ok(())) => info!("state store reopened"),
            Ok(Err(e)) => warn!(error = %e, "reopening the state store failed"),
            Err(e) => warn!(error = %e, "reopening the state store panicked"),
        }
    }
}
