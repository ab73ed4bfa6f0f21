//! Graphviz DOT output of a stage graph.

use std::fmt::Write;

use super::{StageGraph, StageId};

impl StageGraph {
    /// Renders the graph in Graphviz DOT, edges pointing from a need to the stage that needs it.
    /// `attrs` gives extra attributes per stage (`label`, `shape`, ...).
    ///
    /// ```
    /// use gitops_core::graph::StageGraph;
    /// let g = StageGraph::from_needs([("test", vec![]), ("build", vec!["test"])]).unwrap();
    /// let dot = g.to_dot("ci", |_| vec![]);
    /// assert!(dot.contains("\"test\" -> \"build\";"));
    /// ```
    pub fn to_dot(
        &self,
        name: &str,
        attrs: impl Fn(StageId) -> Vec<(&'static str, String)>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(name));
        out.push_str("  rankdir=LR;\n  node [shape=box, style=rounded];\n");
        for s in self.stages() {
            let extra: Vec<String> = attrs(s)
                .into_iter()
                .map(|(k, v)| format!("{k}={}", quote(&v)))
                .collect();
            if extra.is_empty() {
                let _ = writeln!(out, "  {};", quote(self.id(s)));
            } else {
                let _ = writeln!(out, "  {} [{}];", quote(self.id(s)), extra.join(", "));
            }
        }
        for s in self.stages() {
            let mut needs: Vec<StageId> = self.needs(s).collect();
            needs.sort();
            for n in needs {
                let _ = writeln!(out, "  {} -> {};", quote(self.id(n)), quote(self.id(s)));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
