//! The read API, access rules, login and approvals of `gitops ui`, over real HTTP on loopback
//! against the built binary: every answer as the CLI's `--json`, secrets masked, a peer outside
//! the anonymous networks (a client bound to 127.0.0.2) refused without the token, the login
//! cookie and its csrf value, approvals recorded under the token's name, live logs as
//! server-sent events, and hostile input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{push_repo, text};
use gitops_core::ledger::{ApprovalStatus, Ledger};
use serde_json::Value;

const SECRET: &str = "s3cr3t-value-4711";
const TOKEN: &str = "a-long-random-token-of-the-approver";

/// A running `gitops ui`.
struct Ui {
    child: Child,
    addr: SocketAddr,
}

impl Ui {
    fn start(state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Ui {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["ui", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "gitops ui ended; it said: {said}"
            );
            if let Some(a) = line.trim().strip_prefix("listening on http://") {
                break a.parse().unwrap();
            }
            said += &line;
        };
        std::thread::spawn(move || for _ in stderr.lines() {});
        Ui { child, addr }
    }

    fn get(&self, path: &str) -> Answer {
        http(self.addr, None, "GET", path, &[], "")
    }

    fn json(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to `addr`, from source address `from` when given.
fn connect(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let Some(from) = from else {
        return TcpStream::connect(addr).unwrap();
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

fn send(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
}

/// One request; the answer.
fn http(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = connect(addr, from);
    send(&mut stream, addr, method, path, headers, body);
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The body of a chunked answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out += &rest[..size];
        body = &rest[size + 2..];
    }
    out
}

/// `gitops ARGS --state STATE --json`'s output.
fn cli_json(state: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--json", "--state", state.to_str().unwrap()]);
    let out = common::gitops(&args, None);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A repository in `tmp/repo` of pipeline `main` with `stages` and `environments`; its push
/// event.
fn repo(tmp: &Path, environments: &str, stages: &str) -> PathBuf {
    let config = format!(
        "version: 1\nenvironments:\n{environments}pipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n{stages}"
    );
    push_repo(&tmp.join("repo"), &config)
}

fn spawn_run(tmp: &Path, event: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["run", "--event"])
        .arg(event)
        .arg("--repo")
        .arg(tmp.join("repo"))
        .arg("--state")
        .arg(tmp.join("state"))
        .stdout(Stdio::null())
        // Kept, for a test that times out to say why the run ended.
        .stderr(std::fs::File::create(tmp.join("run.stderr")).unwrap())
        .spawn()
        .unwrap()
}

/// As [`wait_for`], for a condition on a `gitops run` in the background: a timeout says what
/// was seen last and whether the run's process still lives.
fn wait_for_or(what: &str, child: &mut Child, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(seen) = done() {
        if Instant::now() >= deadline {
            let status = child.try_wait();
            panic!("{what} did not happen (gitops run: {status:?}); last seen:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A state dir with two finished runs of a pipeline whose stage prints a secret, deploys to
/// staging, and fails a stage.
fn finished_runs(tmp: &Path) -> PathBuf {
    let event = repo(
        tmp,
        "  staging: {}\n",
        r#"      build: { run: "echo compiling; echo token is $TOKEN; echo '<script>x</script>' >&2; echo image=app-$TOKEN >> $GITOPS_OUTPUT" }
      deploy: { needs: build, deploy: staging, with: { files: .gitops.yml } }
      test: { needs: deploy, run: "exit 3" }
"#,
    );
    let state = tmp.join("state");
    for _ in 0..2 {
        let out = common::run_event_with(
            &event,
            &tmp.join("repo"),
            &state,
            &["--secret-env", "TOKEN"],
            &[("TOKEN", SECRET)],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    }
    state
}

#[test]
fn every_endpoint_answers_as_the_cli_json_with_secrets_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let state = finished_runs(tmp.path());
    let ui = Ui::start(&state, &[], &[]);
    let mut answers = String::new();

    let runs = ui.json("/api/runs");
    assert_eq!(runs, cli_json(&state, &["runs"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    let (newest, oldest) = (
        runs[0]["id"].as_str().unwrap().to_owned(),
        runs[1]["id"].as_str().unwrap().to_owned(),
    );
    // Pages: a full page links the next one.
    let page = ui.get("/api/runs?limit=1");
    assert_eq!(page.status, 200);
    let link = page.header("link").unwrap();
    assert_eq!(
        link,
        format!("</api/runs?limit=1&before={newest}>; rel=\"next\"")
    );
    let next = ui.json(&format!("/api/runs?limit=1&before={newest}"));
    assert_eq!(next, serde_json::json!([runs[1].clone()]));
    assert_eq!(ui.json("/api/runs?pipeline=other"), serde_json::json!([]));
    assert_eq!(ui.json("/api/runs?env=staging&pipeline="), runs);

    for id in [&newest, &oldest] {
        let show = ui.json(&format!("/api/runs/{id}"));
        assert_eq!(show, cli_json(&state, &["show", id]));
        assert_eq!(show["stages"][0]["outputs"]["image"], "app-***");
        answers += &show.to_string();
    }
    let envs = ui.json("/api/environments");
    assert_eq!(envs, cli_json(&state, &["envs"]));
    let history = ui.json("/api/environments/staging/history");
    assert_eq!(history, cli_json(&state, &["history", "staging"]));
    assert_eq!(history.as_array().unwrap().len(), 2);

    let log = ui.get(&format!("/api/runs/{newest}/stages/build/log"));
    assert_eq!(log.status, 200);
    assert_eq!(
        log.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(log.header("x-content-type-options"), Some("nosniff"));
    let cli = common::gitops(
        &["logs", &newest, "build", "--state", state.to_str().unwrap()],
        None,
    );
    assert_eq!(log.body, text(&cli.stdout));
    assert_eq!(log.body, "compiling\ntoken is ***\n<script>x</script>\n");
    // A finished stage's stream: its lines, then the end.
    let events = http(
        ui.addr,
        None,
        "GET",
        &format!("/api/runs/{newest}/stages/build/log"),
        &[("Accept", "text/event-stream")],
        "",
    );
    assert!(events.body.contains("event: line\ndata: {\"attempt\":1,\"line\":\"token is ***\",\"stream\":\"stdout\",\"t\":"), "{}", events.body);
    assert!(
        events.body.trim_end().ends_with("event: end\ndata: {}"),
        "{}",
        events.body
    );

    answers += &runs.to_string();
    answers += &envs.to_string();
    answers += &history.to_string();
    answers += &log.body;
    answers += &events.body;
    assert!(answers.contains("***"));
    assert!(!answers.contains(SECRET), "a secret in an answer");
}

#[test]
fn bad_input_gets_400_and_unknown_names_404_and_no_file_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let state = finished_runs(tmp.path());
    let ui = Ui::start(&state, &[], &[]);
    let id = ui.json("/api/runs")[0]["id"].as_str().unwrap().to_owned();
    let cases: &[(&str, u16)] = &[
        ("/api/runs/r0-none", 404),
        ("/api/runs/r0-none/stages/build/log", 404),
        ("/api/environments/nowhere/history", 404),
        ("/api/nothing/here", 404),
        ("/api/runs?limit=0", 400),
        ("/api/runs?limit=201", 400),
        ("/api/runs?limit=x", 400),
        ("/api/runs?color=red", 400),
        ("/api/runs?before=r0-none", 400),
        ("/api/runs?before=..%2F..", 400),
        ("/api/runs/..%2F..%2Fetc%2Fpasswd", 400),
        ("/api/environments/..%2Fx/history", 400),
    ];
    for (path, status) in cases {
        let answer = ui.get(path);
        assert_eq!(answer.status, *status, "{path}: {}", answer.body);
        let error: Value = serde_json::from_str(&answer.body).unwrap();
        assert!(error["error"].is_string(), "{path}: {}", answer.body);
    }
    let long = "x".repeat(129);
    for stage in [
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "a%00b",
        "%2E%2E",
        long.as_str(),
    ] {
        let answer = ui.get(&format!("/api/runs/{id}/stages/{stage}/log"));
        assert_eq!(answer.status, 400, "{stage}: {}", answer.body);
    }
    assert_eq!(
        ui.get(&format!("/api/runs/{id}/stages/nope/log")).status,
        404
    );
    // Unescaped, the path names no route.
    let answer = ui.get(&format!("/api/runs/{id}/stages/../../../../etc/passwd/log"));
    assert!([400, 404].contains(&answer.status), "{answer:?}");
    assert!(!answer.body.contains("root:"));
    // A page of another site rebound to this address is not a loopback reader.
    let answer = http(
        ui.addr,
        None,
        "GET",
        "/api/runs",
        &[("Host", "evil.example")],
        "",
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = http(
        ui.addr,
        None,
        "GET",
        "/api/runs",
        &[("Host", "localhost")],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Approving needs a token, and this dashboard has none.
    let answer = http(
        ui.addr,
        None,
        "POST",
        &format!("/api/runs/{id}/stages/deploy/approve"),
        &[],
        "",
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("--ui-token-env"), "{}", answer.body);
}

#[test]
fn a_peer_outside_the_anonymous_networks_needs_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let env = [("APPROVER", TOKEN)];
    let ui = Ui::start(
        &state,
        &[
            "--ui-token-env",
            "APPROVER",
            "--ui-anonymous-net",
            "127.0.0.1/32",
        ],
        &env,
    );
    let get = |from, headers: &[(&str, &str)], path| http(ui.addr, from, "GET", path, headers, "");

    let answer = get(Some(other), &[], "/api/runs");
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"gitops\"")
    );
    let wrong = format!("Bearer {TOKEN}x");
    let answer = get(Some(other), &[("Authorization", &wrong)], "/api/runs");
    assert_eq!(answer.status, 401);
    assert!(!answer.body.contains(TOKEN), "a token echoed");
    let right = format!("Bearer {TOKEN}");
    let answer = get(Some(other), &[("Authorization", &right)], "/api/runs");
    assert_eq!((answer.status, answer.body.as_str()), (200, "[]"));
    let me = get(Some(other), &[("Authorization", &right)], "/api/session");
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(
        me,
        serde_json::json!({"name": "APPROVER", "can_act": true, "csrf": null})
    );
    // A browser is sent to the login form, and comes back where it was.
    let answer = get(Some(other), &[("Accept", "text/html")], "/runs/r1?x=1");
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.header("location"),
        Some("/login?next=%2Fruns%2Fr1%3Fx%3D1")
    );
    let answer = get(
        Some(other),
        &[("Accept", "text/html")],
        "/login?next=%2Fruns%2Fr1",
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("name=\"next\" value=\"/runs/r1\""),
        "{}",
        answer.body
    );
    // The anonymous network reads without it.
    assert_eq!(get(None, &[], "/api/runs").status, 200);
    // Webhooks, health and metrics are not the dashboard's (gitops ui has none of them).
    assert!([401, 404].contains(&get(Some(other), &[], "/healthz").status));
    drop(ui);

    // By default all of loopback is anonymous; without a token, others get 403.
    let ui = Ui::start(&state, &[], &[]);
    assert_eq!(
        http(ui.addr, Some(other), "GET", "/api/runs", &[], "").status,
        200
    );
    drop(ui);
    let ui = Ui::start(&state, &["--ui-anonymous-net", "none"], &[]);
    let answer = http(ui.addr, None, "GET", "/api/runs", &[], "");
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("loopback") && answer.body.contains("--ui-token-env"),
        "{}",
        answer.body
    );
    drop(ui);

    // A token variable that is not set is refused at start.
    let out = common::gitops(
        &[
            "ui",
            "--state",
            state.to_str().unwrap(),
            "--ui-token-env",
            "GITOPS_NO_SUCH_VAR",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--ui-token-env GITOPS_NO_SUCH_VAR"),
        "{}",
        text(&out.stderr)
    );
}

/// A run whose two deploys wait for approval, while `gitops run` waits: one approved through
/// the login form's cookie and csrf value, one rejected with the bearer token; both recorded
/// under the token's name.
#[test]
fn login_then_approve_with_csrf_and_reject_with_the_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let event = repo(
        tmp.path(),
        "  staging: { approval: required }\n  production: { approval: required }\n",
        "      stage: { deploy: staging, with: { files: .gitops.yml } }\n      prod: { deploy: production, with: { files: .gitops.yml } }\n",
    );
    let state = tmp.path().join("state");
    let mut child = spawn_run(tmp.path(), &event);
    let ledger = Ledger::open(&state).unwrap();
    wait_for("two approval requests", || {
        ledger.pending_approvals().unwrap().len() == 2
    });
    let run = ledger.pending_approvals().unwrap()[0].run_id.clone();
    let ui = Ui::start(
        &state,
        &["--ui-token-env", "APPROVER"],
        &[("APPROVER", TOKEN)],
    );
    let approve = format!("/api/runs/{run}/stages/stage/approve");
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    // Loopback reads, but acting needs the token.
    let answer = http(ui.addr, None, "POST", &approve, &[], "");
    assert_eq!(answer.status, 401, "{}", answer.body);

    let login = |token: &str| {
        let body = format!("token={token}&next=%2Fruns%2F{run}");
        http(ui.addr, None, "POST", "/login", &[form], &body)
    };
    let failed = login("wrong");
    assert_eq!(failed.status, 401);
    assert!(failed.header("set-cookie").is_none());
    let signed = login(TOKEN);
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(
        signed.header("location"),
        Some(format!("/runs/{run}").as_str())
    );
    let set = signed.header("set-cookie").unwrap();
    assert!(set.starts_with("gitops_session=APPROVER."), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains(TOKEN) && !set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let me = http(
        ui.addr,
        None,
        "GET",
        "/api/session",
        &[("Cookie", &cookie)],
        "",
    );
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["name"], "APPROVER");
    let csrf = me["csrf"].as_str().unwrap().to_owned();

    // Without the csrf value, with a wrong one, from another site: refused.
    let cookie_header = ("Cookie", cookie.as_str());
    for (headers, body) in [
        (vec![cookie_header, form], String::new()),
        (vec![cookie_header, form], format!("csrf={csrf}x")),
        (
            vec![cookie_header, form, ("Origin", "http://evil.example")],
            format!("csrf={csrf}"),
        ),
    ] {
        let answer = http(ui.addr, None, "POST", &approve, &headers, &body);
        assert_eq!(answer.status, 403, "{body}: {}", answer.body);
    }
    assert_eq!(
        ledger.approval(&run, "stage").unwrap().unwrap().status,
        ApprovalStatus::Pending
    );

    let origin = format!("http://{}", ui.addr);
    let answer = http(
        ui.addr,
        None,
        "POST",
        &approve,
        &[cookie_header, form, ("Origin", &origin)],
        &format!("csrf={csrf}"),
    );
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(
        answer.header("location"),
        Some(format!("/runs/{run}").as_str())
    );
    let approval = ledger.approval(&run, "stage").unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decided_by.as_deref(), Some("APPROVER"));
    // Decided already.
    let bearer = format!("Bearer {TOKEN}");
    let answer = http(
        ui.addr,
        None,
        "POST",
        &approve,
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(answer.status, 409, "{}", answer.body);

    let answer = http(
        ui.addr,
        None,
        "POST",
        &format!("/api/runs/{run}/stages/prod/reject"),
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let decision: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        decision,
        serde_json::json!({"run": run, "stage": "prod", "decision": "rejected", "by": "APPROVER"})
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a rejected deploy fails the run");
    let show = cli_json(&state, &["show", &run]);
    let result = |id: &str| {
        show["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["result"].clone())
    };
    assert_eq!(result("stage"), Some("success".into()), "{show}");
    assert_eq!(result("prod"), Some("failure".into()), "{show}");
    assert_eq!(
        ledger
            .approval(&run, "prod")
            .unwrap()
            .unwrap()
            .decided_by
            .as_deref(),
        Some("APPROVER")
    );

    // Logging out ends the cookie.
    let out = http(ui.addr, None, "POST", "/logout", &[cookie_header], "");
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn the_live_log_streams_new_lines_until_the_stage_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let event = repo(
        tmp.path(),
        "  staging: {}\n",
        &format!(
            "      slow: {{ run: \"echo first; echo 'event: end'; echo 'data: {{}}'; while [ ! -f {} ]; do sleep 0.05; done; echo second\" }}\n",
            go.display()
        ),
    );
    let mut child = spawn_run(tmp.path(), &event);
    let state = tmp.path().join("state");
    let ui = Ui::start(&state, &[], &[]);
    let mut run = String::new();
    wait_for_or("the first line", &mut child, || {
        let runs = ui.json("/api/runs");
        let Some(id) = runs[0]["id"].as_str() else {
            let stderr = std::fs::read_to_string(tmp.path().join("run.stderr"));
            return Err(format!("runs: {runs}\ngitops run said: {stderr:?}"));
        };
        run = id.to_owned();
        let log = ui.get(&format!("/api/runs/{run}/stages/slow/log"));
        if log.body.contains("first") {
            return Ok(());
        }
        Err(format!("runs: {runs}\nlog: {} {:?}", log.status, log.body))
    });
    let mut stream = connect(ui.addr, None);
    send(
        &mut stream,
        ui.addr,
        "GET",
        &format!("/api/runs/{run}/stages/slow/log"),
        &[("Accept", "text/event-stream")],
        "",
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut event = String::new();
    let mut next_event = |reader: &mut BufReader<TcpStream>| loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream closed early"
        );
        // Chunk sizes of the chunked encoding are neither events nor data.
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            return (event.clone(), data.to_owned());
        }
    };
    // The lines so far first (the stage's own "event: end" is a line, not the end).
    for expected in ["first", "event: end", "data: {}"] {
        let (name, data) = next_event(&mut reader);
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            (name.as_str(), data["line"].as_str()),
            ("line", Some(expected))
        );
        assert_eq!(data["stream"], "stdout");
        assert_eq!(data["attempt"], 1);
        assert!(data["t"].as_u64().unwrap() > 1_600_000_000_000);
    }
    // A line written after the request started.
    std::fs::write(&go, "").unwrap();
    let (name, data) = next_event(&mut reader);
    assert_eq!(name, "line");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["line"],
        "second"
    );
    let (name, data) = next_event(&mut reader);
    assert_eq!((name.as_str(), data.as_str()), ("end", "{}"));
    assert!(child.wait().unwrap().success());
}

/// A reverse proxy on the same host (the `--public-url` setup) connects from loopback for
/// everyone it forwards: a request that says it was forwarded is not an anonymous reader,
/// whatever its peer address; the forwarded address itself grants nothing either.
#[test]
fn a_request_forwarded_by_a_proxy_on_loopback_is_not_anonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let env = [("APPROVER", TOKEN)];
    let ui = Ui::start(
        &state,
        &[
            "--ui-token-env",
            "APPROVER",
            "--public-url",
            "https://ci.example.com/gitops",
        ],
        &env,
    );
    let forwarded: &[(&str, &str)] = &[
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Real-IP", "203.0.113.9"),
        ("X-Forwarded-Host", "ci.example.com"),
    ];
    for header in forwarded {
        let answer = http(ui.addr, None, "GET", "/api/runs", &[*header], "");
        assert_eq!(answer.status, 401, "{header:?}: {}", answer.body);
        let answer = http(
            ui.addr,
            None,
            "GET",
            "/api/runs",
            &[*header, ("Host", "ci.example.com")],
            "",
        );
        assert_eq!(answer.status, 401, "{header:?}: {}", answer.body);
    }
    // With the token it reads, forwarded or not; without a proxy header loopback still reads.
    let right = format!("Bearer {TOKEN}");
    let answer = http(
        ui.addr,
        None,
        "GET",
        "/api/runs",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Authorization", &right),
        ],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(ui.get("/api/runs").status, 200);
    drop(ui);

    // Without tokens a forwarded request is refused, saying why.
    let ui = Ui::start(&state, &[], &[]);
    let answer = http(
        ui.addr,
        None,
        "GET",
        "/api/runs",
        &[("X-Forwarded-For", "203.0.113.9")],
        "",
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("proxy"), "{}", answer.body);
}

/// The login form is a page like the others: it may not be framed by another site (a
/// clickjacking of the sign-in), and it runs no script.
#[test]
fn the_login_form_may_not_be_framed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let env = [("APPROVER", TOKEN)];
    let ui = Ui::start(&state, &["--ui-token-env", "APPROVER"], &env);
    let form = ui.get("/login?next=%2F");
    let failed = http(
        ui.addr,
        None,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "token=wrong&next=%2F",
    );
    for (what, answer) in [("GET /login", form), ("a failed POST /login", failed)] {
        let policy = answer.header("content-security-policy").unwrap_or("");
        assert!(
            policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"),
            "{what}: {answer:?}"
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
    }
}

/// A rollback, as the environment's page and history show it: the rollback marked with the
/// deployment it went back to, the environment pinned, and the API's history as the CLI's.
#[test]
fn an_environment_shows_its_rollback_and_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "version: 1\nenvironments:\n  staging: {}\npipelines:\n  main:\n    on: { push: {} }\n    stages:\n      staging: { deploy: staging }\n";
    let repo = tmp.path().join("repo");
    let first = push_repo(&repo, config);
    let state = tmp.path().join("state");
    let ran = |event: &Path| {
        let out = common::run_event(event, &repo, &state, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    ran(&first);
    std::fs::write(repo.join("app.txt"), "2").unwrap();
    common::git(&repo, &["add", "-A"]);
    common::git(&repo, &["commit", "-qm", "2"]);
    ran(&common::push_event(&repo, "main"));
    let out = common::gitops(
        &["rollback", "staging", "--state", state.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let ui = Ui::start(&state, &[], &[]);
    assert_eq!(
        ui.json("/api/environments/staging/history"),
        cli_json(&state, &["history", "staging"])
    );
    let page = ui.get("/environments/staging");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("↩ rollback</span> of #1"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Pinned by "), "{}", page.body);
    let overview = ui.get("/");
    assert!(overview.body.contains("pinned by "), "{}", overview.body);
}
