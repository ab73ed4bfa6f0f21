//! Commit statuses sent to a GitHub stand-in on 127.0.0.1: runs on the in-memory backend report
//! through the ledger's outbox, and the sender delivers, retries, waits out rate limits and drops
//! what GitHub refuses.
//!
//! Request bodies are checked against "Create a commit status" in GitHub's REST description
//! (`github/rest-api-description`, `repos/create-commit-status`, API version 2022-11-28): the body
//! may hold only `state` (required; one of `error`, `failure`, `pending`, `success`),
//! `target_url` (string or null), `description` (string or null; GitHub shows 140 characters)
//! and `context` (string); GitHub answers `201 Created` with the status object.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use gitops_core::backend::memory::{MemoryBackend, Script};
use gitops_core::backend::{BackendRegistry, RunInfo};
use gitops_core::config::Config;
use gitops_core::event::GitEvent;
use gitops_core::ledger::{Ledger, NewReport};
use gitops_core::plan::{Changes, Planner};
use gitops_core::report::{
    COMMENT_MARKER, DeploymentState, DeploymentUpdate, ForgeUpdate, GitHub, PullRequestComment,
    ReportTarget, Reporter, Sender, SenderOptions, tagged_marker,
};
use gitops_core::scheduler::{RunEvent, RunResult, RunSpec, Scheduler};
use gitops_core::secret::Secret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const PUBLIC: &str = "https://gitops.example";

/// A request the stand-in received, with what it answered.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
    answered: u16,
    at: Instant,
}

/// An answer the stand-in gives instead of 201, in order.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
    delay: Duration,
}

impl Answer {
    fn new(status: u16, body: Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

#[derive(Clone, Default)]
struct StandIn {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl StandIn {
    fn answering(answers: Vec<Answer>) -> Self {
        let stand_in = StandIn::default();
        stand_in.script.lock().unwrap().extend(answers);
        stand_in
    }

    async fn serve(&self, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
        let app = Router::new()
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(status))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn answered(&self) -> Vec<u16> {
        self.seen().iter().map(|s| s.answered).collect()
    }

    fn delivered(&self) -> Vec<(String, String)> {
        (self.seen().into_iter())
            .filter(|s| s.answered == 201)
            .map(|s| {
                (
                    s.body["context"].as_str().unwrap().to_owned(),
                    s.body["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

async fn status(
    State(stand_in): State<StandIn>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let answer = stand_in.script.lock().unwrap().pop_front();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let answer = answer.unwrap_or_else(|| {
        // GitHub's 201: the status object.
        Answer::new(
            201,
            json!({"id": 1, "state": body["state"], "description": body["description"],
                "target_url": body["target_url"], "context": body["context"],
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}),
        )
    });
    tokio::time::sleep(answer.delay).await;
    stand_in.seen.lock().unwrap().push(Seen {
        path: format!("/repos/{owner}/{repo}/statuses/{sha}"),
        headers,
        body,
        answered: answer.status,
        at: Instant::now(),
    });
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap(),
        answer.body.to_string(),
    )
        .into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A ledger and reporter, with a sender to a stand-in that gives `answers` first.
async fn with_stand_in(answers: Vec<Answer>) -> (Setup, StandIn) {
    let setup = Setup::new();
    let addr = free_addr();
    let stand_in = StandIn::answering(answers);
    stand_in.serve(addr).await;
    setup.send_to(addr);
    (setup, stand_in)
}

/// Stores a `pending` status that the stand-in answers with `first`, then 201: returns how long
/// the sender waited before sending it again.
async fn retried_after(first: Answer) -> Duration {
    let first_status = first.status;
    let (setup, stand_in) = with_stand_in(vec![first]).await;
    setup.pending();
    setup.drained().await;
    setup.stop.cancel();
    let seen = stand_in.seen();
    assert_eq!(stand_in.answered(), [first_status, 201]);
    assert_eq!(seen[0].body, seen[1].body);
    seen.iter().for_each(check_request);
    seen[1].at - seen[0].at
}

/// A loopback address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn event() -> GitEvent {
    serde_json::from_value(json!({"kind": "push", "repo": "o/r", "sha": SHA, "ref": "refs/heads/main",
        "branch": "main", "before": null, "after": SHA, "created": true, "deleted": false, "forced": false}))
    .unwrap()
}

/// Runs pipeline `name` of `stages` (YAML) on the in-memory backend, reported by `reporter`.
async fn run(reporter: &Reporter, name: &str, stages: &str, backend: MemoryBackend) -> RunResult {
    let yaml = format!(
        "version: 1\npipelines:\n  {name}:\n    on: {{ push: {{}} }}\n    stages:\n{stages}"
    );
    let config = Config::parse("t.yml", &yaml).unwrap();
    let plan = Planner::new()
        .plan(&event(), &config, &Changes::Unknown)
        .unwrap();
    let pipeline = Arc::new(plan.pipelines[0].clone());
    let registry = BackendRegistry::new().with_executor("local", Arc::new(backend));
    let run_id = format!("run-{name}");
    let run = Scheduler::new(registry).run(
        pipeline,
        RunSpec::new(RunInfo::new(&run_id, name, event(), ".")),
    );
    let events = run.subscribe();
    let (reporter, name) = (reporter.clone(), name.to_owned());
    let follow = tokio::spawn(async move {
        let target = ReportTarget::new("github", "o/r", SHA);
        reporter.follow(target, &run_id, &name, events).await;
    });
    let report = run.execute().await;
    follow.await.unwrap();
    report.result
}

struct Setup {
    ledger: Ledger,
    reporter: Reporter,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone()).with_public_url(PUBLIC);
        Setup {
            ledger,
            reporter,
            stop: CancellationToken::new(),
            _dir: dir,
        }
    }

    /// Starts a sender to GitHub at `addr`.
    fn send_to(&self, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
        let github = GitHub::builder(Secret::new("test-token"))
            .with_api_url(&format!("http://{addr}/"))
            .with_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let options = SenderOptions::default()
            .with_poll(Duration::from_millis(20))
            .with_backoff(Duration::from_millis(40), Duration::from_millis(200));
        let sender = Sender::new(self.ledger.clone())
            .with_forge(Arc::new(github))
            .with_options(options)
            .with_wake(self.reporter.wake());
        tokio::spawn(sender.run(self.stop.clone()))
    }

    /// Stores a `pending` status of pipeline `p`, as at the start of a run.
    fn pending(&self) {
        let mut run = self
            .reporter
            .run(ReportTarget::new("github", "o/r", SHA), "r1", "p");
        run.observe(&started("r1", "p", 2)).unwrap();
    }

    async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ledger.outbox_len().unwrap() > 0 {
            assert!(Instant::now() < deadline, "the outbox was not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn started(run_id: &str, pipeline: &str, stages: usize) -> RunEvent {
    RunEvent::RunStarted {
        run_id: run_id.into(),
        pipeline: pipeline.into(),
        stages,
        at: 0.0,
    }
}

/// Checks a request against "Create a commit status" and the headers GitHub asks for.
fn check_request(seen: &Seen) {
    assert_eq!(seen.path, format!("/repos/o/r/statuses/{SHA}"));
    let header = |name: &str| {
        seen.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(header("authorization"), "Bearer test-token");
    assert_eq!(header("accept"), "application/vnd.github+json");
    assert_eq!(header("x-github-api-version"), "2022-11-28");
    assert!(
        header("user-agent").starts_with("gitops/"),
        "{}",
        header("user-agent")
    );
    let body = seen.body.as_object().expect("a JSON object");
    for key in body.keys() {
        assert!(
            ["state", "target_url", "description", "context"].contains(&key.as_str()),
            "{key}"
        );
    }
    let state = body["state"].as_str().unwrap();
    assert!(
        ["error", "failure", "pending", "success"].contains(&state),
        "{state}"
    );
    assert!(body["description"].as_str().unwrap().chars().count() <= 140);
    assert!(body["context"].as_str().unwrap().starts_with("gitops/"));
    if let Some(url) = body.get("target_url") {
        assert!(
            url.as_str()
                .unwrap()
                .starts_with(&format!("{PUBLIC}/runs/"))
        );
    }
}

fn stages(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("      {n}: {{ backend: local, run: x }}\n"))
        .collect()
}

#[tokio::test]
async fn a_run_is_pending_then_successful_on_its_commit() {
    let (setup, stand_in) = with_stand_in(Vec::new()).await;
    let backend = ["test", "build", "lint"]
        .iter()
        .fold(MemoryBackend::new(), |b, s| {
            b.with_script(s, Script::ok().delay(Duration::from_millis(150)))
        });
    let result = run(
        &setup.reporter,
        "ci",
        &stages(&["test", "build", "lint"]),
        backend,
    )
    .await;
    assert_eq!(result, RunResult::Success);
    setup.drained().await;
    let seen = stand_in.seen();
    seen.iter().for_each(check_request);
    assert_eq!(
        stand_in.delivered(),
        [
            ("gitops/ci".into(), "pending".into()),
            ("gitops/ci".into(), "success".into())
        ]
    );
    assert_eq!(seen[0].body["description"], "3 stages queued");
    assert_eq!(seen[1].body["target_url"], format!("{PUBLIC}/runs/run-ci"));
    setup.stop.cancel();
}

#[tokio::test]
async fn a_failure_names_the_failed_stage() {
    let (setup, stand_in) = with_stand_in(Vec::new()).await;
    let backend = MemoryBackend::new().with_script("build", Script::ok().fail().exit_code(2));
    let result = run(&setup.reporter, "ci", &stages(&["build"]), backend).await;
    assert_eq!(result, RunResult::Failure);
    setup.drained().await;
    let seen = stand_in.seen();
    seen.iter().for_each(check_request);
    let last = &seen.last().unwrap().body;
    assert_eq!(last["state"], "failure");
    let description = last["description"].as_str().unwrap();
    assert!(
        description.starts_with("stage \"build\" failed"),
        "{description}"
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_502_is_retried_and_the_update_delivered() {
    retried_after(Answer::new(502, json!("<html>bad gateway</html>"))).await;
}

#[tokio::test]
async fn a_primary_rate_limit_is_waited_out_until_its_reset() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let limited = Answer::new(
        403,
        json!({"message": "API rate limit exceeded for installation."}),
    )
    .header("x-ratelimit-remaining", 0)
    .header("x-ratelimit-reset", now + 2);
    let waited = retried_after(limited).await;
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out_for_its_retry_after() {
    let limited = Answer::new(
        403,
        json!({"message": "You have exceeded a secondary rate limit."}),
    )
    .header("retry-after", 1);
    let waited = retried_after(limited).await;
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
}

/// Log lines written while it runs (the test's runtime is on this thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_422_is_dropped_and_logged_once_with_githubs_message() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let refused = Answer::new(
        422,
        json!({"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom", "message": "This SHA and context has reached the maximum number of statuses."}]}),
    );
    let (setup, stand_in) = with_stand_in(vec![refused]).await;
    setup.pending();
    setup.drained().await;
    // Several backoff periods: nothing is tried again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stand_in.seen().len(), 1);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refusals.len(), 1, "{logs}");
    assert!(
        refusals[0].contains("Validation Failed") && refusals[0].contains("422"),
        "{logs}"
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_forge_down_for_whole_runs_gets_their_last_states_in_order_once_back() {
    let setup = Setup::new();
    let addr = free_addr();
    let sender = setup.send_to(addr);
    let quick = |names: &[&str]| {
        names.iter().fold(MemoryBackend::new(), |b, s| {
            b.with_script(s, Script::ok().delay(Duration::from_millis(50)))
        })
    };
    let started = Instant::now();
    assert_eq!(
        run(
            &setup.reporter,
            "first",
            &stages(&["a", "b"]),
            quick(&["a", "b"])
        )
        .await,
        RunResult::Success
    );
    let failing = MemoryBackend::new().with_script("c", Script::ok().fail());
    assert_eq!(
        run(&setup.reporter, "second", &stages(&["c"]), failing).await,
        RunResult::Failure
    );
    // The runs did not wait for the forge.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Their pending statuses were replaced (once the send of one in flight failed).
    let deadline = Instant::now() + Duration::from_secs(5);
    while setup.ledger.outbox_len().unwrap() != 2 {
        assert!(
            Instant::now() < deadline,
            "the outbox kept more than the last states"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The server restarts meanwhile: a new sender on the reopened ledger delivers.
    setup.stop.cancel();
    sender.await.unwrap();
    let setup = Setup {
        stop: CancellationToken::new(),
        ledger: Ledger::open(setup._dir.path()).unwrap(),
        ..setup
    };
    let stand_in = StandIn::default();
    stand_in.serve(addr).await;
    setup.send_to(addr);
    setup.drained().await;
    stand_in.seen().iter().for_each(check_request);
    // Only the last state of each status, never the stale `pending`s, in the order stored.
    assert_eq!(
        stand_in.delivered(),
        [
            ("gitops/first".into(), "success".into()),
            ("gitops/second".into(), "failure".into())
        ]
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_late_retry_of_pending_never_follows_the_success() {
    // GitHub is slow to answer `pending`, then fails it; the run ends meanwhile.
    let mut slow = Answer::new(502, json!({"message": "Server Error"}));
    slow.delay = Duration::from_millis(400);
    let (setup, stand_in) = with_stand_in(vec![slow]).await;
    let mut run = setup
        .reporter
        .run(ReportTarget::new("github", "o/r", SHA), "r1", "p");
    run.observe(&started("r1", "p", 1)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let finished = RunEvent::RunFinished {
        run_id: "r1".into(),
        result: RunResult::Success,
        duration_secs: 1.0,
        at: 1.0,
    };
    run.observe(&finished).unwrap();
    setup.drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<(u16, String)> = (stand_in.seen().into_iter())
        .map(|s| (s.answered, s.body["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen, [(502, "pending".into()), (201, "success".into())]);
    setup.stop.cancel();
}

/// A stand-in of GitHub's issue comment and deployment endpoints: `comments` is the pull
/// request's comments as GitHub lists them; a `PATCH` of an id not listed is a 404 (deleted);
/// deployment statuses of `gone` deployments are 404s.
#[derive(Clone, Default)]
struct Comments {
    comments: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<Vec<(String, String)>>>,
    gone: Arc<Mutex<Vec<u64>>>,
    next_id: Arc<Mutex<u64>>,
}

impl Comments {
    async fn serve(&self) -> SocketAddr {
        use axum::http::Method;
        use axum::routing::{get, patch};
        async fn list(State(s): State<Comments>) -> axum::Json<Value> {
            s.calls.lock().unwrap().push(("GET".into(), "list".into()));
            axum::Json(Value::Array(s.comments.lock().unwrap().clone()))
        }
        async fn create(State(s): State<Comments>, body: String) -> (StatusCode, String) {
            let body: Value = serde_json::from_str(&body).unwrap();
            let id = s.new_id();
            s.calls
                .lock()
                .unwrap()
                .push(("POST".into(), id.to_string()));
            s.comments
                .lock()
                .unwrap()
                .push(json!({"id": id, "body": body["body"]}));
            (StatusCode::CREATED, json!({"id": id}).to_string())
        }
        async fn edit(
            State(s): State<Comments>,
            Path(id): Path<u64>,
            body: String,
        ) -> (StatusCode, String) {
            let body: Value = serde_json::from_str(&body).unwrap();
            s.calls
                .lock()
                .unwrap()
                .push((Method::PATCH.to_string(), id.to_string()));
            let mut comments = s.comments.lock().unwrap();
            match comments.iter_mut().find(|c| c["id"] == id) {
                Some(c) => {
                    c["body"] = body["body"].clone();
                    (StatusCode::OK, c.to_string())
                }
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"message": "Not Found"}).to_string(),
                ),
            }
        }
        async fn deploy(State(s): State<Comments>) -> (StatusCode, String) {
            let id = s.new_id();
            s.calls
                .lock()
                .unwrap()
                .push(("POST".into(), format!("deployment {id}")));
            (StatusCode::CREATED, json!({"id": id}).to_string())
        }
        async fn deploy_status(
            State(s): State<Comments>,
            Path(id): Path<u64>,
            body: String,
        ) -> (StatusCode, String) {
            let body: Value = serde_json::from_str(&body).unwrap();
            let state = body["state"].as_str().unwrap().to_owned();
            s.calls
                .lock()
                .unwrap()
                .push(("POST".into(), format!("status {id} {state}")));
            if s.gone.lock().unwrap().contains(&id) {
                return (
                    StatusCode::NOT_FOUND,
                    json!({"message": "Not Found"}).to_string(),
                );
            }
            (StatusCode::CREATED, json!({"id": 1}).to_string())
        }
        let app = Router::new()
            .route("/repos/o/r/issues/7/comments", get(list).post(create))
            .route("/repos/o/r/issues/comments/{id}", patch(edit))
            .route("/repos/o/r/deployments", post(deploy))
            .route("/repos/o/r/deployments/{id}/statuses", post(deploy_status))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn new_id(&self) -> u64 {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        *next
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

fn store(ledger: &Ledger, update: ForgeUpdate) {
    let payload = serde_json::to_value(&update).unwrap();
    ledger
        .enqueue_report(NewReport {
            forge: "github",
            target: &update.target(),
            payload: &payload,
        })
        .unwrap();
}

fn comment(body: &str) -> ForgeUpdate {
    ForgeUpdate::Comment(PullRequestComment {
        repo: "o/r".into(),
        number: 7,
        body: format!("{COMMENT_MARKER}\n{body}"),
    })
}

#[tokio::test]
async fn the_comment_is_found_by_its_marker_edited_in_place_and_made_again_when_deleted() {
    let stand_in = Comments::default();
    *stand_in.next_id.lock().unwrap() = 40;
    // Someone's comment, someone's copy of the plain marker (made before gitops' first), and
    // one gitops made from another state directory (with the marker keyed by its token).
    let ours = tagged_marker(b"test-token", "comment:o/r:7");
    stand_in.comments.lock().unwrap().extend([
        json!({"id": 5, "body": "looks good"}),
        json!({"id": 6, "body": format!("{COMMENT_MARKER}\nfake: all passed")}),
        json!({"id": 9, "body": format!("{ours}\nold")}),
    ]);
    let addr = stand_in.serve().await;
    let setup = Setup::new();
    setup.send_to(addr);
    store(&setup.ledger, comment("first"));
    setup.drained().await;
    store(&setup.ledger, comment("second"));
    setup.drained().await;
    // Listed once; the marked comment edited twice, the other left alone.
    assert_eq!(
        stand_in.calls(),
        [
            ("GET".into(), "list".into()),
            ("PATCH".into(), "9".into()),
            ("PATCH".into(), "9".into())
        ]
    );
    let comments = stand_in.comments.lock().unwrap().clone();
    assert_eq!(comments[0]["body"], "looks good");
    assert!(
        comments[1]["body"]
            .as_str()
            .unwrap()
            .ends_with("all passed")
    );
    let edited = comments[2]["body"].as_str().unwrap();
    assert!(edited.starts_with(&format!("{ours}\n")) && edited.ends_with("second"));
    // Deleted on GitHub: the next update makes a new comment, and edits that one after.
    stand_in
        .comments
        .lock()
        .unwrap()
        .retain(|c| c["id"] != 9 && c["id"] != 6);
    store(&setup.ledger, comment("third"));
    setup.drained().await;
    store(&setup.ledger, comment("fourth"));
    setup.drained().await;
    assert_eq!(
        stand_in.calls()[3..],
        [
            ("PATCH".into(), "9".into()),
            ("POST".into(), "41".into()),
            ("PATCH".into(), "41".into())
        ]
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_deployment_is_made_once_and_made_again_when_github_lost_it() {
    let stand_in = Comments::default();
    let addr = stand_in.serve().await;
    let setup = Setup::new();
    setup.send_to(addr);
    let update = |state: DeploymentState| {
        ForgeUpdate::Deployment(DeploymentUpdate {
            repo: "o/r".into(),
            sha: SHA.into(),
            deployment: 3,
            environment: "staging".into(),
            transient: false,
            production: false,
            state,
            description: "deploy".into(),
            environment_url: None,
            log_url: None,
            git_ref: Some("main".into()),
            tag: false,
        })
    };
    store(&setup.ledger, update(DeploymentState::InProgress));
    setup.drained().await;
    store(&setup.ledger, update(DeploymentState::Success));
    setup.drained().await;
    assert_eq!(
        stand_in.calls(),
        [
            ("POST".into(), "deployment 1".into()),
            ("POST".into(), "status 1 in_progress".into()),
            ("POST".into(), "status 1 success".into())
        ]
    );
    // Deleted on GitHub: a 404, then a new deployment with the state.
    stand_in.gone.lock().unwrap().push(1);
    store(&setup.ledger, update(DeploymentState::Inactive));
    setup.drained().await;
    store(&setup.ledger, update(DeploymentState::Failure));
    setup.drained().await;
    assert_eq!(
        stand_in.calls()[3..],
        [
            ("POST".into(), "status 1 inactive".into()),
            ("POST".into(), "status 1 failure".into()),
            ("POST".into(), "deployment 2".into()),
            ("POST".into(), "status 2 failure".into())
        ]
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_zero_wait_from_github_still_waits_the_first_backoff() {
    // `Retry-After: 0` (or a reset already past): no retry at once, again and again.
    let zero = Answer::new(429, json!({"message": "slow down"})).header("retry-after", 0);
    assert!(retried_after(zero).await >= Duration::from_millis(40));
}

#[test]
fn an_api_url_with_credentials_in_it_is_refused() {
    let err = GitHub::builder(Secret::new("t"))
        .with_api_url("https://user:secret-pass@github.example/api/v3")
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds credentials"), "{err}");
    assert!(!err.contains("secret-pass"), "{err}");
}
