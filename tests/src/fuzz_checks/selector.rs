//! `selector_algebra`: three label selectors built from structured input and
//! the selector algebra checked against brute force. Selectors name only the
//! keys of `KEYS` and the values of `VALUES`, so every label set behaves like
//! one of the finite universe where each key is absent, one of `VALUES`, or
//! one further value no selector names: on that universe, brute force is
//! exact for matching, intersection, satisfiability and implication. Label
//! sets the input adds (any keys and values) are checked for matching.

use arbitrary::{Arbitrary, Unstructured};
use tierguard::labels::Labels;
use tierguard::selector::{Operator, Selector};

const KEYS: [&str; 4] = ["a", "b", "example.com/c", "tier"];
const VALUES: [&str; 4] = ["", "x", "y", "z"];
/// The stand-in for every value no selector names.
const UNNAMED: &str = "unnamed";

/// A key of `KEYS`.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Key(u8);

impl Key {
    fn name(self) -> &'static str {
        KEYS[usize::from(self.0) % KEYS.len()]
    }
}

/// A value of `VALUES`.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Value(u8);

impl Value {
    fn text(self) -> &'static str {
        VALUES[usize::from(self.0) % VALUES.len()]
    }
}

/// The selector operators.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// `In`
    In,
    /// `NotIn`
    NotIn,
    /// `Exists`
    Exists,
    /// `DoesNotExist`
    DoesNotExist,
}

impl Op {
    fn operator(self) -> Operator {
        match self {
            Op::In => Operator::In,
            Op::NotIn => Operator::NotIn,
            Op::Exists => Operator::Exists,
            Op::DoesNotExist => Operator::DoesNotExist,
        }
    }
}

/// One requirement; `values` is used by `In` and `NotIn` only, as the API requires.
#[derive(Arbitrary, Clone, Debug)]
pub struct Requirement {
    key: Key,
    op: Op,
    values: Vec<Value>,
}

impl Requirement {
    fn values(&self) -> Vec<String> {
        match self.op {
            Op::In | Op::NotIn => self.values.iter().map(|v| v.text().to_string()).collect(),
            Op::Exists | Op::DoesNotExist => Vec::new(),
        }
    }

    /// The Kubernetes definition, independent of the selector's normal form.
    fn eval(&self, labels: &Labels) -> bool {
        let value = labels.get(self.key.name());
        let values = self.values();
        match self.op {
            Op::In => value.is_some_and(|v| values.contains(v)),
            Op::NotIn => value.is_none_or(|v| !values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// How a selector is built.
#[derive(Arbitrary, Clone, Debug)]
pub enum Source {
    /// requirements ANDed through `constrain`
    Requirements(Vec<Requirement>),
    /// `matchLabels` through `from_labels`
    Labels(Vec<(Key, Value)>),
    /// `Selector::nothing()`
    Nothing,
}

impl Source {
    fn build(&self) -> Selector {
        match self {
            Source::Requirements(reqs) => {
                let mut sel = Selector::everything();
                for r in reqs {
                    sel.constrain(r.key.name(), r.op.operator(), &r.values());
                }
                sel
            }
            Source::Labels(pairs) => Selector::from_labels(&labels_of(pairs)),
            Source::Nothing => Selector::nothing(),
        }
    }

    fn eval(&self, labels: &Labels) -> bool {
        match self {
            Source::Requirements(reqs) => reqs.iter().all(|r| r.eval(labels)),
            Source::Labels(pairs) => labels_of(pairs).iter().all(|(k, v)| labels.get(k) == Some(v)),
            Source::Nothing => false,
        }
    }
}

fn labels_of(pairs: &[(Key, Value)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.name().to_string(), v.text().to_string()))
        .collect()
}

/// The structured input: three selectors and extra label sets.
#[derive(Arbitrary, Clone, Debug)]
pub struct SelectorCase {
    a: Source,
    b: Source,
    c: Source,
    extra: Vec<Vec<(String, String)>>,
}

/// Every label set over `KEYS` with each key absent, one of `VALUES` or `UNNAMED`.
fn universe() -> Vec<Labels> {
    let mut out = vec![Labels::new()];
    for key in KEYS {
        let mut next = Vec::with_capacity(out.len() * (VALUES.len() + 2));
        for base in &out {
            next.push(base.clone());
            for value in VALUES.iter().copied().chain([UNNAMED]) {
                let mut labels = base.clone();
                labels.insert(key.to_string(), value.to_string());
                next.push(labels);
            }
        }
        out = next;
    }
    out
}

static UNIVERSE: std::sync::LazyLock<Vec<Labels>> = std::sync::LazyLock::new(universe);

/// Bytes decoded as a [`SelectorCase`]; see the module doc.
pub fn selector_algebra(data: &[u8]) {
    if let Ok(case) = SelectorCase::arbitrary_take_rest(Unstructured::new(data)) {
        check_case(&case);
    }
}

/// The checks of one decoded case.
pub fn check_case(case: &SelectorCase) {
    let (a, b, c) = (case.a.build(), case.b.build(), case.c.build());
    let both = a.and(&b);
    let show = format!("a = {a}, b = {b}, c = {c} ({case:?})");
    let mut some_a = false;
    let mut some_both = false;
    let mut all_a = true;
    let mut a_implies_b = true;
    let mut both_imply_c = true;
    for labels in UNIVERSE.iter() {
        let (in_a, in_b, in_c) = (case.a.eval(labels), case.b.eval(labels), case.c.eval(labels));
        assert_eq!(a.matches(labels), in_a, "a.matches({labels:?}): {show}");
        assert_eq!(
            both.matches(labels),
            in_a && in_b,
            "a.and(b).matches({labels:?}): {show}"
        );
        some_a |= in_a;
        some_both |= in_a && in_b;
        all_a &= in_a;
        a_implies_b &= !in_a || in_b;
        both_imply_c &= !(in_a && in_b) || in_c;
    }
    for pairs in &case.extra {
        let labels: Labels = pairs.iter().cloned().collect();
        assert_eq!(
            a.matches(&labels),
            case.a.eval(&labels),
            "a.matches({labels:?}): {show}"
        );
        assert_eq!(
            both.matches(&labels),
            case.a.eval(&labels) && case.b.eval(&labels),
            "a.and(b).matches({labels:?}): {show}"
        );
    }
    assert_eq!(a.is_satisfiable(), some_a, "a.is_satisfiable(): {show}");
    assert_eq!(a.is_everything(), all_a, "a.is_everything(): {show}");
    assert_eq!(both.is_satisfiable(), some_both, "a.and(b).is_satisfiable(): {show}");
    assert_eq!(a.intersects(&b), some_both, "a.intersects(b): {show}");
    assert_eq!(a.implies(&b), a_implies_b, "a.implies(b): {show}");
    assert_eq!(a.and_implies(&b, &c), both_imply_c, "a.and_implies(b, c): {show}");
    assert_eq!(both.implies(&c), both_imply_c, "a.and(b).implies(c): {show}");
    match a.witness() {
        Some(w) => assert!(
            case.a.eval(&w) && a.matches(&w),
            "witness {w:?} is not selected: {show}"
        ),
        None => assert!(!some_a, "no witness for a satisfiable selector: {show}"),
    }
    let _ = both.to_string();
}
