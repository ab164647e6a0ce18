//! deploy/ against the code: every manifest parses into its Kubernetes type;
//! the webhook configurations, Service, Deployment, DaemonSet and RBAC agree
//! with the webhook's and enforcer's contracts (ports, paths, names, watched
//! resources); the template ConfigMaps hold the built-in template (audit in
//! the overlay); and `kubectl kustomize` renders the base and overlays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use tierguard::labels::{Labels, NAMESPACE_NAME_LABEL};
use tierguard::rbac::{REFLECTOR_VERBS, Watched};
use tierguard::{Mode, Selector, TierTemplate};
use tierguard_enforcer::commands::{CleanupArgs, RunArgs};
use tierguard_enforcer::contract as enforcer;
use tierguard_integration::kinds::{self, KindCheck};
use tierguard_integration::manifest::{self, find, of_kind};
use tierguard_integration::{Manifest, deploy_dir, tool};
use tierguard_webhook::cli::{
    CheckArgs, Cli as WebhookCli, Command as WebhookCommand, LogFormat, OutputFormat, ServeArgs,
};
use tierguard_webhook::contract as webhook;

/// The serving Certificate named in `cert-manager.io/inject-ca-from`.
const SERVING_CERTIFICATE: &str = "tierguard-webhook-serving";
/// The webhook Deployment and the enforcer DaemonSet.
const WEBHOOK_DEPLOYMENT: &str = "tierguard-webhook";
const ENFORCER_DAEMONSET: &str = "tierguard-enforcer";
const CLEANUP_DAEMONSET: &str = "tierguard-enforcer-cleanup";
const TEMPLATE_CONFIGMAP: &str = "tierguard-template";
const TEMPLATE_KEY: &str = "template.yaml";
/// Namespaces the admission webhooks must never see.
const EXCLUDED_NAMESPACES: &[&str] = &[webhook::NAMESPACE, "kube-system", "kube-public", "kube-node-lease"];

fn base() -> Vec<Manifest> {
    manifest::load_kustomization_resources(&deploy_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn typed<T: serde::de::DeserializeOwned>(ms: &[Manifest], kind: &str, name: &str) -> T {
    let m = find(ms, kind, name).unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"));
    m.to_typed().unwrap_or_else(|e| panic!("{e}"))
}

fn pod_spec_of_deployment(ms: &[Manifest]) -> PodSpec {
    let d: Deployment = typed(ms, "Deployment", WEBHOOK_DEPLOYMENT);
    d.spec.and_then(|s| s.template.spec).expect("Deployment has a pod spec")
}

fn pod_spec_of_daemonset(ms: &[Manifest], name: &str) -> PodSpec {
    let d: DaemonSet = typed(ms, "DaemonSet", name);
    d.spec.and_then(|s| s.template.spec).expect("DaemonSet has a pod spec")
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn selector(s: &LabelSelector) -> Selector {
    Selector::from_k8s(s).unwrap_or_else(|e| panic!("invalid selector {s:?}: {e:?}"))
}

/// A container port number, resolving a named port against the container.
fn port_number(port: &IntOrString, c: &Container) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("container {} has no port named {name}", c.name)),
    }
}

/// (path, port, scheme) of an httpGet probe.
fn http_probe(probe: Option<&Probe>, c: &Container) -> (String, i32, String) {
    let get = probe.and_then(|p| p.http_get.as_ref()).expect("an httpGet probe");
    (
        get.path.clone().unwrap_or_default(),
        port_number(&get.port, c),
        get.scheme.clone().unwrap_or_else(|| "HTTP".to_string()),
    )
}

/// The webhook container's command line, parsed by the webhook's own CLI.
fn webhook_cli(c: &Container) -> (WebhookCli, ServeArgs) {
    let argv = std::iter::once("tierguard-webhook".to_string()).chain(c.args.iter().flatten().cloned());
    let mut cli = WebhookCli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("the Deployment's args are not a valid tierguard-webhook command line: {e}"));
    let serve = match std::mem::replace(
        &mut cli.command,
        WebhookCommand::Check(CheckArgs {
            template: None,
            output: OutputFormat::Text,
            paths: Vec::new(),
        }),
    ) {
        WebhookCommand::Serve(args) => args,
        WebhookCommand::Check(_) => panic!("the Deployment must run `serve`"),
    };
    (cli, serve)
}

/// Checks a container's command line and environment against an enforcer
/// subcommand's arguments (`A`), as its CLI would parse them.
fn check_enforcer_cli<A: clap::Args + clap::FromArgMatches>(
    c: &Container,
    subcommand: &'static str,
    required: &[&str],
) -> A {
    let cmd = A::augment_args(clap::Command::new(subcommand).no_binary_name(true));
    let env_names: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for e in c.env.iter().flatten() {
        assert!(
            env_names.contains(&e.name),
            "{}: env {} is read by no `{subcommand}` option ({env_names:?})",
            c.name,
            e.name
        );
    }
    let args = c.args.as_deref().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some(subcommand),
        "{}: args {args:?}",
        c.name
    );
    // values the kubelet fills in from the downward API
    let argv: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .chain(required.iter().copied())
        .collect();
    let matches = cmd
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("{}: `{subcommand}` rejects {args:?}: {e}", c.name));
    A::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_manifest_parses_into_its_type() {
    // every YAML under deploy/ (overlays, cleanup and examples included); the
    // Dockerfile folder holds no manifests
    let files = manifest::yaml_files(&deploy_dir(), &["docker"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(files.len() >= 10, "too few manifests found: {files:?}");
    let mut errors = Vec::new();
    let mut seen_kinds = BTreeSet::new();
    for file in &files {
        let docs = match manifest::load_file(file) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        assert!(!docs.is_empty(), "{} holds no document", file.display());
        for m in &docs {
            seen_kinds.insert(m.kind().to_string());
            let result = kinds::kind_check(m).and_then(|check| match check {
                KindCheck::Typed => kinds::check_typed(m),
                KindCheck::CertManager => kinds::check_cert_manager(m),
                KindCheck::Kustomize => check_kustomization(m),
            });
            if let Err(e) = result {
                errors.push(e);
            }
        }
    }
    assert!(errors.is_empty(), "manifest errors:\n{}", errors.join("\n"));
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "DaemonSet",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Issuer",
        "Certificate",
        "Kustomization",
    ] {
        assert!(seen_kinds.contains(kind), "deploy/ has no {kind}");
    }
}

/// A kustomization's resources and patches exist.
fn check_kustomization(m: &Manifest) -> Result<(), String> {
    let dir = m.path.parent().unwrap_or(Path::new("."));
    let k = manifest::read_kustomization(dir).map_err(|e| e.to_string())?;
    for p in k.resources.iter().chain(&k.patches) {
        if !p.exists() {
            return Err(format!("{}: {} does not exist", m.locator(), p.display()));
        }
    }
    Ok(())
}

#[test]
fn the_base_lists_every_manifest_of_its_folder() {
    let base_dir = deploy_dir().join("base");
    let listed: BTreeSet<PathBuf> = base().iter().map(|m| m.path.clone()).collect();
    let on_disk: BTreeSet<PathBuf> = manifest::yaml_files(&base_dir, &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|p| manifest::kustomization_file(p.parent().unwrap_or(&base_dir)).as_ref() != Some(p))
        .collect();
    let orphans: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        orphans.is_empty(),
        "files in deploy/base not listed in its kustomization: {orphans:?}"
    );
    // every namespaced object of the base lives in tierguard-system
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ];
    for m in base() {
        if cluster_scoped.contains(&m.kind()) {
            assert_eq!(m.namespace(), None, "{} is cluster-scoped", m.locator());
        } else {
            assert_eq!(m.namespace(), Some(webhook::NAMESPACE), "{}", m.locator());
        }
    }
    let ns = find(&base(), "Namespace", webhook::NAMESPACE).map(|m| m.name().to_string());
    assert_eq!(ns.as_deref(), Some(webhook::NAMESPACE));
}

/// Which webhook configuration, and what it must say.
struct WebhookCase {
    name: &'static str,
    path: &'static str,
    failure_policy: &'static str,
    reinvocation_policy: Option<&'static str>,
    group: &'static str,
    resource: &'static str,
    operations: &'static [&'static str],
    scope: &'static str,
}

const VALIDATING: &[WebhookCase] = &[
    WebhookCase {
        name: "networkpolicies.validate.tierguard.io",
        path: webhook::VALIDATE_PATH,
        failure_policy: "Fail",
        reinvocation_policy: None,
        group: "networking.k8s.io",
        resource: "networkpolicies",
        operations: &["CREATE", "UPDATE", "DELETE"],
        scope: "Namespaced",
    },
    WebhookCase {
        name: "namespaces.validate.tierguard.io",
        path: webhook::VALIDATE_PATH,
        failure_policy: "Fail",
        reinvocation_policy: None,
        group: "",
        resource: "namespaces",
        operations: &["CREATE", "UPDATE"],
        scope: "Cluster",
    },
];

const MUTATING: &[WebhookCase] = &[WebhookCase {
    name: "namespaces.mutate.tierguard.io",
    path: webhook::MUTATE_PATH,
    failure_policy: "Ignore",
    reinvocation_policy: Some("IfNeeded"),
    group: "",
    resource: "namespaces",
    operations: &["CREATE", "UPDATE"],
    scope: "Cluster",
}];

/// The fields both webhook kinds share, taken out of either.
struct WebhookView<'a> {
    name: &'a str,
    client: &'a WebhookClientConfig,
    failure_policy: Option<&'a str>,
    side_effects: &'a str,
    timeout: Option<i32>,
    review_versions: &'a [String],
    namespace_selector: Option<&'a LabelSelector>,
    object_selector: Option<&'a LabelSelector>,
    rules: &'a [RuleWithOperations],
    reinvocation_policy: Option<&'a str>,
}

fn check_webhooks(views: &[WebhookView<'_>], cases: &[WebhookCase], ms: &[Manifest]) {
    let service: Service = typed(ms, "Service", webhook::SERVICE_NAME);
    let service_ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
    let names: Vec<&str> = views.iter().map(|v| v.name).collect();
    assert_eq!(names.len(), cases.len(), "webhooks {names:?}");
    let template = TierTemplate::built_in();
    for case in cases {
        let v = views
            .iter()
            .find(|v| v.name == case.name)
            .unwrap_or_else(|| panic!("no webhook {}; have {names:?}", case.name));
        let svc = v.client.service.as_ref().expect("clientConfig.service");
        assert!(v.client.url.is_none(), "{}: use the Service, not a url", case.name);
        assert!(
            v.client.ca_bundle.is_none(),
            "{}: caBundle is injected by cert-manager",
            case.name
        );
        assert_eq!(svc.name, webhook::SERVICE_NAME, "{}", case.name);
        assert_eq!(svc.namespace, webhook::NAMESPACE, "{}", case.name);
        assert_eq!(svc.path.as_deref(), Some(case.path), "{}", case.name);
        let port = svc.port.unwrap_or(443);
        let target = service_ports
            .iter()
            .find(|p| p.port == port)
            .and_then(|p| p.target_port.clone())
            .unwrap_or_else(|| panic!("{}: Service has no port {port} with a targetPort", case.name));
        assert_eq!(target, IntOrString::Int(i32::from(webhook::PORT)), "{}", case.name);

        assert_eq!(v.failure_policy, Some(case.failure_policy), "{}", case.name);
        assert_eq!(v.side_effects, "None", "{}", case.name);
        assert_eq!(v.timeout, Some(3), "{}", case.name);
        assert_eq!(v.review_versions, ["v1".to_string()], "{}", case.name);
        assert_eq!(v.reinvocation_policy, case.reinvocation_policy, "{}", case.name);
        assert!(v.object_selector.is_none(), "{}: no objectSelector", case.name);

        let [rule] = v.rules else {
            panic!("{}: want one rule, have {:?}", case.name, v.rules)
        };
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&[case.group.to_string()][..]),
            "{}",
            case.name
        );
        assert_eq!(
            rule.api_versions.as_deref(),
            Some(&["v1".to_string()][..]),
            "{}",
            case.name
        );
        assert_eq!(
            rule.resources.as_deref(),
            Some(&[case.resource.to_string()][..]),
            "{}",
            case.name
        );
        let ops: BTreeSet<&str> = rule.operations.iter().flatten().map(String::as_str).collect();
        assert_eq!(ops, case.operations.iter().copied().collect(), "{}", case.name);
        assert_eq!(rule.scope.as_deref(), Some(case.scope), "{}", case.name);

        // the namespaceSelector: NotIn on the name label the API server owns,
        // excluding exactly the namespaces the built-in template does not
        // govern (for the Namespace rules it is matched against the
        // Namespace object itself)
        let sel = v.namespace_selector.expect("a namespaceSelector");
        assert!(sel.match_labels.is_none(), "{}: matchLabels can be spoofed", case.name);
        let [expr] = sel.match_expressions.as_deref().unwrap_or_default() else {
            panic!("{}: want one matchExpression, have {sel:?}", case.name)
        };
        assert_eq!(expr.key, NAMESPACE_NAME_LABEL, "{}", case.name);
        assert_eq!(expr.operator, "NotIn", "{}", case.name);
        let excluded: BTreeSet<&str> = expr.values.iter().flatten().map(String::as_str).collect();
        assert_eq!(excluded, EXCLUDED_NAMESPACES.iter().copied().collect(), "{}", case.name);
        let sel = selector(sel);
        for ns in EXCLUDED_NAMESPACES
            .iter()
            .copied()
            .chain(["default", "shop-backend", "shop-data"])
        {
            let ns_labels = labels(&[(NAMESPACE_NAME_LABEL, ns)]);
            assert_eq!(
                sel.matches(&ns_labels),
                template.governs(&ns_labels),
                "{}: webhook sees namespace {ns} iff the built-in template governs it",
                case.name
            );
        }
    }
}

fn check_ca_injection(m: &Manifest, ms: &[Manifest]) {
    let want = format!("{}/{SERVING_CERTIFICATE}", webhook::NAMESPACE);
    assert_eq!(
        m.str_at("/metadata/annotations/cert-manager.io~1inject-ca-from"),
        Some(want.as_str()),
        "{}",
        m.locator()
    );
    let cert = find(ms, "Certificate", SERVING_CERTIFICATE).expect("the serving Certificate");
    assert_eq!(cert.namespace(), Some(webhook::NAMESPACE));
}

#[test]
fn webhook_configurations_point_at_the_server() {
    let ms = base();
    let vwc: ValidatingWebhookConfiguration = typed(&ms, "ValidatingWebhookConfiguration", "tierguard");
    let views: Vec<WebhookView<'_>> = vwc
        .webhooks
        .iter()
        .flatten()
        .map(|w| WebhookView {
            name: &w.name,
            client: &w.client_config,
            failure_policy: w.failure_policy.as_deref(),
            side_effects: &w.side_effects,
            timeout: w.timeout_seconds,
            review_versions: &w.admission_review_versions,
            namespace_selector: w.namespace_selector.as_ref(),
            object_selector: w.object_selector.as_ref(),
            rules: w.rules.as_deref().unwrap_or_default(),
            reinvocation_policy: None,
        })
        .collect();
    check_webhooks(&views, VALIDATING, &ms);
    check_ca_injection(
        find(&ms, "ValidatingWebhookConfiguration", "tierguard").expect("vwc"),
        &ms,
    );

    let mwc: MutatingWebhookConfiguration = typed(&ms, "MutatingWebhookConfiguration", "tierguard");
    let views: Vec<WebhookView<'_>> = mwc
        .webhooks
        .iter()
        .flatten()
        .map(|w| WebhookView {
            name: &w.name,
            client: &w.client_config,
            failure_policy: w.failure_policy.as_deref(),
            side_effects: &w.side_effects,
            timeout: w.timeout_seconds,
            review_versions: &w.admission_review_versions,
            namespace_selector: w.namespace_selector.as_ref(),
            object_selector: w.object_selector.as_ref(),
            rules: w.rules.as_deref().unwrap_or_default(),
            reinvocation_policy: w.reinvocation_policy.as_deref(),
        })
        .collect();
    check_webhooks(&views, MUTATING, &ms);
    check_ca_injection(
        find(&ms, "MutatingWebhookConfiguration", "tierguard").expect("mwc"),
        &ms,
    );
}

#[test]
fn serving_certificate_names_the_service() {
    let ms = base();
    let cert = find(&ms, "Certificate", SERVING_CERTIFICATE).expect("serving Certificate");
    let dns: BTreeSet<&str> = cert
        .value
        .pointer("/spec/dnsNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let svc = format!("{}.{}.svc", webhook::SERVICE_NAME, webhook::NAMESPACE);
    let full = format!("{svc}.cluster.local");
    assert_eq!(dns, BTreeSet::from([svc.as_str(), full.as_str()]));
    let usages: Vec<&str> = cert
        .value
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(usages.contains(&"server auth"), "{usages:?}");

    // the issuer chain: serving cert <- CA Issuer <- CA Certificate (isCA) <- self-signed Issuer
    let issuer_of = |m: &Manifest| m.str_at("/spec/issuerRef/name").unwrap_or_default().to_string();
    let ca_issuer = find(&ms, "Issuer", &issuer_of(cert)).expect("the serving cert's Issuer");
    let ca_secret = ca_issuer.str_at("/spec/ca/secretName").expect("a CA Issuer");
    let ca_cert = of_kind(&ms, "Certificate")
        .find(|c| c.str_at("/spec/secretName") == Some(ca_secret))
        .expect("a Certificate making the CA secret");
    assert_eq!(ca_cert.value.pointer("/spec/isCA"), Some(&Value::Bool(true)));
    let root = find(&ms, "Issuer", &issuer_of(ca_cert)).expect("the CA's Issuer");
    assert!(root.value.pointer("/spec/selfSigned").is_some(), "{}", root.locator());
}

#[test]
fn service_deployment_and_probes_agree_with_the_contract() {
    let ms = base();
    let port = i32::from(webhook::PORT);
    let service: Service = typed(&ms, "Service", webhook::SERVICE_NAME);
    let service_spec = service.spec.expect("Service spec");
    let ports = service_spec.ports.unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.port == 443 && p.target_port == Some(IntOrString::Int(port))),
        "Service 443 -> {port}: {ports:?}"
    );

    let d: Deployment = typed(&ms, "Deployment", WEBHOOK_DEPLOYMENT);
    let dspec = d.spec.expect("Deployment spec");
    assert_eq!(dspec.replicas, Some(2));
    let pod_labels: Labels = dspec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
    let svc_selector = Selector::from_labels(&service_spec.selector.unwrap_or_default());
    assert!(svc_selector.matches(&pod_labels), "Service selects the webhook pods");
    assert!(selector(&dspec.selector).matches(&pod_labels));
    let spec = dspec.template.spec.expect("pod spec");
    let c = container(&spec, "webhook");

    assert!(
        c.ports.iter().flatten().any(|p| p.container_port == port),
        "container port {port}"
    );
    let (cli, serve) = webhook_cli(c);
    assert_eq!(serve.listen.port(), webhook::PORT, "--listen uses the contract port");
    assert_eq!(cli.log_format, LogFormat::Json, "structured logs in the cluster");
    assert!(serve.state.is_empty(), "the cluster state comes from the API server");
    // the server refuses a certificate that lacks its Service DNS names
    let cert_names: BTreeSet<&str> = find(&ms, "Certificate", SERVING_CERTIFICATE)
        .and_then(|c| c.value.pointer("/spec/dnsNames"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for name in &serve.service_dns {
        assert!(
            cert_names.contains(name.as_str()),
            "the serving Certificate lacks {name}"
        );
    }
    assert_eq!(
        http_probe(c.readiness_probe.as_ref(), c),
        (webhook::READYZ_PATH.to_string(), port, "HTTPS".to_string())
    );
    assert_eq!(
        http_probe(c.liveness_probe.as_ref(), c),
        (webhook::HEALTHZ_PATH.to_string(), port, "HTTPS".to_string())
    );
    assert_eq!(
        c.args.as_deref().and_then(|a| a.first()).map(String::as_str),
        Some("serve")
    );

    // cert and template come from whole-volume mounts (no subPath: the
    // kubelet's ..data symlink swap must reach the pod)
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mount_for = |file: &Path| {
        let m = mounts
            .iter()
            .find(|m| file.starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("{} is on no volume mount", file.display()));
        assert!(
            m.sub_path.is_none() && m.sub_path_expr.is_none(),
            "{}: no subPath",
            file.display()
        );
        assert_eq!(m.read_only, Some(true), "{}: read-only mount", file.display());
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .unwrap_or_else(|| panic!("no volume {}", m.name));
        (v.clone(), file.strip_prefix(&m.mount_path).map(PathBuf::from))
    };
    let cert_secret = find(&ms, "Certificate", SERVING_CERTIFICATE)
        .and_then(|c| c.str_at("/spec/secretName"))
        .expect("serving cert secretName")
        .to_string();
    for (flag, file, key) in [
        ("--tls-cert", &serve.tls_cert, "tls.crt"),
        ("--tls-key", &serve.tls_key, "tls.key"),
    ] {
        let file = file.as_deref().unwrap_or_else(|| panic!("{flag} is set"));
        let (v, rel) = mount_for(file);
        let secret = v.secret.unwrap_or_else(|| panic!("{flag} is not on a Secret volume"));
        assert_eq!(secret.secret_name.as_deref(), Some(cert_secret.as_str()), "{flag}");
        assert!(secret.items.is_none(), "{flag}: mount the whole Secret");
        assert_eq!(rel.ok(), Some(PathBuf::from(key)), "{flag}");
    }
    let (v, rel) = mount_for(serve.template.as_deref().expect("--template is set"));
    let cm = v.config_map.expect("--template is on a ConfigMap volume");
    assert_eq!(cm.name, TEMPLATE_CONFIGMAP);
    let item_path = cm
        .items
        .iter()
        .flatten()
        .find(|i| i.key == TEMPLATE_KEY)
        .map(|i| PathBuf::from(&i.path))
        .unwrap_or_else(|| PathBuf::from(TEMPLATE_KEY));
    assert_eq!(rel.ok(), Some(item_path));

    // graceful shutdown fits in the grace period
    let drain = i64::try_from(serve.drain_seconds).expect("drain fits");
    let grace = spec
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > drain + 5,
        "grace {grace}s must exceed drain {drain}s plus in-flight time"
    );

    // hardening
    assert_eq!(spec.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(spec.service_account_name.as_deref(), Some("tierguard-webhook"));
    let sc = c.security_context.as_ref().expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.is_none());
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(spec.security_context.as_ref().and_then(|p| p.seccomp_profile.as_ref()))
        .expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let res = c.resources.as_ref().expect("resources");
    for part in [&res.requests, &res.limits] {
        let part = part.as_ref().expect("requests and limits");
        assert!(part.contains_key("cpu") && part.contains_key("memory"), "{part:?}");
    }
    let anti = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("podAntiAffinity");
    let term = anti
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .map(|w| &w.pod_affinity_term)
        .chain(
            anti.required_during_scheduling_ignored_during_execution
                .iter()
                .flatten(),
        )
        .next()
        .expect("an anti-affinity term");
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert!(selector(term.label_selector.as_ref().expect("labelSelector")).matches(&pod_labels));

    let pdb: PodDisruptionBudget = typed(&ms, "PodDisruptionBudget", WEBHOOK_DEPLOYMENT);
    let pdb = pdb.spec.expect("PDB spec");
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert!(selector(pdb.selector.as_ref().expect("PDB selector")).matches(&pod_labels));
}

/// (group, resource, verb) triples.
type Grants = BTreeSet<(String, String, String)>;

fn expand(rules: &[PolicyRule], at: &str) -> Grants {
    let mut out = Grants::new();
    for r in rules {
        assert!(
            r.non_resource_urls.is_none() && r.resource_names.is_none(),
            "{at}: rule {r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// Everything the bindings in `ms` grant to a ServiceAccount.
fn grants_of(ms: &[Manifest], sa: &str) -> Grants {
    let is_sa = |kind: &str, name: &str, ns: Option<&str>| {
        kind == "ServiceAccount" && name == sa && ns == Some(webhook::NAMESPACE)
    };
    let mut out = Grants::new();
    for m in of_kind(ms, "ClusterRoleBinding") {
        let b: ClusterRoleBinding = m.to_typed().unwrap_or_else(|e| panic!("{e}"));
        if b.subjects
            .iter()
            .flatten()
            .any(|s| is_sa(&s.kind, &s.name, s.namespace.as_deref()))
        {
            assert_eq!(b.role_ref.kind, "ClusterRole", "{}", m.locator());
            let role: ClusterRole = typed(ms, "ClusterRole", &b.role_ref.name);
            assert!(role.aggregation_rule.is_none(), "{}: no aggregation", b.role_ref.name);
            out.extend(expand(role.rules.as_deref().unwrap_or_default(), &b.role_ref.name));
        }
    }
    for m in of_kind(ms, "RoleBinding") {
        let b: RoleBinding = m.to_typed().unwrap_or_else(|e| panic!("{e}"));
        if b.subjects
            .iter()
            .flatten()
            .any(|s| is_sa(&s.kind, &s.name, s.namespace.as_deref()))
        {
            let rules = if b.role_ref.kind == "Role" {
                let r: Role = typed(ms, "Role", &b.role_ref.name);
                r.rules.unwrap_or_default()
            } else {
                let r: ClusterRole = typed(ms, "ClusterRole", &b.role_ref.name);
                r.rules.unwrap_or_default()
            };
            out.extend(expand(&rules, &b.role_ref.name));
        }
    }
    out
}

fn wanted(watched: &[Watched]) -> Grants {
    watched
        .iter()
        .flat_map(|w| {
            REFLECTOR_VERBS
                .iter()
                .map(move |v| (w.group.to_string(), w.resource.to_string(), v.to_string()))
        })
        .collect()
}

/// The (group, resource, verb) triples of contract grants.
fn granted(grants: &[webhook::Grant]) -> Grants {
    grants
        .iter()
        .flat_map(|g| {
            g.verbs
                .iter()
                .map(move |v| (g.group.to_string(), g.resource.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_what_the_code_watches() {
    let ms = base();
    // the webhook also writes what its background audit needs
    let cases: &[(&str, &str, &[Watched], &[webhook::Grant])] = &[
        (
            "Deployment",
            WEBHOOK_DEPLOYMENT,
            webhook::WATCHED,
            webhook::AUDIT_GRANTS,
        ),
        ("DaemonSet", ENFORCER_DAEMONSET, enforcer::WATCHED, &[]),
    ];
    for (kind, workload, watched, writes) in cases {
        let spec = match *kind {
            "Deployment" => pod_spec_of_deployment(&ms),
            _ => pod_spec_of_daemonset(&ms, workload),
        };
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| panic!("{workload} names its ServiceAccount"));
        assert!(find(&ms, "ServiceAccount", &sa).is_some(), "ServiceAccount {sa}");
        let have = grants_of(&ms, &sa);
        let mut want = wanted(watched);
        want.extend(granted(writes));
        let extra: Vec<_> = have.difference(&want).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{workload} ({sa}): extra grants {extra:?}, missing grants {missing:?}"
        );
    }
    // nothing in deploy/ grants a write verb or a wildcard to anyone, but
    // the audit's writes: its reports by a ClusterRole, its Lease by a Role
    // in tierguard-system only
    for m in of_kind(&ms, "ClusterRole").chain(of_kind(&ms, "Role")) {
        let rules: Vec<PolicyRule> = serde_json::from_value(m.value.get("rules").cloned().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: {e}", m.locator()));
        let audit_writes = granted(
            &webhook::AUDIT_GRANTS
                .iter()
                .filter(|g| g.in_own_namespace == (m.kind() == "Role"))
                .copied()
                .collect::<Vec<_>>(),
        );
        for (g, r, v) in expand(&rules, m.name()) {
            assert!(
                REFLECTOR_VERBS.contains(&v.as_str()) || audit_writes.contains(&(g.clone(), r.clone(), v.clone())),
                "{}: verb {v} on {g}/{r}",
                m.locator()
            );
            assert!(g != "*" && r != "*", "{}: wildcard", m.locator());
        }
        if m.kind() == "Role" {
            assert_eq!(m.namespace(), Some(webhook::NAMESPACE), "{}", m.locator());
        }
    }
}

#[test]
fn enforcer_daemonsets_have_only_the_network_capabilities() {
    // (DaemonSet, kustomization folder, container that touches iptables)
    let cases: &[(&str, &str, &str, bool)] = &[
        (ENFORCER_DAEMONSET, "", "enforcer", false),
        (CLEANUP_DAEMONSET, "cleanup", "cleanup", true),
    ];
    for (name, dir, cname, init) in cases {
        let ms = manifest::load_kustomization_resources(&deploy_dir().join(dir)).unwrap_or_else(|e| panic!("{e}"));
        let spec = pod_spec_of_daemonset(&ms, name);
        assert_eq!(spec.host_network, Some(true), "{name}");
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"), "{name}");
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-node-critical"),
            "{name}"
        );
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
            "{name}: tolerates every taint: {tolerations:?}"
        );
        let list = if *init {
            spec.init_containers.as_deref().unwrap_or_default()
        } else {
            &spec.containers[..]
        };
        let c = list
            .iter()
            .find(|c| c.name == *cname)
            .unwrap_or_else(|| panic!("{name}: container {cname}"));
        let sc = c.security_context.as_ref().expect("securityContext");
        let caps = sc.capabilities.as_ref().expect("capabilities");
        let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        assert_eq!(add, BTreeSet::from(["NET_ADMIN", "NET_RAW"]), "{name}");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{name}");
        assert_ne!(sc.privileged, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        // every container of the pod: no capability beyond those two
        for other in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            let added: BTreeSet<&str> = other
                .security_context
                .as_ref()
                .and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.add.as_ref())
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            assert!(
                added.is_subset(&BTreeSet::from(["NET_ADMIN", "NET_RAW"])),
                "{name}/{}",
                other.name
            );
            assert_ne!(
                other.security_context.as_ref().and_then(|s| s.privileged),
                Some(true),
                "{name}/{}",
                other.name
            );
        }
        let lock = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/run/xtables.lock")
            .unwrap_or_else(|| panic!("{name}: /run/xtables.lock mounted"));
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == lock.name)
            .and_then(|v| v.host_path.as_ref())
            .unwrap_or_else(|| panic!("{name}: xtables lock is a hostPath"));
        assert_eq!(vol.path, "/run/xtables.lock");
        assert_eq!(vol.type_.as_deref(), Some("FileOrCreate"));
    }
}

#[test]
fn enforcer_daemonset_agrees_with_the_contract() {
    let ms = base();
    let spec = pod_spec_of_daemonset(&ms, ENFORCER_DAEMONSET);
    let c = container(&spec, "enforcer");
    let run: RunArgs = check_enforcer_cli(c, "run", &["--node-name", "node-a"]);
    assert_eq!(run.metrics_addr.port(), enforcer::METRICS_PORT);
    assert!(!run.cleanup_on_exit, "rules stay enforcing while the agent restarts");
    let env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == enforcer::NODE_NAME_ENV)
        .unwrap_or_else(|| panic!("{} is set", enforcer::NODE_NAME_ENV));
    let field = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    // the node's address from the downward API too: the enforcer needs no
    // access to Node objects (its RBAC has none, see the RBAC test)
    let node_ip = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_IP")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(node_ip, Some("status.hostIP"));
    let port = i32::from(enforcer::METRICS_PORT);
    assert_eq!(
        http_probe(c.liveness_probe.as_ref(), c),
        (enforcer::HEALTHZ_PATH.to_string(), port, "HTTP".to_string())
    );
    assert!(
        c.ports.iter().flatten().any(|p| p.container_port == port),
        "metrics port"
    );
    let res = c.resources.as_ref().expect("resources");
    assert!(res.requests.is_some() && res.limits.is_some());
    assert_eq!(spec.service_account_name.as_deref(), Some("tierguard-enforcer"));

    let cleanup =
        manifest::load_kustomization_resources(&deploy_dir().join("cleanup")).unwrap_or_else(|e| panic!("{e}"));
    let spec = pod_spec_of_daemonset(&cleanup, CLEANUP_DAEMONSET);
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "cleanup reads no API"
    );
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let cleanup_container = init.first().expect("the cleanup init container");
    let _: CleanupArgs = check_enforcer_cli(cleanup_container, "cleanup", &[]);
}

#[test]
fn network_policy_keeps_the_webhook_reachable() {
    let ms = base();
    let pod_labels: Labels = {
        let d: Deployment = typed(&ms, "Deployment", WEBHOOK_DEPLOYMENT);
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default()
    };
    let policies: Vec<NetworkPolicy> = of_kind(&ms, "NetworkPolicy")
        .map(|m| m.to_typed().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let selecting: Vec<_> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(webhook::NAMESPACE))
        .filter_map(|p| p.spec.as_ref())
        .filter(|s| {
            s.pod_selector
                .as_ref()
                .map_or_else(Selector::everything, selector)
                .matches(&pod_labels)
        })
        .collect();
    assert!(!selecting.is_empty(), "a NetworkPolicy selects the webhook pods");
    // ingress to the webhook port from every source
    let port = IntOrString::Int(i32::from(webhook::PORT));
    assert!(
        selecting.iter().flat_map(|s| s.ingress.iter().flatten()).any(|r| {
            r.from.as_ref().is_none_or(Vec::is_empty)
                && r.ports
                    .iter()
                    .flatten()
                    .any(|p| p.port.as_ref() == Some(&port) && p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        }),
        "ingress to TCP/{} from anywhere",
        webhook::PORT
    );
    // egress: DNS on UDP and TCP 53, as the built-in template means it
    let dns = TierTemplate::built_in().dns;
    for (proto, n) in &dns.ports {
        let proto = format!("{proto:?}").to_uppercase();
        assert!(
            selecting.iter().flat_map(|s| s.egress.iter().flatten()).any(|r| {
                r.ports.iter().flatten().any(|p| {
                    p.port == Some(IntOrString::Int(i32::from(*n))) && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
            }),
            "egress allows DNS {proto}/{n}"
        );
    }
}

fn template_text(ms: &[Manifest]) -> String {
    let cm: ConfigMap = typed(ms, "ConfigMap", TEMPLATE_CONFIGMAP);
    cm.data
        .and_then(|d| d.get(TEMPLATE_KEY).cloned())
        .unwrap_or_else(|| panic!("ConfigMap {TEMPLATE_CONFIGMAP} has no {TEMPLATE_KEY}"))
}

/// Compares two templates on every field but `mode`.
fn same_but_mode(a: &TierTemplate, b: &TierTemplate) -> Result<(), String> {
    let diffs: Vec<&str> = [
        ("tierLabel", a.tier_label == b.tier_label),
        ("tiers", a.tiers == b.tiers),
        ("dns", a.dns == b.dns),
        (
            "governedNamespaces",
            a.governed_namespaces_source == b.governed_namespaces_source,
        ),
        ("namespaceTiers", a.namespace_tiers == b.namespace_tiers),
    ]
    .iter()
    .filter(|(_, same)| !same)
    .map(|(k, _)| *k)
    .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("templates differ in {diffs:?}"))
    }
}

#[test]
fn template_configmaps_hold_the_built_in_template() {
    let built_in = TierTemplate::built_in();
    // (where, manifests, expected mode)
    let overlay_patch = deploy_dir().join("overlays/audit/template-audit.yaml");
    let cases: Vec<(String, Vec<Manifest>, Mode)> = vec![
        ("deploy/ base".to_string(), base(), Mode::Enforce),
        (
            "overlays/audit patch".to_string(),
            manifest::load_file(&overlay_patch).unwrap_or_else(|e| panic!("{e}")),
            Mode::Audit,
        ),
    ];
    for (at, ms, mode) in cases {
        let text = template_text(&ms);
        let t = TierTemplate::parse(&text, &at).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(t.mode, mode, "{at}");
        same_but_mode(&t, &built_in).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(built_in.mode, Mode::Enforce);
    }
    // the base is the built-in text itself, comments included
    assert_eq!(
        template_text(&base()),
        tierguard::template::BUILT_IN,
        "deploy/base/webhook/template-configmap.yaml must hold shared/src/template/default.yaml verbatim \
         (indented by 4); deploy/overlays/audit/template-audit.yaml the same with mode: audit"
    );
}

/// What `kubectl kustomize` must produce for each folder.
struct RenderCase {
    dir: &'static str,
    kinds: &'static [&'static str],
    mode: Option<Mode>,
}

const RENDER_CASES: &[RenderCase] = &[
    RenderCase {
        dir: "",
        kinds: BASE_KINDS,
        mode: Some(Mode::Enforce),
    },
    RenderCase {
        dir: "base",
        kinds: BASE_KINDS,
        mode: Some(Mode::Enforce),
    },
    RenderCase {
        dir: "overlays/audit",
        kinds: BASE_KINDS,
        mode: Some(Mode::Audit),
    },
    RenderCase {
        dir: "cleanup",
        kinds: &["DaemonSet"],
        mode: None,
    },
];

const BASE_KINDS: &[&str] = &[
    "Certificate",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "DaemonSet",
    "Deployment",
    "Issuer",
    "MutatingWebhookConfiguration",
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
    "ValidatingWebhookConfiguration",
];

#[test]
fn kubectl_kustomize_renders_base_and_overlays() {
    let Some(kubectl) = tool::tool_or_skip("kubectl", "render deploy/ with kubectl kustomize") else {
        return;
    };
    for case in RENDER_CASES {
        let dir = deploy_dir().join(case.dir);
        let ms = tool::kustomize(&kubectl, &dir).unwrap_or_else(|e| panic!("{e}"));
        let kinds: BTreeSet<&str> = ms.iter().map(Manifest::kind).collect();
        assert_eq!(kinds, case.kinds.iter().copied().collect(), "deploy/{}", case.dir);
        for m in &ms {
            let r = match kinds::kind_check(m) {
                Ok(KindCheck::Typed) => kinds::check_typed(m),
                Ok(KindCheck::CertManager) => kinds::check_cert_manager(m),
                Ok(KindCheck::Kustomize) => Err(format!("{}: rendered a Kustomization", m.locator())),
                Err(e) => Err(e),
            };
            r.unwrap_or_else(|e| panic!("deploy/{}: {e}", case.dir));
        }
        if let Some(mode) = case.mode {
            let text = template_text(&ms);
            let t = TierTemplate::parse(&text, case.dir).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.mode, mode, "deploy/{}", case.dir);
            same_but_mode(&t, &TierTemplate::built_in()).unwrap_or_else(|e| panic!("deploy/{}: {e}", case.dir));
        }
        // rendering keeps the images kind.sh loads
        let images: BTreeMap<String, String> = ms
            .iter()
            .filter(|m| matches!(m.kind(), "Deployment" | "DaemonSet"))
            .flat_map(|m| {
                let spec = m.value.pointer("/spec/template/spec").cloned().unwrap_or_default();
                let pod: PodSpec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
                pod.containers
                    .into_iter()
                    .chain(pod.init_containers.unwrap_or_default())
                    .map(|c| (c.name, c.image.unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (c, image) in images {
            assert!(
                image == "tierguard-webhook:dev" || image == "tierguard-enforcer:dev",
                "deploy/{}: container {c} image {image}",
                case.dir
            );
        }
    }
}
