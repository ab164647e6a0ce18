//! AdmissionReview in, AdmissionReview out: reads the request, asks the
//! guardrails, applies the template's mode and builds the response.
//! NetworkPolicy reviews take turns per namespace and are judged against the
//! cached state plus the changes admitted before them ([`crate::overlay`]).

use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::DynamicObject;
use kube::core::admission::{self, AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::response::Status;
use serde::de::DeserializeOwned;
use tierguard::guardrails::{self, Operation, Review};
use tierguard::template::{Mode, TierTemplate};

use crate::metrics::Verdict;
use crate::overlay::Overlay;
use crate::state::{StateSource, policy_namespace};

/// The user the namespace controller deletes as; its deletes are always admitted.
pub const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";

/// Which webhook path a review came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/validate`
    Validate,
    /// `/mutate`
    Mutate,
}

/// A body that is not a usable AdmissionReview (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// not JSON, or not shaped like an AdmissionReview
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    /// another apiVersion
    #[error("unsupported apiVersion {0:?}: only admission.k8s.io/v1 AdmissionReview is served")]
    ApiVersion(String),
    /// another kind
    #[error("unsupported kind {0:?}: expected AdmissionReview")]
    Kind(String),
    /// `request` missing
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// the body could not be read (too large, broken connection)
    #[error("request body: {0}")]
    Body(String),
}

/// Why a review got no AdmissionReview back: the client's fault (HTTP 400)
/// or the webhook's own (HTTP 500). The API server treats the two alike, but
/// a person reading the logs or the metrics must not be sent looking for a
/// broken client when the webhook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// the request was not a usable AdmissionReview
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    /// the webhook could not write its answer
    #[error("internal error: {0}")]
    ServerFault(String),
}

impl ReviewError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            ReviewError::BadRequest(_) => 400,
            ReviewError::ServerFault(_) => 500,
        }
    }
}

/// The answer to one review.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// the AdmissionReview to send back
    pub response: serde_json::Value,
    /// the object kind, for metrics
    pub kind: String,
    /// the operation, for metrics
    pub operation: String,
    /// the verdict, for metrics
    pub verdict: Verdict,
}

/// Answers AdmissionReviews.
pub struct Admission {
    template: Arc<TierTemplate>,
    state: Arc<dyn StateSource>,
    overlay: Arc<Overlay>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("mode", &self.template.mode).finish()
    }
}

/// The decision before it is written as an AdmissionResponse.
struct Decision {
    verdict: Verdict,
    denial: Option<Status>,
    warnings: Vec<String>,
    patch: Option<json_patch::Patch>,
}

impl Decision {
    fn allow() -> Decision {
        Decision {
            verdict: Verdict::Allowed,
            denial: None,
            warnings: Vec::new(),
            patch: None,
        }
    }

    /// Whether the request goes through (possibly with warnings or a patch).
    fn admits(&self) -> bool {
        self.denial.is_none()
    }

    fn invalid(message: String) -> Decision {
        Decision {
            verdict: Verdict::Invalid,
            denial: Some(Status::failure(&message, "BadRequest").with_code(400)),
            warnings: Vec::new(),
            patch: None,
        }
    }
}

fn operation_name(op: &admission::Operation) -> &'static str {
    match op {
        admission::Operation::Create => "CREATE",
        admission::Operation::Update => "UPDATE",
        admission::Operation::Delete => "DELETE",
        admission::Operation::Connect => "CONNECT",
    }
}

fn typed<T: DeserializeOwned>(object: Option<&DynamicObject>, field: &str, kind: &str) -> Result<Option<T>, String> {
    let Some(object) = object else {
        return Ok(None);
    };
    let value = serde_json::to_value(object).map_err(|e| format!("{field}: {e}"))?;
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|e| format!("{field} is not a valid {kind}: {}: {}", e.path(), e.inner()))
}

/// Applies the template's mode to a review of a validating request.
fn judge(mode: Mode, review: Review, what: &str) -> Decision {
    let Review {
        new_violations,
        mut warnings,
    } = review;
    if new_violations.is_empty() {
        return Decision {
            warnings,
            ..Decision::allow()
        };
    }
    let messages: Vec<String> = new_violations
        .iter()
        .map(|v| format!("{}: {}", v.rule(), v.message))
        .collect();
    match mode {
        Mode::Enforce => {
            tracing::info!(object = what, violations = ?messages, "denied");
            Decision {
                verdict: Verdict::Denied,
                denial: Some(Status::failure(&messages.join("; "), "Forbidden").with_code(403)),
                warnings,
                patch: None,
            }
        }
        Mode::Warn => {
            tracing::info!(object = what, violations = ?messages, "admitted with warnings (mode: warn)");
            warnings.extend(messages);
            Decision {
                verdict: Verdict::Warned,
                warnings,
                ..Decision::allow()
            }
        }
        Mode::Audit => {
            tracing::warn!(object = what, violations = ?messages, "would deny; admitted (mode: audit)");
            Decision {
                verdict: Verdict::Audited,
                warnings,
                ..Decision::allow()
            }
        }
    }
}

fn guardrail_operation(op: &admission::Operation) -> Option<Operation> {
    match op {
        admission::Operation::Create => Some(Operation::Create),
        admission::Operation::Update => Some(Operation::Update),
        admission::Operation::Delete => Some(Operation::Delete),
        admission::Operation::Connect => None,
    }
}

impl Admission {
    /// An admission handler over a template and a state source, with an
    /// overlay of the default expiry whose metrics are registered nowhere.
    pub fn new(template: Arc<TierTemplate>, state: Arc<dyn StateSource>) -> Admission {
        Admission::with_overlay(template, state, Arc::new(Overlay::default()))
    }

    /// An admission handler that records admitted changes in `overlay`.
    pub fn with_overlay(template: Arc<TierTemplate>, state: Arc<dyn StateSource>, overlay: Arc<Overlay>) -> Admission {
        Admission {
            template,
            state,
            overlay,
        }
    }

    /// The overlay of admitted changes.
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// The template in use.
    pub fn template(&self) -> &TierTemplate {
        &self.template
    }

    /// Whether the state has synced.
    pub fn state_synced(&self) -> bool {
        self.state.is_synced()
    }

    /// Answers one AdmissionReview body. A NetworkPolicy review waits while
    /// another review in its namespace is being judged (never on the API server).
    pub async fn handle(&self, endpoint: Endpoint, body: &[u8]) -> Result<Outcome, ReviewError> {
        // serde_json does not check the UTF-8 of strings it skips (fields the
        // review does not read), so a body that is not JSON would get a verdict
        let text =
            std::str::from_utf8(body).map_err(|e| BadRequest::Malformed(format!("the body is not UTF-8: {e}")))?;
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_str(text).map_err(|e| BadRequest::Malformed(e.to_string()))?;
        if review.types.api_version != admission::META_API_VERSION_V1 {
            return Err(BadRequest::ApiVersion(review.types.api_version).into());
        }
        if review.types.kind != admission::META_KIND {
            return Err(BadRequest::Kind(review.types.kind).into());
        }
        let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| BadRequest::MissingRequest)?;
        let kind = request.kind.kind.clone();
        let operation = operation_name(&request.operation).to_string();
        let decision = self.decide(endpoint, &request).await;
        let verdict = decision.verdict;
        let response = respond(&request, decision)?;
        Ok(Outcome {
            response,
            kind,
            operation,
            verdict,
        })
    }

    async fn decide(&self, endpoint: Endpoint, request: &AdmissionRequest<DynamicObject>) -> Decision {
        let Some(operation) = guardrail_operation(&request.operation) else {
            return Decision::allow();
        };
        let gvk = &request.kind;
        match (endpoint, gvk.group.as_str(), gvk.kind.as_str()) {
            (Endpoint::Validate, "networking.k8s.io", "NetworkPolicy") => self.network_policy(request, operation).await,
            (Endpoint::Validate, "", "Namespace") => self.validate_namespace(request, operation),
            (Endpoint::Mutate, "", "Namespace") => self.mutate_namespace(request, operation),
            _ => Decision::allow(),
        }
    }

    async fn network_policy(&self, request: &AdmissionRequest<DynamicObject>, operation: Operation) -> Decision {
        let read = |object, field| -> Result<Option<NetworkPolicy>, String> {
            let np: Option<NetworkPolicy> = typed(object, field, "NetworkPolicy")?;
            Ok(np.map(|mut np| {
                if np.metadata.namespace.is_none() {
                    np.metadata.namespace = request.namespace.clone();
                }
                np
            }))
        };
        let (old, new) = match (
            read(request.old_object.as_ref(), "request.oldObject"),
            read(request.object.as_ref(), "request.object"),
        ) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(e), _) | (_, Err(e)) => return Decision::invalid(e),
        };
        let namespace = new
            .as_ref()
            .or(old.as_ref())
            .map(policy_namespace)
            .or_else(|| request.namespace.clone())
            .unwrap_or_default();
        let what = format!("NetworkPolicy {namespace}/{}", request.name);
        if operation == Operation::Delete {
            let snapshot = self.state.snapshot();
            let by_cluster = if request.user_info.username.as_deref() == Some(NAMESPACE_CONTROLLER) {
                Some("delete by the namespace controller: admitted")
            } else if snapshot.terminating.contains(&namespace) {
                Some("delete in a terminating namespace: admitted")
            } else {
                None
            };
            if let Some(why) = by_cluster {
                tracing::debug!(object = %what, "{why}");
                if !request.dry_run {
                    self.overlay.admit_policy(&snapshot, operation, old.as_ref(), None);
                }
                return Decision::allow();
            }
        }
        let missing = match operation {
            Operation::Create if new.is_none() => Some("request.object"),
            Operation::Update if new.is_none() => Some("request.object"),
            Operation::Update | Operation::Delete if old.is_none() => Some("request.oldObject"),
            _ => None,
        };
        if let Some(field) = missing {
            return Decision::invalid(format!("{field} is required for {operation:?} of a NetworkPolicy"));
        }
        // Held until the verdict is recorded: the next review in this
        // namespace is judged with this change counted.
        let _turn = self.overlay.turn(&namespace).await;
        let view = self.overlay.view(self.state.as_ref(), &namespace);
        let review = view.review_network_policy(&self.template, operation, old.as_ref(), new.as_ref());
        let decision = judge(self.template.mode, review, &what);
        // Warn and audit modes admit too: what they let through counts.
        if decision.admits() && !request.dry_run {
            self.overlay
                .admit_policy(view.snapshot(), operation, old.as_ref(), new.as_ref());
        }
        decision
    }

    fn namespaces(&self, request: &AdmissionRequest<DynamicObject>) -> Result<(Option<Namespace>, Namespace), String> {
        let old: Option<Namespace> = typed(request.old_object.as_ref(), "request.oldObject", "Namespace")?;
        let new: Option<Namespace> = typed(request.object.as_ref(), "request.object", "Namespace")?;
        let new = new.ok_or_else(|| "request.object is required for a Namespace CREATE or UPDATE".to_string())?;
        Ok((old, new))
    }

    fn validate_namespace(&self, request: &AdmissionRequest<DynamicObject>, operation: Operation) -> Decision {
        if operation == Operation::Delete {
            return Decision::allow();
        }
        match self.namespaces(request) {
            Ok((old, new)) => {
                let review = guardrails::review_namespace(&self.template, operation, old.as_ref(), &new);
                let decision = judge(self.template.mode, review, &format!("Namespace {}", request.name));
                // Validation sees the labels after mutation, as they are stored.
                if decision.admits() && !request.dry_run {
                    self.overlay.admit_namespace(self.state.as_ref(), old.as_ref(), &new);
                }
                decision
            }
            Err(e) => Decision::invalid(e),
        }
    }

    fn mutate_namespace(&self, request: &AdmissionRequest<DynamicObject>, operation: Operation) -> Decision {
        if operation == Operation::Delete {
            return Decision::allow();
        }
        match self.namespaces(request) {
            Ok((_, new)) => {
                let mutation = guardrails::mutate_namespace(&self.template, &new);
                let patched = !mutation.patch.0.is_empty();
                if patched {
                    tracing::debug!(namespace = %request.name, patch = ?mutation.patch, "patching namespace");
                }
                Decision {
                    verdict: if patched { Verdict::Patched } else { Verdict::Allowed },
                    denial: None,
                    warnings: mutation.warnings,
                    patch: patched.then_some(mutation.patch),
                }
            }
            Err(e) => Decision::invalid(e),
        }
    }
}

/// Writes the AdmissionReview response. `patch` is sent base64-encoded, as
/// the API server requires for `[]byte` fields in JSON (kube-core would
/// otherwise serialize the bytes as a JSON array of numbers).
fn respond(request: &AdmissionRequest<DynamicObject>, decision: Decision) -> Result<serde_json::Value, ReviewError> {
    let mut response = AdmissionResponse::from(request);
    if let Some(status) = decision.denial {
        response.allowed = false;
        response.result = status;
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings);
    }
    if let Some(patch) = decision.patch {
        response = response
            .with_patch(patch)
            .map_err(|e| ReviewError::ServerFault(format!("cannot serialize patch: {e}")))?;
    }
    let patch_bytes = response.patch.take();
    let mut value = serde_json::to_value(response.into_review())
        .map_err(|e| ReviewError::ServerFault(format!("cannot serialize response: {e}")))?;
    if let Some(bytes) = patch_bytes
        && let Some(obj) = value.get_mut("response").and_then(serde_json::Value::as_object_mut)
    {
        obj.insert(
            "patch".to_string(),
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        );
    }
    Ok(value)
}
