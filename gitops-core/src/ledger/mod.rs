//! The ledger: a durable record of runs and their stage results, in SQLite in the state dir.
//!
//! Each stage's result is committed when the stage ends, before anything that needs it starts,
//! so that a run killed halfway can be resumed without re-running what had finished.

mod approvals;
mod deployments;
mod environments;
mod inbox;
mod locks;
mod outbox;
mod queue;
mod retention;
mod schema;
mod stages;

pub use approvals::{ApprovalRecord, ApprovalStatus};
pub use deployments::{DeploymentInputs, DeploymentRecord, DeploymentResult, NewDeployment};
pub use environments::{EnvironmentRecord, EnvironmentStatus};
pub use inbox::{
    Admission, Delivery, DeliveryOutcome, DeliveryState, EncodedEvent, InboxDepth, InboxLimits,
    NewDelivery,
};
pub use locks::LockHolder;
pub use outbox::{NewReport, PendingReport, REPORT_CLAIM_SECS};
pub use queue::GroupDecision;
pub use retention::Retention;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::backend::BoxError;
use crate::event::GitEvent;
use crate::scheduler::{RunResult, StageReport};
use crate::trust::TrustLevel;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// SQLite failed, or the files it needs could not be made.
    #[error("ledger {path}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What failed: SQLite's error, or the file system's.
        #[source]
        source: BoxError,
    },
    /// A run id that the ledger does not know.
    #[error("no run \"{0}\" in the ledger")]
    UnknownRun(String),
    /// An environment instance that belongs to another environment, repository or pull
    /// request than the deployment that names it.
    #[error(
        "environment instance \"{instance}\" belongs to {owner}; {claimant} may not deploy to or stop it"
    )]
    NotOwned {
        /// The instance.
        instance: String,
        /// Whose it is.
        owner: String,
        /// Who asked.
        claimant: String,
    },
    /// A record that cannot be decoded.
    #[error("ledger record of run \"{run}\" is unreadable: {message}")]
    Corrupt {
        /// The run.
        run: String,
        /// What is wrong.
        message: String,
    },
}

/// Status of a run in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Started and not finished: running now, or interrupted by a crash.
    Running,
    /// Finished with this result.
    Finished(RunResult),
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished(r) => r.name(),
        }
    }

    fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "success" => RunStatus::Finished(RunResult::Success),
            "failure" => RunStatus::Finished(RunResult::Failure),
            "cancelled" => RunStatus::Finished(RunResult::Cancelled),
            _ => return None,
        })
    }
}

/// Which runs [`Ledger::find_runs`] returns: those matching every field set, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Runs of this pipeline.
    pub pipeline: Option<String>,
    /// Runs that deployed to or stopped this environment instance (`staging`,
    /// `preview-pr-7`).
    pub environment: Option<String>,
    /// Runs older than this one (a page's last run, for the next page).
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            pipeline: None,
            environment: None,
            before: None,
            limit: 20,
        }
    }
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run's id.
    pub id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The event that caused it.
    pub event: GitEvent,
    /// The text of the `.gitops.yml` it ran with.
    pub config: String,
    /// The repository it came from.
    pub repo: Option<PathBuf>,
    /// The commit it ran.
    pub commit: Option<String>,
    /// Where its stages ran.
    pub workdir: PathBuf,
    /// The run this one re-runs.
    pub rerun_of: Option<String>,
    /// Running, or how it ended.
    pub status: RunStatus,
    /// The process that ran it.
    pub pid: u32,
    /// When that process started (clock ticks since boot, from `/proc`), so that another
    /// process given the same pid later (a restarted container's PID 1) is not taken for it.
    pub pid_start: Option<u64>,
    /// Unix time it started.
    pub started_at: f64,
    /// Unix time it ended.
    pub finished_at: Option<f64>,
    /// Who caused it: the event's forge user, else who started it (a user name, `webhook`).
    pub actor: Option<String>,
    /// The trust level the engine gave its event.
    pub trust: Option<TrustLevel>,
    /// The text of the trusted ref's `.gitops.yml`, whose environments it deployed to.
    pub trusted_config: Option<String>,
    /// The inbox delivery that started it (`gitops serve`), by its sequence number.
    pub delivery: Option<u64>,
}

impl RunRecord {
    /// A new run record, started now by this process.
    pub fn new(id: &str, pipeline: &str, event: GitEvent, config: &str, workdir: &Path) -> Self {
        RunRecord {
            id: id.to_owned(),
            pipeline: pipeline.to_owned(),
            event,
            config: config.to_owned(),
            repo: None,
            commit: None,
            workdir: workdir.to_path_buf(),
            rerun_of: None,
            status: RunStatus::Running,
            pid: std::process::id(),
            pid_start: own_start(),
            started_at: now(),
            finished_at: None,
            actor: None,
            trust: None,
            trusted_config: None,
            delivery: None,
        }
    }

    /// Whether the run was started and its process is gone: a crash interrupted it.
    pub fn is_interrupted(&self) -> bool {
        self.status == RunStatus::Running && !process_alive_since(self.pid, self.pid_start)
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When this process started (see [`process_start`]).
fn own_start() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| process_start(std::process::id()))
}

/// Whether the process that recorded `pid` (started at `start`, when known) still runs: a
/// process with that pid that started at another time is another process.
fn process_alive_since(pid: u32, start: Option<u64>) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match (start, process_start(pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        // Recorded before starts were, or /proc cannot be read: the pid decides.
        _ => true,
    }
}

/// Whether `pid` and `start` are this process's.
fn is_own(pid: u32, start: Option<u64>) -> bool {
    pid == std::process::id() && (start.is_none() || start == own_start())
}

fn process_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match kill(Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Unix time now, in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new run id: time-ordered, unique across processes sharing a state dir.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(millis);
    h.write_u32(std::process::id());
    format!("r{}-{:04x}", base36(millis), h.finish() & 0xffff)
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The ledger of one state dir. Cheap to clone; safe to share between tasks and processes.
#[derive(Debug, Clone)]
pub struct Ledger {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Stage results waiting to be committed together (see [`stages`]).
    pending: Arc<Mutex<Vec<stages::Pending>>>,
}

/// The thread [`Ledger::checkpoint_in_background`] started; stops it when dropped.
#[derive(Debug)]
pub struct BackgroundCheckpoints {
    ledger: Ledger,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BackgroundCheckpoints {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        // SQLite's default.
        let _ = self
            .ledger
            .with(|c| c.pragma_update(None, "wal_autocheckpoint", 1000));
    }
}

/// The ledger's file inside the state dir.
pub const LEDGER_FILE: &str = "ledger.sqlite3";

/// Frames of the write-ahead log (4 KiB each: 32 MiB; 1 MiB in tests) past which the
/// background checkpoint makes the log start over (see [`Ledger::checkpoint_in_background`]).
const RESTART_FRAMES: i64 = if cfg!(test) { 256 } else { 8192 };
/// Frames not yet copied past which the background checkpoint does not restart the log (the
/// copy, under the write lock, would take too long).
const RESTART_BACKLOG: i64 = 256;
/// How long the background `RESTART` checkpoint waits for a lock, in milliseconds.
const RESTART_PATIENCE_MS: i32 = 5;

impl Ledger {
    /// Opens (creating if needed) the ledger of `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        let err = |e: BoxError| LedgerError::Database {
            path: path.clone(),
            source: e,
        };
        private_dir(state_dir).map_err(|e| err(e.into()))?;
        private_files(&path).map_err(|e| err(e.into()))?;
        let mut conn = Connection::open(&path).map_err(|e| err(e.into()))?;
        schema::prepare(&mut conn).map_err(|e| err(e.into()))?;
        Ok(Ledger {
            conn: Arc::new(Mutex::new(conn)),
            path,
            pending: Arc::default(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves SQLite's checkpoints (copying the write-ahead log into the database, with its
    /// `fsync`) off the writers' path, for a long-running process that writes often (`serve`):
    /// this process's writes no longer checkpoint, and a thread with its own connection does,
    /// every `every`. Passive checkpoints block no one; past 32 MiB of log, once they
    /// have caught up, a `RESTART` checkpoint holds the write lock for a few milliseconds at
    /// most so that the log starts over. The thread stops when the returned value is dropped,
    /// and writes checkpoint again.
    pub fn checkpoint_in_background(
        &self,
        every: std::time::Duration,
    ) -> Result<BackgroundCheckpoints, LedgerError> {
        let err = |e: BoxError| LedgerError::Database {
            path: self.path.clone(),
            source: e,
        };
        let conn = Connection::open(&self.path).map_err(|e| err(e.into()))?;
        // Only RESTART waits (PASSIVE never does): for the write lock, then, holding it, for the
        // readers to leave the log. A few milliseconds, then it gives up until the next round:
        // a reader that keeps a snapshot open (`gitops ui`, a `sqlite3` shell) never stops the
        // writers for longer.
        conn.busy_handler(Some(|attempts| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            attempts < RESTART_PATIENCE_MS
        }))
        .map_err(|e| err(e.into()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".to_owned())
            .spawn(move || {
                // Frames in the log, and of them copied into the database.
                let checkpoint = |mode: &str| {
                    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    })
                    .unwrap_or((0, 0))
                };
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(every);
                    let (frames, _) = checkpoint("PASSIVE");
                    // Under steady writes a passive checkpoint never reaches the log's end, and
                    // the log only starts over once one has: it grew by the whole burst (a GB in
                    // 10 s), and cutting it back later stopped the writer for 300 ms. Past
                    // RESTART_FRAMES, passive checkpoints catch up; then RESTART copies the few
                    // frames written since, holding the write lock meanwhile (the writer waits on
                    // its busy handler), and the next write starts the log over. Not caught up
                    // (a reader's snapshot holds frames back, or the writes outran the copies):
                    // the next round tries again.
                    if frames >= RESTART_FRAMES {
                        let caught_up = (0..4).any(|_| {
                            let (frames, copied) = checkpoint("PASSIVE");
                            frames - copied < RESTART_BACKLOG
                        });
                        if caught_up {
                            checkpoint("RESTART");
                        }
                    }
                }
            })
            .map_err(|e| err(e.into()))?;
        self.with(|c| c.pragma_update(None, "wal_autocheckpoint", 0))?;
        Ok(BackgroundCheckpoints {
            ledger: self.clone(),
            stop,
            thread: Some(thread),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| LedgerError::Database {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    /// Records that a maintainer trusts pull request `number` of `repo` (a fork's) to run: at
    /// commit `sha` only, or at any commit when `None`.
    pub fn trust_pull_request(
        &self,
        repo: &str,
        number: u64,
        sha: Option<&str>,
        by: &str,
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO trusted_pull_requests (repo, number, sha, trusted_by, trusted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![repo, number as i64, sha.unwrap_or(""), by, now()],
            )
            .map(|_| ())
        })
    }

    /// Withdraws every trust in pull request `number` of `repo`; false when there was none.
    pub fn distrust_pull_request(&self, repo: &str, number: u64) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM trusted_pull_requests WHERE repo = ?1 AND number = ?2",
                params![repo, number as i64],
            )
            .map(|n| n > 0)
        })
    }

    /// Whether pull request `number` of `repo` is trusted at commit `sha` (trusted at any
    /// commit, or at that one). `repo` `None` matches any repository's pull request of that
    /// number (for a state dir that serves one repository).
    pub fn pull_request_trusted(
        &self,
        repo: &str,
        number: u64,
        sha: Option<&str>,
    ) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM trusted_pull_requests WHERE (repo = ?1 OR repo = '*') AND number = ?2 AND (sha = '' OR sha = ?3)",
                params![repo, number as i64, sha.unwrap_or("")],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }

    /// Records that a run started.
    pub fn begin_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        let event = serde_json::to_string(&run.event).map_err(|e| LedgerError::Corrupt {
            run: run.id.clone(),
            message: e.to_string(),
        })?;
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, pipeline, event, config, repo, commit_sha, workdir, rerun_of, status, pid, started_at, actor, trust, trusted_config, delivery, pid_start)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    run.id,
                    run.pipeline,
                    event,
                    run.config,
                    run.repo.as_ref().map(|p| p.display().to_string()),
                    run.commit,
                    run.workdir.display().to_string(),
                    run.rerun_of,
                    run.pid,
                    run.started_at,
                    run.actor,
                    run.trust.map(TrustLevel::as_str),
                    run.trusted_config,
                    run.delivery,
                    run.pid_start
                ],
            )
            .map(|_| ())
        })
    }

    /// Marks a run as taken over by this process (when resuming it).
    pub fn claim_run(&self, id: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET pid = ?2, pid_start = ?3, status = 'running', finished_at = NULL WHERE id = ?1",
                params![id, std::process::id(), own_start()],
            )
            .map(|_| ())
        })
    }

    /// Records how a run ended.
    pub fn finish_run(&self, id: &str, result: RunResult) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
                params![id, RunStatus::Finished(result).as_str(), now()],
            )
            .map(|_| ())
        })
    }

    /// Records a stage's result; each stage of a run is recorded once.
    pub fn record_stage(&self, run_id: &str, stage: &StageReport) -> Result<(), LedgerError> {
        let detail = serde_json::to_string(stage).map_err(|e| LedgerError::Corrupt {
            run: run_id.to_owned(),
            message: e.to_string(),
        })?;
        self.with(|c| stages::insert(c, run_id, stage, &detail))
    }

    /// A run by id.
    pub fn run(&self, id: &str) -> Result<RunRecord, LedgerError> {
        let row = self.with(|c| {
            c.query_row(&format!("{SELECT_RUN} WHERE id = ?1"), [id], raw_run)
                .optional()
        })?;
        row.ok_or_else(|| LedgerError::UnknownRun(id.to_owned()))?
            .decode()
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, LedgerError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_RUN} ORDER BY started_at DESC, id DESC LIMIT ?1"
            ))?;
            stmt.query_map([limit as i64], raw_run)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RawRun::decode).collect()
    }

    /// The runs `query` asks for, newest first.
    pub fn find_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, LedgerError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_RUN} WHERE (?1 IS NULL OR pipeline = ?1)
                 AND (?2 IS NULL OR id IN (SELECT run_id FROM deployments WHERE environment = ?2))
                 AND (?3 IS NULL OR (started_at, id) < (SELECT started_at, id FROM runs WHERE id = ?3))
                 ORDER BY started_at DESC, id DESC LIMIT ?4"
            ))?;
            stmt.query_map(
                params![
                    query.pipeline,
                    query.environment,
                    query.before,
                    query.limit.min(i64::MAX as usize) as i64
                ],
                raw_run,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RawRun::decode).collect()
    }

    /// Runs that were started and whose process is gone, oldest first.
    pub fn interrupted_runs(&self) -> Result<Vec<RunRecord>, LedgerError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_RUN} WHERE status = 'running' ORDER BY started_at"
            ))?;
            stmt.query_map([], raw_run)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let runs: Vec<RunRecord> = rows
            .into_iter()
            .map(RawRun::decode)
            .collect::<Result<_, _>>()?;
        Ok(runs.into_iter().filter(RunRecord::is_interrupted).collect())
    }

    /// The recorded stage results of a run, in the order they were recorded.
    pub fn stage_results(&self, run_id: &str) -> Result<Vec<StageReport>, LedgerError> {
        let rows = self.with(|c| {
            let mut stmt =
                c.prepare("SELECT detail FROM stage_results WHERE run_id = ?1 ORDER BY rowid")?;
            stmt.query_map([run_id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.iter()
            .map(|d| {
                serde_json::from_str(d).map_err(|e| LedgerError::Corrupt {
                    run: run_id.to_owned(),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

const SELECT_RUN: &str = "SELECT id, pipeline, event, config, repo, commit_sha, workdir, rerun_of, status, pid, started_at, finished_at, actor, trust, trusted_config, delivery, pid_start FROM runs";

struct RawRun {
    id: String,
    pipeline: String,
    event: String,
    config: String,
    repo: Option<String>,
    commit: Option<String>,
    workdir: String,
    rerun_of: Option<String>,
    status: String,
    pid: u32,
    started_at: f64,
    finished_at: Option<f64>,
    actor: Option<String>,
    trust: Option<String>,
    trusted_config: Option<String>,
    delivery: Option<u64>,
    pid_start: Option<u64>,
}

fn raw_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        event: r.get(2)?,
        config: r.get(3)?,
        repo: r.get(4)?,
        commit: r.get(5)?,
        workdir: r.get(6)?,
        rerun_of: r.get(7)?,
        status: r.get(8)?,
        pid: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        actor: r.get(12)?,
        trust: r.get(13)?,
        trusted_config: r.get(14)?,
        delivery: r.get(15)?,
        pid_start: r.get(16)?,
    })
}

impl RawRun {
    fn decode(self) -> Result<RunRecord, LedgerError> {
        let corrupt = |message: String| LedgerError::Corrupt {
            run: self.id.clone(),
            message,
        };
        let event =
            serde_json::from_str(&self.event).map_err(|e| corrupt(format!("event: {e}")))?;
        let status = RunStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("status \"{}\"", self.status)))?;
        let trust = match &self.trust {
            None => None,
            Some(t) => {
                Some(TrustLevel::parse(t).ok_or_else(|| corrupt(format!("trust level \"{t}\"")))?)
            }
        };
        Ok(RunRecord {
            id: self.id,
            pipeline: self.pipeline,
            event,
            config: self.config,
            repo: self.repo.map(PathBuf::from),
            commit: self.commit,
            workdir: PathBuf::from(self.workdir),
            rerun_of: self.rerun_of,
            status,
            pid: self.pid,
            started_at: self.started_at,
            finished_at: self.finished_at,
            actor: self.actor,
            trust,
            trusted_config: self.trusted_config,
            delivery: self.delivery,
            pid_start: self.pid_start,
        })
    }
}

/// Creates `dir` readable by its owner only (0700); an existing one is left as it is.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes the ledger file and SQLite's files beside it readable by their owner only (0600),
/// creating the ledger so before SQLite does (SQLite gives its -wal and -shm files the
/// ledger's mode).
fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        // SQLite removes its -wal and -shm files when another process closes the ledger's
        // last connection: one gone meanwhile has no mode to set.
        match std::fs::set_permissions(Path::new(&name), std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            done => done?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn autocheckpoint(ledger: &Ledger) -> i64 {
        ledger
            .with(|c| c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0)))
            .unwrap()
    }

    /// Processes starting at once on a new state dir (a `gitops run` and a `gitops ui`) all
    /// open it: SQLite's "database is locked" while one switches it to WAL is waited out.
    #[test]
    fn openers_of_a_new_state_dir_at_once_all_open_it() {
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..40 {
            let dir = tmp.path().join(round.to_string());
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Ledger::open(&dir).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                if let Err(e) = opener.join().unwrap() {
                    panic!("round {round}: {e}");
                }
            }
        }
    }

    /// A ledger checkpointed in the background every 10 ms, with a table to write to.
    fn checkpointed_scratch() -> (tempfile::TempDir, Ledger, BackgroundCheckpoints) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let checkpoints = ledger
            .checkpoint_in_background(std::time::Duration::from_millis(10))
            .unwrap();
        ledger
            .with(|c| c.execute_batch("CREATE TABLE scratch (x BLOB)"))
            .unwrap();
        (dir, ledger, checkpoints)
    }

    /// Commits a row of 2 KB.
    fn write_scratch(ledger: &Ledger) {
        ledger
            .with(|c| c.execute("INSERT INTO scratch VALUES (zeroblob(2000))", []))
            .unwrap();
    }

    #[test]
    fn under_steady_writes_the_background_checkpoint_makes_the_log_start_over() {
        let (dir, ledger, _checkpoints) = checkpointed_scratch();
        let wal = dir.path().join(format!("{LEDGER_FILE}-wal"));
        // The log's header holds a count of the times it started over (bytes 12..16).
        let start_count = || {
            let mut header = [0u8; 16];
            std::fs::File::open(&wal)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
                .map(|()| u32::from_be_bytes([header[12], header[13], header[14], header[15]]))
                .ok()
        };
        // 15,000 commits of 2 KB with no pause between them (about 120 MB of log): a passive
        // checkpoint never reaches the end of a log written to all the time.
        let mut counts = std::collections::BTreeSet::new();
        for i in 0..15_000 {
            write_scratch(&ledger);
            if i % 100 == 0 {
                counts.extend(start_count());
            }
        }
        assert!(
            counts.len() >= 3,
            "the log started over {} times under steady writes",
            counts.len().saturating_sub(1)
        );
    }

    #[test]
    fn a_reader_holding_a_snapshot_open_does_not_stop_the_writer() {
        let (dir, ledger, _checkpoints) = checkpointed_scratch();
        // As `gitops ui` or a `sqlite3` shell could: a read transaction left open.
        let reader = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))
            .unwrap();
        // Well past RESTART_FRAMES, with the reader's snapshot holding the log back.
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..5_000 {
            let started = std::time::Instant::now();
            write_scratch(&ledger);
            slowest = slowest.max(started.elapsed());
        }
        // A checkpoint that waited for the reader while holding the write lock would have kept
        // a commit waiting for seconds (its busy timeout).
        assert!(slowest < std::time::Duration::from_secs(2), "{slowest:?}");
        reader.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn checkpoints_in_the_background_copy_the_log_and_stop_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        // A log grown past 256 MiB (a reader kept it from starting over) is cut back when it
        // starts over.
        let limit: i64 = ledger
            .with(|c| c.pragma_query_value(None, "journal_size_limit", |r| r.get(0)))
            .unwrap();
        assert_eq!(limit, 256 * 1024 * 1024);
        let checkpoints = ledger
            .checkpoint_in_background(std::time::Duration::from_millis(10))
            .unwrap();
        assert_eq!(autocheckpoint(&ledger), 0);
        let event = GitEvent::push("acme/app", "main", None, "abc");
        for i in 0..50 {
            let run = RunRecord::new(&format!("r{i}"), "p", event.clone(), "", dir.path());
            ledger.begin_run(&run).unwrap();
        }
        // Every frame of the log copied into the database, by the other thread.
        let copied = || {
            ledger
                .with(|c| {
                    c.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    })
                })
                .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while {
            let (log, done) = copied();
            log <= 0 || log != done
        } {
            assert!(
                std::time::Instant::now() < deadline,
                "never checkpointed: {:?}",
                copied()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(checkpoints);
        assert_eq!(autocheckpoint(&ledger), 1000);
        assert_eq!(ledger.runs(100).unwrap().len(), 50);
    }
}
