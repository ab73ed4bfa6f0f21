//! What every page shares: the layout, links, states as labelled chips, times, and the one
//! rule that turns a stranger's text into a link.

use gitops_core::event::GitEvent;
use gitops_core::ledger::RunRecord;
use maud::{DOCTYPE, Markup, html};

use crate::ui::Viewer;

/// Who is looking and where links point, for one request.
#[derive(Clone)]
pub struct Ctx {
    /// The `--public-url` links are made under, without a trailing slash; empty for links
    /// relative to the host the request came to.
    base: String,
    /// Who is looking.
    pub viewer: Viewer,
}

impl Ctx {
    pub fn new(public_url: Option<&str>, viewer: Viewer) -> Ctx {
        Ctx {
            base: public_url.unwrap_or("").trim_end_matches('/').to_owned(),
            viewer,
        }
    }

    /// The link to `path` (which starts with `/`) of the dashboard.
    pub fn href(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The link to `path` with a query string of the pairs whose value is set.
    pub fn href_query(&self, path: &str, pairs: &[(&str, Option<&str>)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in pairs {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
        let query = query.finish();
        if query.is_empty() {
            self.href(path)
        } else {
            self.href(&format!("{path}?{query}"))
        }
    }

    /// The page of a run.
    pub fn run(&self, id: &str) -> String {
        self.href(&format!("/runs/{}", segment(id)))
    }

    /// The page of an environment.
    pub fn environment(&self, name: &str) -> String {
        self.href(&format!("/environments/{}", segment(name)))
    }

    /// The read API's log of a stage (text, or server-sent events).
    pub fn stage_log(&self, run: &str, stage: &str) -> String {
        self.href(&format!(
            "/api/runs/{}/stages/{}/log",
            segment(run),
            segment(stage)
        ))
    }
}

impl Ctx {
    /// The read API's form that approves (`verb` `approve`) or rejects (`reject`) a stage.
    pub fn stage_action(&self, run: &str, stage: &str, verb: &str) -> String {
        self.href(&format!(
            "/api/runs/{}/stages/{}/{verb}",
            segment(run),
            segment(stage)
        ))
    }
}

/// `text` as one path segment: everything but unreserved characters percent-encoded, so that
/// a stage named `a/b` or `..` stays one segment.
fn segment(text: &str) -> String {
    let dots = text.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || b == b'.' && !dots {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// Which part of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Environments,
    Runs,
    None,
}

/// A whole page: the navigation, who is signed in, and `body`.
pub fn layout(ctx: &Ctx, title: &str, section: Section, body: Markup) -> Markup {
    let current = |s: Section| (s == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gitops" }
                link rel="stylesheet" href=(ctx.href("/assets/style.css"));
                script src=(ctx.href("/assets/live.js")) defer {}
            }
            body {
                header.top {
                    nav aria-label="main" {
                        a.brand href=(ctx.href("/")) { "gitops" }
                        a href=(ctx.href("/")) aria-current=[current(Section::Environments)] { "Environments" }
                        a href=(ctx.href("/runs")) aria-current=[current(Section::Runs)] { "Runs" }
                    }
                    div.who {
                        @match &ctx.viewer.name {
                            Some(name) => { "Signed in as " strong { (name) } }
                            None => {
                                span.muted { "Read-only" }
                                " · "
                                a href=(ctx.href("/login")) { "Sign in" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The state of a run, a stage or a deployment, shown with a symbol and a word so that
/// colour is never the only sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Success,
    Failure,
    TimedOut,
    Cancelled,
    Skipped,
    Running,
    Waiting,
    Pending,
    Interrupted,
    NotRun,
    Active,
    Stopped,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Success => "success",
            State::Failure => "failure",
            State::TimedOut => "timed out",
            State::Cancelled => "cancelled",
            State::Skipped => "skipped",
            State::Running => "running",
            State::Waiting => "waiting for approval",
            State::Pending => "not started",
            State::Interrupted => "interrupted",
            State::NotRun => "not run",
            State::Active => "active",
            State::Stopped => "stopped",
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            State::Success | State::Active => "✓",
            State::Failure | State::TimedOut => "✗",
            State::Cancelled | State::Stopped => "■",
            State::Skipped => "↷",
            State::Running => "●",
            // "‖", not "⏸": the fonts a browser is sure to have lack the latter.
            State::Waiting => "‖",
            State::Pending | State::NotRun => "○",
            State::Interrupted => "!",
        }
    }

    /// The CSS class that colours it.
    pub fn class(self) -> &'static str {
        match self {
            State::Success | State::Active => "s-ok",
            State::Failure | State::TimedOut | State::Interrupted => "s-bad",
            State::Running => "s-run",
            State::Waiting => "s-wait",
            State::Cancelled | State::Skipped | State::Pending | State::NotRun | State::Stopped => {
                "s-off"
            }
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            State::Failure | State::TimedOut | State::Interrupted | State::Cancelled
        )
    }
}

/// A state as a chip: `✓ success`.
pub fn chip(state: State) -> Markup {
    html! { span class={ "chip " (state.class()) } { (state.symbol()) " " (state.label()) } }
}

/// A stage as a chip: its symbol and name, its state said in words to assistive technology
/// and on hover.
pub fn stage_chip(name: &str, state: State, href: Option<&str>) -> Markup {
    let title = format!("{name}: {}", state.label());
    html! {
        @if let Some(href) = href {
            a class={ "chip " (state.class()) } href=(href) title=(title) {
                (state.symbol()) " " (name) span.sr { ": " (state.label()) }
            }
        } @else {
            span class={ "chip " (state.class()) } title=(title) {
                (state.symbol()) " " (name) span.sr { ": " (state.label()) }
            }
        }
    }
}

/// `text` when it is an `http` or `https` URL, the only ones made links: an output a pull
/// request controls could be `javascript:...`.
pub fn web_url(text: &str) -> Option<&str> {
    let t = text.trim();
    let scheme = t.split_once("://")?.0;
    let ok = (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !t.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(t)
}

/// A value that may be a URL: a link when [`web_url`] allows it, else text.
pub fn maybe_link(text: &str) -> Markup {
    html! {
        @match web_url(text) {
            Some(url) => a href=(url) rel="noopener noreferrer" { (text) },
            None => code { (text) },
        }
    }
}

/// A Unix time as when it was, relative to now, with the full UTC time on hover.
pub fn when(secs: f64) -> Markup {
    let full = format!("{} UTC", crate::envs::time(secs));
    let iso = jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    html! { time datetime=(iso) title=(full) { (ago(gitops_core::ledger::now() - secs)) } }
}

/// `secs` ago in words: `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..10 => "just now".to_owned(),
        10..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// A duration in seconds, short: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 4 min`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{} s", s as u64)
    } else if s < 3600.0 {
        format!("{} min {} s", s as u64 / 60, s as u64 % 60)
    } else {
        format!("{} h {} min", s as u64 / 3600, s as u64 % 3600 / 60)
    }
}

/// What an event was about: `#7 Add the login page`, a branch, a tag.
pub fn subject(event: &GitEvent) -> String {
    if let Some(pr) = event.pull_request() {
        return format!("#{} {}", pr.number, pr.title);
    }
    if let Some(tag) = event.tag() {
        return tag.to_owned();
    }
    if let Some(branch) = event.branch() {
        return branch.to_owned();
    }
    event.git_ref().unwrap_or_else(|| "-".to_owned())
}

/// The seconds a run ran, or has run so far.
pub fn run_secs(run: &RunRecord) -> f64 {
    (run.finished_at.unwrap_or_else(gitops_core::ledger::now) - run.started_at).max(0.0)
}

/// A commit, short, with the whole id on hover.
pub fn commit(sha: Option<&str>) -> Markup {
    html! {
        @match sha {
            Some(sha) => code title=(sha) { (crate::envs::short(Some(sha))) },
            None => span.muted { "-" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_urls_are_links() {
        assert_eq!(
            web_url("https://pr-7.example.com/"),
            Some("https://pr-7.example.com/")
        );
        assert_eq!(web_url("HTTP://x"), Some("HTTP://x"));
        assert_eq!(web_url("javascript:alert(1)"), None);
        assert_eq!(web_url("javascript://%0aalert(1)"), None);
        assert_eq!(web_url("file:///etc/passwd"), None);
        assert_eq!(web_url("https://a b"), None);
        assert_eq!(web_url("data:text/html,<x>"), None);
    }

    #[test]
    fn segments_stay_segments() {
        assert_eq!(segment("build-1.x"), "build-1.x");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("<x>"), "%3Cx%3E");
    }
}
