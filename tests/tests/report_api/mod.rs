//! A tiny fake of the parts of an API server the background audit writes
//! to, on a loopback port (the read-only `fake_api` serves the watched
//! state): discovery of the two report APIs, tierguard's reports (list
//! with a label selector, server-side apply, delete) and Leases (get,
//! create, replace with optimistic concurrency).
//!
//! Which report APIs are served is fixed at start, as CRDs installed or
//! not. Every request is recorded (method, path, query).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A report API: (group, version, plural, kind).
pub type Api = (&'static str, &'static str, &'static str, &'static str);
pub const OPENREPORTS: Api = ("openreports.io", "v1alpha1", "reports", "Report");
pub const POLICYREPORTS: Api = ("wgpolicyk8s.io", "v1alpha2", "policyreports", "PolicyReport");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// (plural, namespace, name) -> object
    reports: BTreeMap<(String, String, String), Value>,
    /// (namespace, name) -> Lease
    leases: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
}

struct Shared {
    served: Vec<Api>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ReportApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for ReportApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

impl ReportApi {
    pub async fn start(served: &[Api]) -> ReportApi {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            served: served.to_vec(),
            inner: Mutex::new(Inner {
                rv: 1,
                ..Inner::default()
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ReportApi { addr, shared, task }
    }

    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// The reports of one API by namespace.
    pub fn reports(&self, api: Api) -> BTreeMap<String, Value> {
        self.shared
            .lock()
            .reports
            .iter()
            .filter(|((plural, _, _), _)| plural == api.2)
            .map(|((_, ns, _), v)| (ns.clone(), v.clone()))
            .collect()
    }

    /// Puts a report there as another writer would (or a leftover).
    pub fn put_report(&self, api: Api, namespace: &str, object: Value) {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        self.shared
            .lock()
            .reports
            .insert((api.2.to_string(), namespace.to_string(), name), object);
    }

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }
}

fn next_rv(inner: &mut Inner, object: &mut Value) {
    inner.rv += 1;
    object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    shared.lock().requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
    });
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), parts.as_slice()) {
        // discovery of one group version
        ("GET", ["apis", group, version]) => match shared.served.iter().find(|a| a.0 == *group && a.1 == *version) {
            Some(a) => axum::Json(json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"),
                "resources": [{"name": a.2, "singularName": "", "namespaced": true, "kind": a.3,
                               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]
            }))
            .into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ),
        },
        // cluster-wide list of reports
        ("GET", ["apis", group, version, plural]) => {
            let Some(api) = shared
                .served
                .iter()
                .find(|a| a.0 == *group && a.1 == *version && a.2 == *plural)
            else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not served");
            };
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let inner = shared.lock();
            let items: Vec<Value> = inner
                .reports
                .iter()
                .filter(|((p, _, _), _)| p == plural)
                .map(|(_, v)| v.clone())
                .filter(|v| {
                    selector.split(',').filter(|s| !s.is_empty()).all(|req| {
                        let (k, want) = req.split_once('=').unwrap();
                        v["metadata"]["labels"][k].as_str() == Some(want)
                    })
                })
                .collect();
            axum::Json(
                json!({"apiVersion": format!("{}/{}", api.0, api.1), "kind": format!("{}List", api.3),
                              "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
            )
            .into_response()
        }
        // one report: apply or delete
        (m @ ("PATCH" | "DELETE"), ["apis", group, version, "namespaces", ns, plural, name]) => {
            if !shared
                .served
                .iter()
                .any(|a| a.0 == *group && a.1 == *version && a.2 == *plural)
            {
                return status(StatusCode::NOT_FOUND, "NotFound", "not served");
            }
            let key = (plural.to_string(), ns.to_string(), name.to_string());
            let mut inner = shared.lock();
            if m == "DELETE" {
                return match inner.reports.remove(&key) {
                    Some(_) => {
                        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).into_response()
                    }
                    None => status(StatusCode::NOT_FOUND, "NotFound", "no such report"),
                };
            }
            let mut object = body;
            next_rv(&mut inner, &mut object);
            inner.reports.insert(key, object.clone());
            axum::Json(object).into_response()
        }
        ("GET", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
            match shared.lock().leases.get(&(ns.to_string(), name.to_string())) {
                Some(l) => axum::Json(l.clone()).into_response(),
                None => status(StatusCode::NOT_FOUND, "NotFound", "no such lease"),
            }
        }
        ("POST", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"]) => {
            let mut object = body;
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let mut inner = shared.lock();
            let key = (ns.to_string(), name);
            if inner.leases.contains_key(&key) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "lease exists");
            }
            next_rv(&mut inner, &mut object);
            inner.leases.insert(key, object.clone());
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        ("PUT", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
            let mut object = body;
            let mut inner = shared.lock();
            let key = (ns.to_string(), name.to_string());
            let current = inner.leases.get(&key).map(|l| l["metadata"]["resourceVersion"].clone());
            match current {
                None => status(StatusCode::NOT_FOUND, "NotFound", "no such lease"),
                Some(rv) if rv != object["metadata"]["resourceVersion"] => {
                    status(StatusCode::CONFLICT, "Conflict", "the object has been modified")
                }
                Some(_) => {
                    next_rv(&mut inner, &mut object);
                    inner.leases.insert(key, object.clone());
                    axum::Json(object).into_response()
                }
            }
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", "the fake does not serve this path"),
    }
}
