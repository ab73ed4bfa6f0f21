//! The commands of the `gitops` app, each returning the message to print on failure.

use std::io::Read;
use std::path::Path;

use gitops_core::config::{Action, Config};
use gitops_core::event::GitEvent;
use gitops_core::plan::{Changes, Planner};
use gitops_core::repo::Repository;
use gitops_core::source::webhook::{Provider, parse_all};
use gitops_examples::text::count;
use gitops_examples::{out, outln};

type Outcome = Result<(), String>;

fn read_input(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => std::fs::read(p).map_err(|e| format!("error: cannot read {}: {e}", p.display())),
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("error: cannot read standard input: {e}"))?;
    Ok(buf)
}

fn print_json(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(|e| crate::error(&e))?;
    outln!("{text}");
    Ok(())
}

pub fn validate(path: &Path) -> Outcome {
    let config = Config::load_with(path, &crate::run::load_options()).map_err(|e| e.to_string())?;
    let stages: usize = config.pipelines.values().map(|p| p.stages.len()).sum();
    outln!(
        "{}: ok ({}, {}, {})",
        path.display(),
        count(config.pipelines.len(), "pipeline"),
        count(stages, "stage"),
        count(config.environments.len(), "environment")
    );
    Ok(())
}

pub fn event(provider: &str, event_type: &str, file: Option<&Path>) -> Outcome {
    let provider: Provider = provider.parse().map_err(|e| crate::error(&e))?;
    let body = read_input(file)?;
    let events = parse_all(provider, event_type, &body).map_err(|e| crate::error(&e))?;
    // One event as itself; a Bitbucket push of other than one change as an array.
    match events.as_slice() {
        [event] => print_json(event),
        all => print_json(&all),
    }
}

pub fn plan(event_file: &Path, repo: Option<&Path>, config: Option<&Path>) -> Outcome {
    let bytes = read_input(Some(event_file))?;
    let event: GitEvent = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "error: {} is not a normalised event: {e}",
            event_file.display()
        )
    })?;
    let (config, changes) = match repo {
        Some(dir) => {
            let repo = Repository::open(dir).map_err(|e| crate::error(&e))?;
            let commit = repo.commit_for(&event).map_err(|e| crate::error(&e))?;
            let config = repo
                .config_at(&commit, &crate::run::load_options())
                .map_err(|e| e.to_string())?;
            (config, repo.changes_for(&event))
        }
        None => {
            let path = config.unwrap_or(Path::new(".gitops.yml"));
            (
                Config::load_with(path, &crate::run::load_options()).map_err(|e| e.to_string())?,
                Changes::Unknown,
            )
        }
    };
    let plan = Planner::new()
        .plan(&event, &config, &changes)
        .map_err(|e| crate::error(&e))?;
    print_json(&plan)
}

pub fn graph(pipeline: &str, path: &Path) -> Outcome {
    let config = Config::load_with(path, &crate::run::load_options()).map_err(|e| e.to_string())?;
    let Some(p) = config.pipelines.get(pipeline) else {
        let known: Vec<&str> = config.pipelines.keys().map(String::as_str).collect();
        return Err(format!(
            "error: no pipeline \"{pipeline}\" in {} (pipelines: {})",
            path.display(),
            known.join(", ")
        ));
    };
    let graph =
        gitops_core::graph::StageGraph::from_needs(p.stages.iter().map(|(id, s)| (id, &s.needs)))
            .map_err(|e| crate::error(&e))?;
    let stages: Vec<_> = p.stages.values().collect();
    out!(
        "{}",
        graph.to_dot(pipeline, |s| {
            let stage = stages[s.index()];
            let id = graph.id(s);
            let (what, shape) = match (stage.action(), stage.environment()) {
                (Action::Deploy, Some(env)) => (format!("deploy {env}"), "box3d"),
                (Action::Stop, Some(env)) => (format!("stop {env}"), "octagon"),
                _ => (
                    stage.backend.clone().unwrap_or_else(|| "local".into()),
                    "box",
                ),
            };
            let mut attrs = vec![
                ("label", format!("{id}\n{what}")),
                ("shape", shape.to_owned()),
            ];
            if let Some(c) = &stage.condition {
                attrs.push(("tooltip", format!("if: {}", c.source)));
                attrs.push(("style", "rounded,dashed".to_owned()));
            }
            attrs
        })
    );
    Ok(())
}
