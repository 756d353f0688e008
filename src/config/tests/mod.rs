//! Tests of `crbridge.yaml` parsing, one file per concern: whole files (`parse`), error
//! wording (`errors`), one file per section, and the top-level rules.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{edit_distance, suggestion};
use super::http::default_listen;
use super::resolve::{expand_home, resolve};
use super::*;
use crate::diff::StatusRule;

mod admin;
mod clusters;
mod errors;
mod parse;
mod sink;
mod top_level;
mod watch;

const FILE: &str = "crbridge.yaml";

/// A config that sets most keys, in the shape of the README's "Configuration reference"
/// (three sinks, one per broker type), for tests that need a full file.
const EXAMPLE: &str = r#"
cluster: prod-eu-1                 # name used in source/id
kubeconfig: ~/.kube/config         # default: in-cluster, then KUBECONFIG, then ~/.kube/config
state: { path: /var/lib/crbridge, outbox: { retention: 24h, max_bytes: 2GiB } }
http: { listen: 0.0.0.0:9090 }     # /metrics /healthz /readyz
leaderElection: { enabled: false, namespace: crbridge, leaseName: crbridge }   # Lease-based, optional
watches:
  - name: widgets                  # optional; default {plural}.{group}; used by --watch
    group: example.com
    version: v1
    kind: Widget                   # plural from discovery unless given
    namespaces: [team-a, team-b]   # default: all
    labelSelector: "tier=prod"
    events: [created, updated, deleted]
    ignore: ["/spec/replicasHint"]
    includeStatus: false
    initial: snapshot              # snapshot | skip — what the very first start emits
    sinks: [kafka, nats]
sinks:
  kafka: { type: kafka, brokers: "127.0.0.1:9092", topic: "crbridge.{group}.{plural}", options: {} }
  nats:  { type: nats, url: "nats://127.0.0.1:4222", stream: CRBRIDGE, subject: "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}" }
  rabbit: { type: amqp, url: "amqp://guest:guest@127.0.0.1:5672/%2f", exchange: crbridge, routingKey: "{group}.{kind}.{namespace}.{type}" }
"#;

/// A minimal valid config whose `watches:` block is `watches`.
fn with_watches(watches: &str) -> String {
    format!(
        "cluster: c1\nstate: {{ path: /tmp/s }}\nwatches:\n{watches}\nsinks:\n  \
         kafka: {{ type: kafka, brokers: \"b:9092\", topic: t }}\n  \
         nats: {{ type: nats, url: \"nats://x\" }}\n"
    )
}

/// A minimal valid config with `extra` top-level lines appended before `watches`.
fn with_top(extra: &str) -> String {
    format!(
        "cluster: c1\nstate: {{ path: /tmp/s }}\n{extra}\nwatches:\n  - {{ version: v1, kind: Pod }}\n\
         sinks:\n  out: {{ type: stdout }}\n"
    )
}

fn ok(text: &str) -> Config {
    match parse(FILE, text) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got: {err}"),
    }
}

fn err(text: &str) -> String {
    match parse(FILE, text) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(err) => {
            let line = err.to_string();
            assert!(!line.contains('\n'), "not one line: {line}");
            assert!(line.starts_with("crbridge.yaml: "), "{line}");
            line
        }
    }
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "\n  {haystack}\ndoes not contain\n  {needle}"
    );
}
