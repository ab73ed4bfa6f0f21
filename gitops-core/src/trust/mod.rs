//! Who may run what, and where: the trust level of an event, and what each level may do.
//!
//! Whoever can open a pull request controls everything at its commit (its code, its
//! `.gitops.yml`, its title and branch), so the engine decides trust from the event and the
//! server's [`Policy`], never from the config being run:
//!
//! | | trusted | member pull request | fork pull request |
//! | --- | --- | --- | --- |
//! | run stages | yes | yes | once approved (the trust label or `gitops trust-pr`), or with `forks: run` |
//! | secrets | those scoped to what it runs | those marked `pull_requests: true` | none |
//! | deploy, stop | environments whose `deploy_from` allows its ref | its own per-pull-request instances | none |
//!
//! Pushes, tags and releases of the repository are `trusted`; a pull request whose head branch
//! is in the repository itself is `member`; one from another repository (or whose head
//! repository is unknown) is `fork`. Pull request refs seen by the repository watcher
//! (`refs/pull/<n>/head`) cannot be told apart, and are `fork` unless the policy says
//! `watch_pull_requests: member`.

mod policy;

pub use crate::backend::TrustLevel;
pub use policy::{DEFAULT_TRUST_LABEL, EnvironmentRules, ForkRule, Policy, SecretSpec, WatchTrust};

use crate::config::{Action, DeployFrom, Environment};
use crate::event::{EventPayload, GitEvent, PullRequestEvent};
use crate::release::matches_requirement;

/// Whether `pr` was seen by the repository watcher: its head is a pull request ref of the
/// repository (`refs/pull/<n>/head`), with no repository known for it. Webhooks name the head
/// branch, and its repository whenever it still exists.
fn seen_by_watcher(pr: &PullRequestEvent) -> bool {
    pr.head.repo.is_none() && pr.head.git_ref.starts_with("refs/")
}

/// The trust level of `event` under `policy`.
pub fn level(event: &GitEvent, policy: &Policy) -> TrustLevel {
    match &event.payload {
        EventPayload::PullRequest(pr) => {
            if seen_by_watcher(pr) {
                match policy.watch_pull_requests {
                    WatchTrust::Member => TrustLevel::Member,
                    WatchTrust::Fork => TrustLevel::Fork,
                }
            } else if pr.fork {
                TrustLevel::Fork
            } else {
                TrustLevel::Member
            }
        }
        _ => TrustLevel::Trusted,
    }
}

/// `pull request #7 comes from a fork (evil/app)`.
fn from_a_fork(pr: &PullRequestEvent) -> String {
    let from = match (&pr.head.repo, seen_by_watcher(pr)) {
        (Some(repo), _) => repo.clone(),
        (None, true) => "a pull request ref, whose source the watcher cannot know".to_owned(),
        (None, false) => "a repository that no longer exists".to_owned(),
    };
    format!("pull request #{} comes from a fork ({from})", pr.number)
}

/// Whether a fork's pull request may run its stages: `Err` says why not and what lets it.
/// `approved_by_ledger` is whether `gitops trust-pr` trusted it (at this commit).
pub fn fork_may_run(
    pr: &PullRequestEvent,
    policy: &Policy,
    approved_by_ledger: bool,
) -> Result<(), String> {
    match policy.forks {
        ForkRule::Run => Ok(()),
        ForkRule::Ignore => Err(format!(
            "{}: not run, the policy ignores pull requests from forks (forks: ignore)",
            from_a_fork(pr)
        )),
        ForkRule::Approve => {
            if approved_by_ledger || pr.labels.contains(&policy.trust_label) {
                Ok(())
            } else {
                Err(format!(
                    "{}: not run until a maintainer adds the label \"{}\" or runs gitops trust-pr {}",
                    from_a_fork(pr),
                    policy.trust_label,
                    pr.number
                ))
            }
        }
    }
}

/// Whether a stage of an event at `level` may deploy to or stop (`action`) the environment
/// configured as `name`, defined on the trusted ref as `environment` (`None`: not defined
/// there). `Err` says why not, naming the rule.
pub fn may_act(
    level: TrustLevel,
    event: &GitEvent,
    action: Action,
    name: &str,
    environment: Option<&Environment>,
    trusted_ref: &str,
) -> Result<(), String> {
    let verb = if action == Action::Stop {
        "stopped"
    } else {
        "deployed"
    };
    if let (TrustLevel::Fork, Some(pr)) = (level, event.pull_request()) {
        return Err(format!(
            "{}: it may not deploy or stop environments",
            from_a_fork(pr)
        ));
    }
    let Some(env) = environment else {
        return Err(format!(
            "environment \"{name}\" is not defined on the trusted ref {trusted_ref}: an environment that a pull request or branch adds exists only once it is merged"
        ));
    };
    if let (TrustLevel::Member, Some(pr)) = (level, event.pull_request()) {
        if !env.per_pull_request {
            return Err(format!(
                "pull request #{} may deploy and stop only its own per-pull-request environments; \"{name}\" is not one",
                pr.number
            ));
        }
    }
    if let Some(rule) = &env.deploy_from {
        if !allows(rule, event) {
            return Err(format!(
                "environment \"{name}\" may be {verb} only from {} (deploy_from); {} is not",
                describe(rule),
                describe_ref(event)
            ));
        }
    }
    Ok(())
}

/// Whether `event` comes from a ref that `rule` lets deploy. A pull request's never does: its
/// head branch is not the repository's branch of that name.
pub fn allows(rule: &DeployFrom, event: &GitEvent) -> bool {
    match &event.payload {
        EventPayload::Push(p) => rule.branches.as_ref().is_some_and(|g| g.matches(&p.branch)),
        EventPayload::Branch(b) => rule.branches.as_ref().is_some_and(|g| g.matches(&b.name)),
        EventPayload::Tag(_) | EventPayload::Release(_) => {
            let (Some(tags), Some(name)) = (&rule.tags, event.tag()) else {
                return false;
            };
            let version_ok = match (&tags.semver, event.version()) {
                (Some(req), Some(v)) => matches_requirement(req.requirement(), tags.prerelease, v),
                (Some(_), None) => false,
                (None, _) => true,
            };
            version_ok && tags.names.as_ref().is_none_or(|g| g.matches(name))
        }
        EventPayload::PullRequest(_) | EventPayload::Ping => false,
    }
}

/// `branches main, release/*` or `tags matching ">=1.0.0"`, for messages.
fn describe(rule: &DeployFrom) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &rule.branches {
        let names: Vec<String> = b.0.iter().map(ToString::to_string).collect();
        parts.push(format!("branches {}", names.join(", ")));
    }
    if let Some(t) = &rule.tags {
        let mut tag = "tags".to_owned();
        if let Some(n) = &t.names {
            let names: Vec<String> = n.0.iter().map(ToString::to_string).collect();
            tag.push_str(&format!(" named {}", names.join(", ")));
        }
        if let Some(req) = &t.semver {
            tag.push_str(&format!(" matching \"{}\"", req.as_str()));
        }
        parts.push(tag);
    }
    if parts.is_empty() {
        "no ref".to_owned()
    } else {
        parts.join(" or ")
    }
}

/// `a push to branch "main"`, `tag "v0.9.0"`, `pull request #7`.
fn describe_ref(event: &GitEvent) -> String {
    match &event.payload {
        EventPayload::Push(p) => format!("a push to branch \"{}\"", p.branch),
        EventPayload::Branch(b) => format!("branch \"{}\"", b.name),
        EventPayload::Tag(t) => format!("tag \"{}\"", t.name),
        EventPayload::Release(r) => format!("the release of tag \"{}\"", r.tag),
        EventPayload::PullRequest(pr) => format!("pull request #{}", pr.number),
        EventPayload::Ping => "a ping".to_owned(),
    }
}

/// Whether a stage of a run at `level` gets the secret `spec`: a `run` stage (`environment`
/// `None`) or the deploy or stop stage of the environment configured as `environment`.
pub fn gets_secret(level: TrustLevel, spec: &SecretSpec, environment: Option<&str>) -> bool {
    let level_ok = match level {
        TrustLevel::Trusted => true,
        TrustLevel::Member => spec.pull_requests,
        TrustLevel::Fork => false,
    };
    level_ok
        && match &spec.environments {
            None => true,
            Some(envs) => environment.is_some_and(|e| envs.iter().any(|n| n == e)),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pr() -> GitEvent {
        GitEvent::pull_request_event("acme/app", "opened", 7, ("feature", "abc"), ("main", "def"))
    }

    #[test]
    fn levels_follow_the_event_and_the_policy() {
        let policy = Policy::default();
        let push = GitEvent::push("acme/app", "main", None, "abc");
        assert_eq!(level(&push, &policy), TrustLevel::Trusted);
        assert_eq!(level(&pr(), &policy), TrustLevel::Member);
        assert_eq!(
            level(&pr().from_fork("evil/app"), &policy),
            TrustLevel::Fork
        );
        // The watcher's pull request ref: a fork's unless the policy says otherwise.
        let mut watched = pr();
        if let EventPayload::PullRequest(p) = &mut watched.payload {
            p.head.repo = None;
            p.head.git_ref = "refs/pull/7/head".into();
            p.fork = true;
        }
        assert_eq!(level(&watched, &policy), TrustLevel::Fork);
        let members = Policy {
            watch_pull_requests: WatchTrust::Member,
            ..Policy::default()
        };
        assert_eq!(level(&watched, &members), TrustLevel::Member);
        // A deleted fork's head has no repository, but is no watcher's ref: still a fork.
        let mut deleted = pr().from_fork("gone/app");
        if let EventPayload::PullRequest(p) = &mut deleted.payload {
            p.head.repo = None;
        }
        assert_eq!(level(&deleted, &members), TrustLevel::Fork);
    }

    #[test]
    fn forks_wait_for_the_label_or_the_ledger() {
        let fork = pr().from_fork("evil/app");
        let p = fork.pull_request().unwrap();
        let policy = Policy::default();
        let err = fork_may_run(p, &policy, false).unwrap_err();
        assert_eq!(
            err,
            "pull request #7 comes from a fork (evil/app): not run until a maintainer adds the label \"safe-to-test\" or runs gitops trust-pr 7"
        );
        assert!(fork_may_run(p, &policy, true).is_ok());
        let labelled = fork.clone().with_labels(["safe-to-test"]);
        assert!(fork_may_run(labelled.pull_request().unwrap(), &policy, false).is_ok());
        let ignore = Policy::default().with_forks(ForkRule::Ignore);
        assert!(fork_may_run(labelled.pull_request().unwrap(), &ignore, true).is_err());
        let run = Policy::default().with_forks(ForkRule::Run);
        assert!(fork_may_run(p, &run, false).is_ok());
    }

    #[test]
    fn what_each_level_may_deploy() {
        let config = Config::parse(
            "f",
            "version: 1\nenvironments:\n  preview: { per_pull_request: true }\n  staging: { deploy_from: { branches: [main] } }\n  production: { deploy_from: { tags: { semver: \">=1.0.0\" } } }\npipelines:\n  p:\n    on: { push: {} }\n    stages:\n      a: { run: x }\n",
        )
        .unwrap();
        let env = |n: &str| config.environments.get(n);
        let check = |level, event: &GitEvent, name: &str| {
            may_act(
                level,
                event,
                Action::Deploy,
                name,
                env(name),
                "refs/heads/main",
            )
        };
        let push = |branch: &str| GitEvent::push("acme/app", branch, None, "abc");
        let tag = |name: &str| GitEvent::tag_created("acme/app", name, "abc");
        assert!(check(TrustLevel::Trusted, &push("main"), "staging").is_ok());
        let e = check(TrustLevel::Trusted, &push("dev"), "staging").unwrap_err();
        assert_eq!(
            e,
            "environment \"staging\" may be deployed only from branches main (deploy_from); a push to branch \"dev\" is not"
        );
        assert!(check(TrustLevel::Trusted, &tag("v1.2.0"), "production").is_ok());
        let e = check(TrustLevel::Trusted, &tag("v0.9.0"), "production").unwrap_err();
        assert!(e.contains("only from tags matching \">=1.0.0\""), "{e}");
        assert!(check(TrustLevel::Trusted, &push("main"), "production").is_err());
        assert!(check(TrustLevel::Member, &pr(), "preview").is_ok());
        let e = check(TrustLevel::Member, &pr(), "staging").unwrap_err();
        assert!(
            e.contains("only its own per-pull-request environments"),
            "{e}"
        );
        let e = check(TrustLevel::Fork, &pr().from_fork("evil/app"), "preview").unwrap_err();
        assert!(e.contains("may not deploy or stop"), "{e}");
        let e = check(TrustLevel::Trusted, &push("main"), "nowhere").unwrap_err();
        assert!(
            e.contains("not defined on the trusted ref refs/heads/main"),
            "{e}"
        );
    }

    #[test]
    fn secrets_go_where_their_scope_says() {
        let open = SecretSpec::from_env("A");
        let staging = SecretSpec::from_env("A").for_environments(["staging"]);
        let prs = SecretSpec::from_env("A").for_pull_requests();
        use TrustLevel::*;
        assert!(gets_secret(Trusted, &open, None));
        assert!(!gets_secret(Trusted, &staging, None));
        assert!(gets_secret(Trusted, &staging, Some("staging")));
        assert!(!gets_secret(Trusted, &staging, Some("production")));
        assert!(!gets_secret(Member, &open, None));
        assert!(gets_secret(Member, &prs, None));
        assert!(!gets_secret(Fork, &prs, None));
    }
}
