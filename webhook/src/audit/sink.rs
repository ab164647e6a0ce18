//! Where reports go: the [`ReportSink`] trait (so the planning in
//! [`super::writer`] is tested without I/O) and its implementation over the
//! API server ([`KubeReportSink`]: discovery, list, server-side apply,
//! delete, through `Api<DynamicObject>`).

use std::collections::BTreeSet;
use std::future::Future;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::report::{MANAGED_BY, MANAGED_BY_LABEL, REPORT_NAME, ReportKind};

/// The field manager of every report write (server-side apply).
pub const FIELD_MANAGER: &str = "tierguard-audit";

/// A report write or read that failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// the API server refused or could not be reached
    #[error("{what}: {source}")]
    Api {
        /// what was being done
        what: String,
        /// why it failed
        source: kube::Error,
    },
    /// the report API is no longer served (its CRD was removed)
    #[error("{0} is no longer served")]
    Gone(String),
    /// a report object could not be turned into a request
    #[error("report for namespace {namespace}: {source}")]
    Encode {
        /// the namespace
        namespace: String,
        /// why
        source: serde_json::Error,
    },
}

/// Reads and writes tierguard's policy reports.
pub trait ReportSink: Send + Sync {
    /// The report API the cluster serves, in order of preference; `None`
    /// when it serves neither.
    fn discover(&self) -> impl Future<Output = Result<Option<ReportKind>, SinkError>> + Send;
    /// The namespaces holding a report of tierguard's (named
    /// [`REPORT_NAME`], labelled [`MANAGED_BY_LABEL`]).
    fn list(&self, kind: ReportKind) -> impl Future<Output = Result<BTreeSet<String>, SinkError>> + Send;
    /// Creates or updates one namespace's report.
    fn apply(
        &self,
        kind: ReportKind,
        namespace: &str,
        report: &Value,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Deletes one namespace's report (one already gone is not an error).
    fn delete(&self, kind: ReportKind, namespace: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Reports in the API server.
#[derive(Clone)]
pub struct KubeReportSink {
    client: Client,
}

impl std::fmt::Debug for KubeReportSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReportSink").finish_non_exhaustive()
    }
}

impl KubeReportSink {
    /// Reports through `client`.
    pub fn new(client: Client) -> KubeReportSink {
        KubeReportSink { client }
    }
}

fn api_resource(kind: ReportKind) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: kind.version().to_string(),
        api_version: kind.api_version(),
        kind: kind.kind().to_string(),
        plural: kind.plural().to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

impl ReportSink for KubeReportSink {
    async fn discover(&self) -> Result<Option<ReportKind>, SinkError> {
        for kind in ReportKind::PREFERENCE {
            // One GET of the group version's resource list: cheaper than a
            // full discovery, and enough to tell whether the CRD is served.
            match self.client.list_api_group_resources(&kind.api_version()).await {
                Ok(list) if list.resources.iter().any(|r| r.name == kind.plural()) => return Ok(Some(kind)),
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(SinkError::Api {
                        what: format!("discovering {}", kind.api_version()),
                        source,
                    });
                }
            }
        }
        Ok(None)
    }

    async fn list(&self, kind: ReportKind) -> Result<BTreeSet<String>, SinkError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &api_resource(kind));
        let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let list = api.list(&params).await.map_err(|source| {
            if is_not_found(&source) {
                SinkError::Gone(kind.api_version())
            } else {
                SinkError::Api {
                    what: format!("listing {}", kind.plural()),
                    source,
                }
            }
        })?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| o.metadata.name.as_deref() == Some(REPORT_NAME))
            .filter_map(|o| o.metadata.namespace)
            .collect())
    }

    async fn apply(&self, kind: ReportKind, namespace: &str, report: &Value) -> Result<(), SinkError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind));
        let object: DynamicObject = serde_json::from_value(report.clone()).map_err(|source| SinkError::Encode {
            namespace: namespace.to_string(),
            source,
        })?;
        // force: the report is tierguard's alone; a field another manager
        // took over (someone's kubectl edit) is taken back.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // A 404 here is not taken for a removed CRD: it is also what a
        // namespace the watch has not shown as deleted yet answers. The
        // list at the start of every reconcile tells a removed CRD.
        api.patch(REPORT_NAME, &params, &Patch::Apply(&object))
            .await
            .map(|_| ())
            .map_err(|source| SinkError::Api {
                what: format!("applying {} {namespace}/{REPORT_NAME}", kind.kind()),
                source,
            })
    }

    async fn delete(&self, kind: ReportKind, namespace: &str) -> Result<(), SinkError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind));
        match api.delete(REPORT_NAME, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(SinkError::Api {
                what: format!("deleting {} {namespace}/{REPORT_NAME}", kind.kind()),
                source,
            }),
        }
    }
}
