//! The HTML report: one self-contained file (inline SVG and `<style>`, no
//! script, no external URL), readable in any browser without JavaScript:
//! the graph of each namespace, its matrix by tier, and the violations with
//! their messages (which say how to fix them).
//!
//! Every text that comes from the input (names, labels, messages) goes
//! through [`escape`]; the markup around it is ours.

use std::fmt::Write as _;

use tierguard::guardrails::Violation;
use tierguard::policy::Direction;

use super::graph::{EdgeStatus, Graph, Layout, NODE_H, NODE_W, NodeKind};
use super::matrix::{Share, TierMatrix};

/// Escapes text for HTML and SVG element content and quoted attribute values.
/// (Five characters; no crate needed for that, and this keeps the rule in one place.)
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #1d232a; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; } h3 { font-size: 1.05em; }
.summary { font-size: 1.1em; }
.ok { color: #17692e; } .bad { color: #b3261e; }
svg.graph { border: 1px solid #d0d7de; background: #fbfcfd; max-width: 100%; height: auto; }
svg .node rect { fill: #eef4fb; stroke: #4a6fa5; stroke-width: 1.5; }
svg .node.peer rect { fill: #f4f4f4; stroke: #8a8a8a; stroke-dasharray: 4 3; }
svg .node.flagged rect { fill: #fdecea; stroke: #b3261e; stroke-width: 2.5; }
svg .node text { font-size: 14px; text-anchor: middle; }
svg .node text.mark { font-size: 11px; fill: #b3261e; }
svg .edge path { fill: none; stroke-width: 2; }
svg .edge.template path { stroke: #2f7d4a; }
svg .edge.violation path { stroke: #b3261e; stroke-width: 2.5; }
svg .edge.half path { stroke-dasharray: 6 4; }
svg .edge-label text { font-size: 12px; text-anchor: middle; }
svg .edge-label.violation text { fill: #b3261e; font-weight: bold; }
svg .edge-label rect.label { fill: #ffffff; opacity: 0.9; }
table.matrix { border-collapse: collapse; margin: 0.5em 0 1.5em; }
table.matrix th, table.matrix td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: center; }
table.matrix th { background: #f3f5f7; }
td.all { background: #dff3e4; } td.some { background: #fff4d6; } td.none { background: #fbe3e1; } td.nopairs { color: #888; }
ul.violations li { margin: 0.4em 0; } .rule { font-weight: bold; font-family: monospace; }
.legend span { margin-right: 1.5em; }
"#;

/// A whole page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n{body}</body>\n</html>\n",
        escape(title),
        escape(title)
    )
}

fn center(layout: &Layout, id: &str) -> Option<(f64, f64)> {
    layout
        .positions
        .get(id)
        .map(|(x, y)| (x + NODE_W / 2.0, y + NODE_H / 2.0))
}

/// The graph as SVG: inline in HTML (`standalone` false) or a file of its own
/// (with the XML namespace, and the styles inside).
pub fn svg(graph: &Graph, layout: &Layout, standalone: bool) -> String {
    let mut out = String::new();
    if standalone {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    let xmlns = if standalone {
        " xmlns=\"http://www.w3.org/2000/svg\""
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<svg class=\"graph\"{xmlns} width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("tier graph of namespace {}", graph.namespace)),
        w = layout.width,
        h = layout.height
    );
    if standalone {
        let _ = writeln!(out, "<style>{STYLE}</style>");
    }
    out.push_str(
        "<defs><marker id=\"arrow-template\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#2f7d4a\"/></marker>\
<marker id=\"arrow-violation\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#b3261e\"/></marker></defs>\n",
    );
    let mut labels = String::new();
    for e in &graph.edges {
        let (Some(a), Some(b)) = (center(layout, &e.from), center(layout, &e.to)) else {
            continue;
        };
        let (status, marker) = match e.status {
            EdgeStatus::Template => ("template", "arrow-template"),
            EdgeStatus::Violation => ("violation", "arrow-violation"),
        };
        let half = if e.open { "" } else { " half" };
        let label = if e.open {
            e.ports.join(", ")
        } else {
            "one side only".to_string()
        };
        let (path, lx, ly) = edge_path(layout, e, a, b);
        let title = std::iter::once(format!("{} -> {}: {label}", e.from, e.to))
            .chain(e.violations.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        let _ = writeln!(
            out,
            "<g class=\"edge {status}{half}\" data-from=\"{}\" data-to=\"{}\" data-ports=\"{}\"><title>{}</title>\
<path d=\"{path}\" marker-end=\"url(#{marker})\"/></g>",
            escape(&e.from),
            escape(&e.to),
            escape(&label),
            escape(&title),
        );
        // Labels go on top of the boxes: drawn after them.
        let width = 7.0 * label.chars().count() as f64 + 10.0;
        let _ = writeln!(
            labels,
            "<g class=\"edge-label {status}\" data-from=\"{}\" data-to=\"{}\"><title>{}</title>\
<rect class=\"label\" x=\"{:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"16\" rx=\"3\"/><text x=\"{lx:.1}\" y=\"{:.1}\">{}</text></g>",
            escape(&e.from),
            escape(&e.to),
            escape(&title),
            lx - width / 2.0,
            ly - 12.0,
            ly,
            escape(&label),
        );
    }
    for n in &graph.nodes {
        let Some((x, y)) = layout.positions.get(&n.id).copied() else {
            continue;
        };
        let (kind, name) = match &n.kind {
            NodeKind::Tier(t) => ("tier", t.as_str()),
            NodeKind::Untiered => ("tier untiered", "untiered"),
            NodeKind::External => ("peer external", "external"),
            NodeKind::Dns => ("peer dns", "dns"),
            NodeKind::Namespace(ns) => ("peer namespace", ns.as_str()),
        };
        let flagged = if n.violations.is_empty() { "" } else { " flagged" };
        let mut marks = Vec::new();
        if !n.missing_default_deny.is_empty() {
            let dirs: Vec<&str> = n
                .missing_default_deny
                .iter()
                .map(|d| match d {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                })
                .collect();
            marks.push(format!("R1: no default-deny ({})", dirs.join(", ")));
        }
        if !n.missing_dns.is_empty() {
            marks.push(format!("R2: no DNS ({})", n.missing_dns.join(", ")));
        }
        let title = std::iter::once(n.label.clone())
            .chain(n.violations.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        let _ = write!(
            out,
            "<g class=\"node {kind}{flagged}\" id=\"node-{}\" data-name=\"{}\"><title>{}</title>\
<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"10\"/>\
<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            escape(&n.id),
            escape(name),
            escape(&title),
            x + NODE_W / 2.0,
            y + if marks.is_empty() { NODE_H / 2.0 + 5.0 } else { 24.0 },
            escape(&n.label),
        );
        for (i, mark) in marks.iter().enumerate() {
            let _ = write!(
                out,
                "<text class=\"mark\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + NODE_W / 2.0,
                y + 42.0 + 14.0 * i as f64,
                escape(mark)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str(&labels);
    out.push_str("</svg>\n");
    out
}

/// The path of an edge, and where its label goes.
fn edge_path(layout: &Layout, e: &super::graph::Edge, a: (f64, f64), b: (f64, f64)) -> (String, f64, f64) {
    if e.from == e.to {
        // a loop over the top of the box
        let (x, y) = (a.0, a.1 - NODE_H / 2.0);
        return (
            format!(
                "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                x - 30.0,
                y,
                x - 50.0,
                y - 60.0,
                x + 50.0,
                y - 60.0,
                x + 30.0,
                y
            ),
            x,
            y - 48.0,
        );
    }
    let forward = b.0 > a.0 + 1.0;
    let backward = b.0 < a.0 - 1.0;
    if let Some(lane) = layout.lanes.get(&(e.from.clone(), e.to.clone())) {
        // Out of the box's side, along the lane, into the other box's side.
        let (sx, tx) = if forward {
            (a.0 + NODE_W / 2.0, b.0 - NODE_W / 2.0)
        } else {
            (a.0 - NODE_W / 2.0, b.0 + NODE_W / 2.0)
        };
        let dir = if forward { 1.0 } else { -1.0 };
        let bend = 40.0 * dir;
        return (
            format!(
                "M{sx:.1},{:.1} C{:.1},{:.1} {:.1},{lane:.1} {:.1},{lane:.1} L{:.1},{lane:.1} C{:.1},{lane:.1} {:.1},{:.1} {tx:.1},{:.1}",
                a.1,
                sx + bend,
                a.1,
                sx + bend,
                sx + 2.0 * bend,
                tx - 2.0 * bend,
                tx - bend,
                tx - bend,
                b.1,
                b.1
            ),
            (sx + tx) / 2.0,
            lane + 4.0,
        );
    }
    let (sx, sy, tx, ty) = if forward {
        (a.0 + NODE_W / 2.0, a.1, b.0 - NODE_W / 2.0, b.1)
    } else if backward {
        (a.0 - NODE_W / 2.0, a.1 + 10.0, b.0 + NODE_W / 2.0, b.1 + 10.0)
    } else if b.1 > a.1 {
        (a.0 + 20.0, a.1 + NODE_H / 2.0, b.0 + 20.0, b.1 - NODE_H / 2.0)
    } else {
        (a.0 - 20.0, a.1 - NODE_H / 2.0, b.0 - 20.0, b.1 + NODE_H / 2.0)
    };
    let (c1x, c2x) = if forward || backward {
        let mid = (sx + tx) / 2.0;
        (mid, mid)
    } else {
        (sx + 60.0, tx + 60.0)
    };
    // A flow and its reverse are bent apart.
    let bend = if backward { 25.0 } else { 0.0 };
    (
        format!(
            "M{sx:.1},{sy:.1} C{c1x:.1},{:.1} {c2x:.1},{:.1} {tx:.1},{ty:.1}",
            sy + bend,
            ty + bend
        ),
        (sx + tx) / 2.0,
        (sy + ty) / 2.0 + bend * 0.75,
    )
}

/// The legend under a graph.
pub fn legend() -> &'static str {
    "<p class=\"legend\"><span class=\"ok\">&#8594; green: allowed, and the template allows it</span>\
<span class=\"bad\">&#8594; red: allowed, but the template does not (R3)</span>\
<span>dashed red: a policy on one side opens it, the other side does not (still R3)</span>\
<span class=\"bad\">red box: no default-deny (R1) or no DNS (R2)</span></p>\n"
}

/// A matrix by tier as a table per port.
pub fn tier_tables(matrices: &[TierMatrix]) -> String {
    let mut out = String::new();
    for m in matrices {
        let _ = writeln!(
            out,
            "<table class=\"matrix\" data-port=\"{}\"><caption>{} (rows: from, columns: to)</caption>",
            escape(&m.port),
            escape(&m.port)
        );
        out.push_str("<tr><th>from \\ to</th>");
        for g in &m.groups {
            let _ = write!(out, "<th scope=\"col\">{}</th>", escape(g));
        }
        out.push_str("</tr>\n");
        for (r, g) in m.groups.iter().enumerate() {
            let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(g));
            for c in 0..m.groups.len() {
                let share = m
                    .cells
                    .get(r)
                    .and_then(|row| row.get(c))
                    .copied()
                    .unwrap_or(Share::NoPairs);
                let class = match share {
                    Share::All => "all",
                    Share::Some => "some",
                    Share::None => "none",
                    Share::NoPairs => "nopairs",
                };
                let _ = write!(out, "<td class=\"{class}\">{}</td>", share.word());
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out
}

/// The violations of one namespace as a list.
pub fn violation_list(namespace: &str, violations: &[Violation], warnings: &[Violation]) -> String {
    let mut out = String::new();
    if violations.is_empty() && warnings.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"ok\">No violations in namespace {}.</p>",
            escape(namespace)
        );
        return out;
    }
    out.push_str("<ul class=\"violations\">\n");
    for v in violations {
        let _ = writeln!(
            out,
            "<li class=\"violation\" data-rule=\"{}\"><span class=\"rule\">{}</span> {}</li>",
            v.rule(),
            v.rule(),
            escape(&v.message)
        );
    }
    for w in warnings {
        let _ = writeln!(
            out,
            "<li class=\"warning\" data-rule=\"{}\"><span class=\"rule\">{} warning</span> {}</li>",
            w.rule(),
            w.rule(),
            escape(&w.message)
        );
    }
    out.push_str("</ul>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        let hostile = r#"<script>alert("x")</script>&'"#;
        let escaped = escape(hostile);
        assert_eq!(escaped, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;");
        assert!(!escaped.contains('<') && !escaped.contains('"'));
    }

    #[test]
    fn a_page_is_self_contained() {
        let html = page("t <b>", "<p>x</p>\n");
        assert!(html.contains("<title>t &lt;b&gt;</title>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
