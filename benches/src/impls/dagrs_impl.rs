//! dagrs: every node starts at once and waits on the channels of its inputs, then signals its
//! outputs; that is how it orders stages.

use std::sync::Arc;

use dagrs::{
    Action, Content, DefaultNode, EnvVar, Graph, InChannels, Node, NodeTable, OutChannels, Output,
};

use super::{Leftover, Prepared};

struct Noop;

#[dagrs::async_trait::async_trait]
impl Action for Noop {
    async fn run(
        &self,
        input: &mut InChannels,
        output: &mut OutChannels,
        _env: Arc<EnvVar>,
    ) -> Output {
        let _ = input.map(|c| c.is_ok()).await;
        output.broadcast(Content::new(())).await;
        Output::empty()
    }
}

pub(super) async fn prepare(needs: &[Vec<u32>]) -> Prepared {
    let mut table = NodeTable::default();
    let mut graph = Graph::new();
    let mut ids = Vec::with_capacity(needs.len());
    for i in 0..needs.len() {
        let node = DefaultNode::with_action(format!("s{i}"), Noop, &mut table);
        ids.push(node.id());
        graph
            .add_node(node)
            .unwrap_or_else(|e| panic!("dagrs: {e:?}"));
    }
    let mut dependents = vec![Vec::new(); needs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &d in ns {
            dependents[d as usize].push(ids[i]);
        }
    }
    for (i, ds) in dependents.into_iter().enumerate() {
        if !ds.is_empty() {
            graph
                .add_edge(ids[i], ds)
                .unwrap_or_else(|e| panic!("dagrs: {e:?}"));
        }
    }
    Box::new(move || {
        Box::pin(async move {
            let mut graph = graph;
            graph
                .async_start()
                .await
                .unwrap_or_else(|e| panic!("dagrs: {e:?}"));
            Box::new(graph) as Leftover
        })
    })
}
