//! The expression context of a stage at run time: the event, `env`, and the outputs and
//! results of the stages it needs.

use std::collections::BTreeMap;

use super::progress::Progress;
use crate::config::Stage;
use crate::event::GitEvent;
use crate::expr::{Context, StageStatus, Template, Value, event_value};
use crate::graph::StageGraph;

pub(super) struct RuntimeContext<'a> {
    pub event: &'a GitEvent,
    pub env: &'a BTreeMap<String, String>,
    pub stage: &'a Stage,
    pub graph: &'a StageGraph,
    pub states: &'a Progress,
    pub status: StageStatus,
}

impl Context for RuntimeContext<'_> {
    fn lookup(&self, path: &[String]) -> Option<Value> {
        match path[0].as_str() {
            "event" => Some(event_value(self.event, &path[1..])),
            "env" => {
                let name = path.get(1)?;
                let literal = self.stage.env.get(name).filter(|t| t.template.is_literal());
                let value = literal
                    .map(|t| t.source.clone())
                    .or_else(|| self.env.get(name).cloned());
                Some(value.map_or(Value::Null, Value::String))
            }
            "stages" => {
                let id = self.graph.get(path.get(1)?)?;
                let i = id.index();
                match (path.get(2).map(String::as_str), path.get(3)) {
                    (Some("outputs"), Some(key)) => Some(
                        self.states
                            .report(i)
                            .and_then(|r| r.outputs.get(key))
                            .map_or(Value::Null, |v| Value::String(v.clone())),
                    ),
                    (Some("result"), None) => Some(
                        self.states
                            .result(i)
                            .map_or(Value::Null, |r| Value::String(r.name().to_owned())),
                    ),
                    _ => Some(Value::Null),
                }
            }
            _ => Some(Value::Null),
        }
    }

    fn status(&self) -> Option<StageStatus> {
        Some(self.status)
    }
}

impl RuntimeContext<'_> {
    /// Renders a template; what is unknown renders empty (cannot happen for a validated config,
    /// whose stage references are all to finished needs).
    pub fn render(&self, t: &Template) -> String {
        t.render(self).unwrap_or_else(|| t.render_partial(self))
    }

    pub fn render_json(&self, v: &serde_json::Value) -> serde_json::Value {
        crate::expr::render_json(v, &|t| self.render(t))
    }
}
