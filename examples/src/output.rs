//! Standard output and error for the apps, without a panic when nobody reads them any more.
//!
//! `println!` panics when standard output is a pipe whose reader has gone (`gitops envs --json
//! | head -1`), since Rust ignores SIGPIPE. [`outln!`](crate::outln) notes instead that standard
//! output is closed, writes nothing more to it, and lets the command end its own way:
//! [`closed`] wakes the commands that run stages, so that they stop them as Ctrl-C would.
//! [`exit_quietly_on_closed_pipes`] covers any `println!` left (in a library, say): it ends the
//! process with the status a SIGPIPE gives, without a panic message.

use std::fmt;
use std::io::Write;
use std::sync::LazyLock;

use tokio_util::sync::CancellationToken;

/// The exit status a shell shows for a process that SIGPIPE ended (128 + 13).
pub const SIGPIPE_STATUS: i32 = 141;

static STDOUT_CLOSED: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// Writes `args` to standard output (what [`outln!`](crate::outln) and
/// [`out!`](crate::out) call). Once a write fails, standard output counts as closed: nothing
/// more is written, [`closed`] wakes, and a failure other than a gone reader is said on
/// standard error.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.is_cancelled() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            write_stderr(format_args!(
                "error: cannot write to standard output: {e}\n"
            ));
        }
        STDOUT_CLOSED.cancel();
    }
}

/// Writes `args` to standard error (what [`errln!`](crate::errln) calls); a failure is
/// ignored, there being nowhere left to say it.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Whether standard output was found closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.is_cancelled()
}

/// Waits until standard output is found closed.
pub async fn closed() {
    STDOUT_CLOSED.cancelled().await
}

/// Makes a panic of `print!`, `println!`, `eprint!` or `eprintln!` on a closed pipe end the
/// process quietly, with [`SIGPIPE_STATUS`]; every other panic is reported as before.
pub fn exit_quietly_on_closed_pipes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(SIGPIPE_STATUS);
        }
        report(info)
    }));
}

/// `println!` that never panics: see [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics: see [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: see [`write_stderr`].
#[macro_export]
macro_rules! errln {
    () => {
        $crate::output::write_stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
