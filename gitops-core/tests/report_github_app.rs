//! Commit statuses sent as a GitHub App to a GitHub stand-in on 127.0.0.1, which checks the
//! App's JWT with the public half of a test key before it names the installation or hands out a
//! token, and takes statuses only with a token it handed out.
//!
//! The stand-in follows GitHub's REST description (`github/rest-api-description`, API version
//! 2022-11-28): `apps/get-repo-installation` (`GET /repos/{owner}/{repo}/installation`, JWT,
//! answers 200 with the installation's `id`, or 404), `apps/create-installation-access-token`
//! (`POST /app/installations/{installation_id}/access_tokens`, JWT, answers 201 with `token` and
//! `expires_at`) and `repos/create-commit-status` (201, or 401 "Bad credentials"). The JWT is
//! checked as GitHub documents it: RS256, `iss` the App, `iat` in the past, `exp` at most ten
//! minutes after `iat`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gitops_core::ledger::Ledger;
use gitops_core::report::{GitHub, GitHubApp, ReportTarget, Reporter, Sender, SenderOptions};
use gitops_core::scheduler::RunEvent;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const APP_ID: &str = "12345";
const INSTALLATION: u64 = 4242;
const KEY: &[u8] = include_bytes!("data/test-only-github-app-key.pkcs1.pem");
const PUBLIC_KEY: &str = include_str!("data/test-only-github-app-key.public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Default)]
struct Record {
    lookups: usize,
    /// Tokens handed out, in order.
    issued: Vec<String>,
    /// Tokens GitHub no longer takes.
    revoked: HashSet<String>,
    /// (Authorization, context, answer) of each status request.
    statuses: Vec<(String, String, u16)>,
}

#[derive(Clone)]
struct StandIn {
    record: Arc<Mutex<Record>>,
    /// How long the tokens it hands out live (may be negative: already expired).
    token_lifetime: i64,
    installed: bool,
    /// Whether the tokens it hands out are taken (false: every status gets 401).
    tokens_work: bool,
    /// The App's installation on `o/r` (it changes when the App is installed again).
    installation: Arc<AtomicU64>,
}

impl StandIn {
    fn new(token_lifetime: i64, installed: bool) -> Self {
        StandIn {
            record: Arc::default(),
            token_lifetime,
            installed,
            tokens_work: true,
            installation: Arc::new(AtomicU64::new(INSTALLATION)),
        }
    }

    async fn serve(&self) -> SocketAddr {
        let app = Router::new()
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(status))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn record<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.record.lock().unwrap())
    }
}

fn answer(status: u16, body: Value) -> (StatusCode, String) {
    (StatusCode::from_u16(status).unwrap(), body.to_string())
}

/// Checks the App's JWT as GitHub does; the refusal GitHub would give otherwise.
fn check_jwt(headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let refuse = |why: &str| {
        answer(
            401,
            json!({"message": format!("A JSON web token could not be decoded ({why})")}),
        )
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let jwt = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or_else(|| refuse("no Bearer"))?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(refuse("not three parts"));
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| refuse("not base64url"))
    };
    let json =
        |s: &str| serde_json::from_slice::<Value>(&decode(s)?).map_err(|_| refuse("not JSON"));
    if json(header)?["alg"] != "RS256" {
        return Err(refuse("alg"));
    }
    let der: String = (PUBLIC_KEY.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        STANDARD.decode(der).unwrap(),
    );
    let signed = format!("{header}.{claims}");
    (public.verify(signed.as_bytes(), &decode(signature)?)).map_err(|_| refuse("signature"))?;
    let claims = json(claims)?;
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return Err(refuse("iat, exp"));
    };
    if claims["iss"] != APP_ID {
        return Err(refuse("iss"));
    }
    if iat > now() - 50 || exp < iat || exp - iat > 600 || exp <= now() {
        return Err(refuse(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(())
}

async fn installation(
    State(s): State<StandIn>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if let Err(refused) = check_jwt(&headers) {
        return refused;
    }
    s.record(|r| r.lookups += 1);
    if !s.installed || (owner, repo) != ("o".into(), "r".into()) {
        return answer(404, json!({"message": "Not Found"}));
    }
    answer(
        200,
        json!({"id": s.installation.load(Ordering::SeqCst), "account": {"login": "o"}, "app_id": 12345}),
    )
}

async fn access_token(
    State(s): State<StandIn>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if let Err(refused) = check_jwt(&headers) {
        return refused;
    }
    if id != s.installation.load(Ordering::SeqCst) {
        return answer(404, json!({"message": "Not Found"}));
    }
    let token = s.record(|r| {
        r.issued.push(format!("ghs_standin{}", r.issued.len()));
        r.issued.last().unwrap().clone()
    });
    let expires = jiff::Timestamp::from_second(now() as i64 + s.token_lifetime).unwrap();
    answer(
        201,
        json!({"token": token, "expires_at": expires.to_string(), "permissions": {"statuses": "write"}}),
    )
}

async fn status(
    State(s): State<StandIn>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let auth = (headers.get("authorization").and_then(|v| v.to_str().ok()))
        .unwrap_or("")
        .to_owned();
    let context = serde_json::from_str::<Value>(&body).unwrap()["context"]
        .as_str()
        .unwrap()
        .to_owned();
    s.record(|r| {
        let token = auth.strip_prefix("Bearer ").unwrap_or("");
        let good =
            s.tokens_work && r.issued.iter().any(|t| t == token) && !r.revoked.contains(token);
        let code = if good { 201 } else { 401 };
        r.statuses.push((auth.clone(), context, code));
        if good {
            answer(201, json!({"id": 1, "state": "pending"}))
        } else {
            answer(401, json!({"message": "Bad credentials"}))
        }
    })
}

struct Setup {
    ledger: Ledger,
    reporter: Reporter,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// A ledger, a reporter and a sender as the App to `stand_in`.
    async fn new(stand_in: &StandIn) -> Self {
        let addr = stand_in.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone());
        let app = GitHubApp::from_pem(APP_ID, KEY).unwrap();
        let github = GitHub::app_builder(app)
            .with_api_url(&format!("http://{addr}"))
            .with_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let options = SenderOptions::default()
            .with_poll(Duration::from_millis(20))
            .with_backoff(Duration::from_millis(40), Duration::from_millis(200));
        let sender = Sender::new(ledger.clone())
            .with_forge(Arc::new(github))
            .with_options(options)
            .with_wake(reporter.wake());
        let stop = CancellationToken::new();
        tokio::spawn(sender.run(stop.clone()));
        Setup {
            ledger,
            reporter,
            stop,
            _dir: dir,
        }
    }

    /// Stores a `pending` status of pipeline `pipeline` on `repo`'s commit and waits until it is
    /// sent or dropped.
    async fn pending(&self, repo: &str, pipeline: &str) {
        let target = ReportTarget::new("github", repo, SHA);
        let mut run = self.reporter.run(target, "r1", pipeline);
        let started = RunEvent::RunStarted {
            run_id: "r1".into(),
            pipeline: pipeline.into(),
            stages: 1,
            at: 0.0,
        };
        run.observe(&started).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ledger.outbox_len().unwrap() > 0 {
            assert!(Instant::now() < deadline, "the outbox was not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The contexts the stand-in took (201), and how many tokens it handed out.
fn delivered(stand_in: &StandIn) -> (Vec<String>, usize) {
    stand_in.record(|r| {
        let took = (r.statuses.iter())
            .filter(|s| s.2 == 201)
            .map(|s| s.1.clone())
            .collect();
        (took, r.issued.len())
    })
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

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The log so far, checked to hold no token, JWT or key.
    fn text(&self) -> String {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        for secret in ["ghs_standin", "eyJ", "MII"] {
            assert!(!text.contains(secret), "a secret reached the log: {text}");
        }
        text
    }

    /// The one line saying that GitHub refused an update for good.
    fn refusal(&self) -> String {
        let text = self.text();
        let refusals: Vec<&str> = text.lines().filter(|l| l.contains("refused")).collect();
        assert_eq!(refusals.len(), 1, "{text}");
        refusals[0].to_owned()
    }
}

#[tokio::test]
async fn statuses_go_out_as_the_app_with_one_token_for_several_updates() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let stand_in = StandIn::new(3600, true);
    let setup = Setup::new(&stand_in).await;
    for pipeline in ["a", "b", "c"] {
        setup.pending("o/r", pipeline).await;
    }
    let (took, tokens) = delivered(&stand_in);
    assert_eq!(took, ["gitops/a", "gitops/b", "gitops/c"]);
    assert_eq!(tokens, 1, "one token exchange for three updates");
    assert_eq!(stand_in.record(|r| r.lookups), 1);
    for (auth, _, _) in stand_in.record(|r| r.statuses.clone()) {
        assert_eq!(auth, "Bearer ghs_standin0");
    }
    logs.text();
    setup.stop.cancel();
}

#[tokio::test]
async fn a_token_within_the_refresh_margin_is_fetched_again() {
    // GitHub's tokens live an hour; one that ends inside the 5-minute margin is not reused.
    let stand_in = StandIn::new(120, true);
    let setup = Setup::new(&stand_in).await;
    for pipeline in ["a", "b"] {
        setup.pending("o/r", pipeline).await;
    }
    assert_eq!(
        delivered(&stand_in),
        (vec!["gitops/a".into(), "gitops/b".into()], 2)
    );
    let auths: Vec<String> = stand_in.record(|r| r.statuses.iter().map(|s| s.0.clone()).collect());
    assert_eq!(auths, ["Bearer ghs_standin0", "Bearer ghs_standin1"]);
    // The installation is still known: it is looked up once.
    assert_eq!(stand_in.record(|r| r.lookups), 1);
    setup.stop.cancel();
}

#[tokio::test]
async fn an_expired_token_is_fetched_again() {
    let stand_in = StandIn::new(-30, true);
    let setup = Setup::new(&stand_in).await;
    for pipeline in ["a", "b"] {
        setup.pending("o/r", pipeline).await;
    }
    assert_eq!(
        delivered(&stand_in),
        (vec!["gitops/a".into(), "gitops/b".into()], 2)
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_revoked_token_is_dropped_and_the_update_retried_with_a_new_one() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let stand_in = StandIn::new(3600, true);
    let setup = Setup::new(&stand_in).await;
    setup.pending("o/r", "a").await;
    stand_in.record(|r| r.revoked.insert("ghs_standin0".into()));
    setup.pending("o/r", "b").await;
    let answers: Vec<(String, u16)> =
        stand_in.record(|r| r.statuses.iter().map(|s| (s.1.clone(), s.2)).collect());
    assert_eq!(
        answers,
        [
            ("gitops/a".into(), 201),
            ("gitops/b".into(), 401),
            ("gitops/b".into(), 201)
        ]
    );
    assert_eq!(delivered(&stand_in).1, 2);
    let logs = logs.text();
    assert!(logs.contains("Bad credentials"), "{logs}");
    assert!(!logs.contains("refused"), "{logs}");
    setup.stop.cancel();
}

#[tokio::test]
async fn an_app_not_installed_on_the_repository_is_a_final_error_logged_once() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let stand_in = StandIn::new(3600, false);
    let setup = Setup::new(&stand_in).await;
    setup.pending("o/r", "a").await;
    // Several backoff periods: nothing is tried again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(stand_in.record(|r| r.lookups), 1);
    assert_eq!(delivered(&stand_in), (vec![], 0));
    let refusal = logs.refusal();
    assert!(
        refusal.contains("the GitHub App is not installed on o/r") && refusal.contains("404"),
        "{refusal}"
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_new_token_that_github_refuses_is_a_final_error_not_a_loop() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let stand_in = StandIn {
        tokens_work: false,
        ..StandIn::new(3600, true)
    };
    let setup = Setup::new(&stand_in).await;
    setup.pending("o/r", "a").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stand_in.record(|r| (r.issued.len(), r.statuses.len())),
        (1, 1)
    );
    let refusal = logs.refusal();
    assert!(
        refusal.contains("401") && refusal.contains("Bad credentials"),
        "{refusal}"
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn an_app_installed_again_is_looked_up_again() {
    let stand_in = StandIn::new(3600, true);
    let setup = Setup::new(&stand_in).await;
    setup.pending("o/r", "a").await;
    // Uninstalled (its token stops working) and installed again under a new id.
    stand_in
        .installation
        .store(INSTALLATION + 1, Ordering::SeqCst);
    stand_in.record(|r| r.revoked.insert("ghs_standin0".into()));
    setup.pending("o/r", "b").await;
    let (took, tokens) = delivered(&stand_in);
    assert_eq!(took, ["gitops/a", "gitops/b"]);
    assert_eq!((tokens, stand_in.record(|r| r.lookups)), (2, 2));
    setup.stop.cancel();
}
