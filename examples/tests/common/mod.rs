//! Helpers shared by the `gitops` binary's end-to-end tests.
#![allow(dead_code)]

pub mod server;

use std::process::{Command, Output, Stdio};

/// Runs the `gitops` binary with `args`, feeding `stdin` when given.
pub fn gitops(args: &[&str], stdin: Option<&[u8]>) -> Output {
    gitops_with_env(args, stdin, &[])
}

/// [`gitops`] with environment variables set.
pub fn gitops_with_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // A command that fails before reading its input closes the pipe early.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The git runner of core's tests (fixed identity and default branch), compiled here too.
#[path = "../../../gitops-core/tests/common/mod.rs"]
mod core_common;
#[allow(unused_imports)] // not every test file runs git
pub use core_common::git;

/// Whether the tests that need a real `what` (Docker, Terraform) were asked for with `var`;
/// prints `skipped: ...` when not.
pub fn opted_in(var: &str, what: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return true;
    }
    eprintln!("skipped: set {var}=1 (scripts/test.sh does) to run the {what} tests");
    false
}
