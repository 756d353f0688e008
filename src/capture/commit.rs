//! Committing a batch: wait for room in the outbox (backpressure), then build the batch,
//! commit and flush it. A failure at any of these steps fails the whole batch, which is
//! built again from the same inputs after a backoff (and a reopen of the store after an
//! I/O error) until it commits. Nothing is dropped while that fails: the bounded channel
//! from the watches fills and the watches wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::batch::BatchBuilder;
use super::Capture;
use crate::backoff::Backoff;
use crate::store::{Batch, StoreError};

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
            match self.store.stored_bytes() {
                Ok(b) if b < self.max_outbox_bytes => break,
                Ok(b) => {
                    if !warned {
                        warn!(
                            stored_bytes = b,
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

    /// Builds a batch with `build` and commits it; returns what `build` returned and the
    /// durable sequence number after the batch.
    ///
    /// A failing store read while building, or a failing commit or flush, fails the whole
    /// batch: nothing of it is written, so no checkpoint moves. After a backoff (and a
    /// reopen of the store, which an I/O error leaves failing) the batch is built again
    /// from the same inputs, against the store as it is then, until it commits.
    pub(super) async fn commit<T>(
        &self,
        build: impl Fn(&mut BatchBuilder<'_>) -> Result<T, StoreError>,
    ) -> (T, u64) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failed = false;
        loop {
            match self.attempt(&build, failed).await {
                Ok((out, last)) => {
                    self.stats.healthy.store(true, Ordering::Relaxed);
                    if let Some(seq) = last {
                        self.durable.send_if_modified(|durable| {
                            let newer = seq > *durable;
                            if newer {
                                *durable = seq;
                            }
                            newer
                        });
                    }
                    return (out, *self.durable.borrow());
                }
                Err((step, e)) => {
                    failed = true;
                    self.stats.healthy.store(false, Ordering::Relaxed);
                    self.metrics.error("commit");
                    let wait = backoff.next_delay();
                    error!(error = %e, retry_in = ?wait, "{step} failed; the batch is built again, watches are paused until it commits");
                    tokio::time::sleep(wait).await;
                    self.reopen_if_room().await;
                }
            }
        }
    }

    /// One try at building and committing a batch: what `build` returned and the sequence
    /// number to announce as durable, if any; on failure, which step failed.
    async fn attempt<T>(
        &self,
        build: &impl Fn(&mut BatchBuilder<'_>) -> Result<T, StoreError>,
        after_failure: bool,
    ) -> Result<(T, Option<u64>), (&'static str, StoreError)> {
        let committing = |e| ("committing changes", e);
        let mut batch = BatchBuilder::new(&self.store);
        let out = build(&mut batch).map_err(|e| ("reading state", e))?;
        let mut last = self.write(&batch.into_batch()).await.map_err(committing)?;
        if after_failure {
            // A failed try may have committed entries whose flush then failed; a reopen can
            // recover them, and the batch built again after it, seeing their states, does
            // not write them again. Announce everything the store holds, now flushed.
            self.store.flush().await.map_err(committing)?;
            last = Some(self.store.last_seq().map_err(committing)?);
        }
        Ok((out, last))
    }

    /// Commits and flushes `batch`; returns the sequence number of its last outbox entry,
    /// if it has any.
    async fn write(&self, batch: &Batch) -> Result<Option<u64>, StoreError> {
        if batch.is_empty() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let last = self.store.commit(batch)?;
        self.store.flush().await?;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(last)
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
