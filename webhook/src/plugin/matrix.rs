//! `matrix`: who reaches whom, per port, between pods (in the text format of
//! the conformance cases, docs/cases.md: rows are sources, columns
//! destinations, `.` reaches, `X` does not) or between tier groups (`all`,
//! `some` or `none` of the pairs of pods).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tierguard::cluster::{Cluster, PodInfo};
use tierguard::engine::Endpoint;
use tierguard::policy::Protocol;
use tierguard::template::TierTemplate;

/// The matrix of one port between pods.
#[derive(Clone, Debug, Serialize)]
pub struct PodMatrix {
    /// `TCP/8080`
    pub port: String,
    /// `namespace/pod`, sources (rows) and destinations (columns) alike
    pub pods: Vec<String>,
    /// `cells[row][column]`: whether the row's pod reaches the column's
    pub cells: Vec<Vec<bool>>,
}

/// How many of the pairs of two groups connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Share {
    /// every pair
    All,
    /// some pairs, not all
    Some,
    /// no pair
    None,
    /// no pair to judge (a group of one pod, to itself)
    NoPairs,
}

impl Share {
    /// The word in a cell.
    pub fn word(self) -> &'static str {
        match self {
            Share::All => "all",
            Share::Some => "some",
            Share::None => "none",
            Share::NoPairs => "-",
        }
    }
}

/// The matrix of one port between tier groups.
#[derive(Clone, Debug, Serialize)]
pub struct TierMatrix {
    /// `TCP/8080`
    pub port: String,
    /// `namespace/tier` (or `namespace/untiered`)
    pub groups: Vec<String>,
    /// `cells[row][column]`
    pub cells: Vec<Vec<Share>>,
}

/// The pods of `namespaces` (every namespace when empty), by namespace then name.
pub fn pods<'c>(cluster: &'c Cluster, namespaces: &[String]) -> Vec<&'c PodInfo> {
    cluster
        .pods()
        .filter(|p| namespaces.is_empty() || namespaces.contains(&p.namespace))
        .collect()
}

/// The ports to show: the ones asked for, else every container port the pods serve.
pub fn default_ports(pods: &[&PodInfo]) -> Vec<(Protocol, u16)> {
    let mut ports: Vec<(Protocol, u16)> = pods
        .iter()
        .flat_map(|p| p.ports.iter().map(|c| (c.protocol, c.port)))
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The pod matrix of one port.
pub fn pod_matrix(cluster: &Cluster, pods: &[&PodInfo], protocol: Protocol, port: u16) -> PodMatrix {
    let cells = pods
        .iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    cluster
                        .allowed(Endpoint::Pod(from), Endpoint::Pod(to), protocol, port)
                        .allowed()
                })
                .collect()
        })
        .collect();
    PodMatrix {
        port: format!("{protocol}/{port}"),
        pods: pods.iter().map(|p| p.key()).collect(),
        cells,
    }
}

/// The group of a pod: its template tier, else its namespace's, else `untiered`.
pub fn group_of(cluster: &Cluster, template: &TierTemplate, pod: &PodInfo) -> String {
    let namespace_labels = cluster.namespace_labels(&pod.namespace);
    let tier = template.pod_tier(&pod.labels, &namespace_labels);
    format!("{}/{}", pod.namespace, tier.unwrap_or("untiered"))
}

/// The groups of `pods`, in the template's tier order within each namespace.
fn groups<'p>(cluster: &Cluster, template: &TierTemplate, pods: &[&'p PodInfo]) -> Vec<(String, Vec<&'p PodInfo>)> {
    let order: BTreeMap<&str, usize> = template.tier_names().enumerate().map(|(i, t)| (t, i)).collect();
    let mut map: BTreeMap<(String, usize, String), Vec<&PodInfo>> = BTreeMap::new();
    for pod in pods {
        let group = group_of(cluster, template, pod);
        let tier = group.rsplit('/').next().unwrap_or_default();
        let rank = order.get(tier).copied().unwrap_or(usize::MAX);
        map.entry((pod.namespace.clone(), rank, group)).or_default().push(pod);
    }
    map.into_iter().map(|((_, _, g), p)| (g, p)).collect()
}

/// The tier matrix of one port.
pub fn tier_matrix(
    cluster: &Cluster,
    template: &TierTemplate,
    pods: &[&PodInfo],
    protocol: Protocol,
    port: u16,
) -> TierMatrix {
    let groups = groups(cluster, template, pods);
    let cells = groups
        .iter()
        .map(|(_, froms)| {
            groups
                .iter()
                .map(|(_, tos)| {
                    let (mut yes, mut no) = (0usize, 0usize);
                    for from in froms {
                        for to in tos {
                            if from.namespace == to.namespace && from.name == to.name {
                                continue;
                            }
                            if cluster
                                .allowed(Endpoint::Pod(from), Endpoint::Pod(to), protocol, port)
                                .allowed()
                            {
                                yes += 1;
                            } else {
                                no += 1;
                            }
                        }
                    }
                    match (yes, no) {
                        (0, 0) => Share::NoPairs,
                        (_, 0) => Share::All,
                        (0, _) => Share::None,
                        _ => Share::Some,
                    }
                })
                .collect()
        })
        .collect();
    TierMatrix {
        port: format!("{protocol}/{port}"),
        groups: groups.into_iter().map(|(g, _)| g).collect(),
        cells,
    }
}

fn grid(out: &mut String, title: &str, names: &[String], cell: &dyn Fn(usize, usize) -> &'static str) {
    let _ = writeln!(out, "{title}");
    let first = names.iter().map(String::len).max().unwrap_or(1).max(1);
    let _ = write!(out, "{:<first$}", "-");
    for n in names {
        let _ = write!(out, " {n}");
    }
    out.push('\n');
    for (r, row) in names.iter().enumerate() {
        let _ = write!(out, "{row:<first$}");
        for (c, col) in names.iter().enumerate() {
            let text = cell(r, c);
            // Centre the cell under its column name, as in the case files.
            let width = col.len();
            let left = width.saturating_sub(text.len()) / 2;
            let _ = write!(out, " {:left$}{text:<rest$}", "", rest = width - left);
        }
        out.push('\n');
    }
}

/// The pod matrices as text, one block per port.
pub fn render_pod_text(matrices: &[PodMatrix]) -> String {
    let mut out = String::new();
    for (i, m) in matrices.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        grid(&mut out, &m.port, &m.pods, &|r, c| {
            if m.cells.get(r).and_then(|row| row.get(c)).copied().unwrap_or(false) {
                "."
            } else {
                "X"
            }
        });
    }
    trim_lines(&out)
}

/// The tier matrices as text, one block per port.
pub fn render_tier_text(matrices: &[TierMatrix]) -> String {
    let mut out = String::new();
    for (i, m) in matrices.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        grid(&mut out, &m.port, &m.groups, &|r, c| {
            m.cells
                .get(r)
                .and_then(|row| row.get(c))
                .copied()
                .unwrap_or(Share::NoPairs)
                .word()
        });
    }
    trim_lines(&out)
}

fn trim_lines(text: &str) -> String {
    text.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}
