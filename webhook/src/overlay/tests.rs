#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use tierguard::guardrails::RuleId;

use super::*;
use crate::metrics::Metrics;

/// A state whose snapshot the test replaces, as the watch would.
#[derive(Debug)]
struct WatchedState(RwLock<Arc<Snapshot>>);

impl WatchedState {
    fn new(namespaces: &[Namespace], policies: &[NetworkPolicy]) -> WatchedState {
        WatchedState(RwLock::new(Arc::new(Snapshot::build(namespaces, policies))))
    }

    fn show(&self, namespaces: &[Namespace], policies: &[NetworkPolicy]) {
        *self.0.write().unwrap() = Arc::new(Snapshot::build(namespaces, policies));
    }
}

impl StateSource for WatchedState {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.read().unwrap())
    }

    fn is_synced(&self) -> bool {
        true
    }
}

fn namespace(name: &str, version: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({
        "metadata": {"name": name, "resourceVersion": version, "labels": labels}
    }))
    .unwrap()
}

fn deny_all(version: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "deny-all", "namespace": "team", "resourceVersion": version},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    }))
    .unwrap()
}

/// Egress to the cluster DNS from every pod of `team`.
fn dns(name: &str, version: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team", "resourceVersion": version},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            }]
        }
    }))
    .unwrap()
}

struct Setup {
    state: WatchedState,
    clock: Arc<ManualClock>,
    metrics: Metrics,
    overlay: Overlay,
    template: TierTemplate,
}

impl Setup {
    /// `team` holding deny-all, dns-a (version 10) and dns-b (version 11).
    fn new() -> Setup {
        let clock = Arc::new(ManualClock::default());
        let metrics = Metrics::new();
        let overlay = Overlay::new(DEFAULT_EXPIRY, clock.clone(), metrics.overlay());
        Setup {
            state: WatchedState::new(&[team("1")], &[deny_all("9"), dns("dns-a", "10"), dns("dns-b", "11")]),
            clock,
            metrics,
            overlay,
            template: TierTemplate::built_in(),
        }
    }

    /// The rules broken by deleting `policy` now (each once).
    fn delete_breaks(&self, policy: &NetworkPolicy) -> Vec<RuleId> {
        let mut rules: Vec<RuleId> = self
            .overlay
            .view(&self.state, "team")
            .review_network_policy(&self.template, Operation::Delete, Some(policy), None)
            .new_violations
            .iter()
            .map(|v| v.rule())
            .collect();
        rules.dedup();
        rules
    }

    fn metric(&self, name: &str) -> String {
        let text = self.metrics.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    }

    fn settle(&self) {
        self.overlay.settle(&self.state);
    }
}

fn team(version: &str) -> Namespace {
    namespace("team", version, json!({}))
}

fn policy_key(name: &str) -> ObjectKey {
    ObjectKey::NetworkPolicy {
        namespace: "team".into(),
        name: name.into(),
    }
}

#[test]
fn an_admitted_delete_hides_the_object_until_the_watch_confirms_it() {
    let s = Setup::new();
    assert!(
        s.delete_breaks(&dns("dns-b", "11")).is_empty(),
        "alone, either delete is fine"
    );

    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Delete, Some(&dns("dns-a", "10")), None);
    assert_eq!(s.overlay.keys(), vec![policy_key("dns-a")]);
    assert_eq!(s.metric("tierguard_webhook_overlay_entries"), "1");
    let view = s.overlay.view(&s.state, "team");
    let merged = view.merged().unwrap();
    assert!(!merged.policies.contains_key(&("team".into(), "dns-a".into())));
    assert!(merged.policies.contains_key(&("team".into(), "dns-b".into())));
    assert_eq!(s.delete_breaks(&dns("dns-b", "11")), vec![RuleId::R2]);

    // The watch has not caught up: the same version, or an older one, still there.
    s.state
        .show(&[team("1")], &[deny_all("9"), dns("dns-a", "10"), dns("dns-b", "11")]);
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    s.state
        .show(&[team("1")], &[deny_all("9"), dns("dns-a", "8"), dns("dns-b", "11")]);
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    assert_eq!(s.delete_breaks(&dns("dns-b", "11")), vec![RuleId::R2]);

    // The watch shows the delete.
    s.state.show(&[team("1")], &[deny_all("9"), dns("dns-b", "11")]);
    s.settle();
    assert!(s.overlay.is_empty());
    assert!(!s.overlay.view(&s.state, "team").is_overlaid());
    assert_eq!(s.delete_breaks(&dns("dns-b", "11")), vec![RuleId::R2]);
    assert_eq!(s.metric("tierguard_webhook_overlay_entries"), "0");
    assert_eq!(s.metric("tierguard_webhook_overlay_expired_total"), "0");
}

#[test]
fn a_delete_ends_when_the_watch_shows_a_later_version_of_the_object() {
    // The delete failed (or the object came back): the cache moved past it.
    let s = Setup::new();
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Delete, Some(&dns("dns-a", "10")), None);
    s.state
        .show(&[team("1")], &[deny_all("9"), dns("dns-a", "12"), dns("dns-b", "11")]);
    s.settle();
    assert!(s.overlay.is_empty());
}

#[test]
fn an_admitted_update_counts_until_the_watch_shows_a_new_version() {
    let s = Setup::new();
    let mut no_dns = dns("dns-a", "10");
    if let Some(spec) = no_dns.spec.as_mut() {
        spec.egress = Some(Vec::new());
    }
    s.overlay.admit_policy(
        &s.state.snapshot(),
        Operation::Update,
        Some(&dns("dns-a", "10")),
        Some(&no_dns),
    );
    assert_eq!(s.delete_breaks(&dns("dns-b", "11")), vec![RuleId::R2]);
    s.settle();
    assert_eq!(s.overlay.len(), 1, "version 10 is the one the update replaces");
    let mut stored = no_dns.clone();
    stored.metadata.resource_version = Some("13".into());
    s.state.show(&[team("1")], &[deny_all("9"), stored, dns("dns-b", "11")]);
    s.settle();
    assert!(s.overlay.is_empty());
    assert_eq!(
        s.delete_breaks(&dns("dns-b", "11")),
        vec![RuleId::R2],
        "now from the cache"
    );
}

#[test]
fn an_admitted_create_counts_until_the_object_appears() {
    let s = Setup::new();
    let mut fresh = dns("dns-c", "");
    fresh.metadata.resource_version = None;
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Create, None, Some(&fresh));
    let merged = s.overlay.view(&s.state, "team").merged().unwrap();
    assert!(merged.policies.contains_key(&("team".into(), "dns-c".into())));
    s.state.show(
        &[team("1")],
        &[
            deny_all("9"),
            dns("dns-a", "10"),
            dns("dns-b", "11"),
            dns("dns-c", "14"),
        ],
    );
    s.settle();
    assert!(s.overlay.is_empty());
}

#[test]
fn an_admitted_change_that_never_appears_expires() {
    let s = Setup::new();
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Delete, Some(&dns("dns-a", "10")), None);
    s.clock.advance(DEFAULT_EXPIRY - Duration::from_millis(1));
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    assert_eq!(s.delete_breaks(&dns("dns-b", "11")), vec![RuleId::R2]);
    s.clock.advance(Duration::from_millis(1));
    // Reviews settle too, not only the sweeper.
    assert!(s.delete_breaks(&dns("dns-b", "11")).is_empty());
    assert!(s.overlay.is_empty());
    assert_eq!(s.metric("tierguard_webhook_overlay_expired_total"), "1");
    assert_eq!(s.metric("tierguard_webhook_overlay_entries"), "0");
}

#[test]
fn a_later_change_to_the_same_object_replaces_the_earlier_one() {
    let s = Setup::new();
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Delete, Some(&dns("dns-a", "10")), None);
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Create, None, Some(&dns("dns-a", "")));
    assert_eq!(s.overlay.len(), 1);
    // The create replaces the cached version 10: that still showing ends nothing...
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    assert!(s.delete_breaks(&dns("dns-b", "11")).is_empty());
    // ...nor does the delete showing; the new object does.
    s.state.show(&[team("1")], &[deny_all("9"), dns("dns-b", "11")]);
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    assert!(s.delete_breaks(&dns("dns-b", "11")).is_empty());
    s.state
        .show(&[team("1")], &[deny_all("9"), dns("dns-a", "15"), dns("dns-b", "11")]);
    s.settle();
    assert!(s.overlay.is_empty());
}

#[test]
fn namespace_label_changes_count_for_reviews_in_every_namespace() {
    let s = Setup::new();
    let relabelled = namespace("team", "", json!({"tier": "data"}));
    s.overlay.admit_namespace(&s.state, Some(&team("1")), &relabelled);
    for reviewed in ["team", "elsewhere"] {
        let view = s.overlay.view(&s.state, reviewed);
        let merged = view.merged().unwrap();
        assert_eq!(
            merged.namespaces["team"].get("tier"),
            Some(&"data".to_string()),
            "{reviewed}"
        );
        assert_eq!(
            merged.namespaces["team"].get(NAMESPACE_NAME_LABEL),
            Some(&"team".to_string())
        );
    }
    s.state.show(
        &[namespace("team", "2", json!({"tier": "data"}))],
        &[deny_all("9"), dns("dns-a", "10"), dns("dns-b", "11")],
    );
    s.settle();
    assert!(s.overlay.is_empty());

    // A new namespace ends when its object appears.
    s.overlay
        .admit_namespace(&s.state, None, &namespace("new", "", json!({})));
    s.settle();
    assert_eq!(s.overlay.len(), 1);
    s.state.show(
        &[team("2"), namespace("new", "3", json!({}))],
        &[deny_all("9"), dns("dns-a", "10"), dns("dns-b", "11")],
    );
    s.settle();
    assert!(s.overlay.is_empty());
}

#[test]
fn changes_in_other_namespaces_do_not_apply() {
    let s = Setup::new();
    let mut elsewhere = dns("dns-a", "10");
    elsewhere.metadata.namespace = Some("other".into());
    s.overlay
        .admit_policy(&s.state.snapshot(), Operation::Delete, Some(&elsewhere), None);
    assert_eq!(s.overlay.len(), 1);
    assert!(!s.overlay.view(&s.state, "team").is_overlaid());
    assert!(s.delete_breaks(&dns("dns-b", "11")).is_empty());
}

#[test]
fn versions_compare_as_numbers_when_they_are_numbers() {
    assert!(moved_past(Some("10"), Some("9")));
    assert!(!moved_past(Some("9"), Some("10")));
    assert!(!moved_past(Some("10"), Some("10")));
    assert!(moved_past(Some("10"), None));
    assert!(moved_past(Some("b"), Some("a")));
    assert!(!moved_past(Some("a"), Some("a")));
    assert!(!moved_past(None, None));
}

/// The merged state leaves the other namespaces' policies out; every review
/// of every example policy must come out exactly as against the whole state.
#[test]
fn reviews_on_the_merged_state_equal_reviews_on_the_whole_state() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let loaded =
        crate::state::files::load(&[root.join("deploy/examples"), root.join("webhook/tests/fixtures/state")]).unwrap();
    let state = WatchedState::new(&loaded.namespaces, &loaded.policies);
    let snapshot = state.snapshot();
    let namespaces: std::collections::BTreeSet<&str> =
        snapshot.policy.policies.keys().map(|(ns, _)| ns.as_str()).collect();
    assert!(namespaces.len() >= 5, "{namespaces:?}");
    let template = TierTemplate::built_in();
    // A namespace change that changes nothing forces the merged path.
    let overlay = Overlay::default();
    let shop = loaded
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("shop"))
        .unwrap();
    overlay.admit_namespace(&state, Some(shop), shop);
    let mut compared = 0;
    for np in &loaded.policies {
        let namespace = policy_namespace(np);
        let view = overlay.view(&state, &namespace);
        assert!(view.is_overlaid());
        let mut renamed = np.clone();
        renamed.metadata.name = Some("copy".into());
        let mut widened = np.clone();
        if let Some(spec) = widened.spec.as_mut() {
            spec.pod_selector = Default::default();
        }
        let cases = [
            (Operation::Delete, Some(np), None),
            (Operation::Create, None, Some(&renamed)),
            (Operation::Update, Some(np), Some(&widened)),
        ];
        for (operation, old, new) in cases {
            assert_eq!(
                view.review_network_policy(&template, operation, old, new),
                snapshot.policy.review_network_policy(&template, operation, old, new),
                "{operation:?} {namespace}/{:?}",
                np.metadata.name
            );
            compared += 1;
        }
    }
    assert!(compared >= 60, "{compared}");
}
