//! Runs the real `crbridge` binary as a user would: a config file, `crbridge run`, JSON logs
//! on stderr (kept in a file the test reads), SIGTERM or SIGKILL to stop it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running (or stopped) crbridge process with its own state directory.
pub struct Bridge {
    child: Option<Child>,
    /// Directory holding the config, the state and the logs.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    runs: usize,
    envs: Vec<(String, String)>,
}

impl Bridge {
    /// A bridge over `config_yaml` (its `state.path` should be `{dir}/state`; use
    /// [`Bridge::state_path`]). Not started yet.
    pub fn new(dir: &Path, config_yaml: &str) -> Bridge {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("crbridge.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        Bridge {
            child: None,
            dir: dir.to_path_buf(),
            config,
            runs: 0,
            envs: Vec::new(),
        }
    }

    /// Sets an environment variable for the next runs.
    pub fn env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// Where a config for this bridge keeps its state.
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("run-{run}.log"))
    }

    /// Unsets an environment variable set with [`Bridge::env`] for the next runs.
    pub fn remove_env(&mut self, key: &str) {
        self.envs.retain(|(k, _)| k != key);
    }

    /// Waits until the current run's process exits on its own, or panics with the log.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "crbridge did not exit within {limit:?}; log:\n{}",
                    self.raw_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a new run; its log is separate from earlier runs'.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "bridge already running");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_crbridge"))
            .args(["run", "-c"])
            .arg(&self.config)
            .args(["--log-format", "json"])
            .env("CRBRIDGE_LOG", "info,crbridge=debug")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.stdout_path(self.runs)).unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning crbridge");
        self.child = Some(child);
    }

    fn stdout_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("run-{run}.stdout"))
    }

    /// What the current run wrote to standard output.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path(self.runs)).unwrap_or_default()
    }

    /// JSON log lines of the current (latest) run.
    pub fn logs(&self) -> Vec<Value> {
        self.logs_of(self.runs)
    }

    /// JSON log lines of run `n` (1-based).
    pub fn logs_of(&self, n: usize) -> Vec<Value> {
        std::fs::read_to_string(self.log_path(n))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Log lines of the current run whose message is `msg`.
    pub fn logged(&self, msg: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"] == msg)
            .collect()
    }

    /// Waits until the current run logged `msg`, or panics with the log.
    pub async fn wait_logged(&mut self, msg: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(l) = self.logged(msg).into_iter().next() {
                return l;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "crbridge exited ({status}) before logging {msg:?}; log:\n{}",
                    self.raw_log()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "crbridge did not log {msg:?} within {limit:?}; log:\n{}",
                    self.raw_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://ADDR` of the current run's `http.listen` (metrics, health), once it listens.
    pub async fn http_base(&mut self) -> String {
        let line = self
            .wait_logged("http listening", Duration::from_secs(30))
            .await;
        format!("http://{}", line["addr"].as_str().unwrap())
    }

    /// The current run's log as text, for failure messages.
    pub fn raw_log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    /// True while the current run's process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("bridge not running");
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                c.kill().ok();
                panic!("crbridge did not stop within 30s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `crbridge <args>` to completion: (exit status, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crbridge"))
        .args(args)
        .output()
        .expect("running crbridge");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
