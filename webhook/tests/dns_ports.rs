//! Named DNS ports through the admission handler: with a template whose
//! `dns.ports` adds TCP/5353, the names `dns`/`dns-tcp` mean 53 on the DNS
//! pods and open nothing else, so a change that leaves only them in place
//! newly drops TCP/5353 and is denied with R2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::{Req, allowed, fixtures, message};
use tierguard::TierTemplate;
use tierguard_webhook::admission::{Admission, Endpoint};
use tierguard_webhook::state::files::FileState;

/// Compares with `tests/fixtures/golden/NAME.json`, as the golden tests do;
/// `UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, got: &Value) {
    let path = fixtures().join("golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
    let want: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got, &want, "{} differs", path.display());
}

fn admission() -> Admission {
    let template = TierTemplate::parse("dns:\n  ports: [UDP/53, TCP/53, TCP/5353]\n", "test template").unwrap();
    let state = FileState::read(&[fixtures().join("dns-5353")]).unwrap();
    Admission::new(Arc::new(template), Arc::new(state))
}

fn validate(admission: &Admission, req: &Req) -> Value {
    let body = serde_json::to_vec(&req.review()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime
        .block_on(admission.handle(Endpoint::Validate, &body))
        .unwrap()
        .response
}

/// The fixture's policy: DNS on `dns`, `dns-tcp` and TCP/5353 by number.
fn with_5353() -> Value {
    let text = std::fs::read_to_string(fixtures().join("dns-5353/state.yaml")).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    docs.into_iter().find(|d| d["kind"] == "NetworkPolicy").unwrap()
}

/// The same policy with only the named ports.
fn named_only(mut policy: Value) -> Value {
    policy["spec"]["egress"][0]["ports"] = json!([
        {"protocol": "UDP", "port": "dns"},
        {"protocol": "TCP", "port": "dns-tcp"}
    ]);
    policy
}

#[test]
fn dropping_tcp_5353_behind_named_ports_is_denied() {
    let admission = admission();
    let old = with_5353();
    let req = Req::update("NetworkPolicy", old.clone(), named_only(old)).uid("8f1c1e4e-0000-4000-8000-000000005353");
    let got = validate(&admission, &req);
    assert!(!allowed(&got), "{got}");
    let message = message(&got);
    assert!(
        message.starts_with("R2: policy default-deny-all would drop DNS"),
        "{message}"
    );
    assert!(
        message.contains(
            "no egress rule allows TCP/5353 to kube-system/k8s-app=kube-dns (the named port dns-tcp means 53 on \
             the DNS pods: allow TCP/5353 by number)"
        ),
        "{message}"
    );
    assert!(
        !message.contains("allows UDP/53 to") && !message.contains("allows TCP/53 to"),
        "{message}"
    );
    check_golden("deny-dns-named-ports", &got);
}

#[test]
fn named_ports_alone_in_a_new_namespace_are_denied_and_5353_by_number_is_admitted() {
    let admission = admission();
    let mut fresh = named_only(with_5353());
    fresh["metadata"]["namespace"] = json!("fresh");
    let got = validate(&admission, &Req::create("NetworkPolicy", fresh));
    assert!(!allowed(&got), "{got}");
    assert!(message(&got).contains("TCP/5353"), "{}", message(&got));

    let mut complete = with_5353();
    complete["metadata"]["namespace"] = json!("fresh");
    let got = validate(&admission, &Req::create("NetworkPolicy", complete));
    assert!(allowed(&got), "{got}");
}
