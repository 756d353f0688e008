//! `crbridge deadletters` on a stopped instance against the real RabbitMQ: an event the
//! broker could not route becomes a dead letter, is listed and shown, and once a queue is
//! bound, redriving delivers it with its original CloudEvent id and removes the letter.

mod support;

use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use lapin::options::BasicGetOptions;
use serde_json::json;
use support::bridge::{run_cli, Bridge};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_dead_letter_is_listed_shown_and_redriven_with_its_id() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "deadletters").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    // An exchange no queue is bound to yet: the publish comes back unroutable and
    // `unroutable: refuse` with the default `onError` keeps it as a dead letter.
    let exchange = support::unique("crb-dl");
    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{name}}\"\n    unroutable: refuse\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let yaml = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &yaml);
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&api, &crd, "lost", json!({"size": 1})).await;
    let line = bridge
        .wait_logged("event refused by the sink; kept as a dead letter", WAIT)
        .await;
    assert_eq!(bridge.stop().await.code(), Some(0));
    let config = dir.path().join("crbridge.yaml");
    let config = config.to_str().unwrap();

    // list: one line, naming the letter, its event and the reason.
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "list"]);
    assert!(st.success(), "list failed: {err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "one dead letter listed: {out}");
    let cols: Vec<&str> = rows[0].split('\t').collect();
    let id = cols[0].to_string();
    assert!(id.starts_with("rabbit:"), "{out}");
    let event_id = cols[1].to_string();
    assert!(cols[2].ends_with(".created"), "{out}");
    assert_eq!(cols[3], format!("{ns}/lost"), "{out}");
    assert!(cols[5].contains("unroutable"), "{out}");
    assert_eq!(
        line["id"],
        event_id.as_str(),
        "the logged dead letter is listed"
    );

    // show: the whole letter as JSON.
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "show", &id]);
    assert!(st.success(), "show failed: {err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["entry"]["event"]["id"], event_id.as_str(), "{out}");
    assert!(
        shown["error"].as_str().unwrap().contains("unroutable"),
        "{out}"
    );

    // A malformed or unknown id is an error, not a silent success.
    let (st, _, err) = run_cli(&["deadletters", "-c", config, "show", "rabbit"]);
    assert!(!st.success(), "{err}");
    let (st, _, err) = run_cli(&["deadletters", "-c", config, "drop", "rabbit:999999"]);
    assert!(!st.success() && err.contains("no dead letter"), "{err}");

    // Bind a queue, then redrive: the event arrives with its original id.
    let queue = support::unique("crb-dl-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "redrive", "--sink", "rabbit"]);
    assert!(st.success(), "redrive failed: {out} {err}");
    assert!(out.contains(&format!("redriven {id}")), "{out}");
    let m = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the redriven event is in the queue (the broker acked it before redrive returned)");
    assert_eq!(
        m.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(event_id.clone()),
        "the redriven event keeps its CloudEvent id"
    );

    // The letter is gone.
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "list"]);
    assert!(st.success(), "{err}");
    assert_eq!(
        out.lines().skip(1).count(),
        0,
        "no dead letters left: {out}"
    );
}

/// Waits until the instance serving /metrics on `http` reports `n` kept dead letters.
async fn dead_letters_kept(http: &str, n: u32) {
    let url = format!("http://{http}/metrics");
    let want = format!("crbridge_dead_letters_kept{{sink=\"rabbit\"}} {n}\n");
    let what = format!("{} in /metrics", want.trim());
    support::eventually(&what, WAIT, || {
        let (code, text) = support::http_get(&url);
        let found = code == 200 && text.contains(&want);
        async move { found.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_running_instance_lists_drops_and_redrives_through_its_admin_endpoint() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "deadletters-run").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-dlr");
    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{name}}\"\n    unroutable: refuse\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let port = support::free_port();
    let yaml = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "").replace(
        "admin:\n  listen: 127.0.0.1:0",
        &format!("admin:\n  listen: 127.0.0.1:{port}"),
    );
    let mut bridge = Bridge::new(dir.path(), &yaml);
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&api, &crd, "one", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "two", json!({"size": 2})).await;
    support::eventually("two dead letters", WAIT, || {
        let n = bridge
            .logged("event refused by the sink; kept as a dead letter")
            .len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let http = bridge.logged("http listening")[0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    dead_letters_kept(&http, 2).await;
    let config = dir.path().join("crbridge.yaml");
    let config = config.to_str().unwrap();

    // The instance holds the state directory: everything goes through its admin endpoint.
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "list", "--sink", "rabbit"]);
    assert!(st.success(), "list failed: {err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "two dead letters listed: {out}");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[3] == format!("{ns}/{name}"))
            .unwrap_or_else(|| panic!("{name} listed: {out}"))
            .clone()
    };
    let (one, two) = (row("one"), row("two"));

    let (st, out, err) = run_cli(&["deadletters", "-c", config, "show", one[0]]);
    assert!(st.success(), "show failed: {err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["entry"]["event"]["id"], one[1], "{out}");

    let (st, out, err) = run_cli(&["deadletters", "-c", config, "drop", two[0]]);
    assert!(st.success(), "drop failed: {err}");
    assert!(out.contains(&format!("dropped {}", two[0])), "{out}");

    let queue = support::unique("crb-dlr-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let (st, out, err) = run_cli(&["deadletters", "-c", config, "redrive", "--id", one[0]]);
    assert!(st.success(), "redrive failed: {out} {err}");
    assert!(out.contains(&format!("redriven {}", one[0])), "{out}");
    let m = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the redriven event is in the queue");
    assert_eq!(
        m.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(one[1].to_string()),
        "the redriven event keeps its CloudEvent id"
    );
    let again = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(again.is_none(), "the dropped letter was not delivered");

    let (st, out, err) = run_cli(&["deadletters", "-c", config, "list"]);
    assert!(st.success(), "{err}");
    assert_eq!(
        out.lines().skip(1).count(),
        0,
        "no dead letters left: {out}"
    );
    assert_eq!(bridge.stop().await.code(), Some(0));
}

/// Dead letters count in `state.outbox.max_bytes`: a sink that refuses everything keeps
/// the newest letters within the budget, the oldest go with a WARN line, and the watch
/// keeps flowing (the store does not grow past the budget and capture does not stall).
#[tokio::test]
async fn dead_letters_over_the_byte_budget_go_oldest_first() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "dl-budget").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-dlb");
    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{name}}\"\n    unroutable: refuse\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let yaml = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "").replacen(
        "state:\n",
        "state:\n  outbox: { max_bytes: 12KiB }\n",
        1,
    );
    let mut bridge = Bridge::new(dir.path(), &yaml);
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    // Incompressible specs of about 2 KiB: each dead letter takes a good part of the budget.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = || {
        (0..256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:08x}", x as u32)
            })
            .collect::<String>()
    };
    const N: usize = 8;
    for i in 0..N {
        let name = format!("w{i}");
        support::create_widget(&api, &crd, &name, json!({"noise": noise()})).await;
        // One at a time, so "oldest" is the creation order.
        support::eventually(&format!("{name} dead-lettered"), WAIT, || {
            let n = bridge
                .logged("event refused by the sink; kept as a dead letter")
                .len();
            std::future::ready((n > i).then_some(()))
        })
        .await;
    }
    let trimmed = support::eventually("a dead letter deleted over the budget", WAIT, || {
        let lines = bridge.logged("dead letter over state.outbox.max_bytes deleted");
        std::future::ready((!lines.is_empty()).then_some(lines))
    })
    .await;
    assert_eq!(trimmed[0]["sink"], "rabbit", "{trimmed:?}");
    assert!(
        trimmed[0]["subject"]
            .as_str()
            .unwrap_or("")
            .ends_with("/w0"),
        "the oldest goes first: {trimmed:?}"
    );
    assert_eq!(bridge.stop().await.code(), Some(0));

    let config = dir.path().join("crbridge.yaml");
    let (st, out, err) = run_cli(&["deadletters", "-c", config.to_str().unwrap(), "list"]);
    assert!(st.success(), "list failed: {err}");
    let subjects: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(3).unwrap_or(""))
        .collect();
    assert!(
        !subjects.is_empty() && subjects.len() < N,
        "some but not all letters kept: {out}"
    );
    assert!(
        subjects.contains(&format!("{ns}/w{}", N - 1).as_str()),
        "the newest letter is kept: {out}"
    );
}
