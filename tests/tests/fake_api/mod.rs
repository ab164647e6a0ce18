//! A tiny fake Kubernetes API server on a loopback port, for testing the
//! kube-rs watch paths (the webhook's reflectors, the enforcer's watchers)
//! without a cluster.
//!
//! It keeps a store per resource with one global resourceVersion counter and
//! serves what kube-runtime's `watcher` uses with its default configuration
//! (`InitialListStrategy::ListWatch`):
//!
//! - list: `GET /api/v1/pods?limit=500&resourceVersion=0&...` answers a
//!   `PodList` with `metadata.resourceVersion` (and `continue` when `limit`
//!   cuts the list);
//! - watch: `GET ...?watch=true&resourceVersion=N&allowWatchBookmarks=true`
//!   streams newline-delimited watch events newer than `N`, then every event
//!   the test makes, until the server stops. BOOKMARK events are sent only
//!   when `allowWatchBookmarks=true`; a `resourceVersion` older than the last
//!   [`FakeApi::expire`] gets an `ERROR` event with code 410 (and a watch open
//!   at that moment gets one too and ends), as an API server that compacted
//!   its history does. Streaming lists (`sendInitialEvents=true`, not
//!   kube-runtime's default) are not served: such a watch gets 400.
//!
//! Lists of a resource can be held back ([`FakeApi::hold`]) until released,
//! so a test can look at a client that has not seen everything yet. Every
//! request is recorded (method, path, query).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An API resource the fake serves (cluster-wide list and watch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// API group ("" for core)
    pub group: &'static str,
    /// version
    pub version: &'static str,
    /// plural name (the URL segment)
    pub plural: &'static str,
    /// kind of one object
    pub kind: &'static str,
}

impl Resource {
    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The cluster-wide collection path.
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }
}

pub const PODS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
};
pub const NAMESPACES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
};
pub const NETWORK_POLICIES: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    plural: "networkpolicies",
    kind: "NetworkPolicy",
};
pub const NODES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "nodes",
    kind: "Node",
};
const ALL: [Resource; 4] = [PODS, NAMESPACES, NETWORK_POLICIES, NODES];

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|v| v == "true" || v == "1")
    }

    /// The served resource this request lists or watches (cluster-wide), if any.
    pub fn resource(&self) -> Option<Resource> {
        ALL.into_iter().find(|r| r.path() == self.path)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    /// (namespace, name) -> object
    objects: BTreeMap<(String, String), Value>,
    /// every watch event, oldest first
    log: Vec<Entry>,
    /// a watch from a resourceVersion below this gets 410 Gone
    oldest_rv: u64,
    /// bumped by `expire`: open watches end with 410
    epoch: u64,
    /// lists wait while set
    held: bool,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    stores: BTreeMap<Resource, Store>,
    requests: Vec<Recorded>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// bumped on every change, so waiting handlers look again
    changed: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poke(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The running fake; stops on [`FakeApi::shutdown`] (or when dropped).
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl FakeApi {
    /// Binds 127.0.0.1:0 and serves.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut inner = Inner {
            rv: 1,
            ..Inner::default()
        };
        for r in ALL {
            inner.stores.insert(r, Store::default());
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            changed: watch::channel(0).0,
            stop: CancellationToken::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let stop = shared.stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                eprintln!("fake API server: {e}");
            }
        });
        FakeApi {
            addr,
            shared,
            task: Some(task),
        }
    }

    /// A kube client for this server (plain HTTP).
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// Stops serving: open watches end, held lists fail, the listener closes.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        if let Some(task) = self.task.take() {
            // Idle keep-alive connections of clients are closed by the graceful shutdown.
            let done = tokio::time::timeout(Duration::from_secs(5), task).await;
            assert!(done.is_ok(), "fake API server did not stop");
        }
    }

    fn change(&self, resource: Resource, kind: &'static str, mut object: Value) -> u64 {
        let mut inner = self.shared.lock();
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        let key = key_of(&object);
        let store = inner.stores.entry(resource).or_default();
        if kind == "DELETED" {
            store.objects.remove(&key);
        } else {
            store.objects.insert(key, object.clone());
        }
        store.log.push(Entry { rv, kind, object });
        drop(inner);
        self.shared.poke();
        rv
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers); returns its resourceVersion.
    pub fn apply(&self, resource: Resource, object: Value) -> u64 {
        let exists = {
            let inner = self.shared.lock();
            inner
                .stores
                .get(&resource)
                .is_some_and(|s| s.objects.contains_key(&key_of(&object)))
        };
        self.change(resource, if exists { "MODIFIED" } else { "ADDED" }, object)
    }

    /// Deletes an object (DELETED to watchers, with its last state).
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> u64 {
        let object = {
            let inner = self.shared.lock();
            inner
                .stores
                .get(&resource)
                .and_then(|s| s.objects.get(&(namespace.to_string(), name.to_string())).cloned())
        };
        let object = object.unwrap_or_else(|| panic!("no {} {namespace}/{name}", resource.plural));
        self.change(resource, "DELETED", object)
    }

    /// Removes an object without telling any watcher (as if the event was
    /// lost to compaction); pair with [`FakeApi::expire`].
    pub fn remove_silently(&self, resource: Resource, namespace: &str, name: &str) {
        let mut inner = self.shared.lock();
        inner.rv += 1;
        if let Some(store) = inner.stores.get_mut(&resource) {
            store.objects.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Sends a BOOKMARK at the current resourceVersion to watchers that asked for bookmarks.
    pub fn bookmark(&self, resource: Resource) {
        let mut inner = self.shared.lock();
        let rv = inner.rv;
        let object = json!({
            "apiVersion": resource.api_version(),
            "kind": resource.kind,
            "metadata": {"resourceVersion": rv.to_string()},
        });
        inner.stores.entry(resource).or_default().log.push(Entry {
            rv,
            kind: "BOOKMARK",
            object,
        });
        drop(inner);
        self.shared.poke();
    }

    /// Compacts the history of `resource`: open watches get 410 Gone and end,
    /// and so does any watch from a resourceVersion older than now.
    pub fn expire(&self, resource: Resource) {
        let mut inner = self.shared.lock();
        let rv = inner.rv;
        let store = inner.stores.entry(resource).or_default();
        store.oldest_rv = rv;
        store.epoch += 1;
        store.log.clear();
        drop(inner);
        self.shared.poke();
    }

    /// Holds lists of `resource` until [`FakeApi::release`].
    pub fn hold(&self, resource: Resource) {
        self.shared.lock().stores.entry(resource).or_default().held = true;
    }

    /// Lets held lists of `resource` through.
    pub fn release(&self, resource: Resource) {
        self.shared.lock().stores.entry(resource).or_default().held = false;
        self.shared.poke();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The served resources that were listed or watched, as (group, plural).
    pub fn watched(&self) -> BTreeSet<(String, String)> {
        self.requests()
            .iter()
            .filter_map(Recorded::resource)
            .map(|r| (r.group.to_string(), r.plural.to_string()))
            .collect()
    }

    /// Waits (bounded) until the recorded requests satisfy `ok`.
    pub async fn wait_for_requests(&self, what: &str, ok: impl Fn(&[Recorded]) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                if ok(&self.requests()) {
                    return;
                }
                let _ = changed.changed().await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "timed out waiting for {what}; requests: {:#?}",
            self.requests()
        );
    }

    /// Waits until a watch of `resource` is open (so its list has been served and consumed).
    pub async fn wait_for_watch(&self, resource: Resource) {
        let path = resource.path();
        self.wait_for_requests(&format!("a watch of {path}"), |reqs| {
            reqs.iter().any(|r| r.path == path && r.is_watch())
        })
        .await;
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = status_object(code.as_u16(), reason, message);
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let query: BTreeMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let recorded = Recorded {
        method: request.method().to_string(),
        path: uri.path().to_string(),
        query,
    };
    shared.lock().requests.push(recorded.clone());
    shared.poke();
    if request.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API only reads",
        );
    }
    if let Some(resource) = recorded.resource() {
        return if recorded.is_watch() {
            watch_response(shared, resource, &recorded.query)
        } else {
            list(shared, resource, &recorded.query).await
        };
    }
    // A single cluster-scoped object: /api/v1/nodes/NAME etc.
    for resource in ALL {
        if let Some(name) = recorded.path.strip_prefix(&format!("{}/", resource.path()))
            && !name.contains('/')
        {
            let inner = shared.lock();
            let found = inner
                .stores
                .get(&resource)
                .and_then(|s| s.objects.get(&(String::new(), name.to_string())).cloned());
            return match found {
                Some(object) => (StatusCode::OK, axum::Json(object)).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} {name:?} not found", resource.plural),
                ),
            };
        }
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the fake API does not serve this path",
    )
}

async fn list(shared: Arc<Shared>, resource: Resource, query: &BTreeMap<String, String>) -> Response {
    let mut changed = shared.changed.subscribe();
    loop {
        if shared.stop.is_cancelled() {
            return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "shutting down");
        }
        {
            let inner = shared.lock();
            let Some(store) = inner.stores.get(&resource) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource");
            };
            if !store.held {
                let offset: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
                let limit: usize = query
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|&l| l > 0)
                    .unwrap_or(usize::MAX);
                let items: Vec<Value> = store.objects.values().skip(offset).take(limit).cloned().collect();
                let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
                if offset.saturating_add(limit) < store.objects.len() {
                    metadata["continue"] = json!((offset + limit).to_string());
                }
                let body = json!({
                    "apiVersion": resource.api_version(),
                    "kind": format!("{}List", resource.kind),
                    "metadata": metadata,
                    "items": items,
                });
                return (StatusCode::OK, axum::Json(body)).into_response();
            }
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = shared.stop.cancelled() => {}
        }
    }
}

struct WatchState {
    shared: Arc<Shared>,
    resource: Resource,
    /// the last resourceVersion sent (or asked for)
    since: u64,
    /// log entries already looked at (a bookmark does not advance `since`)
    next: usize,
    epoch: u64,
    bookmarks: bool,
    pending: VecDeque<Bytes>,
    changed: watch::Receiver<u64>,
    done: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn watch_response(shared: Arc<Shared>, resource: Resource, query: &BTreeMap<String, String>) -> Response {
    let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    if query.get("sendInitialEvents").is_some_and(|v| v == "true") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the fake API does not serve streaming lists",
        );
    }
    let changed = shared.changed.subscribe();
    let mut pending = VecDeque::new();
    let (epoch, next, since, done) = {
        let inner = shared.lock();
        let store = &inner.stores[&resource];
        if since < store.oldest_rv {
            let gone = status_object(410, "Expired", &format!("too old resource version: {since}"));
            pending.push_back(line("ERROR", &gone));
            (store.epoch, store.log.len(), since, true)
        } else {
            let next = store.log.iter().position(|e| e.rv > since).unwrap_or(store.log.len());
            (store.epoch, next, since, false)
        }
    };
    let state = WatchState {
        shared,
        resource,
        since,
        next,
        epoch,
        bookmarks,
        pending,
        changed,
        done,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(bytes), st));
            }
            if st.done || st.shared.stop.is_cancelled() {
                return None;
            }
            {
                let inner = st.shared.lock();
                let store = &inner.stores[&st.resource];
                if store.epoch != st.epoch {
                    let gone = status_object(410, "Expired", "the watch history was compacted");
                    st.pending.push_back(line("ERROR", &gone));
                    st.done = true;
                    continue;
                }
                while let Some(entry) = store.log.get(st.next) {
                    st.next += 1;
                    if entry.kind == "BOOKMARK" {
                        if st.bookmarks {
                            st.pending.push_back(line(entry.kind, &entry.object));
                        }
                    } else if entry.rv > st.since {
                        st.since = entry.rv;
                        st.pending.push_back(line(entry.kind, &entry.object));
                    }
                }
            }
            if !st.pending.is_empty() {
                continue;
            }
            let stop = st.shared.stop.clone();
            tokio::select! {
                _ = st.changed.changed() => {}
                _ = stop.cancelled() => return None,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()))
}

/// Polls `check` (bounded: 8 s) until it returns `Some`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
