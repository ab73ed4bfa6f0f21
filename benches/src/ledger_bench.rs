//! The ledger's cost a stage: a pipeline of no-op stages run through [`Engine`] (every stage's
//! result recorded in the ledger, its log closed, the run begun and finished there) against the
//! same pipeline through the scheduler alone. Both run the same in-process executor whose stages
//! return at once, so the difference is what the engine adds around the scheduler.

use std::path::Path;
use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunResult, SchedulerOptions};

use crate::impls::{Noop, Prepared, gitops_pipeline, prepare_planned};

/// The implementations compared.
pub const IMPLS: [&str; 2] = ["engine_ledger", "scheduler_only"];

/// The shapes compared: a chain (every result recorded before the next stage starts: nothing to
/// batch) and a wide pipeline (every stage ready at once).
pub const SHAPES: [&str; 2] = ["chain", "wide"];

/// Stages in the pipeline.
pub const STAGES: usize = 10_000;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("ledger bench: {what}: {e}")
}

/// `.gitops.yml` of one pipeline `bench` on pushes to `main`, stage `s<i>` needing `s<d>`.
pub fn config_yaml(needs: &[Vec<u32>]) -> String {
    let mut text = String::from(
        "version: 1\npipelines:\n  bench:\n    on: { push: { branches: [main] } }\n    stages:\n",
    );
    for (i, ns) in needs.iter().enumerate() {
        let needs: Vec<String> = ns.iter().map(|d| format!("s{d}")).collect();
        text += &format!(
            "      s{i}: {{ run: noop, needs: [{}] }}\n",
            needs.join(", ")
        );
    }
    text
}

fn git(dir: &Path, args: &[&str]) -> String {
    crate::git(dir, args, None)
}

/// A repository whose one commit holds `config`, an engine on the no-op executor with its state
/// beside it, and the push event that runs the pipeline.
pub struct EngineBench {
    _tmp: tempfile::TempDir,
    engine: Engine,
    repo: Repository,
    event: GitEvent,
}

impl EngineBench {
    /// Makes the repository and opens the engine.
    pub fn new(config: &str) -> EngineBench {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| fail("tempdir", e));
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail("mkdir", e));
        git(&dir, &["init", "-q"]);
        std::fs::write(dir.join(".gitops.yml"), config).unwrap_or_else(|e| fail("config", e));
        git(&dir, &["add", ".gitops.yml"]);
        git(&dir, &["commit", "-q", "-m", "bench"]);
        let sha = git(&dir, &["rev-parse", "HEAD"]);
        let registry = BackendRegistry::new().with_executor("local", Arc::new(Noop));
        let engine = Engine::with_options(
            tmp.path().join("state"),
            registry,
            SchedulerOptions::default().with_max_parallel(usize::MAX),
        )
        .unwrap_or_else(|e| fail("engine", e));
        let repo = Repository::open(&dir).unwrap_or_else(|e| fail("repository", e));
        let event = GitEvent::push("bench/repo", "main", None, &sha);
        EngineBench {
            _tmp: tmp,
            engine,
            repo,
            event,
        }
    }

    /// The run of the event, planned and begun in the ledger (untimed): executing it is timed.
    pub fn start(&self) -> StartedRun {
        let mut options = RunOptions::default();
        // The stages do nothing in any directory: no checkout, which is not the ledger's cost.
        options.in_place = true;
        let mut runs = self
            .engine
            .start(&self.event, &self.repo, &options)
            .unwrap_or_else(|e| fail("start", e));
        assert_eq!(runs.len(), 1, "ledger bench: one pipeline runs");
        runs.remove(0)
    }
}

/// Executes a started run (timed); panics unless every stage succeeded.
pub async fn execute(run: StartedRun, stages: usize) {
    let report = run.execute().await.unwrap_or_else(|e| fail("execute", e));
    assert_eq!(
        report.result,
        RunResult::Success,
        "ledger bench: the run failed"
    );
    assert_eq!(report.stages.len(), stages, "ledger bench: stages reported");
}

impl EngineBench {
    /// How many stage results the ledger holds for run `id` (checked after the clock stops:
    /// every stage was recorded).
    pub fn recorded(&self, id: &str) -> usize {
        self.engine
            .ledger()
            .stage_results(id)
            .unwrap_or_else(|e| fail("ledger", e))
            .len()
    }
}

/// The scheduler-only run of the same pipeline (planned from the same needs, untimed).
pub fn scheduler_only(needs: &[Vec<u32>]) -> Prepared {
    prepare_planned(Arc::new(gitops_pipeline(needs)))
}
