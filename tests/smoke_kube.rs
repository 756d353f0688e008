//! The local kube-apiserver is real: CRDs become Established, a watch sees a custom
//! resource's create / update / delete, `coordination.k8s.io` Leases are served, and it
//! reports the Kubernetes version its modules are.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn custom_resource_lifecycle_is_seen_on_a_watch() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "smoke-kube").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &crd.resource);

    // Start from the list's resourceVersion so the watch sees everything after it.
    let list = api
        .list(&Default::default())
        .await
        .expect("listing widgets");
    let rv = list
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .expect("starting the watch")
        .boxed();

    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": crd.resource.api_version,
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 1}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .expect("update");
    api.delete("w1", &DeleteParams::default())
        .await
        .expect("delete");

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .expect("timed out waiting for watch events")
            .expect("watch error")
            .expect("watch ended early");
        match ev {
            WatchEvent::Added(o) => seen.push(("ADDED", o.data["spec"]["size"].clone())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.data["spec"]["size"].clone())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.data["spec"]["size"].clone())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", json!(1)),
            ("MODIFIED", json!(2)),
            ("DELETED", json!(2))
        ]
    );
}

#[tokio::test]
async fn leases_are_served() {
    let client = support::kube_client().await;
    let ns = support::namespace(&client, "smoke-lease").await;
    let api: Api<Lease> = Api::namespaced(client, &ns);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "crbridge"},
        "spec": {"holderIdentity": "smoke", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    api.create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let got = api.get("crbridge").await.expect("get lease");
    assert_eq!(
        got.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("smoke")
    );
}

#[tokio::test]
async fn the_server_reports_the_version_of_its_modules() {
    let go_mod = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kube/go.mod"),
    )
    .unwrap();
    let want = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes "))
        .expect("k8s.io/kubernetes in deploy/local/kube/go.mod")
        .trim();
    let v = support::kube_client()
        .await
        .apiserver_version()
        .await
        .expect("/version");
    assert_eq!(v.git_version, want, "{v:?}");
    let minor = want.split('.').nth(1).unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", minor), "{v:?}");
}
