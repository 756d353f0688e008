//! The shared servers as processes: signal one `deploy/local/up` started, and bring it back.
//! Tests that do this stop servers other tests use: they run in binaries of their own,
//! one test at a time (cargo runs test binaries one after another).

use std::time::Duration;

/// Signals the process group of a server `deploy/local/up` started.
pub fn signal_server(name: &str, signal: &str) {
    let path = format!("{}/{name}.pid", super::env("CRBRIDGE_LOCAL_STATE"));
    let pid = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let pid = pid.trim();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {name} ({pid})");
}

/// Waits for a server's pid to exit, then brings it back with `deploy/local/up`.
pub async fn restart_server(name: &str) {
    let path = format!("{}/{name}.pid", super::env("CRBRIDGE_LOCAL_STATE"));
    let pid = std::fs::read_to_string(&path).unwrap().trim().to_string();
    super::eventually(&format!("{name} to exit"), Duration::from_secs(60), || {
        let pid = pid.clone();
        async move {
            let alive = std::process::Command::new("kill")
                .args(["-0", &pid])
                .status()
                .unwrap()
                .success();
            (!alive).then_some(())
        }
    })
    .await;
    // The same state folder as the server that was stopped: from another checkout (a git
    // worktree) `up` would otherwise start a fresh server with a new CA in its own folder.
    let up = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/up");
    let out = tokio::process::Command::new(up)
        .env("CRBRIDGE_LOCAL_STATE", super::env("CRBRIDGE_LOCAL_STATE"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/local/up after stopping {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
