//! The ledger's tables. Every change to them is a new migration appended to `MIGRATIONS`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        event TEXT NOT NULL,
        config TEXT NOT NULL,
        repo TEXT,
        commit_sha TEXT,
        workdir TEXT NOT NULL,
        rerun_of TEXT REFERENCES runs(id),
        status TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX runs_by_status ON runs(status);
    CREATE TABLE stage_results (
        run_id TEXT NOT NULL REFERENCES runs(id),
        stage TEXT NOT NULL,
        result TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        detail TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (run_id, stage)
    );",
    "CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        config_name TEXT NOT NULL,
        backend TEXT NOT NULL,
        repo TEXT NOT NULL,
        pull_request INTEGER,
        status TEXT NOT NULL,
        pinned_by TEXT,
        pinned_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX environments_by_pr ON environments(repo, pull_request);
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment TEXT NOT NULL REFERENCES environments(name),
        action TEXT NOT NULL,
        backend TEXT NOT NULL,
        version TEXT,
        sha TEXT,
        run_id TEXT,
        stage TEXT,
        event TEXT,
        triggered_by TEXT,
        inputs TEXT NOT NULL,
        outputs TEXT NOT NULL,
        result TEXT NOT NULL,
        message TEXT,
        rollback_of INTEGER REFERENCES deployments(id),
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX deployments_by_environment ON deployments(environment, id);
    CREATE TABLE locks (
        environment TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE approvals (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        requested_at REAL NOT NULL,
        decided_by TEXT,
        decided_at REAL,
        PRIMARY KEY (run_id, stage)
    );",
    "CREATE TABLE run_groups (
        run_id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        grp TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER NOT NULL,
        joined_at REAL NOT NULL
    );
    CREATE INDEX run_groups_by_group ON run_groups(repo, grp, state);",
    "CREATE TABLE deliveries (
        provider TEXT NOT NULL,
        id TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (provider, id)
    );",
    "ALTER TABLE runs ADD COLUMN actor TEXT;
    ALTER TABLE runs ADD COLUMN trust TEXT;
    ALTER TABLE runs ADD COLUMN trusted_config TEXT;
    ALTER TABLE deployments ADD COLUMN trust TEXT;
    CREATE TABLE trusted_pull_requests (
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        sha TEXT NOT NULL,
        trusted_by TEXT NOT NULL,
        trusted_at REAL NOT NULL,
        PRIMARY KEY (repo, number, sha)
    );",
    "DROP TABLE deliveries;
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT NOT NULL,
        delivery_id TEXT,
        body_hash TEXT NOT NULL,
        event TEXT NOT NULL,
        received_at REAL NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        pid INTEGER,
        pid_start INTEGER,
        started_at REAL,
        finished_at REAL
    );
    CREATE UNIQUE INDEX inbox_by_delivery ON inbox(provider, delivery_id);
    CREATE INDEX inbox_by_body ON inbox(body_hash, received_at);
    CREATE INDEX inbox_waiting ON inbox(state, seq) WHERE state != 'done';
    ALTER TABLE runs ADD COLUMN delivery INTEGER;
    ALTER TABLE runs ADD COLUMN pid_start INTEGER;
    CREATE INDEX runs_by_delivery ON runs(delivery);",
    "CREATE INDEX runs_by_start ON runs(started_at, id);
    CREATE INDEX runs_by_pipeline ON runs(pipeline, started_at);
    CREATE INDEX deployments_by_run ON deployments(run_id);",
    // The outbox of forge updates (see `outbox.rs`): `id` orders them, also within a target.
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        forge TEXT NOT NULL,
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        claimed_until REAL,
        superseded INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX outbox_by_target ON outbox(forge, target, id);
    CREATE INDEX outbox_by_forge ON outbox(forge, id);
    CREATE INDEX outbox_due ON outbox(next_attempt_at, id);",
    // What a forge calls the things gitops made there (a deployment's id, the pull request
    // comment's id), and each pipeline's section of a pull request's comment.
    "CREATE TABLE forge_refs (
        forge TEXT NOT NULL,
        key TEXT NOT NULL,
        remote TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (forge, key)
    );
    CREATE TABLE comment_sections (
        forge TEXT NOT NULL,
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        pipeline TEXT NOT NULL,
        body TEXT NOT NULL,
        run_started REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (forge, repo, number, pipeline)
    );",
];

/// How long a statement waits for a lock another connection holds.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(wait_for_lock))?;
    // Two processes opening a new state dir at once: switching it to WAL takes locks SQLite
    // does not wait for (it answers "database is locked" at once, whatever the busy timeout),
    // so a busy answer while preparing is waited out here: retried for 10 s (an attempt begun
    // then may itself wait for a lock up to LOCK_PATIENCE, so 20 s at most).
    let start = std::time::Instant::now();
    loop {
        match prepare_once(conn) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && start.elapsed() < LOCK_PATIENCE =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// SQLite's busy handler: a lock another connection holds is waited for 1 ms at a time, for 10 s
/// at most (from the first busy answer of a statement). SQLite's own timeout sleeps longer each
/// time (1, 2, 5, 10, ... 100 ms): a writer that found the lock taken for a few milliseconds (by
/// `serve`'s checkpoint starting the log over) slept tens of milliseconds more.
fn wait_for_lock(attempts: i32) -> bool {
    thread_local! {
        static SINCE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let since = SINCE.with(|since| {
        if attempts == 0 || since.get().is_none() {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= LOCK_PATIENCE {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    true
}

fn prepare_once(conn: &mut Connection) -> rusqlite::Result<()> {
    // WAL: readers do not block the writer; NORMAL: a committed result survives the process
    // being killed (not a power cut, which the ledger does not promise).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A log that grew past this (a reader kept it from starting over) is cut back to it when it
    // starts over, instead of keeping its largest size on disk.
    conn.pragma_update(None, "journal_size_limit", 256 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The version is read inside the write transaction, so that two processes opening a new
    // state dir at once do not both migrate it.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for migration in MIGRATIONS.iter().skip(version) {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()
}
