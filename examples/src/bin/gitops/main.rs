//! `gitops`: the command-line app over the gitops library.

mod commands;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GitOps pipelines from Git events: validate configs, normalise webhooks, plan and graph pipelines.
#[derive(Parser)]
#[command(name = "gitops", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk the whole flow in a throwaway repository: pull request, merge, release.
    Demo,
    /// Check a config; errors as file:line:col: message, exit status 1.
    Validate {
        /// The config file.
        #[arg(long, default_value = ".gitops.yml")]
        config: PathBuf,
    },
    /// Turn a webhook payload into a normalised event (JSON).
    Event {
        /// github or gitlab.
        #[arg(long)]
        provider: String,
        /// The event type header: X-GitHub-Event (push, pull_request, ...) or X-Gitlab-Event
        /// (Push Hook, ...).
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
