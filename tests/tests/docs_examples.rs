//! The examples in `docs/` are run against the code, so the documentation
//! cannot drift from it. A fenced block's info string says what it is
//! checked for (`docs/README.md` lists the kinds); blocks of other kinds are
//! prose and are not run. The `console` blocks (here and in the top-level
//! README) are run by `docs_console.rs` of the crate that owns each binary;
//! this file checks that none names a command nobody runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::guardrails::{self, Operation, PolicyState};
use tierguard::template::TierTemplate;
use tierguard_conformance::conformance::case::parse_case;
use tierguard_conformance::conformance::model::ModelDataPlane;
use tierguard_conformance::conformance::runner::run_case;
use tierguard_integration::docs::{Block, blocks, console_blocks, doc_pages, program_of, steps};
use tierguard_integration::repo_root;

fn doc_blocks() -> Vec<Block> {
    let root = repo_root();
    doc_pages(&root).iter().flat_map(|p| blocks(&root, p)).collect()
}

/// The YAML documents of a block, as JSON values.
fn documents(block: &Block) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(&block.text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", block.place));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{}: {e}", block.place))
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(block: &Block, value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", block.place))
}

#[test]
fn blocks_that_mirror_files_are_the_files() {
    let mut seen = 0;
    for block in doc_blocks() {
        let Some(path) = block.attr("file") else { continue };
        let file = std::fs::read_to_string(repo_root().join(path))
            .unwrap_or_else(|e| panic!("{}: file={path}: {e}", block.place));
        assert_eq!(block.text, file, "{}: differs from {path}", block.place);
        seen += 1;
    }
    assert!(seen >= 2, "no block names a file any more");
}

#[test]
fn templates_parse_and_the_built_in_one_is_the_built_in() {
    let built_in = TierTemplate::built_in();
    let mut seen = 0;
    for block in doc_blocks().into_iter().filter(|b| b.has("template")) {
        let parsed = TierTemplate::parse(&block.text, &block.place).unwrap_or_else(|e| panic!("{e}"));
        if block.has("built-in") {
            assert_eq!(parsed.tier_label, built_in.tier_label, "{}", block.place);
            assert_eq!(parsed.tiers, built_in.tiers, "{}", block.place);
            assert_eq!(parsed.dns, built_in.dns, "{}", block.place);
            assert_eq!(
                parsed.governed_namespaces_source, built_in.governed_namespaces_source,
                "{}",
                block.place
            );
            assert_eq!(parsed.namespace_tiers, built_in.namespace_tiers, "{}", block.place);
            assert_eq!(parsed.mode, built_in.mode, "{}", block.place);
            // Every key is written out, so the block alone is the built-in
            // template, not the built-in values filling in what it omits.
            let keys: BTreeSet<String> = documents(&block)[0].as_object().unwrap().keys().cloned().collect();
            let all = [
                "tierLabel",
                "tiers",
                "dns",
                "governedNamespaces",
                "namespaceTiers",
                "mode",
            ];
            assert_eq!(keys, all.iter().map(|k| k.to_string()).collect(), "{}", block.place);
        }
        seen += 1;
    }
    assert!(seen >= 3, "the template examples are gone");
}

/// The rule ids a block claims in `rules=R1,R3` (`rules=` for none).
fn claimed_rules(block: &Block) -> BTreeSet<String> {
    block
        .attr("rules")
        .unwrap_or_else(|| panic!("{}: needs rules=...", block.place))
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// The state made of a block's Namespaces and NetworkPolicies.
fn state_of(block: &Block, docs: Vec<serde_json::Value>, well_formed: bool) -> PolicyState {
    let mut state = PolicyState::default();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("Namespace") => {
                let ns: Namespace = typed(block, doc);
                let name = ns.metadata.name.clone().unwrap();
                state.namespaces.insert(name, ns.metadata.labels.unwrap_or_default());
            }
            Some("NetworkPolicy") => {
                let np: NetworkPolicy = typed(block, doc);
                // Written to be well formed: only R4 examples may break structure.
                if well_formed {
                    tierguard::Policy::from_k8s(&np).unwrap_or_else(|e| panic!("{}: {e:?}", block.place));
                }
                state.policies.insert(key_of(&np), np);
            }
            other => panic!("{}: unexpected kind {other:?}", block.place),
        }
    }
    state
}

fn key_of(np: &NetworkPolicy) -> (String, String) {
    (
        np.metadata.namespace.clone().unwrap(),
        np.metadata.name.clone().unwrap(),
    )
}

#[test]
fn manifests_have_exactly_the_violations_they_claim() {
    let template = TierTemplate::built_in();
    let mut seen = 0;
    for block in doc_blocks().into_iter().filter(|b| b.has("manifests")) {
        let claimed = claimed_rules(&block);
        let state = state_of(&block, documents(&block), !claimed.contains("R4"));
        let audit = guardrails::audit_state(&template, &state);
        let found: BTreeSet<String> = audit
            .violations
            .values()
            .flatten()
            .map(|v| v.rule().to_string())
            .collect();
        assert_eq!(found, claimed, "{}: {:#?}", block.place, audit.violations);
        seen += 1;
    }
    assert!(seen >= 3, "the guardrail examples are gone");
}

/// A `review` block is the state before a change, then the changed policy
/// as its last document (for a DELETE, only its namespace and name); `op=`
/// names the operation and `rules=` the rules of the violations the change
/// brings.
#[test]
fn reviews_bring_exactly_the_new_violations_they_claim() {
    let template = TierTemplate::built_in();
    let mut seen = 0;
    for block in doc_blocks().into_iter().filter(|b| b.has("review")) {
        let claimed = claimed_rules(&block);
        let mut docs = documents(&block);
        let change: NetworkPolicy = typed(&block, docs.pop().unwrap());
        let state = state_of(&block, docs, true);
        let stored = state.policies.get(&key_of(&change));
        let (operation, old, new) = match block.attr("op") {
            Some("CREATE") => (Operation::Create, None, Some(&change)),
            Some("UPDATE") => (Operation::Update, stored, Some(&change)),
            Some("DELETE") => (Operation::Delete, stored, None),
            other => panic!("{}: op={other:?}", block.place),
        };
        if operation != Operation::Create {
            assert!(
                old.is_some(),
                "{}: the state lacks the policy that changes",
                block.place
            );
        }
        let review = guardrails::review_network_policy(&template, &state, operation, old, new);
        let found: BTreeSet<String> = review.new_violations.iter().map(|v| v.rule().to_string()).collect();
        assert_eq!(found, claimed, "{}: {:#?}", block.place, review.new_violations);
        seen += 1;
    }
    assert!(seen >= 4, "the review examples are gone");
}

#[test]
fn namespace_mutations_give_the_patches_shown() {
    let template = TierTemplate::built_in();
    let all = doc_blocks();
    let mut seen = 0;
    for (i, block) in all
        .iter()
        .enumerate()
        .filter(|(_, b)| b.lang == "yaml" && b.has("namespace"))
    {
        let expected = all
            .get(i + 1)
            .filter(|b| b.lang == "json" && b.has("patch"))
            .unwrap_or_else(|| panic!("{}: a namespace example is followed by its `json patch`", block.place));
        let namespace: Namespace = typed(block, documents(block).remove(0));
        let mutation = guardrails::mutate_namespace(&template, &namespace);
        let got = serde_json::to_value(&mutation.patch).unwrap();
        let want: serde_json::Value =
            serde_json::from_str(&expected.text).unwrap_or_else(|e| panic!("{}: {e}", expected.place));
        assert_eq!(got, want, "{}", block.place);
        assert!(mutation.warnings.is_empty(), "{}: {:?}", block.place, mutation.warnings);
        seen += 1;
    }
    assert!(seen >= 3, "the namespace examples are gone");
}

#[test]
fn cases_parse_and_pass_on_the_model() {
    let mut seen = 0;
    for block in doc_blocks().into_iter().filter(|b| b.has("case")) {
        let case = parse_case(&block.text, &block.place).unwrap_or_else(|e| panic!("{e}"));
        let report = run_case(&case, &mut ModelDataPlane);
        assert!(report.passed(), "{}: {:#?}", block.place, report.failures);
        assert!(report.matched > 0, "{}: checks nothing", block.place);
        seen += 1;
    }
    assert!(seen >= 2, "the case examples are gone");
}

#[test]
fn every_console_command_is_run_by_a_docs_console_test() {
    let mut commands = 0;
    for block in console_blocks(&repo_root()) {
        for step in steps(&block) {
            if step.command == "echo $?" {
                continue;
            }
            let (name, _) = program_of(&step.command).unwrap_or_else(|| panic!("{}: empty command", block.place));
            // webhook/tests/docs_console.rs, enforcer/tests/docs_console.rs
            // and tests/conformance/tests/docs_console.rs
            assert!(
                [
                    "tierguard-webhook",
                    "kubectl-tierguard",
                    "tierguard-enforcer",
                    "tierguard-conformance"
                ]
                .contains(&name.as_str()),
                "{}: `{}` is run by no test",
                block.place,
                step.command
            );
            commands += 1;
        }
    }
    assert!(commands >= 6, "the console examples are gone");
}
