//! Running it: /metrics, /healthz, /readyz on the configured address, and a graceful stop
//! after which a restart re-sends nothing.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use support::bridge::Bridge;
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(30);

async fn http_base(bridge: &mut Bridge) -> String {
    let line = bridge.wait_logged("http listening", WAIT).await;
    format!("http://{}", line["addr"].as_str().unwrap())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_health_and_a_graceful_restart_that_resends_nothing() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "ops").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("OPS").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream, ""),
    );
    bridge.start();
    let base = http_base(&mut bridge).await;
    support::eventually("/readyz to answer 200", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/readyz")).0 == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        support::http_get(&format!("{base}/healthz")),
        (200, "ok\n".into())
    );

    let mut reader = Reader::open(&stream).await;
    support::create_widget(&api, &crd, "secret-name", json!({"size": 1})).await;
    support::patch_widget(&api, "secret-name", json!({"size": 2})).await;
    api.patch_status(
        "secret-name",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"x": 1}})),
    )
    .await
    .unwrap();
    api.delete("secret-name", &DeleteParams::default())
        .await
        .unwrap();
    reader.take(3, WAIT).await;

    let text = support::eventually("published count in /metrics", WAIT, || {
        let base = base.clone();
        async move {
            let (code, text) = support::http_get(&format!("{base}/metrics"));
            (code == 200 && text.contains("crbridge_events_published_total{sink=\"nats\"} 3"))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{watch=\"widgets\",type=\"created\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{watch=\"widgets\",type=\"updated\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{watch=\"widgets\",type=\"deleted\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "crbridge_events_suppressed_total{watch=\"widgets\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_publish_latency_seconds_count{sink=\"nats\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&text, "crbridge_relists_total{watch=\"widgets\"}"),
        1.0
    );
    assert!(
        !text.contains("secret-name"),
        "object names must never be labels"
    );

    // Graceful stop, then a restart: nothing is sent again.
    assert_eq!(bridge.stop().await.code(), Some(0));
    bridge.start();
    bridge
        .wait_logged("watch resumed from checkpoint", WAIT)
        .await;
    bridge.wait_logged("sink connected", WAIT).await;
    reader.expect_none(Duration::from_secs(3)).await;
    bridge.stop().await;
}

#[tokio::test]
async fn readyz_names_an_unhealthy_sink() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "ops-unready").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &crd, &ns, "UNREACHABLE", "")
        .replace(&support::env("CRBRIDGE_NATS_URL"), "nats://127.0.0.1:1");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = http_base(&mut bridge).await;
    bridge.wait_logged("connecting sink failed", WAIT).await;
    let (code, body) = support::http_get(&format!("{base}/readyz"));
    assert_eq!(code, 503);
    assert!(body.contains("sink nats unhealthy"), "{body}");
    // Alive all the same: a broker outage is not a reason to restart crbridge.
    assert_eq!(support::http_get(&format!("{base}/healthz")).0, 200);
    bridge.stop().await;
}
