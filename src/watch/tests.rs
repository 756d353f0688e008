//! The watch loop's I/O against a scripted API: lists in pages, watch events, bookmarks,
//! 410 Gone, failed requests and silent watches, kinds that are not served or forbidden and
//! come back, undecodable events, under paused time. The real API server is
//! exercised in `tests/smoke_kube.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ListParams, ObjectList, WatchEvent, WatchParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::watcher::IDLE_WATCH;
use super::*;
use crate::metrics::{self, Metrics};

/// A request the loop made: a list page (by continue token) or a watch (by version).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    List(Option<String>),
    Watch(String),
    Resolve,
}

/// The reply to one request, in script order.
enum Reply {
    Page(kube::Result<ObjectList<Value>>),
    /// A watch that opens (or not) and delivers these events, then closes or stays silent.
    Watch(kube::Result<Vec<kube::Result<WatchEvent<Value>>>>, End),
    /// Discovery's answer.
    Resolve(kube::Result<()>),
}

/// How a scripted watch stream ends.
enum End {
    Close,
    Silent,
}

/// Replies in order; once the script is used up, requests never complete.
struct ScriptedApi {
    script: Mutex<VecDeque<Reply>>,
    requests: watch::Sender<Vec<(Request, Instant)>>,
}

impl ScriptedApi {
    fn take(&self, request: Request) -> Option<Reply> {
        self.requests
            .send_modify(|r| r.push((request, Instant::now())));
        self.script.lock().unwrap().pop_front()
    }
}

impl ListWatch for Arc<ScriptedApi> {
    fn resolve(&self) -> impl Future<Output = kube::Result<()>> + Send {
        let reply = self.take(Request::Resolve);
        async move {
            match reply {
                Some(Reply::Resolve(r)) => r,
                Some(_) => panic!("script expected a list or watch, got a resolve"),
                None => std::future::pending().await,
            }
        }
    }

    fn list(
        &self,
        lp: &ListParams,
    ) -> impl Future<Output = kube::Result<ObjectList<Value>>> + Send {
        let reply = self.take(Request::List(lp.continue_token.clone()));
        async move {
            match reply {
                Some(Reply::Page(page)) => page,
                Some(_) => panic!("script expected something else, got a list"),
                None => std::future::pending().await,
            }
        }
    }

    fn watch(
        &self,
        _wp: &WatchParams,
        version: &str,
    ) -> impl Future<Output = kube::Result<WatchStream>> + Send {
        let reply = self.take(Request::Watch(version.to_string()));
        async move {
            match reply {
                Some(Reply::Watch(opened, end)) => {
                    let events = futures::stream::iter(opened?);
                    Ok(match end {
                        End::Close => events.boxed(),
                        End::Silent => events.chain(futures::stream::pending()).boxed(),
                    })
                }
                Some(_) => panic!("script expected something else, got a watch"),
                None => std::future::pending().await,
            }
        }
    }
}

fn object(uid: &str, rv: &str) -> Value {
    json!({"metadata": {"name": uid, "uid": uid, "resourceVersion": rv}})
}

fn page(rv: &str, items: &[(&str, &str)], token: Option<&str>) -> Reply {
    let items: Vec<Value> = items.iter().map(|(uid, rv)| object(uid, rv)).collect();
    let list = json!({"metadata": {"resourceVersion": rv, "continue": token}, "items": items});
    Reply::Page(Ok(serde_json::from_value(list).unwrap()))
}

fn event(kind: &str, object: Value) -> kube::Result<WatchEvent<Value>> {
    Ok(serde_json::from_value(json!({"type": kind, "object": object})).unwrap())
}

fn bookmark(rv: &str) -> kube::Result<WatchEvent<Value>> {
    let object = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"resourceVersion": rv}});
    event("BOOKMARK", object)
}

fn gone_event() -> kube::Result<WatchEvent<Value>> {
    let status = json!({"status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"});
    event("ERROR", status)
}

fn api_error(code: u16) -> kube::Error {
    api_error_saying(code, "scripted")
}

fn api_error_saying(code: u16, message: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(message, "Scripted")
            .with_code(code)
            .boxed(),
    )
}

/// What discovery answers for a kind that is not served.
fn not_served() -> kube::Error {
    api_error_saying(404, NOT_SERVED)
}

const NOT_SERVED: &str = "kind example.com/v1 Widget is not served (404)";
const FORBIDDEN: &str =
    r#"widgets.example.com is forbidden: User "u" cannot list resource "widgets""#;

fn undecodable() -> kube::Result<WatchEvent<Value>> {
    Err(kube::Error::SerdeError(
        serde_json::from_str::<Value>("{not json").unwrap_err(),
    ))
}

/// One scope's loop running against a script.
struct Running {
    rx: mpsc::Receiver<Observed>,
    requests: watch::Receiver<Vec<(Request, Instant)>>,
    health: Arc<ScopeHealth>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(script: Vec<Reply>, checkpoint: Option<&str>) -> Running {
    start_scope(script, checkpoint, true)
}

fn start_scope(script: Vec<Reply>, checkpoint: Option<&str>, resolved: bool) -> Running {
    let (requests_tx, requests) = watch::channel(Vec::new());
    let api = Arc::new(ScriptedApi {
        script: Mutex::new(script.into()),
        requests: requests_tx,
    });
    let scope = Scope {
        id: 0,
        cluster: "c".into(),
        watch: "w".into(),
        namespace: None,
        resource: ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
        api,
        label_selector: None,
        field_selector: None,
        page_size: 2,
        resolved,
    };
    let (tx, rx) = mpsc::channel(64);
    let health = Arc::new(ScopeHealth::default());
    let metrics = Arc::new(Metrics::new());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        scope,
        checkpoint.map(str::to_string),
        tx,
        health.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    Running {
        rx,
        requests,
        health,
        metrics,
        cancel,
        task,
    }
}

/// An observation as a short line: what, which uid or version, and how.
fn describe(o: &Observed) -> String {
    let uid = |v: &Value| raw::meta_str(v, "uid").unwrap_or("?").to_string();
    if let Observed::Upsert { object, origin, .. } = o {
        format!("upsert {} {origin:?}", uid(object))
    } else if let Observed::Delete { object, .. } = o {
        format!("delete {}", uid(object))
    } else if let Observed::Bookmark {
        resource_version, ..
    } = o
    {
        format!("bookmark {resource_version}")
    } else if let Observed::ListDone {
        resource_version,
        seen,
        mode,
        ..
    } = o
    {
        let mut seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        seen.sort();
        format!("list-done {resource_version} {seen:?} {mode:?}")
    } else {
        format!("{o:?}")
    }
}

impl Running {
    /// The next `n` observations, described.
    async fn observe(&mut self, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..n {
            // Paused time: the deadline passes only if the loop is stuck, not by waiting.
            let o = tokio::time::timeout(Duration::from_secs(3600), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no observation after {seen:?}"))
                .expect("loop ended");
            seen.push(describe(&o));
        }
        seen
    }

    /// The requests made, once there are `n`, with when each was made.
    async fn requests(&mut self, n: usize) -> Vec<(Request, Instant)> {
        let wait = self.requests.wait_for(|r| r.len() >= n);
        let r = tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .expect("requests missing")
            .unwrap()
            .clone();
        r
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

fn list(token: Option<&str>) -> Request {
    Request::List(token.map(str::to_string))
}

fn watch_from(rv: &str) -> Request {
    Request::Watch(rv.to_string())
}

fn only_requests(r: &[(Request, Instant)]) -> Vec<Request> {
    r.iter().map(|(r, _)| r.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn lists_in_pages_then_watches_from_the_lists_rv() {
    let mut r = start(
        vec![
            page("10", &[("a", "3"), ("b", "4")], Some("c1")),
            page("10", &[("c", "5")], None),
            Reply::Watch(
                Ok(vec![
                    event("ADDED", object("d", "11")),
                    event("MODIFIED", object("a", "12")),
                    event("DELETED", object("b", "13")),
                    bookmark("14"),
                ]),
                End::Close,
            ),
        ],
        None,
    );
    assert_eq!(
        r.observe(8).await,
        [
            "upsert a List(Initial)",
            "upsert b List(Initial)",
            "upsert c List(Initial)",
            r#"list-done 10 ["a", "b", "c"] Initial"#,
            "upsert d Watch",
            "upsert a Watch",
            "delete b",
            "bookmark 14",
        ]
    );
    // The server closed the watch: reopened at once from the bookmark's version.
    let requests = r.requests(4).await;
    assert_eq!(
        only_requests(&requests),
        [
            list(None),
            list(Some("c1")),
            watch_from("10"),
            watch_from("14")
        ]
    );
    assert_eq!(requests[3].1, requests[2].1, "reopening waited");
    assert!(r.health.synced.load(Ordering::Relaxed));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn list_items_get_their_type() {
    let mut r = start(vec![page("1", &[("a", "1")], None)], None);
    let Some(Observed::Upsert { object, .. }) = r.rx.recv().await else {
        panic!("expected an upsert")
    };
    assert_eq!(object["apiVersion"], "example.com/v1");
    assert_eq!(object["kind"], "Widget");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn checkpoint_resumes_the_watch_without_a_list() {
    let mut r = start(
        vec![Reply::Watch(
            Ok(vec![event("ADDED", object("x", "6"))]),
            End::Silent,
        )],
        Some("5"),
    );
    assert_eq!(r.observe(1).await, ["upsert x Watch"]);
    assert_eq!(only_requests(&r.requests(1).await), [watch_from("5")]);
    assert!(r.health.synced.load(Ordering::Relaxed));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gone_mid_watch_relists_at_once_and_watches_from_the_new_list() {
    let mut r = start(
        vec![
            Reply::Watch(
                Ok(vec![event("ADDED", object("x", "6")), gone_event()]),
                End::Silent,
            ),
            page("20", &[("x", "6"), ("y", "19")], None),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        Some("5"),
    );
    assert_eq!(
        r.observe(4).await,
        [
            "upsert x Watch",
            "upsert x List(Relist)",
            "upsert y List(Relist)",
            r#"list-done 20 ["x", "y"] Relist"#,
        ]
    );
    let requests = r.requests(3).await;
    assert_eq!(
        only_requests(&requests),
        [watch_from("5"), list(None), watch_from("20")]
    );
    assert_eq!(requests[1].1, requests[0].1, "a relist needs no backoff");
    let gone = r
        .metrics
        .gone
        .get_or_create(&metrics::watch("c", "w"))
        .get();
    assert_eq!(gone, 1);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gone_when_opening_the_watch_relists_too() {
    let mut r = start(
        vec![
            Reply::Watch(Err(api_error(410)), End::Close),
            page("20", &[("y", "19")], None),
        ],
        Some("5"),
    );
    assert_eq!(
        r.observe(2).await,
        ["upsert y List(Relist)", r#"list-done 20 ["y"] Relist"#]
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn expired_continue_token_restarts_the_list_from_scratch() {
    let mut r = start(
        vec![
            page("10", &[("stale", "9")], Some("c1")),
            Reply::Page(Err(api_error(410))),
            page("30", &[("a", "21")], Some("c2")),
            page("30", &[("b", "22")], None),
        ],
        None,
    );
    assert_eq!(
        r.observe(4).await,
        [
            "upsert stale List(Initial)",
            "upsert a List(Initial)",
            "upsert b List(Initial)",
            // The first attempt's uids are forgotten with its snapshot.
            r#"list-done 30 ["a", "b"] Initial"#,
        ]
    );
    assert_eq!(
        only_requests(&r.requests(5).await),
        [
            list(None),
            list(Some("c1")),
            list(None),
            list(Some("c2")),
            watch_from("30")
        ]
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_resume_from_the_last_rv() {
    let mut r = start(
        vec![
            Reply::Watch(Err(api_error(500)), End::Close),
            Reply::Watch(
                Ok(vec![event("ADDED", object("x", "6")), Err(api_error(503))]),
                End::Close,
            ),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        Some("5"),
    );
    assert_eq!(r.observe(1).await, ["upsert x Watch"]);
    let requests = r.requests(3).await;
    assert_eq!(
        only_requests(&requests),
        [watch_from("5"), watch_from("5"), watch_from("6")]
    );
    // Backoff from 250 ms, doubling, each delay jittered to between half and all of it.
    let first = requests[1].1 - requests[0].1;
    let second = requests[2].1 - requests[1].1;
    assert!(first >= Duration::from_millis(125), "{first:?}");
    assert!(second >= Duration::from_millis(250), "{second:?}");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_list_that_fails_is_retried_at_the_same_page() {
    let mut r = start(
        vec![
            page("10", &[("a", "3")], Some("c1")),
            Reply::Page(Err(api_error(500))),
            page("10", &[("b", "4")], None),
        ],
        None,
    );
    assert_eq!(
        r.observe(3).await,
        [
            "upsert a List(Initial)",
            "upsert b List(Initial)",
            r#"list-done 10 ["a", "b"] Initial"#,
        ]
    );
    assert_eq!(
        only_requests(&r.requests(4).await),
        [
            list(None),
            list(Some("c1")),
            list(Some("c1")),
            watch_from("10")
        ]
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_reopened_after_the_idle_timeout() {
    let mut r = start(
        vec![
            Reply::Watch(Ok(vec![event("ADDED", object("x", "6"))]), End::Silent),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        Some("5"),
    );
    assert_eq!(r.observe(1).await, ["upsert x Watch"]);
    let requests = r.requests(2).await;
    assert_eq!(only_requests(&requests), [watch_from("5"), watch_from("6")]);
    let silence = requests[1].1 - requests[0].1;
    assert!(
        silence >= IDLE_WATCH && silence < IDLE_WATCH + Duration::from_secs(1),
        "{silence:?}"
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_loop_ends_when_capture_is_gone() {
    let r = start(vec![page("1", &[("a", "1")], None)], None);
    drop(r.rx);
    tokio::time::timeout(Duration::from_secs(3600), r.task)
        .await
        .expect("loop still running")
        .unwrap();
}

impl Running {
    fn unavailable(&self) -> Option<String> {
        self.health.unavailable().map(|u| u.message)
    }
}

#[tokio::test(start_paused = true)]
async fn a_kind_deleted_mid_watch_is_re_resolved_with_backoff_and_resumes_from_its_rv() {
    let mut r = start(
        vec![
            // The CRD is deleted: the server ends the watch, and the kind is gone.
            Reply::Watch(Ok(vec![event("ADDED", object("x", "6"))]), End::Close),
            Reply::Watch(Err(api_error(404)), End::Close),
            Reply::Resolve(Err(not_served())),
            // Installed again.
            Reply::Resolve(Ok(())),
            // The old resourceVersion means nothing to the new resource.
            Reply::Watch(Err(api_error(410)), End::Close),
            page("30", &[("y", "29")], None),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        Some("5"),
    );
    assert_eq!(r.observe(1).await, ["upsert x Watch"]);
    let requests = r.requests(3).await;
    assert_eq!(
        r.unavailable().as_deref(),
        Some(NOT_SERVED),
        "the list/watch 404 names the kind"
    );
    assert!(!r.health.synced.load(Ordering::Relaxed));
    // Backoff from 5 s, each delay jittered to between half and all of it.
    let first = requests[2].1 - requests[1].1;
    assert!(first >= Duration::from_millis(2500), "{first:?}");
    let requests = r.requests(4).await;
    let second = requests[3].1 - requests[2].1;
    assert!(second >= Duration::from_secs(5), "{second:?}");
    assert_eq!(
        r.observe(2).await,
        ["upsert y List(Relist)", r#"list-done 30 ["y"] Relist"#]
    );
    assert_eq!(r.unavailable(), None, "served again");
    assert_eq!(
        only_requests(&r.requests(7).await),
        [
            watch_from("5"),
            watch_from("6"),
            Request::Resolve,
            Request::Resolve,
            watch_from("6"),
            list(None),
            watch_from("30"),
        ]
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_list_is_reported_and_retried_until_rbac_allows_it() {
    let mut r = start(
        vec![
            Reply::Page(Err(api_error_saying(403, FORBIDDEN))),
            Reply::Resolve(Ok(())),
            Reply::Page(Err(api_error_saying(403, FORBIDDEN))),
            Reply::Resolve(Ok(())),
            page("10", &[("a", "3")], None),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        None,
    );
    let requests = r.requests(3).await;
    assert_eq!(
        r.unavailable(),
        Some(format!("forbidden: {FORBIDDEN}")),
        "the RBAC message is reported"
    );
    assert_eq!(r.health.unavailable().unwrap().reason, Reason::Forbidden);
    assert!(requests[1].1 - requests[0].1 >= Duration::from_millis(2500));
    assert_eq!(
        r.observe(2).await,
        ["upsert a List(Initial)", r#"list-done 10 ["a"] Initial"#]
    );
    let requests = r.requests(6).await;
    // A resolve that succeeds is not "served": the backoff kept growing across the 403s.
    let second = requests[3].1 - requests[2].1;
    assert!(second >= Duration::from_secs(5), "{second:?}");
    assert_eq!(
        only_requests(&requests),
        [
            list(None),
            Request::Resolve,
            list(None),
            Request::Resolve,
            list(None),
            watch_from("10")
        ]
    );
    assert_eq!(r.unavailable(), None);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_kind_missing_at_start_is_resolved_before_its_first_list() {
    let mut r = start_scope(
        vec![
            Reply::Resolve(Err(not_served())),
            Reply::Resolve(Ok(())),
            page("10", &[("a", "3")], None),
        ],
        None,
        false,
    );
    // The first attempt is made at once, and reported while the loop waits.
    r.requests(1).await;
    assert_eq!(r.unavailable().as_deref(), Some(NOT_SERVED));
    assert!(!r.health.synced.load(Ordering::Relaxed));
    let requests = r.requests(2).await;
    assert!(requests[1].1 - requests[0].1 >= Duration::from_millis(2500));
    assert_eq!(
        r.observe(2).await,
        ["upsert a List(Initial)", r#"list-done 10 ["a"] Initial"#]
    );
    assert_eq!(
        only_requests(&r.requests(4).await),
        [
            Request::Resolve,
            Request::Resolve,
            list(None),
            watch_from("10")
        ]
    );
    assert_eq!(r.unavailable(), None);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn undecodable_events_reopen_then_relist_after_a_few() {
    let mut r = start(
        vec![
            Reply::Watch(Ok(vec![undecodable()]), End::Silent),
            Reply::Watch(Ok(vec![undecodable()]), End::Silent),
            Reply::Watch(Ok(vec![undecodable()]), End::Silent),
            page("20", &[("x", "19")], None),
            Reply::Watch(Ok(vec![]), End::Silent),
        ],
        Some("5"),
    );
    assert_eq!(
        r.observe(2).await,
        ["upsert x List(Relist)", r#"list-done 20 ["x"] Relist"#]
    );
    assert_eq!(
        only_requests(&r.requests(5).await),
        [
            watch_from("5"),
            watch_from("5"),
            watch_from("5"),
            list(None),
            watch_from("20")
        ]
    );
    assert_eq!(MAX_UNDECODABLE, 3);
    r.stop().await;
}
