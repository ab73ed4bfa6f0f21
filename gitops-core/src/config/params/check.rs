//! Checks a `with` map against a [`ParamSchema`]: unknown keys, wrong types, numbers out of
//! range, and templates in commands. Problems name their place by path, for the caller to locate.

use std::path::{Component, Path};

use serde_json::Value;

use super::{ParamKind, ParamSchema};
use crate::config::suggest::suggestion;

/// One problem in a `with` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where, below the map checked (`["services", "web", "command", "0"]`).
    pub(crate) path: Vec<String>,
    /// Whether it is about the key (an unknown one) rather than the value.
    pub(crate) at_key: bool,
    /// What is wrong.
    pub(crate) message: String,
}

/// The problems of `with` under `schema`; `owner` names the backend in messages
/// (`backend "local"`).
pub(crate) fn check<'a>(
    schema: &ParamSchema,
    with: impl IntoIterator<Item = (&'a String, &'a Value)>,
    owner: &str,
) -> Vec<Problem> {
    let mut checker = Checker {
        owner,
        path: Vec::new(),
        out: Vec::new(),
    };
    checker.map(schema, with);
    checker.out
}

struct Checker<'o> {
    owner: &'o str,
    path: Vec<String>,
    out: Vec<Problem>,
}

fn has_template(s: &str) -> bool {
    s.contains("${{")
}

/// `v` as JSON, cut short when long.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

fn inside_checkout(s: &str) -> bool {
    Path::new(s)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

impl Checker<'_> {
    fn push(&mut self, at_key: bool, message: String) {
        self.out.push(Problem {
            path: self.path.clone(),
            at_key,
            message,
        });
    }

    fn wrong(&mut self, kind: &ParamKind, v: &Value) {
        self.push(
            false,
            format!("must be {}, found {}", kind.describe(), shown(v)),
        );
    }

    fn map<'a>(
        &mut self,
        schema: &ParamSchema,
        entries: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) {
        for (key, value) in entries {
            self.path.push(key.clone());
            match schema.get(key) {
                Some(param) => self.value(&param.name, &param.kind, value),
                None if schema.is_open() => {}
                None => {
                    let known = schema.names();
                    let message = match (known.is_empty(), suggestion(key, &known)) {
                        (true, _) => format!(
                            "unknown parameter \"{key}\": {} takes no `with` parameters here",
                            self.owner
                        ),
                        (false, Some(near)) => format!(
                            "unknown parameter \"{key}\" for {}, did you mean \"{near}\"? (known: {})",
                            self.owner,
                            known.join(", ")
                        ),
                        (false, None) => format!(
                            "unknown parameter \"{key}\" for {} (known: {})",
                            self.owner,
                            known.join(", ")
                        ),
                    };
                    self.push(true, message);
                }
            }
            self.path.pop();
        }
    }

    /// Checks `v`, the value of parameter `name` (the one declared, for messages).
    fn value(&mut self, name: &str, kind: &ParamKind, v: &Value) {
        if v.is_null() {
            return;
        }
        let text = v.as_str();
        // A template's type is known only once rendered: accepted where a scalar is expected.
        if text.is_some_and(has_template) && !kind.is_command() {
            let scalar = matches!(
                kind,
                ParamKind::String
                    | ParamKind::Path
                    | ParamKind::PathOrList
                    | ParamKind::WholeNumber { .. }
                    | ParamKind::Bool
                    | ParamKind::StringOrList
                    | ParamKind::OneOf(_)
                    | ParamKind::Any
            );
            if !scalar {
                self.wrong(kind, v);
            }
            return;
        }
        self.untemplated(name, kind, v, text);
    }

    /// Checks `v` (`text` when it is a string), which holds no template where one may be.
    fn untemplated(&mut self, name: &str, kind: &ParamKind, v: &Value, text: Option<&str>) {
        match kind {
            ParamKind::Any => {}
            ParamKind::String | ParamKind::StringOrList if text.is_some() => {}
            ParamKind::Command => match text {
                Some(s) if has_template(s) => self.template_in_command(name),
                Some(_) => {}
                None => self.wrong(kind, v),
            },
            ParamKind::CommandArgs => match v.as_array() {
                Some(items) if !items.is_empty() => {
                    self.each(items, |me, item| match item.as_str() {
                        Some(s) if has_template(s) => me.template_in_command(name),
                        Some(_) => {}
                        None => me.wrong(&ParamKind::String, item),
                    })
                }
                _ => self.wrong(kind, v),
            },
            ParamKind::Path | ParamKind::PathOrList if text.is_some() => {
                self.path_value(kind, v);
            }
            ParamKind::PathList | ParamKind::PathOrList => match v.as_array() {
                Some(items) => self.each(items, |me, item| match item.as_str() {
                    Some(s) if has_template(s) => {}
                    Some(_) => me.path_value(&ParamKind::Path, item),
                    None => me.wrong(&ParamKind::Path, item),
                }),
                None => self.wrong(kind, v),
            },
            ParamKind::WholeNumber { min, max } => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse::<u64>().ok(),
                    _ => None,
                };
                if !n.is_some_and(|n| (*min..=*max).contains(&n)) {
                    self.wrong(kind, v);
                }
            }
            ParamKind::Bool => {
                if !v.is_boolean() {
                    self.wrong(kind, v);
                }
            }
            ParamKind::StringList | ParamKind::StringOrList => match v.as_array() {
                Some(items) => self.each(items, |me, item| {
                    if !item.is_string() {
                        me.wrong(&ParamKind::String, item);
                    }
                }),
                None => self.wrong(kind, v),
            },
            ParamKind::StringMap => match v.as_object() {
                Some(map) => self.each_entry(map, |me, item| {
                    if !matches!(item, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                        me.wrong(&ParamKind::String, item);
                    }
                }),
                None => self.wrong(kind, v),
            },
            ParamKind::OneOf(words) => {
                if !text.is_some_and(|s| words.iter().any(|w| w == s)) {
                    self.wrong(kind, v);
                }
            }
            ParamKind::Map(schema) => match v.as_object() {
                Some(map) => self.map(schema, map),
                None => self.wrong(kind, v),
            },
            ParamKind::MapOf(schema) => match v.as_object() {
                Some(map) => self.each_entry(map, |me, item| match item.as_object() {
                    Some(inner) => me.map(schema, inner),
                    None => me.wrong(&ParamKind::Map(schema.clone()), item),
                }),
                None => self.wrong(kind, v),
            },
            ParamKind::String | ParamKind::Path => self.wrong(kind, v),
        }
    }

    fn each(&mut self, items: &[Value], mut f: impl FnMut(&mut Self, &Value)) {
        for (i, item) in items.iter().enumerate() {
            self.path.push(i.to_string());
            f(self, item);
            self.path.pop();
        }
    }

    /// Calls `f` with each value of `map`, its key pushed on the path (as `each` its index).
    fn each_entry(
        &mut self,
        map: &serde_json::Map<String, Value>,
        mut f: impl FnMut(&mut Self, &Value),
    ) {
        for (k, item) in map {
            self.path.push(k.clone());
            f(self, item);
            self.path.pop();
        }
    }

    fn path_value(&mut self, kind: &ParamKind, v: &Value) {
        if !v.as_str().is_some_and(inside_checkout) {
            self.push(
                false,
                format!(
                    "must be {} (relative, without ..), found {}",
                    kind.describe(),
                    shown(v)
                ),
            );
        }
    }

    fn template_in_command(&mut self, name: &str) {
        self.push(
            false,
            format!(
                "`{name}` is a command, and commands are never template-expanded, so that event data cannot inject commands; pass values through `env` (env: {{ NAME: \"${{{{ ... }}}}\" }}) and read $NAME (event data also reaches commands as GITOPS_* variables, such as $GITOPS_PR_TITLE)"
            ),
        );
    }
}
