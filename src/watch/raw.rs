//! List and watch requests that hand back objects as plain JSON trees.
//!
//! `Api<DynamicObject>` parses every object into typed metadata plus a tree and capture then
//! needs it as one tree again; for a 4 KiB object that round trip cost more than the
//! parse itself. These requests are the same ones `Api` sends, decoded once into
//! [`Value`]s.
//!
//! The watch loop sends them through the [`ListWatch`] trait, so its I/O step also runs
//! against a scripted API in tests.

use std::future::Future;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectList, WatchEvent, WatchParams};
use kube::core::Request;
use kube::{Client, Resource};
use serde_json::Value;

/// A stream of watch events, as the server sends them.
pub type WatchStream = BoxStream<'static, kube::Result<WatchEvent<Value>>>;

/// The two requests a watch loop makes.
pub trait ListWatch: Send + Sync {
    /// One page of a list.
    fn list(&self, lp: &ListParams)
        -> impl Future<Output = kube::Result<ObjectList<Value>>> + Send;

    /// A watch of changes after resourceVersion `version`.
    fn watch(
        &self,
        wp: &WatchParams,
        version: &str,
    ) -> impl Future<Output = kube::Result<WatchStream>> + Send;
}

/// List / watch of one resource in one namespace (or all).
#[derive(Clone)]
pub struct RawApi {
    client: Client,
    request: Request,
}

impl RawApi {
    /// The resource in `namespace`, or in all namespaces / cluster-scoped when `None`.
    pub fn new(client: Client, resource: &ApiResource, namespace: Option<&str>) -> Self {
        RawApi {
            client,
            request: Request::new(DynamicObject::url_path(resource, namespace)),
        }
    }
}

impl ListWatch for RawApi {
    async fn list(&self, lp: &ListParams) -> kube::Result<ObjectList<Value>> {
        let mut req = self.request.list(lp).map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("list");
        self.client.request::<ObjectList<Value>>(req).await
    }

    async fn watch(&self, wp: &WatchParams, version: &str) -> kube::Result<WatchStream> {
        let mut req = self
            .request
            .watch(wp, version)
            .map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("watch");
        Ok(self.client.request_events::<Value>(req).await?.boxed())
    }
}

/// A string field of an object's metadata.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Fills in apiVersion and kind, which list items lack.
pub fn with_type(resource: &ApiResource, mut object: Value) -> Value {
    if let Value::Object(map) = &mut object {
        if !map.contains_key("apiVersion") {
            map.insert(
                "apiVersion".into(),
                Value::String(resource.api_version.clone()),
            );
        }
        if !map.contains_key("kind") {
            map.insert("kind".into(), Value::String(resource.kind.clone()));
        }
    }
    object
}
