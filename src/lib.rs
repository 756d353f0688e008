//! crbridge: change data capture for Kubernetes custom resources.
//!
//! The stages, each its own module: [`watch`] (list / watch with checkpoint resume) →
//! [`capture`] (normalize, [`diff`], [`event`], one [`store`] transaction per batch) →
//! [`dispatch`] (one per sink: publish a window of events, advance the cursor over acks).
//! [`config`] reads `crbridge.yaml`; [`app`] wires the stages together and runs each
//! long-running task under [`supervise`], with the pieces the operator commands share in
//! [`wiring`]; [`stats`] is what the [`http`] endpoints read.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod asyncapi;
pub mod backoff;
pub mod capture;
pub mod check;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod diff;
pub mod dispatch;
pub mod event;
pub mod filter;
pub mod group;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod rbac;
pub mod redact;
pub mod replay;
pub mod schema;
pub mod sinks;
pub mod stats;
pub mod status;
pub mod store;
pub mod supervise;
pub mod watch;
pub mod wiring;
