//! Terraform's machine-readable UI (`-json`): one JSON message per line. Messages become log
//! lines (with progress while applying), diagnostics become typed, located errors, and the change
//! summary is kept.

use gitops_core::backend::{LogSink, LogStream};
use serde::Deserialize;

/// A diagnostic terraform reported (an error or a warning), located when it has a source range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: String,
    /// The one-line summary (`Invalid expression`).
    pub summary: String,
    /// The explanation.
    #[serde(default)]
    pub detail: String,
    /// Where in the configuration.
    #[serde(default)]
    pub range: Option<Range>,
}

/// A range in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Range {
    /// The file, relative to the working directory (`main.tf`).
    pub filename: String,
    /// Where it starts.
    pub start: Pos,
    /// Where it ends.
    pub end: Pos,
}

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Pos {
    /// The line.
    pub line: u32,
    /// The column.
    pub column: u32,
}

impl Diagnostic {
    /// Whether it is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }
}

impl std::fmt::Display for Diagnostic {
    /// `main.tf:2:11: Invalid expression: Expected the start of an expression, ...`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.range {
            write!(f, "{}:{}:{}: ", r.filename, r.start.line, r.start.column)?;
        }
        write!(f, "{}", self.summary)?;
        let detail = self.detail.split("\n\n").next().unwrap_or("").trim();
        if !detail.is_empty() {
            write!(f, ": {}", detail.replace('\n', " "))?;
        }
        Ok(())
    }
}

/// What a plan, apply or destroy changes (its `change_summary` message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ChangeSummary {
    /// Resources to create.
    #[serde(default)]
    pub add: u64,
    /// Resources to update in place.
    #[serde(default)]
    pub change: u64,
    /// Resources to destroy.
    #[serde(default)]
    pub remove: u64,
    /// Resources to import.
    #[serde(default)]
    pub import: u64,
}

/// One message of the JSON UI (the fields this crate reads).
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "@message", default)]
    message: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    diagnostic: Option<Diagnostic>,
    #[serde(default)]
    changes: Option<ChangeSummary>,
}

/// Reads a command's output lines: logs them, collects diagnostics and the change summary.
pub(crate) struct UiReader<'a> {
    log: &'a LogSink,
    /// Values never to show (sensitive outputs).
    mask: &'a [String],
    /// Whether stdout is JSON UI messages; otherwise it is data kept in `stdout`.
    json_ui: bool,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) summary: Option<ChangeSummary>,
    pub(crate) stdout: String,
    pub(crate) stderr: Vec<String>,
    /// Resource changes planned and done so far, for progress while applying.
    planned: u64,
    done: u64,
}

impl<'a> UiReader<'a> {
    pub(crate) fn new(log: &'a LogSink, mask: &'a [String], json_ui: bool) -> Self {
        UiReader {
            log,
            mask,
            json_ui,
            diagnostics: Vec::new(),
            summary: None,
            stdout: String::new(),
            stderr: Vec::new(),
            planned: 0,
            done: 0,
        }
    }

    /// Progress counts `changes` resource changes (for an apply of a saved plan, whose output
    /// has no plan summary to count from).
    pub(crate) fn expecting(mut self, changes: u64) -> Self {
        self.planned = changes;
        self
    }

    fn write(&self, stream: LogStream, text: &str) {
        let mut text = text.to_owned();
        for secret in self.mask.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "***");
        }
        for line in text.lines() {
            self.log.line(stream, line);
        }
    }

    pub(crate) fn line(&mut self, stream: LogStream, line: &str) {
        if stream == LogStream::Stderr {
            self.stderr.push(line.to_owned());
            self.write(stream, line);
            return;
        }
        if !self.json_ui {
            self.stdout.push_str(line);
            self.stdout.push('\n');
            return;
        }
        let Ok(message) = serde_json::from_str::<Message>(line) else {
            // Not every line of `init -json` is JSON.
            self.write(stream, line);
            return;
        };
        match message.kind.as_str() {
            "version" => {}
            "diagnostic" => {
                if let Some(d) = message.diagnostic {
                    let prefix = if d.is_error() { "Error" } else { "Warning" };
                    self.write(stream, &format!("{prefix}: {d}"));
                    self.diagnostics.push(d);
                }
            }
            "change_summary" => {
                if let Some(c) = message.changes {
                    if self.summary.is_none() && self.planned == 0 {
                        self.planned = c.add + c.change + c.remove;
                    }
                    self.summary = Some(c);
                }
                self.write(stream, &message.message);
            }
            "apply_complete" | "apply_errored" => {
                self.done += 1;
                let progress = if self.planned > 0 {
                    format!("[{}/{}] ", self.done.min(self.planned), self.planned)
                } else {
                    String::new()
                };
                self.write(stream, &format!("{progress}{}", message.message));
            }
            _ => self.write(stream, &message.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_log_lines_with_progress_and_diagnostics_are_kept() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        let log = LogSink::new("apply", 1, Vec::new(), move |l| {
            seen.lock().unwrap().push(l.line)
        });
        let mask = vec!["s3cret".to_owned()];
        let mut ui = UiReader::new(&log, &mask, true);
        for line in [
            r#"{"@message":"Terraform 1.11.4","type":"version"}"#,
            r#"{"@message":"Plan: 2 to add, 0 to change, 0 to destroy.","type":"change_summary","changes":{"add":2,"change":0,"import":0,"remove":0,"operation":"plan"}}"#,
            r#"{"@message":"terraform_data.a: Creation complete after 0s","type":"apply_complete"}"#,
            r#"{"@message":"terraform_data.b: (local-exec): s3cret","type":"provision_progress"}"#,
            r#"{"@message":"terraform_data.b: Creation complete after 1s","type":"apply_complete"}"#,
            "Successfully configured the backend \"local\"!",
            r#"{"@message":"Error: Invalid expression","type":"diagnostic","diagnostic":{"severity":"error","summary":"Invalid expression","detail":"Expected the start of an expression.","range":{"filename":"main.tf","start":{"line":2,"column":11,"byte":42},"end":{"line":3,"column":1,"byte":43}}}}"#,
        ] {
            ui.line(LogStream::Stdout, line);
        }
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "Plan: 2 to add, 0 to change, 0 to destroy.",
                "[1/2] terraform_data.a: Creation complete after 0s",
                "terraform_data.b: (local-exec): ***",
                "[2/2] terraform_data.b: Creation complete after 1s",
                "Successfully configured the backend \"local\"!",
                "Error: main.tf:2:11: Invalid expression: Expected the start of an expression.",
            ]
        );
        assert_eq!(ui.summary.unwrap().add, 2);
        assert_eq!(
            ui.diagnostics[0].to_string(),
            "main.tf:2:11: Invalid expression: Expected the start of an expression."
        );
    }
}
