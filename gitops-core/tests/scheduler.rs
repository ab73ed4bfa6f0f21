//! The scheduler on the in-memory test double: ordering, parallelism bounds, skip reasons,
//! retries, timeouts, cancellation and outputs, proven with the run's own timestamps.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::backend::memory::{MemoryBackend, Script};
use gitops_core::backend::{BackendRegistry, RunInfo};
use gitops_core::config::Config;
use gitops_core::event::GitEvent;
use gitops_core::plan::{Changes, PlannedPipeline, Planner};
use gitops_core::scheduler::{
    RunEvent, RunReport, RunResult, RunSpec, Scheduler, SchedulerOptions, SkipReason, StageReport,
    StageResult,
};

fn event() -> GitEvent {
    serde_json::from_value(serde_json::json!({"kind": "push", "repo": "o/r", "sha": "abc", "ref": "refs/heads/main",
        "branch": "main", "before": null, "after": "abc", "created": true, "deleted": false, "forced": false}))
    .unwrap()
}

fn pipeline(stages: &str) -> Arc<PlannedPipeline> {
    let yaml =
        format!("version: 1\npipelines:\n  p:\n    on: {{ push: {{}} }}\n    stages:\n{stages}");
    let config = Config::parse_with(
        "t.yml",
        &yaml,
        &gitops_core::config::LoadOptions::default().with_backend("slow"),
    )
    .unwrap();
    let plan = Planner::new()
        .plan(&event(), &config, &Changes::Unknown)
        .unwrap();
    Arc::new(plan.pipelines[0].clone())
}

async fn run(
    p: Arc<PlannedPipeline>,
    backend: MemoryBackend,
    options: SchedulerOptions,
) -> (RunReport, Vec<RunEvent>) {
    let backend = Arc::new(backend);
    let registry = BackendRegistry::new()
        .with_executor("local", backend.clone())
        .with_executor("slow", backend);
    let run = Scheduler::with_options(registry, options)
        .run(p, RunSpec::new(RunInfo::new("r1", "p", event(), ".")));
    let mut rx = run.subscribe();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(e) = rx.recv().await {
            let end = matches!(e, RunEvent::RunFinished { .. });
            events.push(e);
            if end {
                break;
            }
        }
        events
    });
    let report = run.execute().await;
    (report, collector.await.unwrap())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The largest number of stages running at one instant, from the report's timestamps.
fn max_overlap(report: &RunReport, filter: impl Fn(&str) -> bool) -> usize {
    let mut points: Vec<(f64, i32)> = Vec::new();
    for s in report.stages.iter().filter(|s| filter(&s.id)) {
        if let (Some(a), Some(b)) = (s.started_secs, s.finished_secs) {
            points.push((a, 1));
            points.push((b, -1));
        }
    }
    // Ends sort before starts at the same instant.
    points.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut cur, mut max) = (0, 0);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_stages_run_in_parallel_up_to_the_bound_and_never_beyond() {
    let stages: String = (0..6)
        .map(|i| format!("      s{i}: {{ run: x }}\n"))
        .collect();
    let mut backend = MemoryBackend::new();
    for i in 0..6 {
        backend = backend.with_script(&format!("s{i}"), Script::ok().delay(ms(300)));
    }
    let (report, _) = run(
        pipeline(&stages),
        backend,
        SchedulerOptions::default().with_max_parallel(2),
    )
    .await;
    assert_eq!(report.result, RunResult::Success);
    assert_eq!(max_overlap(&report, |_| true), 2, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_bound_holds_while_others_run_freely() {
    let mut stages = String::new();
    let mut backend = MemoryBackend::new();
    for i in 0..4 {
        stages.push_str(&format!(
            "      slow{i}: {{ backend: slow, run: x }}\n      fast{i}: {{ run: x }}\n"
        ));
        backend = backend
            .with_script(&format!("slow{i}"), Script::ok().delay(ms(200)))
            .with_script(&format!("fast{i}"), Script::ok().delay(ms(200)));
    }
    let options = SchedulerOptions::default()
        .with_max_parallel(8)
        .with_backend_limit("slow", 1);
    let (report, _) = run(pipeline(&stages), backend, options).await;
    assert_eq!(max_overlap(&report, |id| id.starts_with("slow")), 1);
    assert_eq!(max_overlap(&report, |id| id.starts_with("fast")), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_never_starts_before_its_needs_end() {
    let stages = "      a: { run: x }\n      b: { run: x, needs: a }\n      c: { run: x, needs: a }\n      d: { run: x, needs: [b, c] }\n      e: { run: x }\n";
    let backend = ["a", "b", "c", "d", "e"]
        .iter()
        .fold(MemoryBackend::new(), |b, s| {
            b.with_script(s, Script::ok().delay(ms(100)))
        });
    let (report, events) = run(
        pipeline(stages),
        backend,
        SchedulerOptions::default().with_max_parallel(4),
    )
    .await;
    let p = pipeline(stages);
    for s in &p.stages {
        let me = report.stage(&s.id).unwrap();
        for need in s.needs() {
            let n = report.stage(need).unwrap();
            assert!(
                me.started_secs.unwrap() >= n.finished_secs.unwrap(),
                "{} started before its need {} ended",
                s.id,
                need
            );
        }
    }
    // b and c (and e) overlap: ready stages start at once.
    assert!(max_overlap(&report, |id| id == "b" || id == "c") == 2);
    // The event stream agrees: every StageStarted of d comes after StageFinished of b and c.
    let pos = |pred: &dyn Fn(&RunEvent) -> bool| events.iter().position(pred).unwrap();
    let d_started = pos(&|e| matches!(e, RunEvent::StageStarted { stage, .. } if stage == "d"));
    for need in ["b", "c"] {
        let finished =
            pos(&|e| matches!(e, RunEvent::StageFinished { stage, .. } if stage == need));
        assert!(finished < d_started);
    }
}

#[tokio::test]
async fn failures_skip_dependents_with_reasons_and_always_stages_still_run() {
    let stages = r#"      build: { run: x }
      test: { run: x, needs: build }
      package: { run: x, needs: test }
      publish: { run: x, needs: package }
      cleanup: { run: x, needs: package, if: "always()" }
      notify: { run: x, needs: test, if: "failure()" }
      lint: { run: x, needs: build, if: "event.branch == 'dev'" }
      docs: { run: x, needs: lint }
"#;
    let backend = MemoryBackend::new().with_script("test", Script::ok().fail().exit_code(2));
    let (report, events) = run(pipeline(stages), backend, SchedulerOptions::default()).await;
    let r = |id: &str| report.stage(id).unwrap().result.clone();
    assert_eq!(r("build"), StageResult::Success);
    assert_eq!(
        r("test"),
        StageResult::Failure {
            message: "exit code 2".into(),
            exit_code: Some(2)
        }
    );
    assert_eq!(
        r("package"),
        StageResult::Skipped {
            reason: SkipReason::NeedFailed {
                need: "test".into()
            }
        }
    );
    assert_eq!(
        r("publish"),
        StageResult::Skipped {
            reason: SkipReason::NeedSkipped {
                need: "package".into()
            }
        }
    );
    assert_eq!(r("cleanup"), StageResult::Success);
    assert_eq!(r("notify"), StageResult::Success);
    assert_eq!(
        r("lint"),
        StageResult::Skipped {
            reason: SkipReason::ConditionFalse {
                expr: "event.branch == 'dev'".into()
            }
        }
    );
    assert_eq!(
        r("docs"),
        StageResult::Skipped {
            reason: SkipReason::NeedSkipped {
                need: "lint".into()
            }
        }
    );
    assert_eq!(report.result, RunResult::Failure);
    // The reasons are in the run events too, and in the JSON report.
    assert!(events.iter().any(|e| matches!(e, RunEvent::StageFinished { stage, result: StageResult::Skipped { reason: SkipReason::NeedFailed { need } }, .. } if stage == "package" && need == "test")));
    let json = serde_json::to_value(report.stage("package").unwrap()).unwrap();
    assert_eq!(json["result"], "skipped");
    assert_eq!(
        json["reason"],
        serde_json::json!({"kind": "need_failed", "need": "test"})
    );
}

#[tokio::test]
async fn continue_on_error_keeps_the_run_and_dependents_going() {
    let stages = "      flaky-lint: { run: x, continue_on_error: true }\n      build: { run: x, needs: flaky-lint }\n";
    let backend = MemoryBackend::new().with_script("flaky-lint", Script::ok().fail());
    let (report, _) = run(pipeline(stages), backend, SchedulerOptions::default()).await;
    assert!(report.stage("flaky-lint").unwrap().result.is_failure());
    assert_eq!(report.stage("build").unwrap().result, StageResult::Success);
    assert_eq!(report.result, RunResult::Success);
}

#[tokio::test]
async fn retries_count_attempts_and_report_flaky_stages() {
    let stages = r#"      eventually: { run: x, retry: { max: 2, backoff: 10ms } }
      never: { run: x, retry: { max: 2 } }
      wrong-code: { run: x, retry: { max: 3, on_exit_codes: [75] } }
      right-code: { run: x, retry: { max: 3, on_exit_codes: [75] } }
"#;
    let backend = MemoryBackend::new()
        .with_script("eventually", Script::ok().fail_first(2))
        .with_script("never", Script::ok().fail())
        .with_script("wrong-code", Script::ok().fail_first(1).exit_code(1))
        .with_script("right-code", Script::ok().fail_first(1).exit_code(75));
    let (report, events) = run(pipeline(stages), backend, SchedulerOptions::default()).await;
    let s = |id: &str| report.stage(id).unwrap().clone();
    assert_eq!(
        (
            s("eventually").attempts,
            s("eventually").flaky,
            s("eventually").result
        ),
        (3, true, StageResult::Success)
    );
    assert_eq!((s("never").attempts, s("never").flaky), (3, false));
    assert!(s("never").result.is_failure());
    assert_eq!(s("wrong-code").attempts, 1);
    assert_eq!((s("right-code").attempts, s("right-code").flaky), (2, true));
    let retries = events
        .iter()
        .filter(|e| matches!(e, RunEvent::StageRetrying { stage, .. } if stage == "eventually"))
        .count();
    assert_eq!(retries, 2);
    // Exponential backoff: 10ms, then 20ms.
    let delays: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StageRetrying {
                stage, delay_secs, ..
            } if stage == "eventually" => Some(*delay_secs),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [0.01, 0.02]);
}

#[tokio::test]
async fn a_timeout_stops_the_stage() {
    let stages = "      slow: { run: x, timeout: 200ms }\n      after: { run: x, needs: slow, if: always() }\n";
    let backend =
        MemoryBackend::new().with_script("slow", Script::ok().delay(Duration::from_secs(3600)));
    let (report, _) = run(pipeline(stages), backend, SchedulerOptions::default()).await;
    let slow = report.stage("slow").unwrap();
    assert_eq!(slow.result, StageResult::TimedOut { after_secs: 0.2 });
    assert!(slow.duration().unwrap() < Duration::from_secs(5));
    assert_eq!(report.stage("after").unwrap().result, StageResult::Success);
    assert_eq!(report.result, RunResult::Failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_running_stages_and_skips_the_rest() {
    let stages = "      a: { run: x }\n      b: { run: x }\n      c: { run: x, needs: a }\n      d: { run: x }\n";
    let backend = MemoryBackend::new()
        .with_script("a", Script::ok().delay(Duration::from_secs(3600)))
        .with_script("b", Script::ok().delay(Duration::from_secs(3600)))
        .with_script("d", Script::ok().delay(Duration::from_secs(3600)));
    let backend = Arc::new(backend);
    let registry = BackendRegistry::new().with_executor("local", backend);
    let options = SchedulerOptions::default().with_max_parallel(2);
    let run = Scheduler::with_options(registry, options).run(
        pipeline(stages),
        RunSpec::new(RunInfo::new("r", "p", event(), ".")),
    );
    let cancel = run.cancel_token();
    tokio::spawn(async move {
        tokio::time::sleep(ms(200)).await;
        cancel.cancel();
    });
    let report = tokio::time::timeout(Duration::from_secs(10), run.execute())
        .await
        .expect("cancelled run ends");
    let r = |id: &str| report.stage(id).unwrap().result.clone();
    assert_eq!(r("a"), StageResult::Cancelled);
    assert_eq!(r("b"), StageResult::Cancelled);
    assert_eq!(
        r("c"),
        StageResult::Skipped {
            reason: SkipReason::RunCancelled
        }
    );
    assert_eq!(
        r("d"),
        StageResult::Skipped {
            reason: SkipReason::RunCancelled
        }
    );
    assert_eq!(report.result, RunResult::Cancelled);
}

/// Finishes its work whatever happens meanwhile: it succeeds 300 ms after it starts.
struct Stubborn;

#[async_trait::async_trait]
impl gitops_core::backend::Executor for Stubborn {
    async fn execute(
        &self,
        _ctx: gitops_core::backend::StageContext,
    ) -> Result<gitops_core::backend::Completion, gitops_core::backend::BackendError> {
        tokio::time::sleep(ms(300)).await;
        Ok(gitops_core::backend::Completion::success())
    }
}

#[tokio::test]
async fn a_stage_that_succeeds_while_the_run_is_cancelled_is_reported_as_it_ended() {
    let registry = BackendRegistry::new().with_executor("local", Arc::new(Stubborn));
    let run = Scheduler::new(registry).run(
        pipeline("      a: { run: x }\n      b: { run: x, needs: a }\n"),
        RunSpec::new(RunInfo::new("r", "p", event(), ".")),
    );
    let cancel = run.cancel_token();
    tokio::spawn(async move {
        tokio::time::sleep(ms(100)).await;
        cancel.cancel();
    });
    let report = run.execute().await;
    assert_eq!(report.stage("a").unwrap().result, StageResult::Success);
    assert_eq!(
        report.stage("b").unwrap().result,
        StageResult::Skipped {
            reason: SkipReason::RunCancelled
        }
    );
    assert_eq!(report.result, RunResult::Cancelled);
}

#[tokio::test]
async fn outputs_feed_the_env_and_conditions_of_dependents() {
    let stages = r#"      build: { run: x }
      deploy:
        needs: build
        run: x
        if: "stages.build.outputs.image == 'app:1'"
        env: { IMAGE: "${{ stages.build.outputs.image }}", MISSING: "[${{ stages.build.outputs.nope }}]", SHA: "${{ event.sha }}" }
"#;
    let backend = MemoryBackend::new()
        .with_script("build", Script::ok().output("image", "app:1"))
        .recording();
    let backend = Arc::new(backend);
    let registry = BackendRegistry::new().with_executor("local", backend.clone());
    let report = Scheduler::new(registry)
        .run(
            pipeline(stages),
            RunSpec::new(RunInfo::new("r", "p", event(), ".")),
        )
        .execute()
        .await;
    assert_eq!(report.stage("deploy").unwrap().result, StageResult::Success);
    assert_eq!(report.stage("build").unwrap().outputs["image"], "app:1");
    let deploy = backend
        .calls()
        .into_iter()
        .find(|c| c.stage == "deploy")
        .unwrap();
    assert_eq!(deploy.env["IMAGE"], "app:1");
    assert_eq!(deploy.env["MISSING"], "[]");
    assert_eq!(deploy.env["SHA"], "abc");
}

/// Reused results decide their dependents as results of this run would: a reused failure
/// skips what needs it and lets `failure()` run, and so does a failure further up.
#[tokio::test]
async fn reused_results_decide_their_dependents_like_fresh_ones() {
    let stages = r#"      build: { run: x }
      lint: { run: x }
      test: { run: x, needs: build }
      report: { run: x, needs: test, if: "failure()" }
      package: { run: x, needs: lint }
      publish: { run: x, needs: package }
      notify: { run: x, needs: package, if: "failure()" }
"#;
    let reused = |id: &str, result: StageResult| StageReport {
        id: id.into(),
        result,
        attempts: 1,
        flaky: false,
        started_secs: Some(0.0),
        finished_secs: Some(1.0),
        outputs: Default::default(),
        reused: false,
    };
    let failed = StageResult::Failure {
        message: "exit code 1".into(),
        exit_code: Some(1),
    };
    // `package` succeeded after `lint` failed (in a run where `lint` had continue_on_error,
    // say): its ancestry has a failure all the same.
    let reuse = [
        reused("build", failed.clone()),
        reused("lint", failed),
        reused("package", StageResult::Success),
    ]
    .into_iter()
    .map(|r| (r.id.to_string(), r))
    .collect();
    let backend = Arc::new(MemoryBackend::new().recording());
    let registry = BackendRegistry::new().with_executor("local", backend.clone());
    let report = Scheduler::new(registry)
        .run(
            pipeline(stages),
            RunSpec::new(RunInfo::new("r", "p", event(), ".")).with_reuse(reuse),
        )
        .execute()
        .await;
    let r = |id: &str| report.stage(id).unwrap().result.clone();
    assert_eq!(
        r("test"),
        StageResult::Skipped {
            reason: SkipReason::NeedFailed {
                need: "build".into()
            }
        }
    );
    assert_eq!(
        r("report"),
        StageResult::Success,
        "failure() sees the reused failure"
    );
    assert_eq!(r("publish"), StageResult::Success);
    assert_eq!(
        r("notify"),
        StageResult::Success,
        "failure() sees the failure above the reused success"
    );
    assert!(report.stage("package").unwrap().reused);
    let called: Vec<String> = backend.calls().into_iter().map(|c| c.stage).collect();
    assert_eq!(
        called.len(),
        3,
        "only report, publish and notify run: {called:?}"
    );
    assert_eq!(report.result, RunResult::Failure);
}

#[tokio::test]
async fn event_data_that_looks_like_a_template_is_not_evaluated() {
    let stages = "      a: { run: x, env: { TITLE: \"${{ event.branch }}\" } }\n";
    let mut e = event();
    if let gitops_core::event::EventPayload::Push(p) = &mut e.payload {
        p.branch = "${{ env.SECRET }}".into();
    }
    let config = Config::parse(
        "t.yml",
        &format!("version: 1\npipelines:\n  p:\n    on: {{ push: {{}} }}\n    stages:\n{stages}"),
    )
    .unwrap();
    let plan = Planner::new().plan(&e, &config, &Changes::Unknown).unwrap();
    let backend = Arc::new(MemoryBackend::new().recording());
    let registry = BackendRegistry::new().with_executor("local", backend.clone());
    let mut spec = RunSpec::new(RunInfo::new("r", "p", e, "."));
    spec.env.insert("SECRET".into(), "leaked".into());
    Scheduler::new(registry)
        .run(Arc::new(plan.pipelines[0].clone()), spec)
        .execute()
        .await;
    assert_eq!(backend.calls()[0].env["TITLE"], "${{ env.SECRET }}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_no_op_stages_run_to_completion() {
    // Layers of 100 stages, each needing two stages of the layer before.
    let mut stages = String::with_capacity(1 << 20);
    for layer in 0..100 {
        for i in 0..100 {
            if layer == 0 {
                stages.push_str(&format!("      s{layer}x{i}: {{ run: x }}\n"));
            } else {
                let (a, b) = (i, (i * 7 + 3) % 100);
                stages.push_str(&format!(
                    "      s{layer}x{i}: {{ run: x, needs: [s{}x{a}, s{}x{b}] }}\n",
                    layer - 1,
                    layer - 1
                ));
            }
        }
    }
    let p = pipeline(&stages);
    assert_eq!(p.stages.len(), 10_000);
    let registry = BackendRegistry::new().with_executor("local", Arc::new(MemoryBackend::new()));
    let options = SchedulerOptions::default().with_max_parallel(10_000);
    let report = Scheduler::with_options(registry, options)
        .run(
            p.clone(),
            RunSpec::new(RunInfo::new("r", "p", event(), ".")),
        )
        .execute()
        .await;
    assert_eq!(report.result, RunResult::Success);
    assert!(
        report
            .stages
            .iter()
            .all(|s| s.result == StageResult::Success && s.attempts == 1)
    );
    assert_times_honour_needs(&p, &report);
}

/// The report lists the stages in config order, and each started after every stage it needs
/// ended, and ended after it started: however the stages ended (two workers end them out of
/// order) and however their start was taken (a runner going straight on reads no clock).
fn assert_times_honour_needs(p: &PlannedPipeline, report: &RunReport) {
    let ids: Vec<&str> = report.stages.iter().map(|s| &*s.id).collect();
    let config: Vec<&str> = p.stages.iter().map(|s| &*s.id).collect();
    assert_eq!(ids, config, "the report is not in config order");
    let by_id: std::collections::HashMap<&str, &StageReport> =
        report.stages.iter().map(|s| (&*s.id, s)).collect();
    for (stage, planned) in report.stages.iter().zip(&p.stages) {
        let (started, finished) = (stage.started_secs.unwrap(), stage.finished_secs.unwrap());
        assert!(started <= finished, "{} ended before it started", stage.id);
        for need in planned.needs() {
            let need = by_id[need.as_str()];
            assert!(
                started >= need.finished_secs.unwrap(),
                "{} started at {started} before its need {} ended at {:?}",
                stage.id,
                need.id,
                need.finished_secs
            );
        }
    }
}

/// Each stage waits until all `n` have started (a rendezvous), then succeeds.
struct Rendezvous(tokio::sync::Barrier);

#[async_trait::async_trait]
impl gitops_core::backend::Executor for Rendezvous {
    async fn execute(
        &self,
        _ctx: gitops_core::backend::StageContext,
    ) -> Result<gitops_core::backend::Completion, gitops_core::backend::BackendError> {
        self.0.wait().await;
        Ok(gitops_core::backend::Completion::success())
    }
}

/// `n` stages that need nothing, named `s0`, `s1`, ...
fn parallel_stages(n: usize) -> String {
    (0..n)
        .map(|i| format!("      s{i}: {{ run: x }}\n"))
        .collect()
}

// One worker: the task that runs the first stage must hand the others on while it waits.
#[tokio::test]
async fn stages_that_wait_for_each_other_all_start() {
    let n = 40;
    let registry = BackendRegistry::new()
        .with_executor("local", Arc::new(Rendezvous(tokio::sync::Barrier::new(n))));
    let options = SchedulerOptions::default().with_max_parallel(n);
    let run = Scheduler::with_options(registry, options).run(
        pipeline(&parallel_stages(n)),
        RunSpec::new(RunInfo::new("r", "p", event(), ".")),
    );
    let report = tokio::time::timeout(Duration::from_secs(10), run.execute())
        .await
        .expect("every stage started, so the rendezvous was reached");
    assert_eq!(report.result, RunResult::Success);
    assert_eq!(max_overlap(&report, |_| true), n);
}

/// Notes the most tasks alive on the runtime while any stage ran; succeeds at once.
#[derive(Default)]
struct TaskCount(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl gitops_core::backend::Executor for TaskCount {
    async fn execute(
        &self,
        _ctx: gitops_core::backend::StageContext,
    ) -> Result<gitops_core::backend::Completion, gitops_core::backend::BackendError> {
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        self.0
            .fetch_max(alive, std::sync::atomic::Ordering::Relaxed);
        Ok(gitops_core::backend::Completion::success())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_whose_backend_returns_at_once_do_not_each_cost_a_task() {
    let backend = Arc::new(TaskCount::default());
    let registry = BackendRegistry::new().with_executor("local", backend.clone());
    let options = SchedulerOptions::default().with_max_parallel(2000);
    let report = Scheduler::with_options(registry, options)
        .run(
            pipeline(&parallel_stages(2000)),
            RunSpec::new(RunInfo::new("r", "p", event(), ".")),
        )
        .execute()
        .await;
    assert_eq!(report.result, RunResult::Success);
    // The run's own task is the test's; the stages run in one task per worker at most, and
    // one more for the instant a runner whose budget is spent hands over to a new one (a
    // task a stage would make 2,000 alive at once).
    let most = backend.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=3).contains(&most), "{most} tasks alive at once");
}

/// Cancels the run (through the token it holds) from the first stage it runs, which then
/// succeeds; counts its calls.
struct CancelsTheRun {
    token: std::sync::OnceLock<tokio_util::sync::CancellationToken>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl gitops_core::backend::Executor for CancelsTheRun {
    async fn execute(
        &self,
        _ctx: gitops_core::backend::StageContext,
    ) -> Result<gitops_core::backend::Completion, gitops_core::backend::BackendError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(token) = self.token.get() {
            token.cancel();
        }
        Ok(gitops_core::backend::Completion::success())
    }
}

// One worker, so that the first stage's task still holds the others, started but not run.
#[tokio::test]
async fn stages_started_but_not_yet_run_when_the_run_is_cancelled_never_run() {
    let backend = Arc::new(CancelsTheRun {
        token: std::sync::OnceLock::new(),
        calls: Default::default(),
    });
    let registry = BackendRegistry::new().with_executor("local", backend.clone());
    let options = SchedulerOptions::default().with_max_parallel(10);
    let run = Scheduler::with_options(registry, options).run(
        pipeline(&parallel_stages(10)),
        RunSpec::new(RunInfo::new("r", "p", event(), ".")),
    );
    let _ = backend.token.set(run.cancel_token());
    let report = run.execute().await;
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    let ran: Vec<_> = report
        .stages
        .iter()
        .filter(|s| s.result == StageResult::Success)
        .collect();
    assert_eq!(ran.len(), 1, "{report:#?}");
    let skipped = StageResult::Skipped {
        reason: SkipReason::RunCancelled,
    };
    assert_eq!(
        report.stages.iter().filter(|s| s.result == skipped).count(),
        9,
        "{report:#?}"
    );
    assert_eq!(report.result, RunResult::Cancelled);
}

/// What happened, in order: `start X` from the executor, `record X` from the recorder.
#[derive(Default)]
struct Journal(std::sync::Mutex<Vec<String>>);

impl Journal {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn position(&self, entry: &str) -> Option<usize> {
        self.entries().iter().position(|e| e == entry)
    }
}

/// Journals each start; stage `boom` panics, stage `slow` takes 300 ms, stages whose id
/// starts with `fail` fail, the rest succeed at once.
struct Journaling(Arc<Journal>);

#[async_trait::async_trait]
impl gitops_core::backend::Executor for Journaling {
    async fn execute(
        &self,
        ctx: gitops_core::backend::StageContext,
    ) -> Result<gitops_core::backend::Completion, gitops_core::backend::BackendError> {
        self.0.push(format!("start {}", ctx.stage));
        match &*ctx.stage {
            "boom" => panic!("a bug in the backend"),
            "slow" => tokio::time::sleep(ms(300)).await,
            // Runs until it is stopped (or for ten seconds).
            "held" => {
                tokio::select! {
                    _ = ctx.cancelled() => {
                        self.0.push("stopped held".to_owned());
                        return Err(gitops_core::backend::BackendError::Cancelled);
                    }
                    _ = tokio::time::sleep(ms(10_000)) => {}
                }
            }
            s if s.starts_with("fail") => {
                return Ok(gitops_core::backend::Completion::failure(Some(1), "failed"));
            }
            _ => {}
        }
        Ok(gitops_core::backend::Completion::success())
    }
}

/// A run of `stages` on a [`Journaling`] backend, and its journal.
fn journaled_run(stages: &str) -> (gitops_core::scheduler::Run, Arc<Journal>) {
    let journal = Arc::new(Journal::default());
    let registry =
        BackendRegistry::new().with_executor("local", Arc::new(Journaling(journal.clone())));
    let run = Scheduler::new(registry).run(
        pipeline(stages),
        RunSpec::new(RunInfo::new("r", "p", event(), ".")),
    );
    (run, journal)
}

/// Records each stage 20 ms after it is told, so that a stage started before its needs are
/// recorded would show.
struct SlowRecorder(Arc<Journal>);

#[async_trait::async_trait]
impl gitops_core::scheduler::RunRecorder for SlowRecorder {
    async fn stage_finished(
        &self,
        _run_id: &str,
        stage: &gitops_core::scheduler::StageReport,
    ) -> Result<(), gitops_core::scheduler::RecordError> {
        tokio::time::sleep(ms(20)).await;
        self.0.push(format!("record {}", stage.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_is_recorded_before_any_stage_that_needs_it_starts() {
    // `skipped` is skipped (its need failed), `after` runs anyway and needs it; `slow` waits
    // on its backend, then on the recorder.
    let stages = "      a: { run: x }\n      slow: { run: x, needs: a }\n      b: { run: x, needs: a }\n      fail: { run: x, needs: a }\n      skipped: { run: x, needs: fail }\n      after: { run: x, needs: [b, skipped], if: always() }\n      last: { run: x, needs: after }\n";
    let journal = Arc::new(Journal::default());
    let registry =
        BackendRegistry::new().with_executor("local", Arc::new(Journaling(journal.clone())));
    let spec = RunSpec::new(RunInfo::new("r", "p", event(), "."))
        .with_recorder(Arc::new(SlowRecorder(journal.clone())));
    let p = pipeline(stages);
    let report = Scheduler::new(registry)
        .run(p.clone(), spec)
        .execute()
        .await;
    assert_eq!(
        report.stage("skipped").unwrap().result,
        StageResult::Skipped {
            reason: SkipReason::NeedFailed {
                need: "fail".into()
            }
        }
    );
    assert_eq!(report.stage("last").unwrap().result, StageResult::Success);
    let entries = journal.entries();
    for stage in &p.stages {
        let recorded = journal
            .position(&format!("record {}", stage.id))
            .unwrap_or_else(|| panic!("{} was not recorded: {entries:?}", stage.id));
        assert_eq!(
            entries
                .iter()
                .filter(|e| **e == format!("record {}", stage.id))
                .count(),
            1,
            "{entries:?}"
        );
        for dependent in p
            .stages
            .iter()
            .filter(|s| s.needs().iter().any(|n| **n == *stage.id))
        {
            if let Some(started) = journal.position(&format!("start {}", dependent.id)) {
                assert!(
                    recorded < started,
                    "{} started before {} was recorded: {entries:?}",
                    dependent.id,
                    stage.id
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_panics_fails_its_stage_and_the_run_goes_on() {
    let stages = "      boom: { run: x }\n      after: { run: x, needs: boom }\n      other: { run: x }\n      next: { run: x, needs: other }\n";
    let journal = Arc::new(Journal::default());
    let registry = BackendRegistry::new().with_executor("local", Arc::new(Journaling(journal)));
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        Scheduler::new(registry)
            .run(
                pipeline(stages),
                RunSpec::new(RunInfo::new("r", "p", event(), ".")),
            )
            .execute(),
    )
    .await
    .expect("a run with a panicking backend still ends");
    match &report.stage("boom").unwrap().result {
        StageResult::Failure { message, .. } => assert!(message.contains("panicked"), "{message}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        report.stage("after").unwrap().result,
        StageResult::Skipped {
            reason: SkipReason::NeedFailed {
                need: "boom".into()
            }
        }
    );
    assert_eq!(report.stage("next").unwrap().result, StageResult::Success);
    assert_eq!(report.result, RunResult::Failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_future_is_dropped_starts_nothing_more() {
    let (run, journal) =
        journaled_run("      slow: { run: x }\n      next: { run: x, needs: slow }\n");
    assert!(
        tokio::time::timeout(ms(100), run.execute()).await.is_err(),
        "the run is still going after 100 ms"
    );
    // `slow` ends 200 ms later; nothing may start after it.
    tokio::time::sleep(ms(500)).await;
    assert_eq!(journal.entries(), ["start slow"]);
}

#[tokio::test]
async fn a_run_whose_future_is_dropped_stops_its_running_stages() {
    let (run, journal) =
        journaled_run("      held: { run: x }\n      next: { run: x, needs: held }\n");
    let token = run.cancel_token();
    assert!(
        tokio::time::timeout(ms(100), run.execute()).await.is_err(),
        "the run is still going after 100 ms"
    );
    // `held` would run for ten seconds: it is stopped, as by cancelling the run.
    tokio::time::sleep(ms(200)).await;
    assert!(token.is_cancelled(), "dropping the run cancels it");
    assert_eq!(journal.entries(), ["start held", "stopped held"]);
}

// One thread, and stages that return without waiting: the chain runs in one task, which must
// still let the runtime's other tasks have their turns. A task that is woken gets one every
// few hundred stages; one that yields (`yield_now`: woken once the runtime has polled its
// driver) gets one whenever the runtime polls its driver, which the chain lets it do too.
#[tokio::test]
async fn a_long_chain_runs_in_order_and_leaves_other_tasks_their_turns() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = 20_000;
    let stages: String = (0..n)
        .map(|i| match i {
            0 => "      s0: { run: x }\n".to_owned(),
            i => format!("      s{i}: {{ run: x, needs: s{} }}\n", i - 1),
        })
        .collect();
    let (run, journal) = journaled_run(&stages);
    let (woken, yielding) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let woken_task = {
        let woken = woken.clone();
        tokio::spawn(std::future::poll_fn(move |cx| {
            woken.fetch_add(1, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            std::task::Poll::<()>::Pending
        }))
    };
    let yielding_task = {
        let yielding = yielding.clone();
        tokio::spawn(async move {
            loop {
                yielding.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let report = run.execute().await;
    let (woken, yielding) = (
        woken.load(Ordering::Relaxed),
        yielding.load(Ordering::Relaxed),
    );
    woken_task.abort();
    yielding_task.abort();
    assert_eq!(report.result, RunResult::Success);
    assert_times_honour_needs(&pipeline(&stages), &report);
    let started: Vec<String> = journal.entries();
    let expected: Vec<String> = (0..n).map(|i| format!("start s{i}")).collect();
    assert_eq!(started, expected);
    assert!(woken > n / 1_000, "a woken task got {woken} turns");
    assert!(yielding >= 2, "a task that yields got {yielding} turns");
}

// Cancelling the run wakes its stages before the run's own task: a last stage that stops at
// once ends the run before that task sees the cancellation. The run is cancelled all the same.
#[tokio::test]
async fn a_run_cancelled_while_its_last_stage_runs_is_cancelled_not_failed() {
    let (run, journal) = journaled_run("      held: { run: x }\n");
    let token = run.cancel_token();
    let task = tokio::spawn(run.execute());
    while journal.entries().is_empty() {
        tokio::task::yield_now().await;
    }
    token.cancel();
    let report = task.await.unwrap();
    assert_eq!(journal.entries(), ["start held", "stopped held"]);
    assert_eq!(report.stage("held").unwrap().result, StageResult::Cancelled);
    assert_eq!(report.result, RunResult::Cancelled);
}
