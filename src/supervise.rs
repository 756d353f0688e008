//! Supervision of the long-running tasks of `crbridge run`: each is spawned under a name, its
//! `JoinHandle` is watched, and a panic or an exit before its shutdown was requested is
//! logged at ERROR with the task's name and then handled by the task's [`Policy`]: restart
//! with backoff, or stop the process with a non-zero exit.
//!
//! While a task is down (waiting to restart, or stopping the process) it is listed in
//! [`Tasks`], which `/healthz` and `/readyz` read ([`crate::stats`]); a restarted task leaves
//! the list as soon as it runs again. Restarts are counted in `crbridge_task_restarts_total`.
//!
//! ```text
//!            spawn ──> running ──exit after cancel──> done
//!              ▲          │
//!   backoff ───┘          └──panic / early exit──> Restart: down, wait, spawn
//!                                                  StopProcess: down, cancel shutdown
//! ```
//!
//! The decision is the pure [`Restarts::decide`]; the loop around it only does the I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// First restart after 1–2 s: long enough that a task failing on every start does not
/// spin, short enough that a dispatcher is back before a broker notices.
const RESTART_MIN: Duration = Duration::from_secs(2);
/// Restarts of a task failing over and over (a poison pill) slow down to one a minute, so
/// the log stays readable and the loop stays cheap.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A task that ran this long before failing failed for a new reason: its next restart
/// starts from the shortest delay again.
const STABLE: Duration = Duration::from_secs(60);

/// What happens when a task panics or exits before its shutdown was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Start it again after a backoff. For tasks whose state is all durable (the store,
    /// a cursor, a checkpoint), so a fresh start loses nothing.
    Restart,
    /// Stop the process (usual shutdown order, then a non-zero exit). For tasks whose
    /// in-memory state cannot be rebuilt in place, or that cannot be started twice.
    StopProcess,
}

/// How a task's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The future returned.
    Returned,
    /// The future panicked, with the panic message.
    Panicked(String),
}

impl Exit {
    /// How a spawned task ended, from its `JoinHandle`'s result.
    pub fn of(result: Result<(), JoinError>) -> Exit {
        match result {
            Ok(()) => Exit::Returned,
            Err(e) => Exit::Panicked(panic_message(e)),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Returned => f.write_str("exited unexpectedly"),
            Exit::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// What the supervisor does after an [`Exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The task is over: it ended after its shutdown was requested.
    Done,
    /// A panic during shutdown of a task that would restart: reported, not restarted.
    DoneFailed,
    /// Start it again after this delay.
    Restart(Duration),
    /// Stop the process with a non-zero exit.
    StopProcess,
}

/// The pure part of supervising one task: its policy, its backoff, when it last started.
#[derive(Debug)]
pub struct Restarts {
    policy: Policy,
    backoff: Backoff,
    started: Instant,
}

impl Restarts {
    /// A task under `policy`, started now.
    pub fn new(policy: Policy) -> Self {
        Restarts {
            policy,
            backoff: Backoff::new(RESTART_MIN, RESTART_MAX),
            started: Instant::now(),
        }
    }

    /// Records that the task (re)started now.
    pub fn started(&mut self) {
        self.started = Instant::now();
    }

    /// What to do after `exit`; `stop_requested` is true once the task's shutdown (or the
    /// whole process's) was requested.
    pub fn decide(&mut self, exit: &Exit, stop_requested: bool) -> Decision {
        match (exit, stop_requested, self.policy) {
            (Exit::Returned, true, _) => Decision::Done,
            // A panic is a bug whenever it happens; one in a task that stops the process
            // still makes the exit non-zero.
            (Exit::Panicked(_), true, Policy::Restart) => Decision::DoneFailed,
            (_, _, Policy::StopProcess) => Decision::StopProcess,
            (_, false, Policy::Restart) => {
                if self.started.elapsed() >= STABLE {
                    self.backoff.reset();
                }
                Decision::Restart(self.backoff.next_delay())
            }
        }
    }
}

/// The tasks that are down right now: name → what happened and what follows. Read by the
/// health endpoints.
#[derive(Debug, Default)]
pub struct Tasks {
    down: Mutex<BTreeMap<String, String>>,
}

impl Tasks {
    /// `(task, reason)` for every task that is down, by name.
    pub fn down(&self) -> Vec<(String, String)> {
        self.down
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn set_down(&self, task: &str, reason: String) {
        if let Ok(mut d) = self.down.lock() {
            d.insert(task.to_string(), reason);
        }
    }

    pub(crate) fn set_up(&self, task: &str) {
        if let Ok(mut d) = self.down.lock() {
            d.remove(task);
        }
    }
}

/// Spawns and watches the named long-running tasks of one process.
#[derive(Clone)]
pub struct Supervisor {
    tasks: Arc<Tasks>,
    metrics: Arc<Metrics>,
    stopping: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// Reports into `tasks` and `metrics`; cancels `stopping` (the process's shutdown) when
    /// a [`Policy::StopProcess`] task fails. Once `stopping` is cancelled no task restarts.
    pub fn new(tasks: Arc<Tasks>, metrics: Arc<Metrics>, stopping: CancellationToken) -> Self {
        Supervisor {
            tasks,
            metrics,
            stopping,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `make()` as task `name`, again after a backoff whenever it panics or returns
    /// before `cancel` (or the process's shutdown) fires ([`Policy::Restart`]). The returned
    /// handle ends when the task has ended for good.
    pub fn restart<F, Fut>(
        &self,
        name: &str,
        cancel: CancellationToken,
        mut make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.supervise(name, Policy::Restart, cancel, move || {
            Some(tokio::spawn(make()))
        })
    }

    /// Runs `task` as task `name`; if it panics, or returns before `cancel` fires, the
    /// process stops with a non-zero exit ([`Policy::StopProcess`]).
    pub fn stop_on_failure<Fut>(
        &self,
        name: &str,
        cancel: CancellationToken,
        task: Fut,
    ) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.observe(name, cancel, tokio::spawn(task))
    }

    /// Watches an already spawned task `name` under [`Policy::StopProcess`] (for servers
    /// that own their listener and so cannot be started twice).
    pub fn observe(
        &self,
        name: &str,
        cancel: CancellationToken,
        handle: JoinHandle<()>,
    ) -> JoinHandle<()> {
        let mut handle = Some(handle);
        self.supervise(name, Policy::StopProcess, cancel, move || handle.take())
    }

    /// The first failure that stopped the process, if any: the caller exits non-zero.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    fn supervise(
        &self,
        name: &str,
        policy: Policy,
        cancel: CancellationToken,
        mut start: impl FnMut() -> Option<JoinHandle<()>> + Send + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let mut restarts = Restarts::new(policy);
            while let Some(handle) = start() {
                restarts.started();
                this.tasks.set_up(&name);
                let exit = Exit::of(handle.await);
                let stop_requested = cancel.is_cancelled() || this.stopping.is_cancelled();
                match restarts.decide(&exit, stop_requested) {
                    Decision::Done => return,
                    Decision::DoneFailed => {
                        tracing::error!(task = %name, error = %exit, "task failed during shutdown");
                        return;
                    }
                    Decision::Restart(delay) => {
                        tracing::error!(task = %name, error = %exit, delay_ms = delay.as_millis() as u64, "task failed: restarting");
                        this.tasks.set_down(&name, format!("{exit}; restarting"));
                        this.metrics
                            .task_restarts
                            .get_or_create(&crate::metrics::task(&name))
                            .inc();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = cancel.cancelled() => return,
                            _ = this.stopping.cancelled() => return,
                        }
                    }
                    Decision::StopProcess => {
                        tracing::error!(task = %name, error = %exit, "task failed: stopping crbridge");
                        this.tasks
                            .set_down(&name, format!("{exit}; crbridge is stopping"));
                        if let Ok(mut f) = this.failure.lock() {
                            f.get_or_insert_with(|| format!("task {name} {exit}"));
                        }
                        this.stopping.cancel();
                        return;
                    }
                }
            }
        })
    }
}

/// The panic's message (`panic!` with a literal or a format string), or what else ended it.
fn panic_message(e: JoinError) -> String {
    if !e.is_panic() {
        return "aborted".into();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

/// Test-only fault injection, compiled into debug builds only: with
/// `CRBRIDGE_TEST_PANIC=<task>:<n>` (for example `capture:3` or `dispatch/nats:2`), task
/// `<task>` panics once `progress()` reaches `n`, once per process (a restarted task does
/// not panic again). Release builds run `task` as is and never read the variable.
pub async fn with_test_panic<Fut>(
    task: &str,
    progress: impl Fn() -> u64 + Send,
    fut: Fut,
) -> Fut::Output
where
    Fut: Future + Send,
{
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FIRED: AtomicBool = AtomicBool::new(false);
        let after = std::env::var("CRBRIDGE_TEST_PANIC").ok().and_then(|v| {
            let (t, n) = v.rsplit_once(':')?;
            (t == task).then(|| n.parse::<u64>().ok()).flatten()
        });
        if let Some(after) = after.filter(|_| !FIRED.load(Ordering::Relaxed)) {
            // Checked around every poll: the counters move inside the task's own polls.
            let check = || {
                if progress() >= after && !FIRED.swap(true, Ordering::Relaxed) {
                    panic!("test panic injected into {task} after {after} events");
                }
            };
            let mut fut = std::pin::pin!(fut);
            return std::future::poll_fn(|cx| {
                check();
                let polled = fut.as_mut().poll(cx);
                if polled.is_pending() {
                    check();
                }
                polled
            })
            .await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (task, &progress);
    fut.await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panicked() -> Exit {
        Exit::Panicked("boom".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_restartable_task_backs_off_and_resets_after_a_stable_run() {
        let mut r = Restarts::new(Policy::Restart);
        let mut nominal = RESTART_MIN;
        for _ in 0..8 {
            let Decision::Restart(d) = r.decide(&panicked(), false) else {
                panic!("a restartable task restarts");
            };
            assert!(
                d >= nominal / 2 && d <= nominal,
                "{d:?} not within {nominal:?}"
            );
            nominal = (nominal * 2).min(RESTART_MAX);
            r.started();
        }
        assert_eq!(nominal, RESTART_MAX);
        // An exit that is not a panic is a failure too when nobody asked for it.
        assert!(matches!(
            r.decide(&Exit::Returned, false),
            Decision::Restart(_)
        ));
        r.started();
        tokio::time::advance(STABLE).await;
        let Decision::Restart(d) = r.decide(&panicked(), false) else {
            panic!("a restartable task restarts");
        };
        assert!(d <= RESTART_MIN, "{d:?}: a stable run resets the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_after_shutdown_is_done_and_a_panic_then_is_reported() {
        let mut r = Restarts::new(Policy::Restart);
        assert_eq!(r.decide(&Exit::Returned, true), Decision::Done);
        assert_eq!(r.decide(&panicked(), true), Decision::DoneFailed);
        let mut s = Restarts::new(Policy::StopProcess);
        assert_eq!(s.decide(&Exit::Returned, true), Decision::Done);
        assert_eq!(s.decide(&panicked(), true), Decision::StopProcess);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_stops_the_process_never_restarts() {
        let mut s = Restarts::new(Policy::StopProcess);
        assert_eq!(s.decide(&panicked(), false), Decision::StopProcess);
        assert_eq!(s.decide(&Exit::Returned, false), Decision::StopProcess);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_reported_down_counted_and_restarted() {
        let tasks = Arc::new(Tasks::default());
        let metrics = Arc::new(Metrics::new());
        let sup = Supervisor::new(tasks.clone(), metrics.clone(), CancellationToken::new());
        let cancel = CancellationToken::new();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let handle = sup.restart("dispatch/s", cancel.clone(), {
            let runs = runs.clone();
            let cancel = cancel.clone();
            move || {
                let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let cancel = cancel.clone();
                async move {
                    if n == 0 {
                        panic!("first run fails");
                    }
                    cancel.cancelled().await;
                }
            }
        });
        // Down while waiting for the restart, named with the panic.
        while tasks.down().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            tasks.down(),
            [(
                "dispatch/s".to_string(),
                "panicked: first run fails; restarting".to_string()
            )]
        );
        assert!(
            metrics
                .encode()
                .contains("crbridge_task_restarts_total{task=\"dispatch/s\"} 1"),
            "{}",
            metrics.encode()
        );
        tokio::time::advance(RESTART_MIN).await;
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 2 || !tasks.down().is_empty() {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
        handle.await.unwrap();
        assert!(sup.failure().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_that_stops_the_process_cancels_shutdown_and_records_why() {
        let stopping = CancellationToken::new();
        let tasks = Arc::new(Tasks::default());
        let sup = Supervisor::new(tasks.clone(), Arc::new(Metrics::new()), stopping.clone());
        sup.stop_on_failure("capture", CancellationToken::new(), async {
            panic!("half a batch")
        })
        .await
        .unwrap();
        assert!(stopping.is_cancelled());
        assert_eq!(
            sup.failure().as_deref(),
            Some("task capture panicked: half a batch")
        );
        assert_eq!(tasks.down()[0].0, "capture");
    }
}
