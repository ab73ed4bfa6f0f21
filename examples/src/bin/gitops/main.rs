//! `gitops`: the command-line app over the gitops library.

mod commands;
mod demo;
mod envs;
mod init;
mod progress;
mod run;
mod runs;
mod serve;
mod shapes;
mod ui;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gitops_core::ledger::{Retention, RunQuery};
use gitops_core::trust::{Policy, SecretSpec};
use gitops_examples::errln;

/// GitOps pipelines from Git events: plan and run pipelines, deploy environments, roll back.
#[derive(Parser)]
#[command(name = "gitops", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk the whole flow in a throwaway repository: pull request, merge, release.
    Demo {
        /// Make the repository and state dir in DIR (new or empty) and keep them, for
        /// `gitops envs --state DIR/state` and the like afterwards.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Write a first, commented config: pull requests → preview, main → staging, release tags
    /// → production. An existing file is never overwritten.
    Init {
        /// The backend its stages and environments use.
        #[arg(
            long,
            default_value = "local",
            value_parser = clap::builder::PossibleValuesParser::new(init::STARTERS.iter().map(|(name, _)| *name)),
        )]
        backend: String,
        /// The file to write.
        #[arg(long, default_value = ".gitops.yml")]
        config: PathBuf,
    },
    /// Check a config; errors as file:line:col: message, exit status 1.
    Validate {
        /// The config file.
        #[arg(long, default_value = ".gitops.yml")]
        config: PathBuf,
    },
    /// Turn a webhook payload into a normalised event (JSON).
    Event {
        /// github, gitlab, bitbucket or gitea (also forgejo).
        #[arg(long)]
        provider: String,
        /// The event type header: X-GitHub-Event (push, pull_request, ...), X-Gitlab-Event
        /// (Push Hook, ...), Bitbucket's X-Event-Key (repo:push, pullrequest:created, ...) or
        /// X-Gitea-Event / X-Forgejo-Event (push, pull_request, ...). A Bitbucket push of
        /// several changes prints an array of events.
        #[arg(long = "type")]
        event_type: String,
        /// The payload file (standard input when absent or `-`).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Show the plan an event would produce (JSON), without running anything.
    Plan {
        /// A normalised event, as `gitops event` prints it (`-` for standard input).
        #[arg(long)]
        event: PathBuf,
        /// Read `.gitops.yml` from the event's commit in this repository, and check `paths`
        /// filters against what the event changed.
        #[arg(long, conflicts_with = "config")]
        repo: Option<PathBuf>,
        /// Use this config file (`paths` filters then cannot be checked).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Plan an event in a repository and run what it triggers, with live progress.
    Run {
        /// A normalised event, as `gitops event` prints it.
        #[arg(long)]
        event: PathBuf,
        /// The repository (its `.gitops.yml` is read from the event's commit).
        #[arg(long)]
        repo: PathBuf,
        /// Run in the repository's directory instead of a fresh checkout of the commit.
        #[arg(long)]
        in_place: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run a finished run's failed, cancelled and skipped stages again (as a new run).
    Rerun {
        /// The run to re-run.
        run: String,
        /// Re-run this stage and every stage after it; reuse the rest.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Resume runs that a crash interrupted (all of them, or RUN), keeping finished stages.
    Resume {
        /// The run to resume.
        run: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Poll a repository (a directory or a URL) and run what its changes trigger; each event is
    /// printed as a line of JSON.
    Watch {
        /// The repository: a directory, or a URL (`file://`, `git://`) mirrored in the state dir.
        #[arg(long)]
        repo: String,
        /// Time between polls (`5s`, `1m`).
        #[arg(long, default_value = "5s", value_parser = parse_interval)]
        interval: std::time::Duration,
        /// Report what changed since the last snapshot once, run it, then exit (with status 1
        /// when a run it started failed).
        #[arg(long)]
        once: bool,
        /// Only print the events; run nothing.
        #[arg(long)]
        no_run: bool,
        /// The branch pull requests merge into (default: the repository's HEAD branch).
        #[arg(long)]
        base_branch: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Receive GitHub and GitLab webhooks over HTTP and run what their events trigger.
    Serve {
        #[command(flatten)]
        args: Box<serve::ServeArgs>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Serve the dashboard and the read API over a state dir (no webhooks): environments,
    /// runs, live logs, approvals. Loopback peers read without a token; others need one
    /// (--ui-token-env).
    Ui {
        #[command(flatten)]
        args: ui::command::UiArgs,
        #[command(flatten)]
        state: StateArg,
    },
    /// List environments: status, version, commit, URL, whether pinned.
    Envs {
        /// JSON for scripts: a list of {name, status, version, sha, url, pinned, pull_request,
        /// backend}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// The deployments and stops of an environment (of every environment without ENV), newest
    /// first.
    History {
        /// The environment (`staging`, `preview-pr-7`); default: every environment.
        env: Option<String>,
        /// JSON for scripts: a list of {id, environment, action (deploy, rollback or stop),
        /// version, sha, result, rollback_of, run_id (null for a rollback, which no pipeline
        /// ran), triggered_by, trust, url, message, started_at, finished_at}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// List runs, newest first: id, pipeline, event, ref or pull request, who, result, when,
    /// how long.
    Runs {
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs that deployed to or stopped this environment (`staging`, `preview-pr-7`).
        #[arg(long)]
        env: Option<String>,
        /// At most N runs.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
        /// JSON for scripts: a list of {id, pipeline, event (its kind), action, ref,
        /// pull_request, sha, actor, result (running, interrupted, success, failure or
        /// cancelled), started_at, finished_at, duration_secs}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Show a run: its event, each stage's result, attempts, duration and outputs (secrets
    /// masked), and the deployments it made.
    Show {
        /// The run.
        run: String,
        /// JSON for scripts: what `runs --json` gives, with event (the whole event), trust,
        /// rerun_of, stages (a list of {id, result, message, exit_code, skip_reason, attempts,
        /// flaky, reused, duration_secs, outputs, environment, deployment}; a stage still
        /// running has only id and result) and deployments (as `history --json`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Print the stored log of a run's stage (of every stage without STAGE, each line after its
    /// stage's name).
    Logs {
        /// The run.
        run: String,
        /// The stage.
        stage: Option<String>,
        /// Print new lines as they come until the run (or the stage) ends, also when it runs
        /// in another process sharing the state dir.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Redeploy the previous release of an environment (or VERSION) and pin it there.
    Rollback {
        /// The environment.
        env: String,
        /// The version (`1.0.0` or `v1.0.0`) or commit to roll back to.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Let pipeline deploys reach an environment pinned by a rollback again.
    Unpin {
        /// The environment.
        env: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Approve the deployment a run's stage waits to make.
    Approve {
        /// The run.
        run: String,
        /// The deploy stage.
        stage: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Reject the deployment a run's stage waits to make (the stage fails).
    Reject {
        /// The run.
        run: String,
        /// The deploy stage.
        stage: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Let a pull request from a fork run its stages (without secrets, deploying nothing), as
    /// the trust label would; recorded in the ledger.
    #[command(name = "trust-pr")]
    TrustPr {
        /// The pull request (merge request) number.
        number: u64,
        /// Only at this commit (its head's full sha): a later push needs trusting again.
        #[arg(long)]
        sha: Option<String>,
        /// The repository (`owner/name`); default: any repository this state dir serves.
        #[arg(long)]
        repo_name: Option<String>,
        /// Withdraw the trust instead.
        #[arg(long)]
        revoke: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Print a pipeline's stage graph in Graphviz DOT.
    Graph {
        /// The pipeline.
        #[arg(long)]
        pipeline: String,
        /// The config file.
        #[arg(long, default_value = ".gitops.yml")]
        config: PathBuf,
    },
}

/// Options of the commands that run stages.
#[derive(clap::Args)]
struct CommonArgs {
    /// State directory (ledger, checkouts); default $GITOPS_STATE, else ~/.local/state/gitops.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Write the run report (JSON) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Pass this environment variable as a secret to the stages of trusted runs (pushes, tags,
    /// releases), masked in logs; as `{ from_env: NAME }` in a policy (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_env: Vec<String>,
    /// Pass this variable of the host to every stage (repeatable); stages get nothing else of
    /// the host's environment but PATH, HOME, LANG and TZ.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// The policy file: repositories served, forks, secrets and their scopes, protection rules
    /// (see the README's "Security model").
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The ref whose .gitops.yml defines the environments (default: the branch HEAD names;
    /// for serve, that branch of origin when the clone has one).
    #[arg(long, value_name = "REF")]
    trusted_ref: Option<String>,
    /// Stages running at once (default: the number of CPUs).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Cap on each stage's stored log (`logs/<run>/<stage>.log` in the state dir); past it,
    /// lines are dropped and the log ends with a line saying how much.
    #[arg(long, value_name = "BYTES", default_value_t = gitops_core::logs::DEFAULT_MAX_LOG_BYTES)]
    max_log_bytes: u64,
    /// Keep the newest N runs (with their logs) and remove older finished ones; applied when
    /// run, watch or serve starts, and daily while watch or serve runs.
    #[arg(long, value_name = "N")]
    keep_runs: Option<usize>,
    /// Keep the runs started within D days (with their logs) and remove older finished ones;
    /// applied as --keep-runs is.
    #[arg(long, value_name = "D")]
    keep_days: Option<f64>,
}

/// The state dir option of the ledger commands.
#[derive(clap::Args)]
struct StateArg {
    /// State directory (ledger, environments); default $GITOPS_STATE, else ~/.local/state/gitops.
    #[arg(long)]
    state: Option<PathBuf>,
}

impl StateArg {
    fn resolve(self) -> Result<run::Common, String> {
        CommonArgs {
            state: self.state,
            report: None,
            secret_env: Vec::new(),
            pass_env: Vec::new(),
            policy: None,
            trusted_ref: None,
            max_parallel: None,
            max_log_bytes: gitops_core::logs::DEFAULT_MAX_LOG_BYTES,
            keep_runs: None,
            keep_days: None,
        }
        .resolve()
    }
}

impl CommonArgs {
    fn resolve(self) -> Result<run::Common, String> {
        let mut policy = match &self.policy {
            Some(path) => Policy::load(path).map_err(|e| e.to_string())?,
            None => Policy::default(),
        };
        for name in self.secret_env {
            if policy.secrets.contains_key(&name) {
                return Err(format!(
                    "error: --secret-env {name}: the policy defines a secret {name} too"
                ));
            }
            if std::env::var_os(&name).is_none() {
                return Err(format!(
                    "error: --secret-env {name}: no such environment variable"
                ));
            }
            policy = policy.with_secret(name.clone(), SecretSpec::from_env(name));
        }
        policy = policy.with_pass_env(self.pass_env);
        let mut retention = Retention::default();
        if let Some(n) = self.keep_runs {
            retention = retention.with_keep_runs(n);
        }
        if let Some(days) = self.keep_days {
            if !(days >= 0.0 && days.is_finite()) {
                return Err(format!(
                    "error: --keep-days {days}: must be a number of days, 0 or more"
                ));
            }
            retention = retention.with_keep_days(days);
        }
        Ok(run::Common {
            state: run::state_dir(self.state)?,
            report: self.report,
            policy,
            trusted_ref: self.trusted_ref,
            max_parallel: self.max_parallel,
            max_log_bytes: self.max_log_bytes,
            retention,
        })
    }
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match gitops_core::config::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("the interval must be more than zero".to_owned()),
        Err(e) => Err(e),
    }
}

/// `error: ` and the message of `e` with each of its causes (`...: caused by: ...`), as the app
/// prints errors.
fn error(e: &(dyn std::error::Error + 'static)) -> String {
    format!("error: {}", gitops_core::ErrorChain(e))
}

fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the runtime: {e}"))?;
    let result = runtime.block_on(f);
    // Lines its tasks logged after the command's own end are written too.
    drop(runtime);
    serve::lines::flush_all();
    result
}

/// mimalloc: a server's requests allocate and free many small buffers from several threads,
/// where glibc's malloc spent a tenth of `serve`'s time under load (`benches/load/serve.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gitops_examples::output::exit_quietly_on_closed_pipes();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            event,
            repo,
            in_place,
            common,
        } => common
            .resolve()
            .and_then(|c| block_on(run::run(&event, &repo, in_place, c))),
        Command::Rerun { run, from, common } => common
            .resolve()
            .and_then(|c| block_on(run::rerun(&run, from.as_deref(), c))),
        Command::Resume { run, common } => common
            .resolve()
            .and_then(|c| block_on(run::resume(run.as_deref(), c))),
        Command::Watch {
            repo,
            interval,
            once,
            no_run,
            base_branch,
            common,
        } => common.resolve().and_then(|c| {
            block_on(watch::watch(
                watch::WatchArgs {
                    repo,
                    interval,
                    once,
                    no_run,
                    base_branch,
                },
                c,
            ))
        }),
        Command::Serve { args, common } => common
            .resolve()
            .and_then(|c| block_on(serve::serve(*args, c))),
        Command::Ui { args, state } => state
            .resolve()
            .and_then(|c| block_on(ui::command::ui(args, c))),
        Command::Envs { json, state } => state.resolve().and_then(|c| envs::envs(c, json)),
        Command::History { env, json, state } => state
            .resolve()
            .and_then(|c| envs::history(env.as_deref(), c, json)),
        Command::Rollback { env, to, state } => state
            .resolve()
            .and_then(|c| block_on(envs::rollback(&env, to.as_deref(), c))),
        Command::Runs {
            pipeline,
            env,
            limit,
            json,
            state,
        } => state.resolve().and_then(|c| {
            let mut query = RunQuery::default();
            query.pipeline = pipeline;
            query.environment = env;
            query.limit = limit;
            runs::runs(&query, c, json)
        }),
        Command::Show { run, json, state } => {
            state.resolve().and_then(|c| runs::show(&run, c, json))
        }
        Command::Logs {
            run,
            stage,
            follow,
            state,
        } => state
            .resolve()
            .and_then(|c| block_on(runs::logs(&run, stage.as_deref(), follow, c))),
        Command::Unpin { env, state } => state.resolve().and_then(|c| envs::unpin(&env, c)),
        Command::Approve { run, stage, state } => state
            .resolve()
            .and_then(|c| envs::decide(&run, &stage, true, c)),
        Command::Reject { run, stage, state } => state
            .resolve()
            .and_then(|c| envs::decide(&run, &stage, false, c)),
        Command::Demo { keep } => block_on(demo::run(keep.as_deref())),
        Command::Init { backend, config } => init::init(&backend, &config),
        Command::Validate { config } => commands::validate(&config),
        Command::Event {
            provider,
            event_type,
            file,
        } => commands::event(&provider, &event_type, file.as_deref()),
        Command::Plan {
            event,
            repo,
            config,
        } => commands::plan(&event, repo.as_deref(), config.as_deref()),
        Command::Graph { pipeline, config } => commands::graph(&pipeline, &config),
        Command::TrustPr {
            number,
            sha,
            repo_name,
            revoke,
            state,
        } => state
            .resolve()
            .and_then(|c| envs::trust_pr(number, sha.as_deref(), repo_name.as_deref(), revoke, c)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                errln!("{message}");
            }
            ExitCode::FAILURE
        }
    }
}
