use super::*;
use proptest::prelude::*;

const KEYS: [&str; 3] = ["a", "b", "c"];
const VALUES: [&str; 3] = ["x", "y", "z"];

/// A raw requirement, evaluated directly by the Kubernetes definition,
/// independent of the normal form under test.
#[derive(Clone, Debug)]
struct RawReq {
    key: &'static str,
    op: Operator,
    values: Vec<String>,
}

impl RawReq {
    fn eval(&self, labels: &Labels) -> bool {
        let v = labels.get(self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

fn raw_req() -> impl Strategy<Value = RawReq> {
    let op = prop_oneof![
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist)
    ];
    (
        0..KEYS.len(),
        op,
        proptest::collection::btree_set(0..VALUES.len(), 1..=3),
    )
        .prop_map(|(k, op, vs)| {
            let values = match op {
                Operator::In | Operator::NotIn => vs.into_iter().map(|i| VALUES[i].to_string()).collect(),
                _ => Vec::new(),
            };
            RawReq {
                key: KEYS[k],
                op,
                values,
            }
        })
}

fn raw_selector() -> impl Strategy<Value = Vec<RawReq>> {
    proptest::collection::vec(raw_req(), 0..4)
}

fn build(reqs: &[RawReq]) -> Selector {
    let mut sel = Selector::everything();
    for r in reqs {
        sel.constrain(r.key, r.op, &r.values);
    }
    sel
}

fn eval(reqs: &[RawReq], labels: &Labels) -> bool {
    reqs.iter().all(|r| r.eval(labels))
}

/// Every label set over KEYS with each key absent, one of VALUES, or a value
/// no selector names ("other"). Since selectors only name VALUES, "other"
/// stands for all the rest, so this enumeration is exhaustive.
fn universe() -> Vec<Labels> {
    let choices: Vec<Option<&str>> = vec![None, Some("x"), Some("y"), Some("z"), Some("other")];
    let mut out = vec![Labels::new()];
    for key in KEYS {
        let mut next = Vec::new();
        for base in &out {
            for c in &choices {
                let mut l = base.clone();
                if let Some(v) = c {
                    l.insert(key.to_string(), v.to_string());
                }
                next.push(l);
            }
        }
        out = next;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_agrees_with_definition(reqs in raw_selector()) {
        let sel = build(&reqs);
        for labels in universe() {
            prop_assert_eq!(sel.matches(&labels), eval(&reqs, &labels), "labels {:?}", labels);
        }
    }

    #[test]
    fn satisfiable_agrees_with_brute_force(a in raw_selector(), b in raw_selector()) {
        let both = build(&a).and(&build(&b));
        let brute = universe().iter().any(|l| eval(&a, l) && eval(&b, l));
        prop_assert_eq!(both.is_satisfiable(), brute);
        prop_assert_eq!(build(&a).intersects(&build(&b)), brute);
    }

    #[test]
    fn implies_agrees_with_brute_force(a in raw_selector(), b in raw_selector()) {
        let brute = universe().iter().all(|l| !eval(&a, l) || eval(&b, l));
        prop_assert_eq!(build(&a).implies(&build(&b)), brute, "{} => {}", build(&a), build(&b));
    }

    #[test]
    fn fast_paths_agree_with_the_built_intersection(
        a in raw_selector(),
        b in raw_selector(),
        c in raw_selector(),
    ) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        let both = a.and(&b);
        prop_assert_eq!(a.intersects(&b), both.is_satisfiable(), "{} and {}", a, b);
        prop_assert_eq!(a.and_implies(&b, &c), both.implies(&c), "({} and {}) => {}", a, b, c);
    }

    #[test]
    fn witness_is_selected(a in raw_selector()) {
        let sel = build(&a);
        match sel.witness() {
            Some(w) => prop_assert!(eval(&a, &w), "witness {:?} not selected", w),
            None => prop_assert!(!sel.is_satisfiable()),
        }
    }
}

fn ls(json: serde_json::Value) -> LabelSelector {
    serde_json::from_value(json).unwrap_or_default()
}

#[test]
fn empty_selector_is_everything() {
    let sel = Selector::from_k8s(&ls(serde_json::json!({}))).unwrap_or_else(|_| Selector::nothing());
    assert!(sel.is_everything());
    assert!(sel.matches(&Labels::new()));
    assert!(Selector::nothing().implies(&Selector::from_labels(&Labels::new())));
    assert!(!Selector::nothing().is_satisfiable());
}

#[test]
fn tier_coverage_examples() {
    let tier = |t: &str| Selector::requirement("tier", Operator::In, &[t.to_string()]);
    let web_data = tier("data").and(&Selector::requirement("app", Operator::In, &["web".into()]));
    assert!(tier("data").implies(&Selector::everything()));
    assert!(
        !tier("data").implies(&web_data),
        "app=web does not cover the whole tier"
    );
    assert!(web_data.implies(&tier("data")));
    let untiered = Selector::requirement("tier", Operator::NotIn, &["data".into(), "backend".into()]);
    assert!(!untiered.intersects(&tier("data")));
    assert!(untiered.intersects(&Selector::requirement("app", Operator::Exists, &[])));
}

#[test]
fn invalid_selectors_name_the_field() {
    let cases = [
        (
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
            "matchExpressions[0].operator",
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "matchExpressions[0].values",
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            "matchExpressions[0].values",
        ),
        (serde_json::json!({"matchLabels": {"a b": "x"}}), "matchLabels.a b"),
        (
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "not ok"]}]}),
            "matchExpressions[0].values[1]",
        ),
    ];
    for (json, field) in cases {
        let errs = Selector::from_k8s(&ls(json.clone())).err().unwrap_or_default();
        assert!(
            errs.iter().any(|e| e.field == field),
            "{json}: expected an error on {field}, got {errs:?}"
        );
    }
}

#[test]
fn display_is_kubernetes_syntax() {
    let mut sel = Selector::requirement("tier", Operator::In, &["data".into()]);
    sel.constrain("app", Operator::NotIn, &["web".into()]);
    assert_eq!(sel.to_string(), "app notin (web),tier=data");
    assert_eq!(Selector::everything().to_string(), "{}");
    assert_eq!(Selector::nothing().to_string(), "(selects nothing)");
}
