//! List and watch requests that hand back objects as plain JSON trees.
//!
//! `Api<DynamicObject>` parses every object into typed metadata plus a tree and capture then
//! needs it as one tree again; for a 4 KiB object that round trip cost more than the
//! parse itself. These requests are the same ones `Api` sends, decoded once into
//! [`Value`]s.
//!
//! The watch loop sends them through the [`ListWatch`] trait, so its I/O step also runs
//! against a scripted API in tests. The same trait re-resolves the kind by discovery when
//! the server stops serving it (CRD deleted, version no longer served) or never served it.

use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectList, WatchEvent, WatchParams,
};
use kube::core::{Request, Status};
use kube::discovery::Scope as KubeScope;
use kube::{Client, Resource};
use serde_json::Value;

/// A stream of watch events, as the server sends them.
pub type WatchStream = BoxStream<'static, kube::Result<WatchEvent<Value>>>;

/// The requests a watch loop makes.
pub trait ListWatch: Send + Sync {
    /// Looks the kind up by discovery and points later lists and watches at what the server
    /// serves. A kind that is not served answers a 404 [`kube::Error::Api`].
    fn resolve(&self) -> impl Future<Output = kube::Result<()>> + Send;

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

/// A watched kind as the config names it: what discovery is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRef {
    /// API group (empty for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// The configured plural, which wins over discovery's.
    pub plural: Option<String>,
}

impl KindRef {
    /// The kind of `resource`, its plural pinned.
    pub fn of(resource: &ApiResource) -> KindRef {
        KindRef {
            group: resource.group.clone(),
            version: resource.version.clone(),
            kind: resource.kind.clone(),
            plural: Some(resource.plural.clone()),
        }
    }

    /// `group/version Kind` (`core/v1 Pod` for the core group), for messages.
    pub fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{group}/{} {}", self.version, self.kind)
    }

    /// The resource as far as it can be known without the server: the configured plural, else
    /// the conventional one. Used until discovery answers.
    pub fn guessed(&self) -> ApiResource {
        let mut r = ApiResource::from_gvk(&GroupVersionKind::gvk(
            &self.group,
            &self.version,
            &self.kind,
        ));
        if let Some(p) = &self.plural {
            r.plural = p.clone();
        }
        r
    }
}

/// A kind as the server serves it.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The resource (plural from discovery unless configured).
    pub resource: ApiResource,
    /// True for namespaced kinds.
    pub namespaced: bool,
}

/// An API error with `code`, as if the server had answered it.
pub fn api_error(code: u16, reason: &str, message: String) -> kube::Error {
    kube::Error::Api(Status::failure(&message, reason).with_code(code).boxed())
}

/// Asks discovery for `kind`. A group, version or kind the server does not serve is a 404
/// [`kube::Error::Api`] naming the kind; other errors are discovery's own.
pub async fn discover(client: &Client, kind: &KindRef) -> kube::Result<Discovered> {
    let gvk = GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind);
    let not_served = || {
        api_error(
            404,
            "NotFound",
            format!("kind {} is not served (404)", kind.describe()),
        )
    };
    let (mut resource, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(not_served()),
        Err(kube::Error::Discovery(_)) => return Err(not_served()),
        Err(e) => return Err(e),
    };
    if let Some(p) = &kind.plural {
        resource.plural = p.clone();
    }
    Ok(Discovered {
        resource,
        namespaced: caps.scope == KubeScope::Namespaced,
    })
}

/// A kind a group serves, as [`discover_group`] found it.
#[derive(Debug, Clone)]
pub struct GroupKind {
    /// The kind, e.g. `Widget`.
    pub kind: String,
    /// Its resource and scope.
    pub found: Discovered,
}

/// The kinds `group` serves at `version` that can be listed and watched, in plural order.
/// Subresources (`widgets/status`) and kinds without `list` and `watch` are left out. A
/// group or version the server does not serve is a 404 [`kube::Error::Api`].
pub async fn discover_group(
    client: &Client,
    group: &str,
    version: &str,
) -> kube::Result<Vec<GroupKind>> {
    let api_version = format!("{group}/{version}");
    let list = match client.list_api_group_resources(&api_version).await {
        Ok(list) => list,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(api_error(
                404,
                "NotFound",
                format!("group {api_version} is not served (404)"),
            ))
        }
        Err(e) => return Err(e),
    };
    let mut kinds: Vec<GroupKind> = list
        .resources
        .into_iter()
        .filter(|r| !r.name.contains('/'))
        .filter(|r| {
            ["list", "watch"]
                .iter()
                .all(|v| r.verbs.iter().any(|x| x == v))
        })
        .map(|r| GroupKind {
            found: Discovered {
                resource: ApiResource {
                    group: group.to_owned(),
                    version: version.to_owned(),
                    api_version: api_version.clone(),
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                },
                namespaced: r.namespaced,
            },
            kind: r.kind,
        })
        .collect();
    kinds.sort_by(|a, b| a.found.resource.plural.cmp(&b.found.resource.plural));
    Ok(kinds)
}

/// List / watch of one resource in one namespace (or all).
#[derive(Clone)]
pub struct RawApi {
    client: Client,
    kind: KindRef,
    namespace: Option<String>,
    /// The resource's URL, replaced when a later discovery finds a different one.
    request: Arc<RwLock<Request>>,
}

impl RawApi {
    /// The resource in `namespace`, or in all namespaces / cluster-scoped when `None`.
    pub fn new(
        client: Client,
        kind: KindRef,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> Self {
        RawApi {
            client,
            kind,
            namespace: namespace.map(str::to_string),
            request: Arc::new(RwLock::new(Request::new(DynamicObject::url_path(
                resource, namespace,
            )))),
        }
    }

    fn request(&self) -> Request {
        // A poisoned lock still holds a whole path: writers only assign.
        let r = self.request.read().unwrap_or_else(|p| p.into_inner());
        Request::new(r.url_path.clone())
    }
}

impl ListWatch for RawApi {
    async fn resolve(&self) -> kube::Result<()> {
        let found = discover(&self.client, &self.kind).await?;
        if !found.namespaced && self.namespace.is_some() {
            return Err(api_error(
                404,
                "NotFound",
                format!(
                    "kind {} is cluster-scoped now; remove `namespaces`",
                    self.kind.describe()
                ),
            ));
        }
        let path = DynamicObject::url_path(&found.resource, self.namespace.as_deref());
        *self.request.write().unwrap_or_else(|p| p.into_inner()) = Request::new(path);
        Ok(())
    }

    async fn list(&self, lp: &ListParams) -> kube::Result<ObjectList<Value>> {
        let mut req = self.request().list(lp).map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("list");
        self.client.request::<ObjectList<Value>>(req).await
    }

    async fn watch(&self, wp: &WatchParams, version: &str) -> kube::Result<WatchStream> {
        let mut req = self
            .request()
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
