//! The real server over HTTPS: guardrail verdicts for NetworkPolicies
//! (R1-R4, CREATE/UPDATE/DELETE), namespaces (validation and mutation),
//! modes, cluster deletes, and every malformed-request case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Harness, Req, allowed, example_policy, message, warnings, yaml};

const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";

fn default_deny() -> Value {
    example_policy("10-default-deny.yaml")
}

fn data_open() -> Value {
    yaml(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: data-open, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: data}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
    ports: [{protocol: TCP, port: 5432}]
",
    )
}

fn backend_extra() -> Value {
    yaml(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-admin, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
    ports: [{protocol: TCP, port: 9090}]
",
    )
}

fn except_outside(namespace: &str) -> Value {
    yaml(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: gateway-partners, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{tier: gateway}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{ipBlock: {{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}}}]
    ports: [{{protocol: TCP, port: 443}}]
"
    ))
}

fn in_namespace(mut policy: Value, namespace: &str) -> Value {
    policy["metadata"]["namespace"] = json!(namespace);
    policy
}

fn without_tcp_dns(mut policy: Value) -> Value {
    let ports = policy["spec"]["egress"][0]["ports"].as_array_mut().unwrap();
    ports.retain(|p| p["protocol"] != "TCP");
    policy
}

fn egress_deny_without_dns(namespace: &str) -> Value {
    yaml(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-egress, namespace: {namespace}}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
"
    ))
}

struct Case {
    name: &'static str,
    request: Req,
    allowed: bool,
    /// the rule id the denial must name
    rule: Option<&'static str>,
}

fn network_policy_cases() -> Vec<Case> {
    let mut ingress_only = default_deny();
    ingress_only["spec"]["policyTypes"] = json!(["Egress"]);
    let mut relabelled = default_deny();
    relabelled["metadata"]["labels"] = json!({"owner": "platform"});
    let mut data_open_update = example_policy("40-data.yaml");
    data_open_update["spec"]["ingress"][0]["from"]
        .as_array_mut()
        .unwrap()
        .push(json!({"podSelector": {"matchLabels": {"tier": "frontend"}}}));
    vec![
        // R1
        Case {
            name: "R1 DELETE of the default-deny is denied",
            request: Req::delete("NetworkPolicy", default_deny()),
            allowed: false,
            rule: Some("R1"),
        },
        Case {
            name: "R1 UPDATE dropping Ingress isolation is denied",
            request: Req::update("NetworkPolicy", default_deny(), ingress_only),
            allowed: false,
            rule: Some("R1"),
        },
        Case {
            name: "R1 CREATE of a default-deny with DNS in an empty namespace is allowed",
            // Not in `fresh`: admitted changes count for later reviews, and
            // the R2 case below needs `fresh` without a DNS allow.
            request: Req::create("NetworkPolicy", in_namespace(default_deny(), "empty")),
            allowed: true,
            rule: None,
        },
        // R2
        Case {
            name: "R2 UPDATE dropping TCP/53 is denied",
            request: Req::update("NetworkPolicy", default_deny(), without_tcp_dns(default_deny())),
            allowed: false,
            rule: Some("R2"),
        },
        Case {
            name: "R2 CREATE of a default-deny without DNS is denied",
            request: Req::create("NetworkPolicy", egress_deny_without_dns("fresh")),
            allowed: false,
            rule: Some("R2"),
        },
        Case {
            name: "R2 UPDATE keeping DNS is allowed",
            request: Req::update("NetworkPolicy", default_deny(), relabelled),
            allowed: true,
            rule: None,
        },
        // R3
        Case {
            name: "R3 CREATE opening data to frontend is denied",
            request: Req::create("NetworkPolicy", data_open()),
            allowed: false,
            rule: Some("R3"),
        },
        Case {
            name: "R3 UPDATE opening data to frontend is denied",
            request: Req::update("NetworkPolicy", example_policy("40-data.yaml"), data_open_update),
            allowed: false,
            rule: Some("R3"),
        },
        Case {
            name: "R3 CREATE of a flow the template allows is allowed",
            request: Req::create("NetworkPolicy", backend_extra()),
            allowed: true,
            rule: None,
        },
        // R4
        Case {
            name: "R4 CREATE with an except outside its cidr is denied",
            request: Req::create("NetworkPolicy", except_outside("shop")),
            allowed: false,
            rule: Some("R4"),
        },
        Case {
            name: "R4 UPDATE adding an except outside its cidr is denied",
            request: Req::update(
                "NetworkPolicy",
                example_policy("20-gateway.yaml"),
                in_namespace(
                    {
                        let mut p = except_outside("shop");
                        p["metadata"]["name"] = json!("gateway");
                        p
                    },
                    "shop",
                ),
            ),
            allowed: false,
            rule: Some("R4"),
        },
        // DELETE that removes an allow adds nothing new
        Case {
            name: "DELETE of an allow policy is allowed",
            request: Req::delete("NetworkPolicy", example_policy("40-data.yaml")),
            allowed: true,
            rule: None,
        },
        // cluster deletes
        Case {
            name: "DELETE by the namespace controller is allowed",
            request: Req::delete("NetworkPolicy", default_deny()).user(NAMESPACE_CONTROLLER),
            allowed: true,
            rule: None,
        },
        Case {
            name: "DELETE in a terminating namespace is allowed",
            request: Req::delete("NetworkPolicy", in_namespace(default_deny(), "leaving")),
            allowed: true,
            rule: None,
        },
        // dryRun is judged the same
        Case {
            name: "dryRun CREATE is judged like any other",
            request: Req::create("NetworkPolicy", data_open()).dry_run(),
            allowed: false,
            rule: Some("R3"),
        },
        // kinds the webhook does not handle
        Case {
            name: "a Pod is allowed",
            request: Req::create(
                "Pod",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}}),
            ),
            allowed: true,
            rule: None,
        },
    ]
}

#[tokio::test]
async fn network_policy_verdicts_in_enforce_mode() {
    let h = Harness::start(None).await;
    let mut failures = Vec::new();
    for case in network_policy_cases() {
        let resp = h.post("/validate", &case.request.review()).await;
        let r = &resp["response"];
        let ok = allowed(&resp) == case.allowed
            && r["uid"] == json!(case.request.uid)
            && match case.rule {
                Some(rule) => r["status"]["code"] == json!(403) && message(&resp).contains(&format!("{rule}: ")),
                None => r["status"].get("code").is_none(),
            };
        if !ok {
            failures.push(format!("{}: got {}", case.name, serde_json::to_string(r).unwrap()));
        }
    }
    h.stop().await;
    assert!(failures.is_empty(), "failed cases:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn ungoverned_namespace_is_admitted_with_r4_warnings() {
    let h = Harness::start(None).await;
    let resp = h
        .post(
            "/validate",
            &Req::create("NetworkPolicy", except_outside("kube-public")).review(),
        )
        .await;
    assert!(allowed(&resp), "{resp}");
    let w = warnings(&resp);
    assert!(w.iter().any(|w| w.contains("except")), "{w:?}");
    h.stop().await;
}

#[tokio::test]
async fn response_echoes_uid_and_sets_type_meta() {
    let h = Harness::start(None).await;
    let resp = h
        .post(
            "/validate",
            &Req::create("NetworkPolicy", backend_extra())
                .uid("705ab4f5-6393-11e8-b7cc-42010a800002")
                .review(),
        )
        .await;
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(resp.get("request").is_none());
    h.stop().await;
}

#[tokio::test]
async fn warn_mode_admits_with_warnings() {
    let h = Harness::start(Some("warn")).await;
    let resp = h
        .post("/validate", &Req::create("NetworkPolicy", data_open()).review())
        .await;
    assert!(allowed(&resp), "{resp}");
    assert!(warnings(&resp).iter().any(|w| w.starts_with("R3: ")), "{resp}");
    let metrics = h.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"admission_requests_total{kind="NetworkPolicy",operation="CREATE",verdict="Warned"} 1"#),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn audit_mode_admits_silently_and_counts() {
    let h = Harness::start(Some("audit")).await;
    let resp = h
        .post("/validate", &Req::create("NetworkPolicy", data_open()).review())
        .await;
    assert!(allowed(&resp), "{resp}");
    assert!(warnings(&resp).is_empty(), "{resp}");
    let metrics = h.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"admission_requests_total{kind="NetworkPolicy",operation="CREATE",verdict="Audited"} 1"#),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn mode_applies_to_namespace_validation() {
    let bogus = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"tier": "bogus"}}});
    let h = Harness::start(Some("warn")).await;
    let resp = h
        .post("/validate", &Req::create("Namespace", bogus.clone()).review())
        .await;
    assert!(allowed(&resp), "{resp}");
    assert!(warnings(&resp).iter().any(|w| w.starts_with("NS: ")), "{resp}");
    h.stop().await;
}

fn namespace(name: &str, labels: Option<Value>, annotations: Option<Value>) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if let Some(l) = labels {
        ns["metadata"]["labels"] = l;
    }
    if let Some(a) = annotations {
        ns["metadata"]["annotations"] = a;
    }
    ns
}

#[tokio::test]
async fn namespace_validation() {
    let h = Harness::start(None).await;
    let cases = [
        (namespace("team-a", Some(json!({"tier": "bogus"})), None), false),
        (
            namespace("team-a", Some(json!({"kubernetes.io/metadata.name": "other"})), None),
            false,
        ),
        (namespace("team-a", Some(json!({"tier": "backend"})), None), true),
        (namespace("team-a", None, None), true),
    ];
    for (ns, want) in cases {
        let resp = h
            .post("/validate", &Req::create("Namespace", ns.clone()).review())
            .await;
        assert_eq!(allowed(&resp), want, "{ns} -> {resp}");
        if !want {
            assert_eq!(resp["response"]["status"]["code"], 403, "{resp}");
            assert!(message(&resp).starts_with("NS: "), "{resp}");
        }
    }
    // UPDATE keeping an old unknown tier is admitted; DELETE always is
    let old = namespace("legacy", Some(json!({"tier": "bogus"})), None);
    let mut new = old.clone();
    new["metadata"]["labels"]["team"] = json!("x");
    assert!(allowed(
        &h.post("/validate", &Req::update("Namespace", old.clone(), new).review())
            .await
    ));
    assert!(allowed(
        &h.post("/validate", &Req::delete("Namespace", old).review()).await
    ));
    h.stop().await;
}

fn patched(review: &Value, object: &Value) -> Value {
    let response = &review["response"];
    let mut out = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

#[tokio::test]
async fn namespace_mutation_patches_apply_and_are_idempotent() {
    let h = Harness::start(None).await;
    let cases = [
        (
            namespace("payments-backend", None, None),
            json!({"kubernetes.io/metadata.name": "payments-backend", "tier": "backend"}),
        ),
        (
            namespace(
                "web",
                Some(json!({"team": "a/b"})),
                Some(json!({"tierguard.io/tier": "frontend"})),
            ),
            json!({"kubernetes.io/metadata.name": "web", "team": "a/b", "tier": "frontend"}),
        ),
        (
            namespace("orders-data", Some(json!({"tier": "backend"})), None),
            json!({"kubernetes.io/metadata.name": "orders-data", "tier": "backend"}),
        ),
        (
            namespace("kube-system", None, None),
            json!({"kubernetes.io/metadata.name": "kube-system"}),
        ),
    ];
    for (ns, want) in cases {
        let resp = h.post("/mutate", &Req::create("Namespace", ns.clone()).review()).await;
        assert!(allowed(&resp), "{resp}");
        let out = patched(&resp, &ns);
        assert_eq!(out["metadata"]["labels"], want, "{ns} -> {resp}");
        // sending the patched object again changes nothing
        let again = h
            .post("/mutate", &Req::update("Namespace", out.clone(), out.clone()).review())
            .await;
        assert!(again["response"].get("patch").is_none(), "{again}");
    }
    // NetworkPolicies are not mutated
    let resp = h
        .post("/mutate", &Req::create("NetworkPolicy", data_open()).review())
        .await;
    assert!(allowed(&resp) && resp["response"].get("patch").is_none(), "{resp}");
    h.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_reason() {
    let h = Harness::start(None).await;
    let good = Req::create("NetworkPolicy", backend_extra()).review();
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    // Found by the admission_review fuzzer: bytes that are not UTF-8 inside
    // a field the review does not read were skipped unchecked and answered
    // with a verdict, although such a body is not JSON (RFC 8259: UTF-8).
    let mut unread = good.clone();
    unread["request"]["unread"] = json!("10.PLACEHOLDER0.0/16");
    let not_utf8 = serde_json::to_string(&unread)
        .unwrap()
        .replace("PLACEHOLDER", "\u{1}")
        .into_bytes()
        .into_iter()
        .map(|b| if b == 1 { 0xff } else { b })
        .collect::<Vec<u8>>();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not UTF-8",
            not_utf8,
            "malformed AdmissionReview: the body is not UTF-8",
        ),
        (
            "malformed JSON",
            b"{\"apiVersion\": ".to_vec(),
            "malformed AdmissionReview",
        ),
        ("not an object", b"[1, 2]".to_vec(), "malformed AdmissionReview"),
        (
            "wrong apiVersion",
            serde_json::to_vec(&wrong_version).unwrap(),
            "unsupported apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            "missing request",
            serde_json::to_vec(&no_request).unwrap(),
            "AdmissionReview has no request",
        ),
    ];
    for path in ["/validate", "/mutate"] {
        for (name, body, reason) in &cases {
            let (status, text) = h.post_raw(path, body.clone()).await;
            assert_eq!(status, 400, "{name} on {path}: {text}");
            assert!(text.contains(reason), "{name} on {path}: {text}");
        }
    }
    // over 7 MiB: an UPDATE whose object carries a huge annotation
    let mut big = backend_extra();
    big["metadata"]["annotations"] = json!({"x": "a".repeat(7 * 1024 * 1024)});
    let body = serde_json::to_vec(&Req::create("NetworkPolicy", big).review()).unwrap();
    let (status, text) = h.post_raw("/validate", body).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("request body"), "{text}");
    // the server is still fine
    assert!(allowed(&h.post("/validate", &good).await));
    h.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_drain() {
    let mut h = Harness::start(None).await;
    assert_eq!(h.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(h.get("/readyz").await, (200, "ok\n".to_string()));
    let _ = h
        .post("/validate", &Req::create("NetworkPolicy", data_open()).review())
        .await;
    let metrics = h.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"admission_requests_total{kind="NetworkPolicy",operation="CREATE",verdict="Denied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"admission_duration_seconds_count{path="/validate"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("certificate_expiry_timestamp_seconds "), "{metrics}");
    // drain: readiness false while still answering, then the listener closes
    let running = h.running.take().unwrap();
    let readiness = running.readiness.clone();
    let stopping = tokio::spawn(running.shutdown());
    while readiness.blockers().is_empty() {
        tokio::task::yield_now().await;
    }
    let (status, text) = h.get("/readyz").await;
    assert_eq!((status, text.as_str()), (503, "not ready: shutting down\n"));
    assert!(allowed(
        &h.post("/validate", &Req::create("NetworkPolicy", backend_extra()).review())
            .await
    ));
    stopping.await.unwrap();
    let fresh = support::client_for(&h.ca, h.addr, false);
    assert!(fresh.get(h.url("/healthz")).send().await.is_err());
}
