//! What every rule reads besides the policies themselves: the template, the
//! namespaces of the state and the DNS target, prepared once per evaluation.

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use crate::labels::Labels;
use crate::selector::Selector;
use crate::template::TierTemplate;

use super::dns::DnsTarget;
use super::prepared::StateView;
use super::state::{PolicyState, effective_labels};
use super::types::PeerTier;

/// What a namespace's pods are as peers (docs/guardrails.md, "R3 template flows").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerNamespace {
    /// not governed: its pods are untiered
    Ungoverned,
    /// governed and labelled with a template tier: its pods are of that tier
    Tier(String),
    /// governed, with a tier label naming no template tier: its pods are untiered
    UnknownTier,
    /// governed, no tier label: its pods are of the tiers their own labels give
    Unlabelled,
}

/// A namespace known to the state, with its effective labels.
pub(crate) struct KnownNamespace<'a> {
    /// its labels
    pub labels: Cow<'a, Labels>,
    /// what its pods are as peers
    pub kind: PeerNamespace,
}

/// Shared, read-only inputs of one evaluation.
pub(crate) struct Context<'a> {
    /// the template
    pub template: &'a TierTemplate,
    /// the state before the change
    pub state: &'a PolicyState,
    /// the same, with the policies parsed (once, when prepared)
    pub view: StateView<'a>,
    /// `tier In [t]` for each template tier, in template order
    pub tier_selectors: Vec<(String, Selector)>,
    /// `tier NotIn [every tier]`
    pub untiered: Selector,
    /// what "reaches DNS" means
    pub dns: DnsTarget,
    /// the namespace being evaluated, always known even when the state lacks it
    focus: String,
    /// every namespace a namespaceSelector can match; built on first use
    /// because most policies never need it
    known: OnceCell<Vec<KnownNamespace<'a>>>,
    /// tiers a pod selector may select by pod labels; policies of a namespace
    /// repeat the same peers, and each answer costs several intersections
    label_tiers: RefCell<HashMap<Selector, Vec<PeerTier>>>,
}

impl<'a> Context<'a> {
    /// Prepares an evaluation centred on `focus`.
    pub fn new(template: &'a TierTemplate, view: StateView<'a>, focus: &str) -> Self {
        let state = view.state;
        Context {
            template,
            state,
            view,
            tier_selectors: template
                .tier_names()
                .map(|t| (t.to_string(), template.tier_selector(t)))
                .collect(),
            untiered: template.untiered_selector(),
            dns: DnsTarget::new(template, state),
            focus: focus.to_string(),
            known: OnceCell::new(),
            label_tiers: RefCell::new(HashMap::new()),
        }
    }

    /// What the pods of a namespace with these labels are as peers.
    pub fn peer_namespace(&self, labels: &Labels) -> PeerNamespace {
        if !self.template.governs(labels) {
            return PeerNamespace::Ungoverned;
        }
        match labels.get(&self.template.tier_label) {
            None => PeerNamespace::Unlabelled,
            Some(t) if self.template.is_tier(t) => PeerNamespace::Tier(t.clone()),
            Some(_) => PeerNamespace::UnknownTier,
        }
    }

    /// The template tier a namespace is labelled with; an unknown value counts as none.
    pub fn namespace_tier<'l>(&self, labels: &'l Labels) -> Option<&'l str> {
        labels
            .get(&self.template.tier_label)
            .map(String::as_str)
            .filter(|t| self.template.is_tier(t))
    }

    /// The tiers pods chosen by `pods` may be of by their own tier label (in
    /// a governed namespace without a template tier): each template tier the
    /// selector is satisfiable with, and untiered when it is satisfiable with
    /// a pod that has no template tier.
    pub fn pod_label_tiers(&self, pods: &Selector) -> Vec<PeerTier> {
        if let Some(hit) = self.label_tiers.borrow().get(pods) {
            return hit.clone();
        }
        let mut tiers: Vec<PeerTier> = self
            .tier_selectors
            .iter()
            .filter(|(_, sel)| sel.intersects(pods))
            .map(|(t, _)| PeerTier::Tier(t.clone()))
            .collect();
        if self.untiered.intersects(pods) {
            tiers.push(PeerTier::Untiered);
        }
        self.label_tiers.borrow_mut().insert(pods.clone(), tiers.clone());
        tiers
    }

    /// Namespaces of the state (namespace objects and namespaces holding
    /// policies) plus the focus namespace, which exists since it is being changed.
    pub fn known_namespaces(&self) -> &[KnownNamespace<'a>] {
        self.known.get_or_init(|| {
            let named = self.view.namespace_labels();
            let focus_at = named.binary_search_by(|(n, _)| (*n).cmp(self.focus.as_str())).err();
            let mut all: Vec<Cow<'a, Labels>> = named.into_iter().map(|(_, labels)| labels).collect();
            // In name order, like the state's namespaces.
            if let Some(at) = focus_at {
                all.insert(at, Cow::Owned(effective_labels(self.state, &self.focus)));
            }
            all.into_iter()
                .map(|labels| {
                    let kind = self.peer_namespace(&labels);
                    KnownNamespace { labels, kind }
                })
                .collect()
        })
    }
}
