//! [`MemoryBackend`]: an in-memory executor and deployer whose stages do what a script says.
//! The test double of the scheduler, the benchmarks' no-op executor, and the doc-tests' backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{BackendError, Completion, Deployer, Executor, LogStream, StageContext};

/// What a scripted stage does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Script {
    /// How long it takes (cancellation cuts it short).
    pub delay: Duration,
    /// The first this many attempts fail (with exit code 1 unless `exit_code` is set).
    pub fail_attempts: u32,
    /// Every attempt fails.
    pub fail_always: bool,
    /// The exit code of failing attempts.
    pub exit_code: Option<i32>,
    /// Outputs of a successful attempt.
    pub outputs: BTreeMap<String, String>,
    /// Lines written to stdout.
    pub log: Vec<String>,
}

impl Script {
    /// A stage that succeeds at once.
    pub fn ok() -> Self {
        Script::default()
    }

    /// Takes `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Fails every attempt.
    pub fn fail(mut self) -> Self {
        self.fail_always = true;
        self
    }

    /// Fails the first `n` attempts.
    pub fn fail_first(mut self, n: u32) -> Self {
        self.fail_attempts = n;
        self
    }

    /// Failing attempts exit with `code`.
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// Adds an output.
    pub fn output(mut self, key: &str, value: &str) -> Self {
        self.outputs.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a log line.
    pub fn log(mut self, line: &str) -> Self {
        self.log.push(line.to_owned());
        self
    }
}

/// One call the backend received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `execute`, `deploy` or `stop`.
    pub kind: &'static str,
    /// The stage.
    pub stage: String,
    /// The attempt.
    pub attempt: u32,
    /// The environment instance, for `deploy` and `stop`.
    pub environment: Option<String>,
    /// The stage's rendered env.
    pub env: BTreeMap<String, String>,
}

/// An executor and deployer in memory: stages without a script succeed at once.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    scripts: HashMap<String, Script>,
    record: bool,
    calls: Mutex<Vec<Call>>,
}

impl MemoryBackend {
    /// A backend where every stage succeeds at once, recording nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scripts `stage`.
    pub fn with_script(mut self, stage: &str, script: Script) -> Self {
        self.scripts.insert(stage.to_owned(), script);
        self
    }

    /// Records every call, for [`calls`](Self::calls).
    pub fn recording(mut self) -> Self {
        self.record = true;
        self
    }

    /// The calls received so far (with [`recording`](Self::recording)).
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    async fn act(&self, kind: &'static str, ctx: StageContext) -> Result<Completion, BackendError> {
        if self.record {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(Call {
                    kind,
                    stage: ctx.stage.to_string(),
                    attempt: ctx.attempt,
                    environment: ctx.environment.as_ref().map(|e| e.name.clone()),
                    env: ctx.env.clone(),
                });
            }
        }
        let Some(script) = self.scripts.get(&*ctx.stage) else {
            return Ok(Completion::success());
        };
        for line in &script.log {
            ctx.log.line(LogStream::Stdout, line);
        }
        if !script.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(script.delay) => {}
                _ = ctx.cancelled() => return Err(BackendError::Cancelled),
            }
        }
        if script.fail_always || ctx.attempt <= script.fail_attempts {
            let code = script.exit_code.unwrap_or(1);
            return Ok(Completion::failure(Some(code), format!("exit code {code}")));
        }
        Ok(Completion {
            outcome: super::Outcome::Success,
            outputs: script.outputs.clone(),
        })
    }
}

#[async_trait]
impl Executor for MemoryBackend {
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.act("execute", ctx).await
    }
}

#[async_trait]
impl Deployer for MemoryBackend {
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.act("deploy", ctx).await
    }

    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.act("stop", ctx).await
    }
}
