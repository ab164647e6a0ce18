//! Label selectors as sets of label maps, with the algebra the guardrails
//! need: evaluation, intersection, satisfiability and implication.
//!
//! A selector constrains each key it names independently, so it is a product
//! of per-key sets. Each per-key set is a subset of "every possible value,
//! plus absent". Every operator maps to such a set:
//!
//! | requirement            | allowed values of the key            |
//! |------------------------|--------------------------------------|
//! | `k: v` / `k In [vs]`   | `vs`                                 |
//! | `k NotIn [vs]`         | every value but `vs`, or absent      |
//! | `k Exists`             | every value                          |
//! | `k DoesNotExist`       | absent only                          |
//!
//! The family "finite set" / "all but a finite set", each with or without
//! absent, is closed under intersection, so a selector normalises to one such
//! set per key. Because the value space is infinite, implication and
//! satisfiability are decided exactly on that normal form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::labels::{self, Labels};

/// Values a key may take: a finite set, or everything but a finite set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Values {
    Only(BTreeSet<String>),
    AllBut(BTreeSet<String>),
}

/// The allowed states of one key: which values, and whether absence is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyConstraint {
    absent: bool,
    values: Values,
}

impl KeyConstraint {
    fn unconstrained() -> Self {
        KeyConstraint {
            absent: true,
            values: Values::AllBut(BTreeSet::new()),
        }
    }

    fn is_unconstrained(&self) -> bool {
        self.absent && matches!(&self.values, Values::AllBut(e) if e.is_empty())
    }

    fn allows(&self, value: Option<&str>) -> bool {
        match value {
            None => self.absent,
            Some(v) => match &self.values {
                Values::Only(set) => set.contains(v),
                Values::AllBut(set) => !set.contains(v),
            },
        }
    }

    fn is_empty(&self) -> bool {
        !self.absent && matches!(&self.values, Values::Only(s) if s.is_empty())
    }

    /// Whether `self.intersect(other)` is non-empty, without building it.
    fn meets(&self, other: &KeyConstraint) -> bool {
        if self.absent && other.absent {
            return true;
        }
        match (&self.values, &other.values) {
            (Values::Only(a), Values::Only(b)) => !a.is_disjoint(b),
            (Values::Only(a), Values::AllBut(e)) | (Values::AllBut(e), Values::Only(a)) => {
                a.iter().any(|v| !e.contains(v))
            }
            (Values::AllBut(_), Values::AllBut(_)) => true,
        }
    }

    fn intersect(&self, other: &KeyConstraint) -> KeyConstraint {
        let values = match (&self.values, &other.values) {
            (Values::Only(a), Values::Only(b)) => Values::Only(a.intersection(b).cloned().collect()),
            (Values::Only(a), Values::AllBut(e)) | (Values::AllBut(e), Values::Only(a)) => {
                Values::Only(a.difference(e).cloned().collect())
            }
            (Values::AllBut(a), Values::AllBut(b)) => Values::AllBut(a.union(b).cloned().collect()),
        };
        KeyConstraint {
            absent: self.absent && other.absent,
            values,
        }
    }

    /// Whether a value (not absence) is allowed.
    fn allows_value(&self, v: &str) -> bool {
        match &self.values {
            Values::Only(set) => set.contains(v),
            Values::AllBut(set) => !set.contains(v),
        }
    }

    /// Whether `self.intersect(with).is_subset_of(other)`, without building
    /// the intersection.
    fn meet_is_subset_of(&self, with: &KeyConstraint, other: &KeyConstraint) -> bool {
        if self.absent && with.absent && !other.absent {
            return false;
        }
        match (&self.values, &with.values) {
            (Values::Only(a), Values::Only(b)) => a.iter().filter(|v| b.contains(*v)).all(|v| other.allows_value(v)),
            (Values::Only(a), Values::AllBut(e)) | (Values::AllBut(e), Values::Only(a)) => {
                a.iter().filter(|v| !e.contains(*v)).all(|v| other.allows_value(v))
            }
            // An infinite set is never inside a finite one.
            (Values::AllBut(a), Values::AllBut(b)) => match &other.values {
                Values::Only(_) => false,
                Values::AllBut(e) => e.iter().all(|v| a.contains(v) || b.contains(v)),
            },
        }
    }

    fn is_subset_of(&self, other: &KeyConstraint) -> bool {
        if self.absent && !other.absent {
            return false;
        }
        match (&self.values, &other.values) {
            (Values::Only(a), Values::Only(b)) => a.is_subset(b),
            (Values::Only(a), Values::AllBut(e)) => a.is_disjoint(e),
            // An infinite set is never inside a finite one.
            (Values::AllBut(_), Values::Only(_)) => false,
            (Values::AllBut(a), Values::AllBut(b)) => b.is_subset(a),
        }
    }

    /// A value this constraint allows, preferring presence; `None` = absent.
    fn witness(&self) -> Option<Option<String>> {
        match &self.values {
            Values::Only(set) => match set.iter().next() {
                Some(v) => Some(Some(v.clone())),
                None if self.absent => Some(None),
                None => None,
            },
            Values::AllBut(excluded) => Some(Some(fresh_value(excluded))),
        }
    }
}

/// A label value not in `excluded`.
fn fresh_value(excluded: &BTreeSet<String>) -> String {
    (0..)
        .map(|i| format!("v{i}"))
        .find(|candidate| !excluded.contains(candidate))
        .unwrap_or_default()
}

/// A label selector in normal form: one constraint per named key, ANDed.
/// Keys it does not name are unconstrained.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    keys: BTreeMap<String, KeyConstraint>,
}

/// A selector that breaks the Kubernetes validation rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SelectorError {
    /// The field inside the selector, e.g. `matchExpressions[1].operator`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The selector operators Kubernetes accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// value in the list
    In,
    /// absent, or value not in the list
    NotIn,
    /// present with any value
    Exists,
    /// absent
    DoesNotExist,
}

impl Operator {
    /// Parses the operator as the API spells it (case-sensitive).
    pub fn parse(s: &str) -> Option<Operator> {
        match s {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            _ => None,
        }
    }
}

impl Selector {
    /// The selector that selects every label set (`{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// A selector that selects nothing at all.
    pub fn nothing() -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(
            String::new(),
            KeyConstraint {
                absent: false,
                values: Values::Only(BTreeSet::new()),
            },
        );
        Selector { keys }
    }

    /// Selects label sets that carry every one of `labels` (like `matchLabels`).
    pub fn from_labels(labels: &Labels) -> Self {
        let mut sel = Selector::everything();
        for (k, v) in labels {
            sel.constrain(k, Operator::In, std::slice::from_ref(v));
        }
        sel
    }

    /// Builds a selector from one requirement.
    pub fn requirement(key: &str, op: Operator, values: &[String]) -> Self {
        let mut sel = Selector::everything();
        sel.constrain(key, op, values);
        sel
    }

    /// Parses and validates a Kubernetes `LabelSelector`.
    ///
    /// ```
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    /// use tierguard::selector::Selector;
    /// let ls: LabelSelector = serde_json::from_value(serde_json::json!({
    ///     "matchLabels": {"tier": "data"},
    ///     "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]
    /// })).unwrap();
    /// let sel = Selector::from_k8s(&ls).unwrap();
    /// let pod = [("tier".to_string(), "data".to_string())].into_iter().collect();
    /// assert!(sel.matches(&pod));
    /// ```
    pub fn from_k8s(selector: &LabelSelector) -> Result<Selector, Vec<SelectorError>> {
        let mut sel = Selector::everything();
        let mut errors = Vec::new();
        if let Some(match_labels) = &selector.match_labels {
            for (k, v) in match_labels {
                let field = || format!("matchLabels.{k}");
                if let Err(message) = labels::validate_key(k) {
                    errors.push(SelectorError {
                        field: field(),
                        message,
                    });
                }
                if let Err(message) = labels::validate_value(v) {
                    errors.push(SelectorError {
                        field: field(),
                        message,
                    });
                }
                sel.constrain(k, Operator::In, std::slice::from_ref(v));
            }
        }
        for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
            match parse_requirement(req, i) {
                Ok((op, values)) => sel.constrain(&req.key, op, values),
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() { Ok(sel) } else { Err(errors) }
    }

    /// Adds one requirement (AND).
    pub fn constrain(&mut self, key: &str, op: Operator, values: &[String]) {
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let constraint = match op {
            Operator::In => KeyConstraint {
                absent: false,
                values: Values::Only(set),
            },
            Operator::NotIn => KeyConstraint {
                absent: true,
                values: Values::AllBut(set),
            },
            Operator::Exists => KeyConstraint {
                absent: false,
                values: Values::AllBut(BTreeSet::new()),
            },
            Operator::DoesNotExist => KeyConstraint {
                absent: true,
                values: Values::Only(BTreeSet::new()),
            },
        };
        let merged = match self.keys.get(key) {
            Some(existing) => existing.intersect(&constraint),
            None => constraint,
        };
        self.keys.insert(key.to_string(), merged);
    }

    /// Whether this selector selects `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.keys
            .iter()
            .all(|(k, c)| c.allows(labels.get(k).map(String::as_str)))
    }

    /// Whether this is `{}`, selecting every label set.
    pub fn is_everything(&self) -> bool {
        self.keys.values().all(KeyConstraint::is_unconstrained)
    }

    /// The selector that selects exactly what both select.
    pub fn and(&self, other: &Selector) -> Selector {
        let mut keys = self.keys.clone();
        for (k, c) in &other.keys {
            let merged = match keys.get(k) {
                Some(existing) => existing.intersect(c),
                None => c.clone(),
            };
            keys.insert(k.clone(), merged);
        }
        Selector { keys }
    }

    /// Whether some label set is selected.
    pub fn is_satisfiable(&self) -> bool {
        !self.keys.values().any(KeyConstraint::is_empty)
    }

    /// Whether some label set is selected by both (`self.and(other)` is
    /// satisfiable), decided key by key without building the intersection.
    pub fn intersects(&self, other: &Selector) -> bool {
        let ours = self.keys.iter().all(|(k, c)| match other.keys.get(k) {
            Some(theirs) => c.meets(theirs),
            None => !c.is_empty(),
        });
        ours && other
            .keys
            .iter()
            .all(|(k, c)| self.keys.contains_key(k) || !c.is_empty())
    }

    /// Whether every label set this selects, `other` selects too.
    pub fn implies(&self, other: &Selector) -> bool {
        if !self.is_satisfiable() {
            return true;
        }
        other.keys.iter().all(|(k, theirs)| match self.keys.get(k) {
            Some(ours) => ours.is_subset_of(theirs),
            None => KeyConstraint::unconstrained().is_subset_of(theirs),
        })
    }

    /// Whether every label set both this and `with` select, `other` selects
    /// too: `self.and(with).implies(other)`, without building the intersection.
    pub fn and_implies(&self, with: &Selector, other: &Selector) -> bool {
        let keywise = other
            .keys
            .iter()
            .all(|(k, theirs)| match (self.keys.get(k), with.keys.get(k)) {
                (Some(a), Some(b)) => a.meet_is_subset_of(b, theirs),
                (Some(c), None) | (None, Some(c)) => c.is_subset_of(theirs),
                (None, None) => KeyConstraint::unconstrained().is_subset_of(theirs),
            });
        // An empty intersection implies everything.
        keywise || !self.intersects(with)
    }

    /// A label set this selector selects, if any.
    pub fn witness(&self) -> Option<Labels> {
        let mut out = Labels::new();
        for (k, c) in &self.keys {
            if let Some(v) = c.witness()? {
                out.insert(k.clone(), v);
            }
        }
        Some(out)
    }

    /// Whether the selector constrains `key` at all.
    pub fn mentions(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|c| !c.is_unconstrained())
    }

    /// The single value `key` must have, when the selector pins it to one.
    pub fn pinned_value(&self, key: &str) -> Option<&str> {
        match self.keys.get(key) {
            Some(KeyConstraint {
                absent: false,
                values: Values::Only(set),
            }) if set.len() == 1 => set.iter().next().map(String::as_str),
            _ => None,
        }
    }
}

fn parse_requirement(
    req: &LabelSelectorRequirement,
    index: usize,
) -> Result<(Operator, &[String]), Vec<SelectorError>> {
    // Formatted only for an error.
    let base = format_args!("matchExpressions[{index}]");
    let mut errors = Vec::new();
    if let Err(message) = labels::validate_key(&req.key) {
        errors.push(SelectorError {
            field: format!("{base}.key"),
            message,
        });
    }
    let values: &[String] = req.values.as_deref().unwrap_or_default();
    let op = Operator::parse(&req.operator);
    match op {
        None => errors.push(SelectorError {
            field: format!("{base}.operator"),
            message: format!(
                "{:?} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)",
                req.operator
            ),
        }),
        Some(Operator::In | Operator::NotIn) if values.is_empty() => errors.push(SelectorError {
            field: format!("{base}.values"),
            message: format!("must be non-empty when operator is {}", req.operator),
        }),
        Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => errors.push(SelectorError {
            field: format!("{base}.values"),
            message: format!("must be empty when operator is {}", req.operator),
        }),
        Some(_) => {}
    }
    for (j, v) in values.iter().enumerate() {
        if let Err(message) = labels::validate_value(v) {
            errors.push(SelectorError {
                field: format!("{base}.values[{j}]"),
                message,
            });
        }
    }
    match op {
        Some(op) if errors.is_empty() => Ok((op, values)),
        _ => Err(errors),
    }
}

impl fmt::Display for Selector {
    /// Kubernetes' selector string syntax: `tier=data,app notin (web)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_satisfiable() {
            return f.write_str("(selects nothing)");
        }
        let mut parts = Vec::new();
        for (k, c) in &self.keys {
            let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
            match (&c.values, c.absent) {
                (Values::AllBut(e), true) if e.is_empty() => {}
                (Values::AllBut(e), false) if e.is_empty() => parts.push(k.clone()),
                (Values::Only(s), true) if s.is_empty() => parts.push(format!("!{k}")),
                (Values::Only(s), false) if s.len() == 1 => parts.push(format!("{k}={}", join(s))),
                (Values::Only(s), false) => parts.push(format!("{k} in ({})", join(s))),
                (Values::Only(s), true) => parts.push(format!("({k} in ({}) or !{k})", join(s))),
                (Values::AllBut(e), true) => parts.push(format!("{k} notin ({})", join(e))),
                (Values::AllBut(e), false) => parts.push(format!("{k},{k} notin ({})", join(e))),
            }
        }
        if parts.is_empty() {
            write!(f, "{{}}")
        } else {
            write!(f, "{}", parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests;
