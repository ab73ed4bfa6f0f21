//! Errors keep what caused them: the original error is the `source`, for a caller to inspect,
//! and `ErrorChain` says it after the message.

use std::error::Error as _;
use std::sync::Arc;

use gitops_core::backend::{BackendError, Executor, RunInfo, StageContext};
use gitops_core::event::GitEvent;
use gitops_core::ledger::{LEDGER_FILE, Ledger, LedgerError};
use gitops_core::{Error, ErrorChain};

#[test]
fn a_ledger_sqlite_cannot_read_keeps_sqlites_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(LEDGER_FILE), vec![b'x'; 4096]).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(matches!(err, LedgerError::Database { .. }), "{err:?}");
    let sqlite = err
        .source()
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .unwrap_or_else(|| panic!("the source is not SQLite's error: {err:?}"));
    assert_eq!(
        sqlite.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase)
    );
    let path = tmp.path().join(LEDGER_FILE);
    assert!(
        ErrorChain(&err).to_string().starts_with(&format!(
            "ledger {}: caused by: file is not a database",
            path.display()
        )),
        "{}",
        ErrorChain(&err)
    );
}

#[test]
fn the_crates_error_keeps_the_ledgers_cause() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join(LEDGER_FILE)).unwrap();
    let err = Error::from(Ledger::open(tmp.path()).unwrap_err());
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("the source is not the I/O error: {err:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::IsADirectory);
    assert_eq!(
        ErrorChain(&err).to_string(),
        format!(
            "ledger {}: caused by: {io}",
            tmp.path().join(LEDGER_FILE).display()
        )
    );
}

#[tokio::test]
async fn a_lazy_backend_that_cannot_be_made_is_unavailable_because_of_its_error() {
    let lazy =
        gitops_core::backend::Lazy::<gitops_core::backend::local::LocalBackend>::new(|| async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "nothing listens",
            ))
        });
    let run = Arc::new(RunInfo::new(
        "r",
        "p",
        GitEvent::push("o/r", "main", None, "abc"),
        ".",
    ));
    let err = lazy.execute(StageContext::new(run, "s")).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert_eq!(err.to_string(), "backend unavailable: nothing listens");
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the maker's error itself");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}
