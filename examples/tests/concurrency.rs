//! Concurrency groups end to end: `cancel` supersedes the running run, `queue` runs one at a
//! time and keeps only the newest waiting run, `fifo` runs every one in arrival order.

use std::path::Path;
use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunEvent, RunReport, RunResult};
use gitops_examples::scratch::ScratchRepo;
use tokio::sync::broadcast::Receiver;
use tokio::task::JoinHandle;

/// A run started by a test: its id, its task, its events still to come, those seen.
type Launched = (
    String,
    JoinHandle<RunReport>,
    Receiver<RunEvent>,
    Vec<RunEvent>,
);

struct Group {
    _tmp: tempfile::TempDir,
    engine: Engine,
    /// A second engine on the same state dir: what another process sharing it would be.
    other: Engine,
    repo: Repository,
    event: GitEvent,
    marks: std::path::PathBuf,
}

impl Group {
    fn new(mode: &str) -> Group {
        let tmp = tempfile::tempdir().unwrap();
        let marks = tmp.path().join("marks");
        let config = format!(
            r#"version: 1
pipelines:
  main:
    on: {{ push: {{ branches: [main] }} }}
    concurrency: {{ group: "deploy-${{{{ event.branch }}}}", on_conflict: {mode} }}
    stages:
      work: {{ run: "echo start-$GITOPS_RUN_ID >> {m}; sleep 0.6; echo end-$GITOPS_RUN_ID >> {m}" }}
"#,
            m = marks.display()
        );
        let mut scratch = ScratchRepo::init(&tmp.path().join("repo")).unwrap();
        let sha = scratch
            .commit("main", None, "init", &[(".gitops.yml", &config)])
            .unwrap();
        let engine = || {
            let registry =
                BackendRegistry::new().with_executor("local", Arc::new(LocalBackend::new()));
            Engine::open(tmp.path().join("state"), registry).unwrap()
        };
        Group {
            engine: engine(),
            other: engine(),
            repo: Repository::open(scratch.path()).unwrap(),
            event: GitEvent::push("o/r", "main", None, &sha),
            marks,
            _tmp: tmp,
        }
    }

    fn start(&self, engine: &Engine) -> StartedRun {
        engine
            .start(&self.event, &self.repo, &RunOptions::default())
            .unwrap()
            .remove(0)
    }

    /// Starts a run and returns once `until` saw one of its events.
    async fn launch(&self, until: impl Fn(&RunEvent) -> bool) -> Launched {
        self.launch_on(&self.engine, until).await
    }

    /// The same, on `engine`.
    async fn launch_on(&self, engine: &Engine, until: impl Fn(&RunEvent) -> bool) -> Launched {
        let run = self.start(engine);
        let id = run.id.clone();
        let mut events = run.subscribe();
        let task = tokio::spawn(async move { run.execute().await.unwrap() });
        let mut seen = Vec::new();
        loop {
            let e = events.recv().await.unwrap();
            let done = until(&e);
            seen.push(e);
            if done {
                break;
            }
        }
        (id, task, events, seen)
    }

    /// Returns once a stage wrote `mark` (a stage's process starts a moment after its event).
    async fn wait_for_mark(&self, mark: &str) {
        while !self.marks().iter().any(|m| m == mark) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn marks(&self) -> Vec<String> {
        read_lines(&self.marks)
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn started(e: &RunEvent) -> bool {
    matches!(e, RunEvent::StageStarted { .. })
}

fn queued(e: &RunEvent) -> bool {
    matches!(e, RunEvent::RunQueued { .. })
}

fn positions(events: &[RunEvent]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RunQueued { position, .. } => Some(*position),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_supersedes_the_running_run() {
    let g = Group::new("cancel");
    let (a, ta, _, _) = g.launch(started).await;
    g.wait_for_mark(&format!("start-{a}")).await;
    let (b, tb, _, _) = g.launch(started).await;
    check_cancelled(&g, (a, ta), (b, tb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_supersedes_a_run_of_another_process() {
    // The older run learns from the ledger that it was superseded.
    let g = Group::new("cancel");
    let (a, ta, _, _) = g.launch_on(&g.other, started).await;
    g.wait_for_mark(&format!("start-{a}")).await;
    let (b, tb, _, _) = g.launch(started).await;
    check_cancelled(&g, (a, ta), (b, tb)).await;
}

async fn check_cancelled(
    g: &Group,
    (a, ta): (String, JoinHandle<RunReport>),
    (b, tb): (String, JoinHandle<RunReport>),
) {
    let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
    assert_eq!(ra.result, RunResult::Cancelled, "the older run is stopped");
    assert_eq!(rb.result, RunResult::Success);
    assert_stopped_then_ran(g, &a, &b);
}

/// Run `a` started and was stopped before its end; run `b` ran after it, to its end.
fn assert_stopped_then_ran(g: &Group, a: &str, b: &str) {
    assert_eq!(
        g.marks(),
        [
            format!("start-{a}"),
            format!("start-{b}"),
            format!("end-{b}")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_runs_one_at_a_time_and_keeps_only_the_newest_waiting_run() {
    let g = Group::new("queue");
    let (a, ta, _, _) = g.launch(started).await;
    let (b, tb, mut eb, seen_b) = g.launch(queued).await;
    let (c, tc, _, seen_c) = g.launch(queued).await;
    let (ra, rb, rc) = (ta.await.unwrap(), tb.await.unwrap(), tc.await.unwrap());
    assert_eq!(ra.result, RunResult::Success);
    assert_eq!(
        rb.result,
        RunResult::Cancelled,
        "the older waiting run is dropped"
    );
    assert_eq!(rc.result, RunResult::Success);
    assert_eq!((positions(&seen_b), positions(&seen_c)), (vec![1], vec![1]));
    let mut superseded = false;
    while let Ok(e) = eb.try_recv() {
        superseded |= matches!(e, RunEvent::RunSuperseded { .. });
        assert!(!started(&e), "the superseded run started a stage");
    }
    assert!(superseded, "run {b} was told it was superseded");
    assert_eq!(
        g.marks(),
        [
            format!("start-{a}"),
            format!("end-{a}"),
            format!("start-{c}"),
            format!("end-{c}")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_runs_every_run_in_arrival_order() {
    let g = Group::new("fifo");
    let (a, ta, _, _) = g.launch(started).await;
    let (b, tb, _, seen_b) = g.launch(queued).await;
    let (c, tc, mut ec, seen_c) = g.launch(queued).await;
    for t in [ta, tb, tc] {
        assert_eq!(t.await.unwrap().result, RunResult::Success);
    }
    let mut later = Vec::new();
    while let Ok(e) = ec.try_recv() {
        later.push(e);
    }
    assert_eq!(positions(&seen_b), [1]);
    assert_eq!(
        positions(&seen_c),
        [2],
        "the third run starts with two ahead"
    );
    assert_eq!(positions(&later), [1], "and moves up as the first one ends");
    let order: Vec<String> = [&a, &b, &c]
        .iter()
        .flat_map(|id| [format!("start-{id}"), format!("end-{id}")])
        .collect();
    assert_eq!(g.marks(), order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_while_running_is_cancelled_and_leaves_its_group() {
    let g = Group::new("queue");
    let run = g.start(&g.engine);
    let a = run.id.clone();
    let workdir = g.engine.ledger().run(&a).unwrap().workdir;
    let task = tokio::spawn(run.execute());
    g.wait_for_mark(&format!("start-{a}")).await;
    // Dropping the future (as a timeout around it would) ends the run here and now.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_ended_cancelled(&g, &a, &workdir).await;
    // The group does not wait for it: the next run starts at once, and the dropped run's
    // stage was stopped rather than left to finish.
    let (b, tb, _, seen_b) = g.launch(started).await;
    assert!(
        positions(&seen_b).is_empty(),
        "the next run waited: {seen_b:?}"
    );
    assert_eq!(tb.await.unwrap().result, RunResult::Success);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_stopped_then_ran(&g, &a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_but_never_executed_is_recorded_cancelled_when_dropped() {
    let g = Group::new("fifo");
    let run = g.start(&g.engine);
    let a = run.id.clone();
    let workdir = g.engine.ledger().run(&a).unwrap().workdir;
    assert!(workdir.exists(), "the run has its checkout");
    drop(run);
    assert_ended_cancelled(&g, &a, &workdir).await;
}

/// The ledger shows run `id` ended as cancelled, and its working tree `workdir` was given back:
/// idle in the engine's pool of cached trees (for a later run to reuse), or removed. The tree
/// is given back when the run's task lets go of it, which may be a moment after the ledger says
/// cancelled (what the stages left running in it is stopped first): waited for, 10 s at most.
async fn assert_ended_cancelled(g: &Group, id: &str, workdir: &Path) {
    assert_eq!(
        g.engine.ledger().run(id).unwrap().status,
        gitops_core::ledger::RunStatus::Finished(RunResult::Cancelled)
    );
    let pool = g.engine.worktrees().unwrap();
    assert!(
        workdir.starts_with(pool.dir()),
        "{} is a tree of the pool",
        workdir.display()
    );
    let given_back = || !workdir.exists() || pool.idle() >= 1;
    for _ in 0..1000 {
        if given_back() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        given_back(),
        "its tree {} is given back to the pool ({} idle) or removed",
        workdir.display(),
        pool.idle()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_handle_cancels_the_runs_it_started() {
    let g = Group::new("fifo");
    let engine = g.engine.clone();
    let (event, repo) = (g.event.clone(), g.repo.clone());
    let handling =
        tokio::spawn(async move { engine.handle(&event, &repo, &RunOptions::default()).await });
    while !g.marks().iter().any(|m| m.starts_with("start-")) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    handling.abort();
    assert!(handling.await.unwrap_err().is_cancelled());
    // The runs' tasks are aborted, which the runtime carries out a moment later.
    let ledger = g.engine.ledger();
    let mut run = ledger.runs(1).unwrap().remove(0);
    for _ in 0..100 {
        if run.status != gitops_core::ledger::RunStatus::Running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        run = ledger.run(&run.id).unwrap();
    }
    assert_ended_cancelled(&g, &run.id, &run.workdir).await;
    // Its stage was stopped, not left to finish.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(g.marks(), [format!("start-{}", run.id)]);
}
