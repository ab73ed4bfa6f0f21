//! A run's stage graph drawn on the server as an inline SVG: a column per depth (a stage sits
//! one column right of its deepest need), an edge from each need to the stage that needs it,
//! each stage a link to its part of the page.

use std::collections::HashMap;

use maud::{Markup, html};

use super::stages::StageView;

const COLUMN: usize = 184;
const NODE_WIDTH: usize = 160;
const NODE_HEIGHT: usize = 34;
const ROW: usize = 46;
const PAD: usize = 4;
/// The characters of a stage name shown in its box; the whole name is in its tooltip.
const NAME_CHARS: usize = 17;

/// Each stage's column: the length of the longest chain of needs leading to it.
fn depths(stages: &[StageView]) -> Vec<usize> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut depth = vec![0; stages.len()];
    // Longest paths by relaxation; a graph validated as acyclic settles in fewer rounds than it
    // has stages, and the bound keeps a cycle (a config read without validation) from looping.
    for _ in 0..stages.len() {
        let mut changed = false;
        for (i, stage) in stages.iter().enumerate() {
            for need in &stage.needs {
                if let Some(&j) = index.get(need.as_str()) {
                    if depth[j] + 1 > depth[i] && depth[j] < stages.len() {
                        depth[i] = depth[j] + 1;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

fn short_name(name: &str) -> String {
    if name.chars().count() <= NAME_CHARS {
        name.to_owned()
    } else {
        let mut s: String = name.chars().take(NAME_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// The graph of `stages`, or nothing when there are none.
pub fn graph(stages: &[StageView]) -> Markup {
    if stages.is_empty() {
        return html! {};
    }
    let depth = depths(stages);
    let mut rows_in = vec![0usize; stages.len() + 1];
    let mut at = Vec::with_capacity(stages.len());
    for &d in &depth {
        at.push((d, rows_in[d]));
        rows_in[d] += 1;
    }
    let columns = depth.iter().max().copied().unwrap_or(0) + 1;
    let rows = rows_in.iter().max().copied().unwrap_or(1);
    let width = (columns - 1) * COLUMN + NODE_WIDTH + 2 * PAD;
    let height = (rows - 1) * ROW + NODE_HEIGHT + 2 * PAD;
    let x = |col: usize| PAD + col * COLUMN;
    let y = |row: usize| PAD + row * ROW;
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        for need in &stage.needs {
            if let Some(&j) = index.get(need.as_str()) {
                let (x1, y1) = (x(at[j].0) + NODE_WIDTH, y(at[j].1) + NODE_HEIGHT / 2);
                let (x2, y2) = (x(at[i].0), y(at[i].1) + NODE_HEIGHT / 2);
                let mid = (x1 + x2) / 2;
                edges.push(format!("M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}"));
            }
        }
    }
    html! {
        div.graph {
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Stage graph"
                width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } {
                @for d in &edges { path.edge d=(d) {} }
                @for (i, stage) in stages.iter().enumerate() {
                    a href={ "#stage-" (stage.id) } {
                        g class={ "node " (stage.state.class()) } {
                            title { (stage.id) ": " (stage.state.label()) }
                            rect x=(x(at[i].0)) y=(y(at[i].1)) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="6" {}
                            text x=(x(at[i].0) + 10) y=(y(at[i].1) + NODE_HEIGHT / 2 + 5) {
                                (stage.state.symbol()) " " (short_name(&stage.id))
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::pages::view::State;

    fn stage(id: &str, needs: &[&str]) -> StageView {
        StageView {
            id: id.to_owned(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            state: State::Pending,
            report: None,
        }
    }

    #[test]
    fn a_stage_sits_right_of_its_deepest_need() {
        let stages = [
            stage("test", &[]),
            stage("build", &["test"]),
            stage("lint", &[]),
            stage("deploy", &["build", "lint"]),
            stage("odd", &["missing"]),
        ];
        assert_eq!(depths(&stages), [0, 1, 0, 2, 0]);
        // A cycle (never validated) ends.
        let cycle = [stage("a", &["b"]), stage("b", &["a"])];
        assert_eq!(depths(&cycle).len(), 2);
        let svg = graph(&stages).into_string();
        assert_eq!(svg.matches("<path").count(), 3);
        assert!(svg.contains("href=\"#stage-deploy\""));
    }
}
