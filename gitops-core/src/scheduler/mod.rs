//! The scheduler: runs a planned pipeline's stage graph on the registered backends.
//!
//! A stage starts the moment its needs have finished (in-degree counts and a ready queue, no
//! polling), within a global parallelism bound and optional bounds per backend. The task of a
//! stage that ends does the bookkeeping itself and starts what became ready, running the next
//! of those stages in the same task, with at most one such task per worker taking ready
//! stages; a task whose stage waits hands the ready ones on to a new task. Stages whose
//! backends return at once (a chain, or thousands in parallel) cost no task and no wakeup
//! each, and every stage that waits still runs concurrently with the others. `if:` is
//! evaluated when a stage becomes ready (default `success()`); retries, timeouts and
//! cancellation are enforced here, so every backend gets them the same way.
//! Everything that happens is published as [`RunEvent`]s to any number of subscribers, and
//! the run ends with a [`RunReport`].
//!
//! Its files, each using only those listed before it: `report` (what a run ends with), `gate`
//! (what deploys pass through), `events` (what happens), `spec` (what a run is given),
//! `progress` (what a run knows of its stages), `context` (their expressions at run time),
//! `mask` and `target` (a backend's result, and which backend), `state` (what a run's tasks
//! share), `job` (a stage that gets a task of its own), `bookkeeping` (counts and queues),
//! `end` (a stage's end booked), `call` (the gate and the backend's call), `once` and
//! `attempts` (one stage, with or without a policy), `tasks` (runners and stage tasks, and
//! what they do when a stage ends), `run` (the [`Scheduler`], a [`Run`] and its own task).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use gitops_core::backend::{BackendRegistry, RunInfo, memory::MemoryBackend};
//! use gitops_core::config::Config;
//! use gitops_core::event::{EventPayload, GitEvent};
//! use gitops_core::plan::{Changes, Planner};
//! use gitops_core::scheduler::{RunResult, RunSpec, Scheduler};
//!
//! let config = Config::parse("f", "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      a: { run: x }\n      b: { run: y, needs: a }\n").unwrap();
//! let event: GitEvent = serde_json::from_str(r#"{"kind":"push","repo":"o/r","sha":"abc","ref":"refs/heads/main",
//!     "branch":"main","before":null,"after":"abc","created":true,"deleted":false,"forced":false}"#).unwrap();
//! let plan = Planner::new().plan(&event, &config, &Changes::Unknown).unwrap();
//! let pipeline = Arc::new(plan.pipelines[0].clone());
//! let registry = BackendRegistry::new().with_executor("local", Arc::new(MemoryBackend::new()));
//! let run = Scheduler::new(registry).run(pipeline, RunSpec::new(RunInfo::new("run-1", "ci", event, ".")));
//! let report = run.execute().await;
//! assert_eq!(report.result, RunResult::Success);
//! # }
//! ```

mod attempts;
mod bookkeeping;
mod call;
mod context;
mod end;
mod events;
mod gate;
mod job;
mod mask;
mod once;
mod progress;
mod report;
mod run;
mod spec;
mod state;
mod target;
mod tasks;

pub use events::RunEvent;
pub use gate::{
    DEPLOYER_PANICKED, DeploymentGate, GateRefusal, GateTicket, Revocation, WaitReason,
};
pub(crate) use mask::masked;
pub use report::{RunReport, RunResult, SkipReason, StageReport, StageResult};
pub use run::{Run, Scheduler};
pub use spec::{LogRecorder, RecordError, RunRecorder, RunSpec, SchedulerOptions};
