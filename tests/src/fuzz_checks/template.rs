//! `template`: bytes as a tier template file. A template either is refused
//! with an error naming the file (and a line inside it), or is usable: every
//! tier it names exists, tiers and untiered pods do not overlap, and every
//! namespace pattern matches the names it describes.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tierguard::guardrails::mutate_namespace;
use tierguard::labels::{self, Labels};
use tierguard::template::{FlowPeer, TierTemplate, glob_matches};

const SOURCE: &str = "fuzz-template.yaml";

/// Bytes as a template file; see the module doc.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TierTemplate::parse(text, SOURCE) {
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(SOURCE), "the error must name the file: {message}");
            if let Some(line) = e.line {
                // The YAML reader breaks lines at \r\n, \r and \n, and as YAML
                // 1.1 says at NEL, LS and PS too: lines `str::lines` does not count
                let lines = text
                    .replace("\r\n", "\n")
                    .split(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
                    .count();
                assert!(
                    line >= 1 && line <= lines + 1,
                    "line {line} is outside the file: {message}"
                );
            }
        }
        Ok(template) => check_usable(&template),
    }
}

fn check_usable(template: &TierTemplate) {
    assert!(labels::validate_key(&template.tier_label).is_ok());
    let names: Vec<&str> = template.tier_names().collect();
    assert!(!names.is_empty(), "a template has a tier");
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "tier {name} appears twice");
        assert!(
            labels::validate_value(name).is_ok(),
            "tier {name:?} is not a label value"
        );
    }
    for (name, flows) in &template.tiers {
        for peer in flows.ingress_from.iter().chain(&flows.egress_to) {
            if let FlowPeer::Tier(t) = peer {
                assert!(template.is_tier(t), "tier {name} names unknown tier {t}");
            }
        }
        let tier = template.tier_selector(name);
        assert!(tier.is_satisfiable());
        assert!(
            !tier.intersects(&template.untiered_selector()),
            "pods of tier {name} also count as untiered"
        );
    }
    for pattern in &template.namespace_tiers {
        assert!(
            template.is_tier(&pattern.tier),
            "pattern gives unknown tier {}",
            pattern.tier
        );
        let example = pattern.pattern.replace('*', "x");
        assert!(
            glob_matches(&pattern.pattern, &example),
            "{:?} does not match {example:?}",
            pattern.pattern
        );
        // The mutation of a namespace so named must name it and never panic.
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(example.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let mut doc = serde_json::json!({"metadata": {"name": example}});
        let mutation = mutate_namespace(template, &namespace);
        if let Err(e) = json_patch::patch(&mut doc, &mutation.patch) {
            panic!("the mutation of namespace {example:?} does not apply: {e}");
        }
    }
    let _ = template.governs(&Labels::new());
}
