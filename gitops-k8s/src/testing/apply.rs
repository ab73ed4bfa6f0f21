//! Server-side apply and field ownership, as `managedFields` records them.
//!
//! Every field of an object is owned by the managers that set it: an apply (`PATCH` with
//! `application/apply-patch+yaml`) owns the fields of its configuration, an update (`POST`,
//! `PUT`, a merge patch) the fields it changed, taking them from their previous owners. An apply
//! that would change a field another manager owns is refused with `409 Conflict` naming each
//! field and manager, unless `force=true`, which takes the fields over; an apply that sets a
//! field to the value it has shares it. A field an applier applied before and applies no more is
//! removed, unless another manager owns it too.
//!
//! As the API server does without a schema for the type, lists are atomic (owned, replaced and
//! removed as a whole), except lists of objects that each have a distinct `name`, which are
//! associative by `name`, as `containers`, `env`, `volumes` and named `ports` are in Kubernetes'
//! own types (a list keyed by other fields, such as unnamed container ports, is atomic here).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    /// A map's key.
    Field(String),
    /// The item of an associative list with this `name`.
    Key(String),
    /// The list item itself (its existence), after a [`Step::Key`].
    Item,
}

/// A field of an object.
pub(super) type Path = Vec<Step>;

/// How a manager set its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    /// A server-side apply.
    Apply,
    /// A create, replace or (non-apply) patch.
    Update,
}

/// One entry of `managedFields`.
#[derive(Debug, Clone)]
pub(super) struct Managed {
    pub(super) manager: String,
    pub(super) operation: Operation,
    pub(super) api_version: String,
    pub(super) fields: BTreeSet<Path>,
}

/// A field another manager owns, with another value than an apply sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Conflict {
    pub(super) manager: String,
    pub(super) api_version: String,
    pub(super) path: Path,
}

/// Fields no manager owns: set by the server, or identifying the object.
fn ignored(path: &[Step]) -> bool {
    let field = |i: usize| match path.get(i) {
        Some(Step::Field(f)) => f.as_str(),
        _ => "",
    };
    match (path.len(), field(0)) {
        (1, "apiVersion" | "kind" | "status") => true,
        (2, "metadata") => matches!(
            field(1),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The `name` of an associative list's item.
fn item_name(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// Whether `items` is a list associative by `name` (objects with distinct names).
fn associative(items: &[Value]) -> bool {
    let mut names = BTreeSet::new();
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.is_object() && item_name(i).is_some_and(|n| names.insert(n)))
}

/// The fields `value` sets.
pub(super) fn fields_of(value: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let mut path = Vec::new();
    collect_map(value, &mut path, &mut out);
    out
}

fn collect_map(value: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Value::Object(map) = value else {
        return;
    };
    for (k, child) in map {
        path.push(Step::Field(k.clone()));
        if !ignored(path) {
            collect_value(child, path, out);
        }
        path.pop();
    }
}

fn collect_value(value: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => collect_map(value, path, out),
        Value::Array(items) if associative(items) => {
            for item in items {
                path.push(Step::Key(item_name(item).unwrap_or_default().to_owned()));
                path.push(Step::Item);
                out.insert(path.clone());
                path.pop();
                collect_map(item, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path` in `value`.
pub(super) fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut at = value;
    for step in path {
        at = match step {
            Step::Field(k) => at.get(k)?,
            Step::Key(name) => at.as_array()?.iter().find(|i| item_name(i) == Some(name))?,
            Step::Item => at,
        };
    }
    Some(at)
}

/// Removes the field at `path` (an [`Step::Item`] path removes the list item).
fn remove(value: &mut Value, path: &[Step]) {
    let (parent, last) = match path {
        [parent @ .., Step::Key(name), Step::Item] => {
            if let Some(Value::Array(items)) = get_mut(value, parent) {
                items.retain(|i| item_name(i) != Some(name));
            }
            return;
        }
        [parent @ .., last] => (parent, last),
        [] => return,
    };
    match (get_mut(value, parent), last) {
        (Some(Value::Object(map)), Step::Field(k)) => {
            map.remove(k);
        }
        (Some(Value::Array(items)), Step::Key(name)) => {
            items.retain(|i| item_name(i) != Some(name))
        }
        _ => {}
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut at = value;
    for step in path {
        at = match step {
            Step::Field(k) => at.get_mut(k)?,
            Step::Key(name) => at
                .as_array_mut()?
                .iter_mut()
                .find(|i| item_name(i) == Some(name))?,
            Step::Item => at,
        };
    }
    Some(at)
}

/// Whether `config` has `[]` at `path` where `live` has an associative list.
fn empty_where_associative(live: &Value, config: &Value, path: &[Step]) -> bool {
    let empty = get(config, path).is_some_and(|v| v.as_array().is_some_and(Vec::is_empty));
    empty && get(live, path).is_some_and(|v| v.as_array().is_some_and(|items| associative(items)))
}

/// Merges an applied configuration into `target`: maps key by key, associative lists item by
/// item, anything else replaced.
fn merge_applied(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                match t.get_mut(k) {
                    Some(tv) => merge_applied(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(c)) if c.is_empty() && associative(t) => {}
        (Value::Array(t), Value::Array(c))
            if associative(c) && (t.is_empty() || associative(t)) =>
        {
            for item in c {
                match t.iter_mut().find(|i| item_name(i) == item_name(item)) {
                    Some(existing) => merge_applied(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

/// Whether `owned` holds `path` or a field inside it.
fn owns_within(owned: &BTreeSet<Path>, path: &[Step]) -> bool {
    owned.iter().any(|p| p.starts_with(path))
}

/// `manager`'s entry for `operation`, made when missing.
fn entry<'a>(
    managers: &'a mut Vec<Managed>,
    manager: &str,
    operation: Operation,
    api_version: &str,
) -> &'a mut Managed {
    let at = match managers
        .iter()
        .position(|m| m.manager == manager && m.operation == operation)
    {
        Some(i) => i,
        None => {
            managers.push(Managed {
                manager: manager.to_owned(),
                operation,
                api_version: api_version.to_owned(),
                fields: BTreeSet::new(),
            });
            managers.len() - 1
        }
    };
    let m = &mut managers[at];
    m.api_version = api_version.to_owned();
    m
}

/// The fields of `config` that another manager than `applier`'s apply owns in `live` with
/// another value.
pub(super) fn conflicts(
    live: &Value,
    config: &Value,
    applier: &str,
    managers: &[Managed],
) -> Vec<Conflict> {
    let mut found = Vec::new();
    for path in fields_of(config) {
        if path.last() == Some(&Step::Item) || get(live, &path) == get(config, &path) {
            continue;
        }
        for m in managers {
            let own = m.manager == applier && m.operation == Operation::Apply;
            if !own && m.fields.contains(&path) {
                found.push(Conflict {
                    manager: m.manager.clone(),
                    api_version: m.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    found
}

/// Applies `config` as `applier` to `live` (`None`: a new object): refused with the conflicts
/// unless `force`; otherwise the new object, with `managers` updated.
pub(super) fn apply(
    live: Option<&Value>,
    config: &Value,
    applier: &str,
    api_version: &str,
    force: bool,
    managers: &mut Vec<Managed>,
) -> Result<Value, Vec<Conflict>> {
    let mut applied = fields_of(config);
    // Without a schema, `[]` cannot say whether a list is associative; where the live list is,
    // it is: this applier owns none of its items (others keep theirs).
    if let Some(live) = live {
        applied.retain(|p| !empty_where_associative(live, config, p));
    }
    if let Some(live) = live {
        let found = conflicts(live, config, applier, managers);
        if !found.is_empty() && !force {
            return Err(found);
        }
        // Forced: the fields are taken from their other owners.
        for c in &found {
            for m in managers.iter_mut() {
                let own = m.manager == applier && m.operation == Operation::Apply;
                if !own && m.manager == c.manager {
                    m.fields.remove(&c.path);
                }
            }
        }
    }
    let before = managers
        .iter()
        .find(|m| m.manager == applier && m.operation == Operation::Apply)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = managers
        .iter()
        .filter(|m| !(m.manager == applier && m.operation == Operation::Apply))
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    // What this manager applied before and applies no more goes, unless others own it too:
    // list items first (with what is in them), then fields; an item's `name` is its identity,
    // never removed on its own.
    let gone: Vec<&Path> = before.difference(&applied).collect();
    let (items, fields): (Vec<&Path>, Vec<&Path>) = gone
        .into_iter()
        .partition(|p| p.last() == Some(&Step::Item));
    for path in items {
        if !owns_within(&others, &path[..path.len() - 1]) {
            remove(&mut object, path);
        }
    }
    for path in fields {
        let identity = matches!(path.as_slice(), [.., Step::Key(_), Step::Field(f)] if f == "name");
        if !identity && !owns_within(&others, path) {
            remove(&mut object, path);
        }
    }
    merge_applied(&mut object, config);
    entry(managers, applier, Operation::Apply, api_version).fields = applied;
    managers.retain(|m| !m.fields.is_empty());
    Ok(object)
}

/// Records an update by `manager` from `old` to `new`: it owns what it changed, which its
/// previous owners no longer do; fields that are gone are nobody's.
pub(super) fn track_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    api_version: &str,
    managers: &mut Vec<Managed>,
) {
    let now = fields_of(new);
    let gone: BTreeSet<Path> = old.map(fields_of).unwrap_or_default();
    let gone: BTreeSet<Path> = gone.difference(&now).cloned().collect();
    let changed: BTreeSet<Path> = now
        .into_iter()
        .filter(|p| {
            let before = old.and_then(|o| get(o, p));
            match p.last() {
                // An item is new, or was there already (its fields say what changed in it).
                Some(Step::Item) => before.is_none(),
                _ => before != get(new, p),
            }
        })
        .collect();
    for m in managers.iter_mut() {
        m.fields
            .retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    if !changed.is_empty() {
        entry(managers, manager, Operation::Update, api_version)
            .fields
            .extend(changed);
    }
    managers.retain(|m| !m.fields.is_empty());
}

/// `managedFields` as the API server writes them (`fieldsV1`), or `None` when nobody manages
/// anything.
pub(super) fn render(managers: &[Managed]) -> Option<Value> {
    if managers.is_empty() {
        return None;
    }
    let entries = managers
        .iter()
        .map(|m| {
            let mut tree = Map::new();
            for path in &m.fields {
                insert(&mut tree, path);
            }
            json!({
                "manager": m.manager,
                "operation": match m.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                "apiVersion": m.api_version,
                "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": tree,
            })
        })
        .collect();
    Some(Value::Array(entries))
}

fn insert(tree: &mut Map<String, Value>, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let name = match first {
        Step::Field(k) => format!("f:{k}"),
        Step::Key(n) => format!("k:{}", json!({ "name": n })),
        Step::Item => ".".to_owned(),
    };
    let child = tree.entry(name).or_insert_with(|| json!({}));
    if let Value::Object(child) = child {
        insert(child, rest);
    }
}

/// A path as the API server's conflict messages write it (`.spec.containers[name="web"].image`).
pub(super) fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(n) => out.push_str(&format!("[name={}]", json!(n))),
            Step::Item => {}
        }
    }
    out
}

/// The `409 Conflict` status of an apply, as the API server words it.
pub(super) fn conflict_status(conflicts: &[Conflict]) -> Value {
    let mut by_manager: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for c in conflicts {
        let field = display(&c.path);
        match by_manager
            .iter_mut()
            .find(|(m, v, _)| *m == c.manager && *v == c.api_version)
        {
            Some((_, _, fields)) => fields.push(field),
            None => by_manager.push((&c.manager, &c.api_version, vec![field])),
        }
    }
    let n = conflicts.len();
    let message = if let ([(manager, version, fields)], 1) = (by_manager.as_slice(), n) {
        format!(
            "Apply failed with 1 conflict: conflict with \"{manager}\" using {version}: {}",
            fields[0]
        )
    } else {
        let parts: Vec<String> = by_manager
            .iter()
            .map(|(manager, version, fields)| {
                let lines: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                format!(
                    "conflicts with \"{manager}\" using {version}:\n{}",
                    lines.join("\n")
                )
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                   "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                   "field": display(&c.path)})
        })
        .collect();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "Conflict", "details": {"causes": causes}, "code": 409})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> Path {
        path.split('.').map(|s| Step::Field(s.to_owned())).collect()
    }

    #[test]
    fn fields_are_leaves_and_named_list_items() {
        let fields = fields_of(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "data": {"k": "v"},
            "spec": {"containers": [{"name": "web", "image": "i"}], "args": ["a", "b"]},
            "status": {"phase": "Running"},
        }));
        let web = |rest: &[Step]| {
            let mut p = f("spec.containers");
            p.push(Step::Key("web".into()));
            p.extend_from_slice(rest);
            p
        };
        let want: BTreeSet<Path> = [
            f("metadata.labels.x"),
            f("data.k"),
            f("spec.args"),
            web(&[Step::Item]),
            web(&[Step::Field("name".into())]),
            web(&[Step::Field("image".into())]),
        ]
        .into_iter()
        .collect();
        assert_eq!(fields, want);
        assert_eq!(
            display(&web(&[Step::Field("image".into())])),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn managed_fields_render_as_fields_v1() {
        let mut managers = Vec::new();
        let object = apply(
            None,
            &json!({"data": {"k": "v"}, "spec": {"containers": [{"name": "web", "image": "i"}]}}),
            "gitops",
            "v1",
            false,
            &mut managers,
        )
        .unwrap();
        assert_eq!(object["data"]["k"], "v");
        let rendered = render(&managers).unwrap();
        assert_eq!(rendered[0]["manager"], "gitops");
        assert_eq!(rendered[0]["operation"], "Apply");
        assert_eq!(
            rendered[0]["fieldsV1"],
            json!({"f:data": {"f:k": {}}, "f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}}})
        );
    }
}
