//! `gitops demo`: a throwaway repository and the whole flow, on the local backend: pull request
//! → preview, update → preview updated, merge → preview torn down and staging, tags → production,
//! rollback; then the ledger.

use gitops_core::config::Action;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::ledger::{DeploymentRecord, DeploymentResult};
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunResult, StageResult};
use gitops_examples::scratch::ScratchRepo;

use crate::envs;
use crate::run::{Common, engine};

const CONFIG: &str = r#"version: 1
environments:
  preview: { per_pull_request: true }
  staging: {}
  production: {}
pipelines:
  pull-request:
    on: { pull_request: { types: [opened, synchronize, reopened], branches: [main] } }
    stages:
      test: { run: ./scripts/test.sh }
      build: { needs: test, run: ./scripts/build.sh }
      preview: { needs: build, deploy: preview, with: { files: [app.txt] } }
      smoke: { needs: preview, run: ./scripts/smoke.sh, env: { URL: "${{ stages.preview.outputs.url }}" } }
  pull-request-closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
  main:
    on: { push: { branches: [main] } }
    stages:
      test: { run: ./scripts/test.sh }
      deploy: { needs: test, deploy: staging, with: { files: [app.txt] } }
  release:
    on: { tag: { semver: ">=1.0.0" } }
    stages:
      deploy: { deploy: production, with: { files: [app.txt] } }
"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

pub async fn run() -> Result<(), String> {
    demo()
        .await
        .map_err(|e| format!("error: demo failed: {}", gitops_core::ErrorChain(&*e)))
}

struct Demo {
    engine: Engine,
    repo: Repository,
    options: RunOptions,
}

async fn demo() -> Result<(), Error> {
    let started = std::time::Instant::now();
    let dir = tempfile::Builder::new().prefix("gitops-demo-").tempdir()?;
    let state = dir.path().join("state");
    let mut scratch = ScratchRepo::init(&dir.path().join("repo"))?;
    println!(
        "gitops demo: a throwaway repository and state dir in {}",
        dir.path().display()
    );
    println!("(both are removed when the demo ends)\n");

    let base = scratch.commit(
        "main",
        None,
        "Initial app",
        &[
            (".gitops.yml", CONFIG),
            ("app.txt", "hello\n"),
            ("scripts/test.sh", "#!/bin/sh\ngrep -q hello app.txt\n"),
            (
                "scripts/build.sh",
                "#!/bin/sh\necho \"size=$(wc -c < app.txt)\" >> \"$GITOPS_OUTPUT\"\n",
            ),
            (
                "scripts/smoke.sh",
                "#!/bin/sh\ncat \"${URL#file://}app.txt\"\n",
            ),
        ],
    )?;
    let common = Common {
        state: state.clone(),
        report: None,
        policy: Default::default(),
        trusted_ref: None,
        max_parallel: None,
    };
    let mut options = RunOptions::default();
    options.actor = Some(envs::actor());
    let demo = Demo {
        engine: engine(&common)?,
        repo: Repository::open(scratch.path())?,
        options,
    };

    let head = scratch.commit(
        "feature/greeting",
        Some(&base),
        "Greet the world",
        &[("app.txt", "hello, world\n")],
    )?;
    scratch.set_ref("refs/pull/1/head", &head)?;
    demo.step(
        "Pull request #1 opened (feature/greeting → main): tests, then a preview environment",
        &pr("opened", &head, &base, false),
    )
    .await?;

    let head = scratch.commit(
        "feature/greeting",
        Some(&head),
        "Greet louder",
        &[("app.txt", "hello, world!\n")],
    )?;
    scratch.set_ref("refs/pull/1/head", &head)?;
    demo.step(
        "Pull request #1 updated: the preview follows",
        &pr("synchronize", &head, &base, false),
    )
    .await?;

    demo.step(
        "Pull request #1 merged: its preview is torn down",
        &pr("closed", &head, &base, true),
    )
    .await?;
    scratch.set_ref("refs/heads/main", &head)?;
    demo.step(
        &format!("Push to main ({}): staging", &head[..7]),
        &push(&base, &head),
    )
    .await?;

    scratch.set_ref("refs/tags/v1.0.0", &head)?;
    demo.step("Tag v1.0.0: production", &tag("v1.0.0", &head))
        .await?;

    let next = scratch.commit(
        "main",
        Some(&head),
        "Say goodbye too",
        &[("app.txt", "hello, world! and goodbye\n")],
    )?;
    demo.step(
        &format!("Push to main ({}): staging", &next[..7]),
        &push(&head, &next),
    )
    .await?;
    scratch.set_ref("refs/tags/v1.1.0", &next)?;
    demo.step("Tag v1.1.0: production", &tag("v1.1.0", &next))
        .await?;

    println!("▸ Something is wrong with v1.1.0: roll production back");
    let record = demo
        .engine
        .rollback("production", None, &envs::actor())
        .await?;
    println!(
        "  {}",
        envs::describe_rollback(&record).replace('\n', "\n  ")
    );
    let live = std::fs::read_to_string(state.join("environments/production/release/app.txt"))?;
    println!("  production serves: {}\n", live.trim());

    println!("The environments (`gitops envs`):\n");
    println!(
        "{}\n",
        indent(&envs::env_table(&demo.engine.environments()?))
    );
    println!("Every deployment, newest first (`gitops history ENV`, here all of them):\n");
    let history = demo.engine.ledger().history(None, 100)?;
    println!("{}\n", indent(&envs::history_table(&history)));
    println!(
        "Done in {:.1}s. Try it on your own repository: `gitops run --event EVENT.json --repo DIR`.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Demo {
    /// Runs what `event` triggers, then what it ends; prints one line per stage.
    async fn step(&self, title: &str, event: &GitEvent) -> Result<(), Error> {
        println!("▸ {title}");
        let before = self
            .engine
            .ledger()
            .history(None, 1)?
            .first()
            .map_or(0, |d| d.id);
        let runs = self.engine.start(event, &self.repo, &self.options)?;
        if runs.is_empty() {
            println!("  no pipeline matches this event");
        }
        for run in runs {
            let name = run.pipeline.name.clone();
            let report = run.execute().await?;
            let stages: Vec<String> = report
                .stages
                .iter()
                .map(|s| {
                    let mark = match &s.result {
                        StageResult::Success => "✓",
                        StageResult::Skipped { .. } => "–",
                        _ => "✗",
                    };
                    format!("{} {mark}", s.id)
                })
                .collect();
            println!("  pipeline {name}: {}", stages.join("  "));
            if report.result != RunResult::Success {
                return Err(
                    format!("pipeline {name} did not succeed (run {})", report.run_id).into(),
                );
            }
        }
        self.engine.finish_event(event).await?;
        let mut made: Vec<DeploymentRecord> = self
            .engine
            .ledger()
            .history(None, 20)?
            .into_iter()
            .filter(|d| d.id > before)
            .collect();
        made.reverse();
        for d in &made {
            println!("  {}", deployment_line(d));
        }
        println!();
        Ok(())
    }
}

fn deployment_line(d: &DeploymentRecord) -> String {
    let ok = d.result == DeploymentResult::Success;
    let what = d
        .version
        .as_deref()
        .map(|v| format!("v{v}"))
        .or_else(|| d.sha.as_deref().map(|s| s[..7.min(s.len())].to_owned()))
        .unwrap_or_default();
    match (d.action, ok) {
        (Action::Stop, true) => format!("■ {} stopped (deployment #{})", d.environment, d.id),
        (_, true) => format!(
            "● {} now runs {what} (deployment #{}): {}",
            d.environment,
            d.id,
            d.outputs.get("url").map_or("", String::as_str)
        ),
        (_, false) => format!(
            "✗ {} {} #{} {}: {}",
            d.environment,
            if d.action == Action::Stop {
                "stop"
            } else {
                "deployment"
            },
            d.id,
            d.result.name(),
            d.message.as_deref().unwrap_or("")
        ),
    }
}

fn pr(action: &str, head: &str, base: &str, merged: bool) -> GitEvent {
    let event = GitEvent::pull_request_event(
        "demo/app",
        action,
        1,
        ("feature/greeting", head),
        ("main", base),
    );
    if merged { event.merged() } else { event }
}

fn push(before: &str, after: &str) -> GitEvent {
    GitEvent::push("demo/app", "main", Some(before), after)
}

fn tag(name: &str, sha: &str) -> GitEvent {
    GitEvent::tag_created("demo/app", name, sha)
}
