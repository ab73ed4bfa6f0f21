//! `gitops serve` as a service, over real HTTP on loopback: the inbox across a `kill -9`,
//! redeliveries and replays, other repositories, no secret, slow clients, signals, metrics and
//! the JSON log.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::git;
use common::server::{Fixture, Server, fixture, github, request, sign, wait_until};
use gitops_core::ledger::{Ledger, RunStatus};
use gitops_core::scheduler::RunResult;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const SECRET: &str = "hook-secret-5e1f";

/// The tests here serve the fixture's clone with a GitHub secret.
impl Fixture {
    fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--github-secret-env", "HOOK", "--repo-name", "o/upstream"];
        args.extend_from_slice(extra);
        Server::start(&self.state, &self.clone, &args, &[("HOOK", SECRET)])
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.state).unwrap()
    }
}

fn deliver(server: &Server, id: &str, body: &[u8]) -> (u16, String) {
    github(server.addr, "push", id, body, Some(&sign(SECRET, body)))
}

/// A stage that notes it started in `<dir>/<name>`, waits for `<dir>/go`, then notes its end.
fn blocking_stage(dir: &Path, name: &str) -> String {
    let f = dir.join(name);
    let go = dir.join("go");
    format!(
        "echo start >> {f}; while [ ! -e {go} ]; do sleep 0.05; done; echo end >> {f}",
        f = f.display(),
        go = go.display()
    )
}

#[test]
fn a_server_killed_after_answering_runs_the_event_exactly_once_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      first: {{ run: \"echo ran >> {a}\" }}\n      second: {{ needs: [first], run: \"{b}\" }}\n",
        a = dir.join("a").display(),
        b = blocking_stage(dir, "b")
    );
    let fx = fixture(&config);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let body = fx.push("one");
    let mut server = fx.serve(&["--log-format", "json"]);
    let (status, reply) = deliver(&server, "d-1", &body);
    assert_eq!(status, 202, "{reply}");
    wait_until("the second stage to start", || read("b").contains("start"));
    // The process dies at once: nothing of it runs after this.
    server.signal(Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).expect("killed");
    assert_eq!(read("b"), "start\n");

    let server = fx.serve(&["--log-format", "json"]);
    // The redelivery a forge would send meanwhile runs nothing more.
    let (status, reply) = deliver(&server, "d-1", &body);
    assert_eq!(
        (status, reply.contains("duplicate")),
        (200, true),
        "{reply}"
    );
    wait_until("the resumed stage to start again", || {
        read("b") == "start\nstart\n"
    });
    std::fs::write(dir.join("go"), "").unwrap();
    let ledger = fx.ledger();
    wait_until("the run to end", || {
        ledger
            .runs(10)
            .unwrap()
            .iter()
            .all(|r| r.status != RunStatus::Running)
    });
    let runs = ledger.runs(10).unwrap();
    assert_eq!(runs.len(), 1, "one run: resumed, not started again");
    assert_eq!(runs[0].status, RunStatus::Finished(RunResult::Success));
    assert_eq!(read("a"), "ran\n", "the recorded stage is not run again");
    assert_eq!(
        read("b"),
        "start\nstart\nend\n",
        "the killed attempt did not go on"
    );
    wait_until("the delivery to be done", || {
        ledger.inbox_depth().unwrap() == Default::default()
    });

    // After its run: a redelivery and a replay under a new id run nothing.
    let (status, reply) = deliver(&server, "d-1", &body);
    assert_eq!(
        (status, reply.as_str()),
        (200, r#"{"duplicate":"delivery id","seq":1}"#)
    );
    let (status, reply) = deliver(&server, "d-replayed", &body);
    assert_eq!(
        (status, reply.as_str()),
        (200, r#"{"duplicate":"body","seq":1}"#)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ledger.runs(10).unwrap().len(), 1);
    assert_eq!(ledger.inbox_len().unwrap(), 1);

    // The JSON log: a line per delivery and per run, with their ids and the repository.
    let log: Vec<Value> = server
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let run_line = log
        .iter()
        .find(|l| l["run"] == json!(runs[0].id))
        .unwrap_or_else(|| panic!("a line for the run: {log:?}"));
    assert_eq!(run_line["delivery"], "d-1");
    assert_eq!(run_line["repo"], "o/upstream");
    assert_eq!(run_line["result"], "success");
    assert!(
        log.iter()
            .any(|l| l["delivery"] == "d-replayed" && l["outcome"] == "duplicate"),
        "{log:?}"
    );
}

#[test]
fn deliveries_wait_in_the_inbox_and_a_full_inbox_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      wait: {{ run: \"{}\" }}\n",
        blocking_stage(dir, "runs")
    );
    let fx = fixture(&config);
    let server = fx.serve(&["--max-runs", "1", "--max-queued", "1"]);
    assert_eq!(deliver(&server, "d-1", &fx.push("1")).0, 202);
    let read = || std::fs::read_to_string(dir.join("runs")).unwrap_or_default();
    wait_until("the first run to start", || read() == "start\n");
    // One run at a time: the second waits in the inbox.
    assert_eq!(deliver(&server, "d-2", &fx.push("2")).0, 202);
    // Its redelivery, before it ran, is taken, and it still runs once.
    let (status, reply) = deliver(&server, "d-2", &fx.push("2"));
    assert_eq!(
        (status, reply.contains("\"redelivery\":true")),
        (202, true),
        "{reply}"
    );
    // Full: 503, and when to try again.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    let body = fx.push("3");
    write!(
        raw,
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d-3\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\n\r\n",
        sign(SECRET, &body),
        body.len()
    )
    .unwrap();
    raw.write_all(&body).unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 30"),
        "{answer}"
    );
    assert!(answer.contains("try again later"), "{answer}");
    assert_eq!(read(), "start\n", "the second has not started");
    std::fs::write(dir.join("go"), "").unwrap();
    let ledger = fx.ledger();
    wait_until("both runs to end", || {
        let runs = ledger.runs(10).unwrap();
        runs.len() == 2 && runs.iter().all(|r| r.status != RunStatus::Running)
    });
    wait_until("both deliveries to be done", || {
        ledger.inbox_depth().unwrap() == Default::default()
    });
    assert_eq!(
        read(),
        "start\nend\nstart\nend\n",
        "one after the other, each once"
    );
    // The refused one can be delivered again later, and is then taken.
    assert_eq!(deliver(&server, "d-3", &fx.push("3")).0, 202);
}

#[test]
fn events_of_other_repositories_and_unsigned_servers_are_refused() {
    let fx = fixture("version: 1\npipelines: {}\n");
    let server = fx.serve(&[]);
    let other = serde_json::to_vec(&json!({"ref": "refs/heads/main", "before": fx.before,
        "after": fx.after, "repository": {"full_name": "mallory/fork"}}))
    .unwrap();
    let (status, reply) = deliver(&server, "d-other", &other);
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply.contains("serves o/upstream, not mallory/fork"),
        "{reply}"
    );
    // GitLab is not enabled: no token was given.
    let (status, reply) = request(
        server.addr,
        "POST",
        "/webhooks/gitlab",
        &[("X-Gitlab-Event", "Push Hook")],
        b"{}",
    );
    assert_eq!(status, 404, "{reply}");
    assert!(reply.contains("--gitlab-token-env"), "{reply}");
    assert_eq!(fx.ledger().inbox_len().unwrap(), 0, "nothing stored");

    // No secret at all: it does not start.
    let out = common::gitops(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            fx.clone.to_str().unwrap(),
            "--repo-name",
            "o/upstream",
            "--state",
            fx.state.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = common::text(&out.stderr);
    assert!(err.contains("serve needs a webhook secret"), "{err}");
    assert!(err.contains("--allow-unsigned"), "{err}");
    // No name for the repository: it does not start either.
    let out = common::gitops_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            fx.clone.to_str().unwrap(),
            "--github-secret-env",
            "HOOK",
            "--state",
            fx.state.to_str().unwrap(),
        ],
        None,
        &[("HOOK", SECRET)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = common::text(&out.stderr);
    assert!(err.contains("give --repo-name owner/name"), "{err}");

    // Allowed unsigned: it says so, at start and in /healthz.
    let unsigned = Server::start(
        &fx.dir.join("state2"),
        &fx.clone,
        &["--allow-unsigned", "--repo-name", "o/upstream", "--no-run"],
        &[],
    );
    let (_, health) = request(unsigned.addr, "GET", "/healthz", &[], b"");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["unsigned"],
        json!(["github", "gitlab", "bitbucket", "gitea"]),
        "{health}"
    );
    assert!(
        health["warning"]
            .as_str()
            .unwrap()
            .contains("--allow-unsigned")
    );
    wait_until("the warning in the log", || {
        unsigned
            .log()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("unsigned github requests are accepted"))
    });
}

#[test]
fn slow_clients_are_cut_after_the_header_timeout_while_deliveries_are_answered() {
    let fx = fixture("version: 1\npipelines: {}\n");
    let server = fx.serve(&[
        "--no-run",
        "--header-timeout",
        "2s",
        "--replay-window",
        "0s",
    ]);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let head = b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n";
    let mut cut = vec![None; slow.len()];
    let body = fx.push("fast");
    let mut answered = 0;
    for (i, byte) in head.iter().cycle().enumerate().take(6) {
        // One byte a second on each slow connection.
        for (s, at) in slow.iter_mut().zip(cut.iter_mut()) {
            if at.is_none() && s.write_all(&[*byte]).is_err() {
                *at = Some(opened.elapsed());
            }
        }
        // Meanwhile, signed deliveries are answered, each within a second.
        let started = Instant::now();
        let (status, reply) = deliver(&server, &format!("fast-{i}"), &body);
        assert_eq!(status, 202, "{reply}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered in {:?}",
            started.elapsed()
        );
        answered += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(answered, 6);
    // Each slow connection was closed by the server: reading gives the end (or a reset).
    for (s, at) in slow.iter_mut().zip(cut.iter_mut()) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let closed = match s.read(&mut buf) {
            Ok(0) | Err(_) => true,
            Ok(_) => String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        };
        assert!(closed, "a slow connection is still open");
        at.get_or_insert(opened.elapsed());
    }
    let earliest = cut.iter().flatten().min().unwrap();
    assert!(
        *earliest >= Duration::from_millis(1500),
        "cut before the timeout: {earliest:?}"
    );
    assert_eq!(fx.ledger().inbox_len().unwrap(), 6);
}

#[test]
fn the_first_signal_lets_a_stage_finish_and_the_second_cancels_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      long: {{ run: \"echo $$ > {pid}; exec sleep 60\" }}\n",
        pid = dir.join("pid").display()
    );
    let fx = fixture(&config);
    let mut server = fx.serve(&[]);
    let addr = server.addr;
    assert_eq!(deliver(&server, "d-1", &fx.push("1")).0, 202);
    wait_until("the stage to start", || {
        std::fs::read_to_string(dir.join("pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    server.signal(Signal::SIGTERM);
    wait_until("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    assert_eq!(
        server.wait_exit(Duration::from_secs(2)),
        None,
        "the running stage is let finish"
    );
    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("a second signal stops it");
    assert!(status.success(), "{:?}", server.log());
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(!alive, "the stage's process was stopped");
    let runs = fx.ledger().runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Finished(RunResult::Cancelled));
    assert!(
        server.log().iter().any(|l| l.contains("second signal")),
        "{:?}",
        server.log()
    );
}

#[test]
fn metrics_are_prometheus_text_counting_deliveries_runs_and_stages() {
    // Two pipelines deploy one environment: one waits for the other's lock.
    let fx = fixture(concat!(
        "version: 1\nenvironments:\n  staging: {}\npipelines:\n",
        "  main:\n    on: { push: { branches: [main] } }\n    stages:\n",
        "      build: { run: \"true\" }\n",
        "      deploy: { needs: [build], deploy: staging, with: { files: app.txt, build: \"sleep 0.5\" } }\n",
        "  also:\n    on: { push: { branches: [main] } }\n    stages:\n",
        "      deploy: { deploy: staging, with: { files: app.txt, build: \"sleep 0.5\" } }\n",
    ));
    let server = fx.serve(&["--max-runs", "2"]);
    let body = fx.push("m");
    assert_eq!(deliver(&server, "d-1", &body).0, 202);
    let ledger = fx.ledger();
    wait_until("the delivery to be done", || {
        ledger.runs(10).unwrap().len() == 2 && ledger.inbox_depth().unwrap() == Default::default()
    });
    assert_eq!(deliver(&server, "d-1", &body).0, 200);
    assert_eq!(
        github(server.addr, "push", "d-2", &body, Some("sha256=00")).0,
        401
    );
    let scrape = || {
        let (status, text) = request(server.addr, "GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        (prometheus_parse::Scrape::parse(lines).unwrap(), text)
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    };
    wait_until("the runs in the metrics", || {
        value(&scrape().0, "gitops_runs_total", &[("pipeline", "also")]).is_some()
            && value(&scrape().0, "gitops_runs_total", &[("pipeline", "main")]).is_some()
    });
    let (metrics, text) = scrape();
    let delivery = |outcome| {
        value(
            &metrics,
            "gitops_webhook_deliveries_total",
            &[("provider", "github"), ("outcome", outcome)],
        )
    };
    assert_eq!(delivery("accepted"), Some(1.0), "{text}");
    assert_eq!(delivery("duplicate"), Some(1.0), "{text}");
    assert_eq!(delivery("bad_signature"), Some(1.0), "{text}");
    assert_eq!(
        value(
            &metrics,
            "gitops_runs_total",
            &[("pipeline", "main"), ("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &metrics,
            "gitops_stage_duration_seconds",
            &[("pipeline", "main")]
        ),
        Some(2.0),
        "two stages observed: {text}"
    );
    assert_eq!(
        value(
            &metrics,
            "gitops_deployments_total",
            &[
                ("environment", "staging"),
                ("action", "deploy"),
                ("result", "success")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &metrics,
            "gitops_environment_lock_wait_seconds",
            &[("environment", "staging")]
        ),
        Some(1.0),
        "one deployment waited: {text}"
    );
    assert_eq!(
        value(&metrics, "gitops_inbox_queued", &[]),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn a_grace_period_ends_in_cancellation_and_what_waits_is_run_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pid_file = dir.join("pid");
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      long: {{ run: \"echo $$ >> {pid}; exec sleep 60\" }}\n",
        pid = pid_file.display()
    );
    let fx = fixture(&config);
    let pids = || -> Vec<i32> {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let mut server = fx.serve(&["--max-runs", "1", "--shutdown-grace", "1s"]);
    assert_eq!(deliver(&server, "d-1", &fx.push("1")).0, 202);
    wait_until("the first run's stage", || pids().len() == 1);
    assert_eq!(deliver(&server, "d-2", &fx.push("2")).0, 202);
    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the grace period ends");
    assert!(status.success(), "{:?}", server.log());
    assert!(!alive(pids()[0]), "the stage was cancelled");
    let ledger = fx.ledger();
    let runs = ledger.runs(10).unwrap();
    assert_eq!(runs.len(), 1, "the second delivery did not start");
    assert_eq!(runs[0].status, RunStatus::Finished(RunResult::Cancelled));
    assert_eq!(
        ledger.inbox_depth().unwrap().queued,
        1,
        "it waits in the inbox"
    );
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("grace period is over")),
        "{:?}",
        server.log()
    );

    // The next start takes it.
    let mut server = fx.serve(&["--max-runs", "1"]);
    wait_until("the second delivery's stage", || pids().len() == 2);
    server.signal(Signal::SIGTERM);
    // Two signals sent at once arrive as one, as POSIX signals do.
    wait_until("the shutdown to begin", || {
        server.log().iter().any(|l| l.contains("shutting down"))
    });
    server.signal(Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(20)).expect("stopped");
    assert!(!alive(pids()[1]));
    assert_eq!(ledger.runs(10).unwrap().len(), 2);
}

#[test]
fn bodies_are_read_only_after_the_headers_pass_and_within_a_budget() {
    let fx = fixture("version: 1\npipelines: {}\n");
    let server = fx.serve(&[
        "--no-run",
        "--max-body-bytes",
        "8192",
        "--max-body-bytes-in-flight",
        "8192",
    ]);
    let open = |headers: &str, length: usize| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        write!(
            s,
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: big\r\nContent-Length: {length}\r\n{headers}\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let answer = |s: &mut TcpStream| {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // No signature: refused at once, without waiting for (or holding) 20 MB.
    let mut unsigned = open("", 20_000_000);
    let reply = answer(&mut unsigned);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.contains("X-Hub-Signature-256"), "{reply}");
    // Signed as far as the headers tell: their bodies are read, within the budget.
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    let _held = open(&signature, 5000);
    std::thread::sleep(Duration::from_millis(300));
    let mut second = open(&signature, 5000);
    let reply = answer(&mut second);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too many request bodies"), "{reply}");
    // The server still answers signed deliveries that fit.
    let body = fx.push("small");
    assert_eq!(deliver(&server, "small", &body).0, 202);
}

#[test]
fn deliveries_take_their_places_in_a_concurrency_group_in_the_order_they_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let config = format!(
        "version: 1\npipelines:\n  deploy:\n    on: {{ push: {{ branches: [main] }} }}\n    concurrency: {{ group: prod, on_conflict: fifo }}\n    stages:\n      deploy: {{ run: \"echo start $GITOPS_SHA >> {l}; sleep 0.3; echo end $GITOPS_SHA >> {l}\" }}\n",
        l = log.display()
    );
    let fx = fixture(&config);
    // A second commit upstream, after `after`: a tree of 10,000 files for the first push, so
    // that its checkout is slow, then one without them for the second.
    let upstream = fx.dir.join("upstream");
    let many = upstream.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..10_000 {
        std::fs::write(many.join(format!("f{i}")), i.to_string()).unwrap();
    }
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "many"]);
    let big = git(&upstream, &["rev-parse", "HEAD"]);
    git(&upstream, &["rm", "-rq", "many"]);
    git(&upstream, &["commit", "-qm", "few"]);
    let small = git(&upstream, &["rev-parse", "HEAD"]);
    let push = |before: &str, after: &str| {
        serde_json::to_vec(
            &json!({"ref": "refs/heads/main", "before": before, "after": after,
            "repository": {"full_name": "o/upstream"}}),
        )
        .unwrap()
    };
    let server = fx.serve(&["--max-runs", "2"]);
    assert_eq!(deliver(&server, "big", &push(&fx.after, &big)).0, 202);
    assert_eq!(deliver(&server, "small", &push(&big, &small)).0, 202);
    let ledger = fx.ledger();
    wait_until("both runs to end", || {
        let runs = ledger.runs(10).unwrap();
        runs.len() == 2 && runs.iter().all(|r| r.status != RunStatus::Running)
    });
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("start {big}\nend {big}\nstart {small}\nend {small}\n"),
        "the later push deployed last"
    );
}
