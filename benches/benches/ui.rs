//! What the read API and the dashboard's pages cost with 10,000 runs in the ledger: requests
//! over real HTTP on loopback to a `gitops ui` process (the release binary: build it first with
//! `cargo build --release -p gitops-examples --bin gitops`, or name one in `GITOPS_BIN`),
//! against the baseline of the same server answering an unknown API path (the HTTP round trip,
//! the access layer, no ledger). Target: each page under 50 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_core::event::GitEvent;
use gitops_core::ledger::{Ledger, RunRecord};
use gitops_core::scheduler::{RunResult, StageReport, StageResult};

/// Runs in the ledger.
const RUNS: usize = 10_000;

fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GITOPS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/gitops");
    bin.exists().then_some(bin)
}

/// A ledger of [`RUNS`] finished runs of three stages each; the id of the run in the middle.
fn ledger(state: &Path) -> String {
    let ledger = Ledger::open(state).expect("a ledger");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let mut middle = String::new();
    for i in 0..RUNS {
        let id = format!("r{i:06}-bench");
        let pipeline = if i % 2 == 0 { "main" } else { "pull-request" };
        let event = GitEvent::push("o/r", "main", None, sha);
        let mut run = RunRecord::new(&id, pipeline, event, "version: 1\n", state);
        run.started_at = 1_700_000_000.0 + i as f64;
        ledger.begin_run(&run).expect("a run recorded");
        for (n, stage) in ["test", "build", "deploy"].iter().enumerate() {
            let report = StageReport {
                id: Arc::from(*stage),
                result: StageResult::Success,
                attempts: 1,
                flaky: false,
                started_secs: Some(n as f64),
                finished_secs: Some(n as f64 + 1.0),
                outputs: Default::default(),
                reused: false,
            };
            ledger.record_stage(&id, &report).expect("a stage recorded");
        }
        ledger
            .finish_run(&id, RunResult::Success)
            .expect("a run finished");
        if i == RUNS / 2 {
            middle = id;
        }
    }
    middle
}

/// `gitops ui` over `state`, and its address (the caller kills it and waits for it).
#[allow(
    clippy::zombie_processes,
    reason = "returned to the caller, who waits for it"
)]
fn start(bin: &Path, state: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .args(["ui", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gitops ui started");
    let mut stderr = BufReader::new(child.stderr.take().expect("its standard error"));
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gitops ui ended before it listened");
        }
        if let Some(addr) = line.trim().strip_prefix("listening on http://") {
            let addr = addr.parse().expect("an address");
            std::thread::spawn(move || for _ in stderr.lines() {});
            return (child, addr);
        }
    }
}

/// One GET; the status and the body's length.
fn get(addr: SocketAddr, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).expect("a connection");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html, application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).expect("the request sent");
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("the answer read");
    let status = std::str::from_utf8(&response[..12.min(response.len())])
        .ok()
        .and_then(|h| h.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, response.len())
}

fn bench(c: &mut Criterion) {
    let Some(bin) = binary() else {
        eprintln!(
            "skipped: no gitops binary; build it with `cargo build --release -p gitops-examples --bin gitops` or set GITOPS_BIN"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = std::time::Instant::now();
    let middle = ledger(dir.path());
    eprintln!(
        "{RUNS} runs recorded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (mut child, addr) = start(&bin, dir.path());
    let mut group = c.benchmark_group("ui_request_10k_runs");
    group.bench_function("baseline: unknown API path (404)", |b| {
        b.iter(|| get(addr, "/api/none"))
    });
    let paths = [
        "/api/runs".to_owned(),
        format!("/api/runs?before={middle}"),
        "/api/runs?pipeline=main&limit=200".to_owned(),
        format!("/api/runs/{middle}"),
        "/api/environments".to_owned(),
        "/".to_owned(),
        "/runs".to_owned(),
        format!("/runs?before={middle}"),
        format!("/runs/{middle}"),
    ];
    for path in &paths {
        let (status, _) = get(addr, path);
        if status != 200 {
            eprintln!("note: {path} answers {status}: not measured (not built yet?)");
            continue;
        }
        group.bench_function(path.replace(&middle, "MIDDLE"), |b| {
            b.iter(|| get(addr, path))
        });
    }
    group.finish();
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
