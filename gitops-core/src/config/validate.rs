//! Checks that need the whole config: names, references between stages and environments, the
//! stage graph, and the names used in expressions.

use super::LoadOptions;
use super::locate::{Locations, Position};
use super::model::{Action, Config, Pipeline, Stage};
use super::params::{self, ParamSchema};
use crate::expr::{Scope, StageRef, Template};
use crate::graph::{GraphProblem, StageGraph};

type Found = Vec<(Position, String)>;

pub(super) fn validate(config: &Config, loc: &Locations, options: &LoadOptions) -> Found {
    let mut out = Found::new();
    for (path, pos) in &loc.duplicates {
        let key = path.last().map_or("", String::as_str);
        out.push((*pos, format!("duplicate key \"{key}\"")));
    }
    if config.version != 1 {
        out.push((
            loc.value(&["version"]),
            format!("unsupported version {} (expected 1)", config.version),
        ));
    }
    let backend_known = |b: &str| options.backends.iter().any(|k| k == b);
    for (name, env) in &config.environments {
        // Without a `name`, the key names its instances (`<key>`, `<key>-pr-<n>`).
        if env.name.is_none() && !super::is_instance_name(name) {
            out.push((
                loc.key(&["environments", name]),
                format!("invalid environment name \"{name}\" (use lowercase letters, digits and '-', starting and ending with a letter or digit, at most {} characters)", super::MAX_INSTANCE_NAME),
            ));
        }
        check_name(
            &mut out,
            loc.key(&["environments", name]),
            "environment",
            name,
        );
        if !backend_known(&env.backend) {
            out.push((
                loc.value(&["environments", name, "backend"]),
                unknown_backend(&env.backend, &options.backends),
            ));
        }
        if let Some(t) = &env.name {
            check_template(
                &mut out,
                loc,
                &["environments", name, "name"],
                &t.template,
                &EVENT_ONLY,
            );
        }
        check_params(
            &mut out,
            loc,
            &["environments", name, "with"],
            &env.with,
            &EVENT_ONLY,
        );
        if let Some(schema) = options.deploy_params.get(&env.backend) {
            check_with(
                &mut out,
                loc,
                &["environments", name, "with"],
                &env.with,
                schema,
                &env.backend,
            );
        }
    }
    if config.pipelines.is_empty() {
        out.push((loc.key(&["pipelines"]), "no pipelines defined".to_owned()));
    }
    for (name, pipeline) in &config.pipelines {
        check_pipeline(
            &mut out,
            config,
            loc,
            name,
            pipeline,
            &backend_known,
            &options.backends,
        );
        for (id, stage) in &pipeline.stages {
            let sp = ["pipelines", name, "stages", id.as_str()];
            check_stage_params(&mut out, config, loc, &sp, stage, options);
        }
    }
    out
}

/// `unknown backend "kubernetes", did you mean "k8s"? (known: ...)`.
fn unknown_backend(name: &str, known: &[String]) -> String {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    match super::suggest::suggestion(name, &known) {
        Some(near) => format!(
            "unknown backend \"{name}\", did you mean \"{near}\"? (known: {})",
            known.join(", ")
        ),
        None => format!("unknown backend \"{name}\" (known: {})", known.join(", ")),
    }
}

const EVENT_ONLY: Scope<'static> = Scope {
    stages: &|_| StageRef::Unknown,
    status_functions: false,
    env: false,
};

fn check_name(out: &mut Found, pos: Position, what: &str, name: &str) {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        out.push((
            pos,
            format!("invalid {what} name \"{name}\" (use letters, digits, '_' and '-', starting with a letter or '_')"),
        ));
    }
}

fn check_env_name(out: &mut Found, pos: Position, name: &str) {
    if let Some(why) = super::bad_variable_name(name) {
        out.push((pos, why));
    }
}

/// Checks the names in a template at `path`; messages start with the path, like serde_yaml's.
fn check_template(
    out: &mut Found,
    loc: &Locations,
    path: &[&str],
    t: &Template,
    scope: &Scope<'_>,
) {
    for e in t.expressions() {
        if let Err(err) = e.check(scope) {
            out.push((loc.value(path), format!("{}: {}", label(path), err.message)));
        }
    }
}

/// `pipelines.ci.stages.a.with.ports[0]`, as serde_yaml writes paths.
fn label(path: &[&str]) -> String {
    let mut out = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{p}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}

fn check_params(
    out: &mut Found,
    loc: &Locations,
    path: &[&str],
    params: &indexmap::IndexMap<String, serde_json::Value>,
    scope: &Scope<'_>,
) {
    for (k, v) in params {
        let mut p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        p.push(k.clone());
        check_value(out, loc, &mut p, v, scope);
    }
}

fn check_value(
    out: &mut Found,
    loc: &Locations,
    path: &mut Vec<String>,
    v: &serde_json::Value,
    scope: &Scope<'_>,
) {
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    match v {
        serde_json::Value::String(s) => match Template::parse(s) {
            Ok(t) => check_template(out, loc, &refs, &t, scope),
            Err(e) => out.push((
                loc.value(&refs),
                format!(
                    "{}: {} in \"{}\"",
                    label(&refs),
                    e.message,
                    super::de::excerpt(s)
                ),
            )),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                check_value(out, loc, path, item, scope);
                path.pop();
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                path.push(k.clone());
                check_value(out, loc, path, item, scope);
                path.pop();
            }
        }
        _ => {}
    }
}

fn check_pipeline(
    out: &mut Found,
    config: &Config,
    loc: &Locations,
    name: &str,
    pipeline: &Pipeline,
    backend_known: &dyn Fn(&str) -> bool,
    backends: &[String],
) {
    let base = ["pipelines", name];
    check_name(out, loc.key(&base), "pipeline", name);
    let on = &pipeline.on;
    if on.pull_request.is_none() && on.push.is_none() && on.tag.is_none() && on.release.is_none() {
        out.push((
            loc.value(&["pipelines", name, "on"]),
            format!("pipeline \"{name}\" has no trigger (expected pull_request, push, tag or release under `on`)"),
        ));
    }
    if let Some(c) = &pipeline.concurrency {
        check_template(
            out,
            loc,
            &["pipelines", name, "concurrency", "group"],
            &c.group.template,
            &EVENT_ONLY,
        );
    }
    if pipeline.stages.is_empty() {
        out.push((
            loc.value(&["pipelines", name, "stages"]),
            format!("pipeline \"{name}\" has no stages"),
        ));
        return;
    }
    let graph = check_graph(out, loc, name, pipeline);
    for (id, stage) in &pipeline.stages {
        let sp = ["pipelines", name, "stages", id.as_str()];
        check_name(out, loc.key(&sp), "stage", id);
        check_stage(out, config, loc, &sp, stage, backend_known, backends);
        // Stage references can only be checked against a sound graph.
        if let Some(graph) = &graph {
            check_stage_expressions(out, loc, &sp, stage, graph);
        }
    }
}

/// The stage graph of pipeline `name`, or its problems (unknown needs, cycles, duplicate
/// stages), each at the place it is written.
fn check_graph(
    out: &mut Found,
    loc: &Locations,
    name: &str,
    pipeline: &Pipeline,
) -> Option<StageGraph> {
    let err = match StageGraph::from_needs(pipeline.stages.iter().map(|(id, s)| (id, &s.needs))) {
        Ok(graph) => return Some(graph),
        Err(err) => err,
    };
    for problem in &err.problems {
        let pos = match problem {
            GraphProblem::UnknownNeed { stage, need } => {
                let i = pipeline.stages[stage.as_str()]
                    .needs
                    .iter()
                    .position(|n| n == need)
                    .unwrap_or(0);
                loc.value(&["pipelines", name, "stages", stage, "needs", &i.to_string()])
            }
            GraphProblem::Cycle { path } => loc.key(&["pipelines", name, "stages", &path[0]]),
            GraphProblem::DuplicateStage { stage } => {
                loc.key(&["pipelines", name, "stages", stage])
            }
        };
        out.push((pos, format!("pipeline \"{name}\": {problem}")));
    }
    None
}

/// The names in the expressions of the stage at `sp` (its `if:`, `env` and `with`): the
/// stages they read must be among its needs, transitively, and status functions are for
/// `if:` alone.
fn check_stage_expressions(
    out: &mut Found,
    loc: &Locations,
    sp: &[&str],
    stage: &Stage,
    graph: &StageGraph,
) {
    let me = graph.get(sp[3]);
    let stages = |other: &str| match (me, graph.get(other)) {
        (_, None) => StageRef::Unknown,
        (Some(me), Some(o)) if graph.is_transitive_need(me, o) => StageRef::Allowed,
        _ => StageRef::NotANeed,
    };
    let with_status = Scope {
        stages: &stages,
        status_functions: true,
        env: true,
    };
    let plain = Scope {
        stages: &stages,
        status_functions: false,
        env: true,
    };
    if let Some(c) = &stage.condition {
        if let Err(e) = c.expr.check(&with_status) {
            let path = [sp, &["if"]].concat();
            out.push((
                loc.value(&path),
                format!("{}: {} in `if: {}`", label(&path), e.message, c.source),
            ));
        }
    }
    for (k, t) in &stage.env {
        check_env_name(out, loc.key(&[sp, &["env", k.as_str()]].concat()), k);
        check_template(
            out,
            loc,
            &[sp, &["env", k.as_str()]].concat(),
            &t.template,
            &plain,
        );
    }
    check_params(out, loc, &[sp, &["with"]].concat(), &stage.with, &plain);
}

fn check_stage(
    out: &mut Found,
    config: &Config,
    loc: &Locations,
    sp: &[&str],
    stage: &Stage,
    backend_known: &dyn Fn(&str) -> bool,
    backends: &[String],
) {
    let at = |key: &str| loc.value(&[sp, &[key]].concat());
    let id = sp[3];
    if stage.deploy.is_some() && stage.stop.is_some() {
        out.push((
            at("stop"),
            format!("stage \"{id}\" has both `deploy` and `stop`; use one stage for each"),
        ));
    }
    if stage.run.is_some() && (stage.deploy.is_some() || stage.stop.is_some()) {
        out.push((at("run"), format!("stage \"{id}\" has `run` and `{}`; a deploy or stop stage runs its environment's backend, not a command", if stage.deploy.is_some() { "deploy" } else { "stop" })));
    }
    if stage.run.is_none()
        && stage.deploy.is_none()
        && stage.stop.is_none()
        && stage.with.is_empty()
    {
        out.push((
            loc.key(sp),
            format!("stage \"{id}\" does nothing: give it `run`, `deploy`, `stop`, or `with` parameters for its backend"),
        ));
    }
    if let Some(run) = &stage.run {
        if run.contains("${{") {
            out.push((
                at("run"),
                format!("stage \"{id}\": `run` is never template-expanded, so that event data cannot inject commands; pass values through `env` (env: {{ NAME: \"${{{{ ... }}}}\" }}) and read $NAME"),
            ));
        }
    }
    for key in ["deploy", "stop"] {
        let target = if key == "deploy" {
            &stage.deploy
        } else {
            &stage.stop
        };
        if let Some(env) = target {
            let per_pr = config
                .environments
                .get(env)
                .is_some_and(|e| e.per_pull_request);
            if per_pr && config.pipelines[sp[1]].on.pull_request.is_none() {
                out.push((
                    at(key),
                    format!(
                        "stage \"{id}\": environment \"{env}\" is per pull request, but pipeline \"{}\" is not triggered by pull requests",
                        sp[1]
                    ),
                ));
            }
            if !config.environments.contains_key(env) {
                let known: Vec<&str> = config.environments.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none defined".to_owned()
                } else {
                    known.join(", ")
                };
                out.push((
                    at(key),
                    format!(
                        "stage \"{id}\": unknown environment \"{env}\" (environments: {known})"
                    ),
                ));
            }
        }
    }
    if let Some(b) = &stage.backend {
        if !backend_known(b) {
            out.push((
                at("backend"),
                format!("stage \"{id}\": {}", unknown_backend(b, backends)),
            ));
        }
    }
}

/// Checks a stage's `with` against what its backend accepts: for a `run` stage its backend's
/// run parameters, for `deploy` and `stop` those of its environment's backend.
fn check_stage_params(
    out: &mut Found,
    config: &Config,
    loc: &Locations,
    sp: &[&str],
    stage: &Stage,
    options: &LoadOptions,
) {
    let (backend, schemas) = match stage.action() {
        Action::Run => (
            Some(stage.backend.as_deref().unwrap_or("local")),
            &options.run_params,
        ),
        Action::Deploy | Action::Stop => (
            stage.backend.as_deref().or_else(|| {
                let env = stage.environment()?;
                Some(config.environments.get(env)?.backend.as_str())
            }),
            &options.deploy_params,
        ),
    };
    let Some(backend) = backend else { return };
    if let Some(schema) = schemas.get(backend) {
        let path = [sp, &["with"]].concat();
        check_with(out, loc, &path, &stage.with, schema, backend);
    }
}

/// Reports, located, what `schema` finds wrong in the `with` at `base`.
fn check_with(
    out: &mut Found,
    loc: &Locations,
    base: &[&str],
    with: &indexmap::IndexMap<String, serde_json::Value>,
    schema: &ParamSchema,
    backend: &str,
) {
    for problem in params::check(schema, with, &format!("backend \"{backend}\"")) {
        let path: Vec<&str> = base
            .iter()
            .copied()
            .chain(problem.path.iter().map(String::as_str))
            .collect();
        let pos = if problem.at_key {
            loc.key(&path)
        } else {
            loc.value(&path)
        };
        out.push((pos, format!("{}: {}", label(&path), problem.message)));
    }
}
