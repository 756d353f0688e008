//! Leader election against the real kube-apiserver, with two crbridge processes on the
//! same config (each with its own state directory, as two StatefulSet pods would be).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DynamicObject;
use kube::Api;
use serde_json::json;
use support::bridge::Bridge;
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn one_leader_publishes_and_a_standby_takes_over_within_the_lease() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "leader").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &crd.resource);
    let stream = support::unique("LEAD").to_uppercase().replace('-', "_");
    let lease = support::unique("crbridge-lease");
    let election = format!(
        "leaderElection: {{enabled: true, namespace: {ns}, leaseName: {lease}, leaseDuration: 6s, renewDeadline: 4s, retryPeriod: 1s}}\n"
    );
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let cfg = |dir: &std::path::Path| support::nats_config(dir, &crd, &ns, &stream) + &election;
    let mut a = Bridge::new(dir_a.path(), &cfg(dir_a.path()));
    let mut b = Bridge::new(dir_b.path(), &cfg(dir_b.path()));

    a.start();
    a.wait_logged("leadership acquired", WAIT).await;
    a.wait_logged("list reconciled", WAIT).await;
    b.start();
    b.wait_logged("waiting for leadership", WAIT).await;

    let mut reader = Reader::open(&stream).await;
    support::create_widget(&api, &crd, "x", json!({"size": 1})).await;
    let first = reader.take(1, WAIT).await;
    assert_eq!(first[0].change(), "created");
    // The standby publishes nothing: it never started its watches or sinks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.logged("crbridge running").is_empty(),
        "standby started while the leader holds the lease"
    );
    assert!(b.logged("leadership acquired").is_empty());

    // The leader dies without releasing: the standby takes over once the lease expires.
    a.kill9();
    let killed = Instant::now();
    support::create_widget(&api, &crd, "y", json!({"size": 2})).await;
    b.wait_logged("leadership acquired", WAIT).await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(6 + 3),
        "takeover took {takeover:?}, lease duration is 6 s"
    );
    // B continues from its own (empty) state: its first start snapshots every object, y
    // included, so the latest state reaches the stream.
    let got = reader
        .until(WAIT, |evs| evs.iter().any(|e| e.attr("crbname") == "y"))
        .await;
    assert!(got
        .iter()
        .any(|e| e.attr("crbname") == "y" && e.data["object"]["spec"]["size"] == 2));
    let holder = Api::<Lease>::namespaced(client.clone(), &ns)
        .get(&lease)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(holder.lease_transitions, Some(1));

    // A graceful stop releases the lease: a new candidate gets it at once, not after 6 s.
    assert_eq!(b.stop().await.code(), Some(0));
    let stopped = Instant::now();
    a.start();
    a.wait_logged("leadership acquired", WAIT).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "released lease not taken at once: {:?}",
        stopped.elapsed()
    );
    a.stop().await;
}
