//! A `gitops serve` process for the tests that talk to it over HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::git;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// A running `gitops serve` whose standard output lines are collected.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(state: &Path, repo: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(repo)
            .arg("--state")
            .arg(state)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let out = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut addr = None;
        let mut before = Vec::new();
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            if let Some(a) = line.trim().strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
                break;
            }
            // `--log-format json`: the line that says it serves has the address.
            let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            if let Some(a) = json.as_ref().filter(|j| j["message"] == "serving") {
                addr = a["addr"].as_str().map(|a| a.parse().unwrap());
                before.push(line.trim_end().to_owned());
                break;
            }
            before.push(line.trim_end().to_owned());
            line.clear();
        }
        let log = Arc::new(Mutex::new(before));
        let err = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                err.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            addr: addr.expect("the server said where it listens"),
            lines,
            log,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines it wrote to standard error so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Waits at most `limit` for it to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM, as a service manager would; its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; the status and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    // A server that refuses a body early may close before reading all of it.
    let _ = s.write_all(body);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

pub fn github(
    addr: SocketAddr,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (u16, String) {
    let mut headers = vec![("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery)];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    request(addr, "POST", "/webhooks/github", &headers, body)
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An upstream repository with `config` on `main`, a clone of it, and a commit pushed upstream
/// after the clone was made (the server must fetch it).
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub clone: PathBuf,
    pub state: PathBuf,
    pub before: String,
    pub after: String,
}

pub fn fixture(config: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = dir.join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    std::fs::write(upstream.join(".gitops.yml"), config).unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "one"]);
    let before = git(&upstream, &["rev-parse", "HEAD"]);
    let clone = dir.join("clone");
    git(
        &dir,
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    std::fs::write(upstream.join("app.txt"), "two").unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "two"]);
    let after = git(&upstream, &["rev-parse", "HEAD"]);
    Fixture {
        state: dir.join("state"),
        _tmp: tmp,
        dir,
        clone,
        before,
        after,
    }
}

impl Fixture {
    /// A push of `after` to main; `tag` makes bodies of the same push differ.
    pub fn push(&self, tag: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"ref": "refs/heads/main", "before": self.before,
            "after": self.after, "created": false, "deleted": false, "forced": false,
            "compare": tag, "sender": {"login": "octo"},
            "repository": {"full_name": "o/upstream"}}))
        .unwrap()
    }
}
