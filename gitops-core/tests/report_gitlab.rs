//! Updates sent to a GitLab stand-in on 127.0.0.1 through the ledger's outbox: commit statuses,
//! an environment and its deployment, the stop of the environment, and the merge request note.
//!
//! The stand-in answers as GitLab's REST API v4 documents: `POST /projects/:id/statuses/:sha`
//! (`state` one of pending, running, success, failed, canceled; `name`, `target_url`,
//! `description`) 201; `GET /projects/:id/environments?name=` a list; `POST
//! /projects/:id/environments` (`name`, `external_url`, `tier`) 201; `PUT
//! /projects/:id/environments/:id` 200; `POST /projects/:id/environments/:id/stop` 200; `POST
//! /projects/:id/deployments` (`environment`, `sha`, `ref`, `tag`, `status`) 201; `PUT
//! /projects/:id/deployments/:id` (`status`) 200; merge request notes `GET`, `POST`, `PUT
//! /projects/:id/merge_requests/:iid/notes[/:note_id]`. The project id is the URL-encoded path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, Method, StatusCode};
use gitops_core::ledger::{Ledger, NewReport};
use gitops_core::report::{
    COMMENT_MARKER, CommitStatus, DeploymentState, DeploymentUpdate, ForgeUpdate, GitLab,
    PullRequestComment, Sender, SenderOptions, StatusState,
};
use gitops_core::secret::Secret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const PROJECT: &str = "/api/v4/projects/group%2Fsub%2Fapp";

/// A request the stand-in received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

#[derive(Clone, Default)]
struct StandIn {
    calls: Arc<Mutex<Vec<Call>>>,
    next_id: Arc<Mutex<u64>>,
}

async fn any(
    State(s): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let path = uri.to_string();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(headers["private-token"], "gl-test-token");
    assert!(path.starts_with(PROJECT), "{path}");
    s.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
    });
    let id = {
        let mut next = s.next_id.lock().unwrap();
        *next += 1;
        *next
    };
    let rest = &path[PROJECT.len()..];
    match (method.as_str(), rest) {
        ("GET", _) => (StatusCode::OK, "[]".into()),
        ("POST", r) if r.starts_with("/statuses/") => {
            let state = body["state"].as_str().unwrap();
            assert!(
                ["pending", "running", "success", "failed", "canceled"].contains(&state),
                "{state}"
            );
            (
                StatusCode::CREATED,
                json!({"id": id, "status": state}).to_string(),
            )
        }
        ("POST", r) if r.ends_with("/stop") => (StatusCode::OK, json!({"id": 1}).to_string()),
        ("POST", _) => (StatusCode::CREATED, json!({"id": id}).to_string()),
        ("PUT", _) => (StatusCode::OK, json!({"id": 1}).to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Not Found"}).to_string(),
        ),
    }
}

struct Setup {
    ledger: Ledger,
    stand_in: StandIn,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let stand_in = StandIn::default();
        let app = Router::new().fallback(any).with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let gitlab = GitLab::builder(Secret::new("gl-test-token"))
            .with_url(&format!("http://{addr}/"))
            .with_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let sender = Sender::new(ledger.clone())
            .with_forge(Arc::new(gitlab))
            .with_options(SenderOptions::default().with_poll(Duration::from_millis(20)));
        tokio::spawn(sender.run(stop.clone()));
        Setup {
            ledger,
            stand_in,
            stop,
            _dir: dir,
        }
    }

    async fn send(&self, update: ForgeUpdate) {
        let payload = serde_json::to_value(&update).unwrap();
        self.ledger
            .enqueue_report(NewReport {
                forge: "gitlab",
                target: &update.target(),
                payload: &payload,
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ledger.outbox_len().unwrap() > 0 {
            assert!(Instant::now() < deadline, "the outbox was not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The calls since the `from`th, as `METHOD path-after-the-project`.
    fn calls(&self, from: usize) -> Vec<String> {
        self.stand_in.calls.lock().unwrap()[from..]
            .iter()
            .map(|c| format!("{} {}", c.method, &c.path[PROJECT.len()..]))
            .collect()
    }

    fn body(&self, at: usize) -> Value {
        self.stand_in.calls.lock().unwrap()[at].body.clone()
    }
}

fn status(state: StatusState, description: &str) -> ForgeUpdate {
    ForgeUpdate::Status(CommitStatus {
        repo: "group/sub/app".into(),
        sha: SHA.into(),
        context: "gitops/ci".into(),
        state,
        description: description.into(),
        target_url: Some("https://gitops.example/runs/r1".into()),
    })
}

fn deployment(state: DeploymentState, url: Option<&str>) -> ForgeUpdate {
    ForgeUpdate::Deployment(DeploymentUpdate {
        repo: "group/sub/app".into(),
        sha: SHA.into(),
        deployment: 7,
        environment: "review/pr-3".into(),
        transient: true,
        production: false,
        state,
        description: "pr of 0123456".into(),
        environment_url: url.map(str::to_owned),
        log_url: None,
        git_ref: Some("feature".into()),
        tag: false,
    })
}

#[tokio::test]
async fn statuses_are_running_then_final_in_gitlabs_words() {
    let setup = Setup::new().await;
    setup
        .send(status(StatusState::Pending, "2 stages queued"))
        .await;
    setup
        .send(status(StatusState::Failure, "stage \"test\" failed"))
        .await;
    setup
        .send(status(StatusState::Error, "superseded by a newer run"))
        .await;
    let path = format!("POST /statuses/{SHA}");
    assert_eq!(setup.calls(0), [path.clone(), path.clone(), path]);
    let states: Vec<Value> = (0..3).map(|i| setup.body(i)["state"].clone()).collect();
    assert_eq!(states, ["running", "failed", "canceled"]);
    let first = setup.body(0);
    assert_eq!(first["name"], "gitops/ci");
    assert_eq!(first["target_url"], "https://gitops.example/runs/r1");
    assert_eq!(first["description"], "2 stages queued");
    setup.stop.cancel();
}

#[tokio::test]
async fn a_deployment_makes_its_environment_once_then_is_updated_and_the_environment_stopped() {
    let setup = Setup::new().await;
    setup
        .send(deployment(DeploymentState::InProgress, None))
        .await;
    assert_eq!(
        setup.calls(0),
        [
            "GET /environments?name=review%2Fpr-3",
            "POST /environments",
            "POST /deployments",
        ]
    );
    assert_eq!(setup.body(1), json!({"name": "review/pr-3"}));
    assert_eq!(
        setup.body(2),
        json!({"environment": "review/pr-3", "sha": SHA, "ref": "feature", "tag": false, "status": "running"})
    );
    let deployment_id = 3; // the stand-in's third id
    setup
        .send(deployment(
            DeploymentState::Success,
            Some("http://127.0.0.1:9/"),
        ))
        .await;
    assert_eq!(
        setup.calls(3),
        [
            format!("PUT /deployments/{deployment_id}"),
            "PUT /environments/2".to_owned(),
        ]
    );
    assert_eq!(setup.body(3), json!({"status": "success"}));
    assert_eq!(
        setup.body(4),
        json!({"external_url": "http://127.0.0.1:9/"})
    );
    setup
        .send(deployment(DeploymentState::Inactive, None))
        .await;
    assert_eq!(setup.calls(5), ["POST /environments/2/stop"]);
    setup.stop.cancel();
}

#[tokio::test]
async fn the_merge_request_note_is_made_once_and_edited() {
    let setup = Setup::new().await;
    let note = |text: &str| {
        ForgeUpdate::Comment(PullRequestComment {
            repo: "group/sub/app".into(),
            number: 3,
            body: format!("{COMMENT_MARKER}\n{text}"),
        })
    };
    setup.send(note("first")).await;
    setup.send(note("second")).await;
    assert_eq!(
        setup.calls(0),
        [
            "GET /merge_requests/3/notes?sort=asc&per_page=100&page=1",
            "POST /merge_requests/3/notes",
            "PUT /merge_requests/3/notes/2",
        ]
    );
    assert!(setup.body(2)["body"].as_str().unwrap().ends_with("second"));
    setup.stop.cancel();
}
