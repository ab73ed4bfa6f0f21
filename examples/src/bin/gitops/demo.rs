//! `gitops demo`: a throwaway repository and the whole flow, on the local backend: pull request
//! → preview, update → preview updated, merge → preview torn down and staging, tags → production,
//! rollback; then the ledger.

use std::path::{Path, PathBuf};

use gitops_core::config::CONFIG_FILE;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::ledger::DeploymentRecord;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunResult, StageResult};
use gitops_examples::outln;
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

/// Runs the demo in a throwaway directory, or in `keep` (which must be empty or new), left
/// there afterwards for `gitops envs --state KEEP/state` and the like.
pub async fn run(keep: Option<&Path>) -> Result<(), String> {
    let (dir, _throwaway) = match keep {
        Some(dir) => (kept_dir(dir)?, None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("gitops-demo-")
                .tempdir()
                .map_err(|e| format!("error: cannot make a directory for the demo: {e}"))?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    demo(&dir, keep.is_some())
        .await
        .map_err(|e| format!("error: demo failed: {}", gitops_core::ErrorChain(&*e)))
}

/// `dir`, made if missing and absolute; refused when it holds anything already.
fn kept_dir(dir: &Path) -> Result<PathBuf, String> {
    let fail = |e: &dyn std::fmt::Display| format!("error: --keep {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    if std::fs::read_dir(dir)
        .map_err(|e| fail(&e))?
        .next()
        .is_some()
    {
        return Err(fail(&"not empty: give a new or empty directory"));
    }
    std::path::absolute(dir).map_err(|e| fail(&e))
}

struct Demo {
    engine: Engine,
    repo: Repository,
    options: RunOptions,
}

async fn demo(dir: &Path, keep: bool) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let state = dir.join("state");
    let mut scratch = ScratchRepo::init(&dir.join("repo"))?;
    if keep {
        outln!(
            "gitops demo: a repository and state dir in {}",
            dir.display()
        );
        outln!("(both are kept when the demo ends)\n");
    } else {
        outln!(
            "gitops demo: a throwaway repository and state dir in {}",
            dir.display()
        );
        outln!("(both are removed when the demo ends)\n");
    }

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
        max_log_bytes: gitops_core::logs::DEFAULT_MAX_LOG_BYTES,
        retention: Default::default(),
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

    outln!("▸ Something is wrong with v1.1.0: roll production back");
    let record = demo
        .engine
        .rollback("production", None, &envs::actor())
        .await?;
    outln!(
        "  {}",
        envs::describe_rollback(&record).replace('\n', "\n  ")
    );
    let live = std::fs::read_to_string(state.join("environments/production/release/app.txt"))?;
    outln!("  production serves: {}\n", live.trim());

    outln!("The environments (`gitops envs`):\n");
    outln!(
        "{}\n",
        indent(&envs::env_table(&demo.engine.environments()?))
    );
    outln!("Every deployment, newest first (`gitops history`):\n");
    let history = demo.engine.ledger().history(None, 100)?;
    outln!("{}\n", indent(&envs::history_table(&history)));
    outln!(
        "Done in {:.1}s. Try it on your own repository: `gitops init`, then `gitops run --event EVENT.json --repo DIR`.",
        started.elapsed().as_secs_f64()
    );
    if keep {
        scratch.check_out("main")?;
        let (repo, state) = (dir.join("repo"), state.display());
        outln!("\nKept in {}:", dir.display());
        outln!(
            "  {}  the repository (its config: {})",
            repo.display(),
            repo.join(CONFIG_FILE).display()
        );
        outln!(
            "  {state}  the state dir: `gitops envs --state {state}`, `gitops history --state {state}`"
        );
        outln!(
            "\nThe dashboard over it (environments, runs, logs): `gitops ui --state {state} --listen 127.0.0.1:8080`, then open http://127.0.0.1:8080/"
        );
    } else {
        outln!(
            "\nTo see it in the dashboard, keep it: `gitops demo --keep DIR`, then `gitops ui --state DIR/state --listen 127.0.0.1:8080` and open http://127.0.0.1:8080/"
        );
    }
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
        outln!("▸ {title}");
        let before = self
            .engine
            .ledger()
            .history(None, 1)?
            .first()
            .map_or(0, |d| d.id);
        let runs = self.engine.start(event, &self.repo, &self.options)?;
        if runs.is_empty() {
            outln!("  no pipeline matches this event");
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
            outln!("  pipeline {name}: {}", stages.join("  "));
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
            outln!("  {}", envs::deployment_line(d));
        }
        outln!();
        Ok(())
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
