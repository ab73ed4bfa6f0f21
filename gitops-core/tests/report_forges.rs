//! Updates sent to Gitea (and Forgejo) and Bitbucket Cloud stand-ins on 127.0.0.1 through the
//! ledger's outbox.
//!
//! Gitea's API v1 (its swagger, `/api/swagger`): `POST /repos/{owner}/{repo}/statuses/{sha}`
//! (`state` one of pending, success, error, failure, warning; `context`, `target_url`,
//! `description`) 201; issue comments `GET`/`POST /repos/{o}/{r}/issues/{index}/comments`
//! (`body`), `PATCH /repos/{o}/{r}/issues/comments/{id}` (`body`); `Authorization: token ...`.
//! Bitbucket Cloud's API 2.0: `POST /repositories/{workspace}/{repo_slug}/commit/{commit}/
//! statuses/build` (`state` one of INPROGRESS, SUCCESSFUL, FAILED, STOPPED; `key` and `url`
//! required; `name`, `description`) 201; pull request comments `GET` (a page: `values`, `next`),
//! `POST .../pullrequests/{id}/comments` and `PUT .../comments/{comment_id}` (`content.raw`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use gitops_core::ledger::{Ledger, NewReport};
use gitops_core::report::{
    Bitbucket, BitbucketAuth, COMMENT_MARKER, CommitStatus, DeploymentState, DeploymentUpdate,
    Forge, ForgeUpdate, Gitea, PullRequestComment, Sender, SenderOptions, StatusState,
    tagged_marker,
};
use gitops_core::secret::Secret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A request the stand-in received: `METHOD path`, `Authorization`, body.
type Call = (String, String, Value);

#[derive(Clone, Default)]
struct StandIn {
    calls: Arc<Mutex<Vec<Call>>>,
    /// What a comment list answers.
    listed: Arc<Mutex<Value>>,
    /// How long each answer takes.
    delay: Duration,
}

async fn any(
    State(s): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.calls
        .lock()
        .unwrap()
        .push((format!("{method} {uri}"), auth, body));
    tokio::time::sleep(s.delay).await;
    match method.as_str() {
        "GET" => (StatusCode::OK, s.listed.lock().unwrap().to_string()),
        "POST" => (StatusCode::CREATED, json!({"id": 31}).to_string()),
        _ => (StatusCode::OK, json!({"id": 0}).to_string()),
    }
}

struct Setup {
    ledger: Ledger,
    stand_in: StandIn,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// A stand-in answering `listed` to lists, and a sender to `forge` made for its address.
    async fn new(listed: Value, forge: impl FnOnce(SocketAddr) -> Arc<dyn Forge>) -> Setup {
        let stand_in = StandIn::default();
        *stand_in.listed.lock().unwrap() = listed;
        let app = Router::new().fallback(any).with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let stop = CancellationToken::new();
        let sender = Sender::new(ledger.clone())
            .with_forge(forge(addr))
            .with_options(SenderOptions::default().with_poll(Duration::from_millis(20)));
        tokio::spawn(sender.run(stop.clone()));
        Setup {
            ledger,
            stand_in,
            stop,
            _dir: dir,
        }
    }

    async fn send(&self, forge: &str, update: ForgeUpdate) {
        let payload = serde_json::to_value(&update).unwrap();
        self.ledger
            .enqueue_report(NewReport {
                forge,
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

    fn calls(&self) -> Vec<Call> {
        self.stand_in.calls.lock().unwrap().clone()
    }
}

fn status(repo: &str, state: StatusState, description: &str, url: Option<&str>) -> ForgeUpdate {
    ForgeUpdate::Status(CommitStatus {
        repo: repo.into(),
        sha: SHA.into(),
        context: "gitops/ci".into(),
        state,
        description: description.into(),
        target_url: url.map(str::to_owned),
    })
}

fn comment(repo: &str, text: &str) -> ForgeUpdate {
    ForgeUpdate::Comment(PullRequestComment {
        repo: repo.into(),
        number: 5,
        body: format!("{COMMENT_MARKER}\n{text}"),
    })
}

fn deployment(repo: &str) -> ForgeUpdate {
    ForgeUpdate::Deployment(DeploymentUpdate {
        repo: repo.into(),
        sha: SHA.into(),
        deployment: 1,
        environment: "preview-pr-5".into(),
        transient: true,
        production: false,
        state: DeploymentState::Success,
        description: String::new(),
        environment_url: None,
        log_url: None,
        git_ref: None,
        tag: false,
    })
}

#[tokio::test]
async fn gitea_gets_statuses_and_one_comment_edited_in_place() {
    let setup = Setup::new(json!([{"id": 8, "body": "lgtm"}]), |addr| {
        let url = format!("http://{addr}/");
        let token = Secret::new("gt-token");
        Arc::new(Gitea::new(&url, &token, Duration::from_secs(5)).unwrap())
    })
    .await;
    let run = Some("https://gitops.example/runs/r1");
    setup
        .send(
            "gitea",
            status("o/r", StatusState::Pending, "1 stage queued", run),
        )
        .await;
    setup
        .send(
            "gitea",
            status("o/r", StatusState::Failure, "stage \"t\" failed", run),
        )
        .await;
    setup.send("gitea", deployment("o/r")).await;
    setup.send("gitea", comment("o/r", "first")).await;
    setup.send("gitea", comment("o/r", "second")).await;
    let calls = setup.calls();
    let requests: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    let statuses = format!("POST /api/v1/repos/o/r/statuses/{SHA}");
    assert_eq!(
        requests,
        [
            statuses.as_str(),
            statuses.as_str(),
            "GET /api/v1/repos/o/r/issues/5/comments?limit=50&page=1",
            "POST /api/v1/repos/o/r/issues/5/comments",
            "PATCH /api/v1/repos/o/r/issues/comments/31",
        ]
    );
    assert!(calls.iter().all(|c| c.1 == "token gt-token"));
    assert_eq!(
        calls[0].2,
        json!({"state": "pending", "context": "gitops/ci", "description": "1 stage queued",
            "target_url": "https://gitops.example/runs/r1"})
    );
    assert_eq!(calls[1].2["state"], "failure");
    assert!(calls[4].2["body"].as_str().unwrap().ends_with("second"));
    setup.stop.cancel();
}

/// The marker of gitops' comment on ws/app#5, keyed by the app password's `Authorization`.
fn marker() -> String {
    tagged_marker(b"Basic Y2ktYm90OmFwcC1wYXNz", "comment:ws/app:5")
}

#[tokio::test]
async fn bitbucket_gets_build_statuses_and_its_marked_comment_edited() {
    // A page of comments as Bitbucket lists them: someone's, and the one gitops made before.
    let page = json!({"pagelen": 100, "page": 1, "values": [
        {"id": 3, "content": {"raw": "nice", "markup": "markdown"}},
        {"id": 44, "content": {"raw": format!("{}\nold", marker()), "markup": "markdown"}}
    ]});
    let setup = Setup::new(page, |addr| {
        let auth = BitbucketAuth::AppPassword {
            username: "ci-bot".into(),
            password: Secret::new("app-pass"),
        };
        let url = format!("http://{addr}/2.0");
        Arc::new(Bitbucket::new(&url, &auth, Duration::from_secs(5)).unwrap())
    })
    .await;
    setup
        .send(
            "bitbucket",
            status("ws/app", StatusState::Pending, "2 stages queued", None),
        )
        .await;
    let run = Some("https://gitops.example/runs/r1");
    setup
        .send(
            "bitbucket",
            status(
                "ws/app",
                StatusState::Error,
                "superseded by a newer run",
                run,
            ),
        )
        .await;
    setup.send("bitbucket", deployment("ws/app")).await;
    setup.send("bitbucket", comment("ws/app", "new")).await;
    let calls = setup.calls();
    let requests: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    let statuses = format!("POST /2.0/repositories/ws/app/commit/{SHA}/statuses/build");
    assert_eq!(
        requests,
        [
            statuses.as_str(),
            statuses.as_str(),
            "GET /2.0/repositories/ws/app/pullrequests/5/comments?pagelen=100&page=1",
            "PUT /2.0/repositories/ws/app/pullrequests/5/comments/44",
        ]
    );
    // Basic ci-bot:app-pass.
    assert!(calls.iter().all(|c| c.1 == "Basic Y2ktYm90OmFwcC1wYXNz"));
    assert_eq!(
        calls[0].2,
        json!({"state": "INPROGRESS", "key": "gitops-ci", "name": "gitops/ci",
            "url": format!("https://bitbucket.org/ws/app/commits/{SHA}"),
            "description": "2 stages queued"})
    );
    assert_eq!(calls[1].2["state"], "STOPPED");
    assert_eq!(calls[1].2["url"], "https://gitops.example/runs/r1");
    assert_eq!(
        calls[3].2,
        json!({"content": {"raw": format!("{}\nnew", marker())}})
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_slow_forge_does_not_hold_back_another() {
    // Bitbucket takes a second an answer; Gitea answers at once. Both record into one list.
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let serve = |delay: Duration| {
        let stand_in = StandIn {
            calls: calls.clone(),
            delay,
            ..StandIn::default()
        };
        async move {
            let app = Router::new().fallback(any).with_state(stand_in);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            addr
        }
    };
    let (slow, fast) = (
        serve(Duration::from_secs(1)).await,
        serve(Duration::ZERO).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let auth = BitbucketAuth::Token(Secret::new("bb"));
    let bitbucket = Bitbucket::new(&format!("http://{slow}/2.0"), &auth, Duration::from_secs(5));
    let gitea = Gitea::new(
        &format!("http://{fast}"),
        &Secret::new("gt"),
        Duration::from_secs(5),
    );
    let sender = Sender::new(ledger.clone())
        .with_forge(Arc::new(bitbucket.unwrap()))
        .with_forge(Arc::new(gitea.unwrap()));
    // Three Bitbucket statuses stored first, then one for Gitea.
    for (forge, context) in [
        ("bitbucket", "gitops/a"),
        ("bitbucket", "gitops/b"),
        ("bitbucket", "gitops/c"),
        ("gitea", "gitops/a"),
    ] {
        let mut update = status("o/r", StatusState::Pending, "queued", None);
        if let ForgeUpdate::Status(s) = &mut update {
            s.context = context.into();
        }
        let payload = serde_json::to_value(&update).unwrap();
        let target = update.target();
        ledger
            .enqueue_report(NewReport {
                forge,
                target: &target,
                payload: &payload,
            })
            .unwrap();
    }
    assert_eq!(sender.send_due().await.unwrap(), 4);
    let order: Vec<String> = calls.lock().unwrap().iter().map(|c| c.0.clone()).collect();
    assert_eq!(order.len(), 4);
    // Gitea's came while Bitbucket's first was still being answered, not after all three.
    let gitea_at = order.iter().position(|c| c.contains("/api/v1/")).unwrap();
    assert!(gitea_at <= 1, "{order:?}");
    // Bitbucket's stayed in their order.
    let bitbucket: Vec<&String> = order.iter().filter(|c| c.contains("/2.0/")).collect();
    assert_eq!(bitbucket.len(), 3);
}
