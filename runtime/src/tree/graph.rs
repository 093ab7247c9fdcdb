//! Drawing a tree: Mermaid (renders in GitHub and most wikis) and Graphviz dot (and SVG through
//! Graphviz). Nodes show their kind, edges the keys; timeout, invalid-key and failed-transfer
//! edges are dashed. Drawn from the lowered tree, so defaults (a gather that replays itself on
//! silence) appear as edges too.

use super::lowered::{LoweredDestination, LoweredNode, LoweredTree};
use std::fmt::Write as _;

/// One edge: from, to, label, dashed.
type Edge = (String, String, String, bool);

fn edges(tree: &LoweredTree) -> Vec<Edge> {
    let mut edges = Vec::new();
    for (name, node) in &tree.nodes {
        match node {
            LoweredNode::Gather {
                keys,
                timeout_node,
                invalid_node,
                ..
            } => {
                for (key, to) in keys {
                    edges.push((name.clone(), to.clone(), key.clone(), false));
                }
                edges.push((name.clone(), timeout_node.clone(), "timeout".into(), true));
                edges.push((name.clone(), invalid_node.clone(), "invalid".into(), true));
            }
            LoweredNode::Play { next, .. } => {
                edges.push((name.clone(), next.clone(), String::new(), false))
            }
            LoweredNode::Transfer {
                failed_node: Some(failed),
                ..
            } => {
                edges.push((name.clone(), failed.clone(), "failed".into(), true));
            }
            _ => {}
        }
    }
    edges
}

fn kind(node: &LoweredNode) -> String {
    match node {
        LoweredNode::Gather { .. } => "gather".into(),
        LoweredNode::Play { .. } => "play".into(),
        LoweredNode::Transfer { to, .. } => match to {
            LoweredDestination::Uri(u) => format!("transfer to {u}"),
            LoweredDestination::External(n) => format!("transfer to {n}"),
            LoweredDestination::Internal(e) => format!("transfer to ext. {e}"),
            LoweredDestination::Ivr(i) => format!("enter IVR {i}"),
            LoweredDestination::Default => "transfer".into(),
        },
        LoweredNode::Hangup { .. } => "hangup".into(),
        LoweredNode::Suppress { .. } => "suppress (do-not-call)".into(),
        LoweredNode::Return { .. } => "return".into(),
    }
}

fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The tree as a Mermaid flowchart.
pub fn mermaid(tree: &LoweredTree) -> String {
    let ids: std::collections::BTreeMap<&String, String> = tree
        .nodes
        .keys()
        .enumerate()
        .map(|(i, n)| (n, format!("n{i}")))
        .collect();
    let mut out = format!("flowchart TD\n    %% {}\n", tree.name.replace('\n', " "));
    for (name, node) in &tree.nodes {
        let label = format!("{}<br/><i>{}</i>", name, kind(node)).replace('"', "#quot;");
        let id = &ids[name];
        let shape = match node {
            LoweredNode::Gather { .. } | LoweredNode::Play { .. } => format!("{id}[\"{label}\"]"),
            _ => format!("{id}([\"{label}\"])"),
        };
        let _ = writeln!(out, "    {shape}");
    }
    if let Some(start) = ids.get(&tree.start) {
        let _ = writeln!(out, "    start(( )) --> {start}");
    }
    for (from, to, label, dashed) in edges(tree) {
        let (Some(from), Some(to)) = (ids.get(&from), ids.get(&to)) else {
            continue;
        };
        let label = label.replace('"', "#quot;");
        let _ = match (dashed, label.is_empty()) {
            (true, _) => writeln!(out, "    {from} -. \"{label}\" .-> {to}"),
            (false, true) => writeln!(out, "    {from} --> {to}"),
            (false, false) => writeln!(out, "    {from} -- \"{label}\" --> {to}"),
        };
    }
    out
}

/// The tree as a Graphviz digraph.
pub fn dot(tree: &LoweredTree) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\"];\n  \"__start\" [shape=point];\n  \"__start\" -> \"{}\";\n",
        quote(&tree.name),
        quote(&tree.start)
    );
    for (name, node) in &tree.nodes {
        let shape = match node {
            LoweredNode::Gather { .. } | LoweredNode::Play { .. } => "box",
            _ => "oval",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n({})\", shape={shape}];",
            quote(name),
            quote(name),
            quote(&kind(node))
        );
    }
    for (from, to, label, dashed) in edges(tree) {
        let style = if dashed { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\"{style}];",
            quote(&from),
            quote(&to),
            quote(&label)
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{ValidateOptions, check_text};

    #[test]
    fn seed_tree_draws_keys_and_dashed_timeouts() {
        let text = include_str!("../../../examples/plumber-qualifier/plumber-qualifier.json");
        let tree = check_text("seed.json", text, &ValidateOptions::default())
            .lowered
            .unwrap();
        let m = mermaid(&tree);
        assert!(m.starts_with("flowchart TD"));
        let welcome = m
            .lines()
            .find(|l| l.contains("[\"welcome<br/>"))
            .unwrap()
            .trim()
            .split('[')
            .next()
            .unwrap()
            .to_owned();
        let license = m
            .lines()
            .find(|l| l.contains("[\"has_license<br/>"))
            .unwrap()
            .trim()
            .split('[')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            m.contains(&format!("{welcome} -- \"1\" --> {license}")),
            "{m}"
        );
        assert!(
            m.contains(&format!("{welcome} -. \"timeout\" .-> {welcome}")),
            "{m}"
        );
        let d = dot(&tree);
        assert!(
            d.contains("\"welcome\" -> \"has_license\" [label=\"1\"];"),
            "{d}"
        );
        assert!(
            d.contains("\"has_license\" -> \"has_license\" [label=\"timeout\", style=dashed];"),
            "{d}"
        );
        assert!(
            d.contains("\"dnc\" [label=\"dnc\\n(suppress (do-not-call))\", shape=oval];"),
            "{d}"
        );
    }
}
