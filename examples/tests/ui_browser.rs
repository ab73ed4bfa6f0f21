//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver,
//! with fantoccini) over a state dir holding a pull request's run that deployed a preview, a
//! failed run, a running run whose stage prints a line later, and a run waiting for an
//! approval. Screenshots of every page go to `target/ui-screenshots/`.
//!
//! Opt-in: `GITOPS_TEST_BROWSER=1` (set by `scripts/test.sh`, which installs `chromium` and
//! `chromium-driver`).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{git, init_repo, push_event, text};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The token that signs in, and the variable that holds it.
const TOKEN: &str = "browser-test-token-6d1f";
const TOKEN_VAR: &str = "GITOPS_UI_TEST_TOKEN";

/// Processes the test started, killed with their process groups when it ends, however it ends
/// (chromedriver's group holds the Chromium it started).
#[derive(Default)]
struct Reaper(Vec<Child>);

impl Reaper {
    fn add(&mut self, child: Child) -> &mut Child {
        self.0.push(child);
        self.0.last_mut().expect("just pushed")
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        for child in &mut self.0 {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command in a process group of its own, so that [`Reaper`] ends what it starts too.
fn grouped(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command.process_group(0);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connectable(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The repository: a pull request pipeline that tests and deploys a served preview, a `main`
/// pipeline whose build fails, a `slow` one whose stage prints a line once `go` exists, and a
/// `release` one whose deploy to staging waits for an approval.
fn repo(tmp: &Path) -> PathBuf {
    let dir = tmp.join("repo");
    let go = tmp.join("go");
    let config = format!(
        r#"version: 1
environments:
  preview:
    per_pull_request: true
    with:
      serve: "exec timeout 300 busybox httpd -f -p 127.0.0.1:$PORT"
  staging:
    approval: required
pipelines:
  pull-request:
    on: {{ pull_request: {{ types: [opened] }} }}
    stages:
      test: {{ run: "echo tests pass; echo '<b>not bold</b>'" }}
      preview: {{ needs: test, deploy: preview }}
  main:
    on: {{ push: {{ branches: [main] }} }}
    stages:
      lint: {{ run: "echo lint ok" }}
      build: {{ needs: lint, run: "echo compiling; echo 'error: migration 0042 failed: column exists' >&2; exit 2" }}
      publish: {{ needs: build, run: "echo never" }}
  slow:
    on: {{ push: {{ branches: [slow] }} }}
    stages:
      watch: {{ run: "echo first line; while [ ! -e {go} ]; do sleep 0.1; done; echo the line that came later" }}
  release:
    on: {{ push: {{ branches: [release] }} }}
    stages:
      check: {{ run: "echo checked" }}
      deploy: {{ needs: check, deploy: staging }}
"#,
        go = go.display()
    );
    init_repo(&dir, &config, &[("index.html", "<h1>preview</h1>")]);
    git(&dir, &["branch", "slow"]);
    git(&dir, &["branch", "release"]);
    git(&dir, &["checkout", "-qb", "feature/login"]);
    std::fs::write(dir.join("index.html"), "<h1>preview of the login</h1>").unwrap();
    git(&dir, &["commit", "-qam", "login page"]);
    git(&dir, &["checkout", "-q", "main"]);
    dir
}

/// The event file of pull request #7 from `feature/login`.
fn pull_request_event(tmp: &Path, repo: &Path) -> PathBuf {
    let head = git(repo, &["rev-parse", "feature/login"]);
    let base = git(repo, &["rev-parse", "main"]);
    let event = json!({"kind": "pull_request", "repo": "o/r", "sha": head, "action": "opened",
        "number": 7, "title": "Add the login page <img src=x onerror=alert(1)>", "draft": false,
        "merged": false, "head": {"ref": "feature/login", "sha": head},
        "base": {"ref": "main", "sha": base}});
    let file = tmp.join("event-pr-7.json");
    std::fs::write(&file, event.to_string()).unwrap();
    file
}

/// Closes the pull request when dropped (the test passed or not), which stops its preview's
/// server: nothing is left running.
struct Teardown {
    closed: PathBuf,
    repo: PathBuf,
    state: PathBuf,
}

impl Teardown {
    fn closing(opened: &Path, repo: &Path, state: &Path) -> Teardown {
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(opened).unwrap()).unwrap();
        event["action"] = json!("closed");
        let closed = opened.with_file_name("event-pr-closed.json");
        std::fs::write(&closed, event.to_string()).unwrap();
        Teardown {
            closed,
            repo: repo.to_owned(),
            state: state.to_owned(),
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = common::run_command(&self.closed, &self.repo, &self.state).status();
    }
}

fn gitops_run(event: &Path, repo: &Path, state: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = common::run_command(event, repo, state);
    command.process_group(0);
    command
}

/// The runs of the state dir, as `gitops runs --json` prints them.
fn runs(state: &Path) -> Vec<Value> {
    let out = common::gitops(
        &["runs", "--json", "--state", state.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str::<Value>(&text(&out.stdout))
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn run_of(state: &Path, pipeline: &str) -> Option<String> {
    runs(state)
        .into_iter()
        .find(|r| r["pipeline"] == pipeline)
        .and_then(|r| r["id"].as_str().map(str::to_owned))
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The page's text; empty while a navigation has no body yet (the waits look again).
async fn body_text(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `done` holds for the page's text, reloading it between looks when `reload`.
async fn wait_for_text(client: &Client, what: &str, reload: bool, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = body_text(client).await;
        if done(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the page says\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if reload {
            client.refresh().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if !common::opted_in("GITOPS_TEST_BROWSER", "browser (Chromium)") {
        return;
    }
    let mut reaper = Reaper::default();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let repo = repo(tmp.path());

    // A pull request's run that deploys a served preview, and a failed run.
    let pr = pull_request_event(tmp.path(), &repo);
    let _preview = Teardown::closing(&pr, &repo, &state);
    let out = gitops_run(&pr, &repo, &state).status().unwrap();
    assert!(out.success(), "the pull request's run failed");
    let failed = gitops_run(&push_event(&repo, "main"), &repo, &state)
        .status()
        .unwrap();
    assert_eq!(failed.code(), Some(1));
    // A running run, and one waiting for an approval, each in a process of its own.
    reaper.add(
        gitops_run(&push_event(&repo, "slow"), &repo, &state)
            .spawn()
            .unwrap(),
    );
    let release = reaper
        .add(
            gitops_run(&push_event(&repo, "release"), &repo, &state)
                .spawn()
                .unwrap(),
        )
        .id();
    let _ = release;
    wait_until(
        "the slow stage's first line",
        Duration::from_secs(60),
        || {
            run_of(&state, "slow").is_some_and(|id| {
                std::fs::read_to_string(state.join(format!("logs/{id}/watch.log")))
                    .is_ok_and(|log| log.contains("first line"))
            })
        },
    );
    let release_id = {
        let mut id = None;
        wait_until("the approval request", Duration::from_secs(60), || {
            id = run_of(&state, "release");
            id.as_ref().is_some_and(|id| {
                let out = common::gitops(
                    &["show", id, "--json", "--state", state.to_str().unwrap()],
                    None,
                );
                text(&out.stdout).contains("\"check\"")
            })
        });
        id.unwrap()
    };
    let failed_id = run_of(&state, "main").unwrap();
    let slow_id = run_of(&state, "slow").unwrap();

    // The dashboard, with a token that signs in.
    let ui_port = free_port();
    let ui = format!("http://127.0.0.1:{ui_port}");
    reaper.add(
        grouped(env!("CARGO_BIN_EXE_gitops"))
            .args(["ui", "--listen", &format!("127.0.0.1:{ui_port}"), "--state"])
            .arg(&state)
            .args(["--ui-token-env", TOKEN_VAR])
            .env(TOKEN_VAR, TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the dashboard", Duration::from_secs(30), || {
        connectable(ui_port)
    });

    // Chromium, headless, through chromedriver.
    let driver_port = free_port();
    reaper.add(
        grouped("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) on PATH"),
    );
    wait_until("chromedriver", Duration::from_secs(30), || {
        connectable(driver_port)
    });
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
            "--disable-gpu", "--window-size=1280,1400"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session");

    // The overview: the preview's URL is a link, under its pull request.
    client.goto(&format!("{ui}/")).await.unwrap();
    let body = body_text(&client).await;
    assert!(body.contains("preview-pr-7"), "{body}");
    assert!(body.contains("Pull request #7"), "{body}");
    let link = client
        .find(Locator::Css("td.url a[href^='http://127.0.0.1:']"))
        .await
        .expect("the preview's URL as a link");
    assert!(link.text().await.unwrap().starts_with("http://127.0.0.1:"));
    // A stranger's pull request title stays text.
    assert!(body.contains("<img src=x onerror=alert(1)>"), "{body}");
    shot(&client, "overview").await;

    // The runs page.
    client.goto(&format!("{ui}/runs")).await.unwrap();
    assert!(body_text(&client).await.contains(&failed_id));
    shot(&client, "runs").await;

    // The failed run: its failed stage's log is open, with the error line.
    client
        .goto(&format!("{ui}/runs/{failed_id}"))
        .await
        .unwrap();
    let log = client
        .find(Locator::Css("#stage-build details[open] .log"))
        .await
        .expect("the failed stage's log, open");
    let text = log.text().await.unwrap();
    assert!(
        text.contains("error: migration 0042 failed: column exists"),
        "{text}"
    );
    assert!(body_text(&client).await.contains("exit code 2"));
    shot(&client, "run-failed").await;

    // The environment's page.
    client
        .goto(&format!("{ui}/environments/preview-pr-7"))
        .await
        .unwrap();
    assert!(body_text(&client).await.contains("History"));
    shot(&client, "environment").await;

    // A 404.
    client
        .goto(&format!("{ui}/runs/no-such-run"))
        .await
        .unwrap();
    assert!(
        body_text(&client)
            .await
            .contains("there is no run no-such-run")
    );

    // The running stage: a line printed after the page was loaded appears without a reload.
    client.goto(&format!("{ui}/runs/{slow_id}")).await.unwrap();
    wait_for_text(&client, "the first line", false, |b| {
        b.contains("first line")
    })
    .await;
    shot(&client, "run-running").await;
    std::fs::write(tmp.path().join("go"), "").unwrap();
    wait_for_text(&client, "the later line", false, |b| {
        b.contains("the line that came later")
    })
    .await;
    wait_for_text(&client, "the end of the stream", false, |b| {
        b.contains("the stage has ended")
    })
    .await;
    shot(&client, "run-live").await;

    // The waiting deploy: read-only without signing in, then signed in, approved.
    client
        .goto(&format!("{ui}/runs/{release_id}"))
        .await
        .unwrap();
    wait_for_text(&client, "the approval request", true, |b| {
        b.contains("waits for an approval")
    })
    .await;
    assert!(
        client.find(Locator::Css("button.approve")).await.is_err(),
        "approve offered to a viewer who did not sign in"
    );
    assert!(body_text(&client).await.contains("gitops approve"));
    shot(&client, "run-waiting").await;
    client.goto(&format!("{ui}/login")).await.unwrap();
    let field = client
        .find(Locator::Css("form input[type=password]"))
        .await
        .expect("the login form's token field");
    field.send_keys(TOKEN).await.unwrap();
    client
        .find(Locator::Css(
            "form button[type=submit], form input[type=submit]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The login's own redirect lands first, or it would replace the page opened next.
    wait_for_text(&client, "the signed-in page after the login", false, |b| {
        b.contains("Signed in as")
    })
    .await;
    client
        .goto(&format!("{ui}/runs/{release_id}"))
        .await
        .unwrap();
    wait_for_text(&client, "the run page, signed in", false, |b| {
        b.contains("Signed in as") && b.contains("waits for an approval")
    })
    .await;
    shot(&client, "run-approve").await;
    client
        .find(Locator::Css("#stage-deploy button.approve"))
        .await
        .expect("the approve button, signed in")
        .click()
        .await
        .unwrap();
    wait_for_text(&client, "the approved deploy", true, |b| {
        b.contains("Deployed to staging")
            && b.contains("Approved by GITOPS_UI_TEST_TOKEN")
            && !b.contains("waits for an approval")
    })
    .await;
    let deploy = client
        .find(Locator::Css("#stage-deploy h3"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(deploy.contains("success"), "{deploy}");
    shot(&client, "run-approved").await;

    // A phone's screen.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{ui}/")).await.unwrap();
    shot(&client, "phone-overview").await;
    client
        .goto(&format!("{ui}/runs/{failed_id}"))
        .await
        .unwrap();
    shot(&client, "phone-run").await;
    let width: Value = client
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    assert!(
        width.as_u64().unwrap_or(0) <= 390,
        "the run page scrolls sideways on a phone: {width}"
    );

    client.close().await.unwrap();
}
