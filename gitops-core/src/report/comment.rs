//! The pull request comment: one per pull request, found again by its hidden marker and edited
//! in place. Each pipeline has a section (its stages with their results and durations, the
//! preview's URL, a plan's `markdown` output collapsed, a failed stage's last log lines); the
//! comment is the sections in pipeline order, within the forge's size limit.
//!
//! Everything in it but gitops' own words comes from the pull request (stage names, log lines,
//! a plan's resource names, outputs) and is treated as hostile: log lines go in a code block
//! whose fence is longer than any run of backticks they hold; markdown outputs have their HTML
//! escaped (no `</details>` closing the section early, no copy of the marker), their images
//! turned to text, their mentions broken and their open code blocks closed, so that a pull
//! request cannot make gitops' comment ping anyone; and no line of the comment starts with `/`
//! (a zero-width space goes before it), so that none is a GitLab quick action (`/approve`,
//! `/merge`) run as gitops' user when the note is made or edited.

use crate::scheduler::StageResult;

/// The hidden first line the comment is found by.
pub const COMMENT_MARKER: &str = "<!-- gitops: pull request comment -->";

/// The longest comment, in characters (GitHub's limit for an issue comment).
pub const MAX_COMMENT_CHARS: usize = 65_536;

/// The most one pipeline's section takes: four pipelines at full size fit in one comment.
const MAX_SECTION_CHARS: usize = 16_000;

/// The most of a plan's markdown shown.
const MAX_PLAN_CHARS: usize = 8_000;

/// The most of one log line shown.
const MAX_LOG_LINE_CHARS: usize = 300;

/// Log lines shown for a failed stage.
pub(crate) const LOG_TAIL_LINES: usize = 20;

/// A stage as the comment shows it.
#[derive(Debug, Clone)]
pub(crate) struct StageLine {
    pub id: String,
    /// `None` while it runs.
    pub result: Option<StageResult>,
    pub duration_secs: Option<f64>,
}

/// What a pipeline's section shows.
#[derive(Debug, Default)]
pub(crate) struct Section {
    pub pipeline: String,
    pub run_id: String,
    pub run_url: Option<String>,
    pub sha: String,
    /// `None` while the run goes on; else its words (`passed`, `failed`, ...) and whether it
    /// succeeded.
    pub finished: Option<(&'static str, bool)>,
    pub duration_secs: Option<f64>,
    pub stages: Vec<StageLine>,
    /// Environment instance and URL of what the run deployed.
    pub deployed: Vec<(String, Option<String>)>,
    /// Stage and its `markdown` output.
    pub plans: Vec<(String, String)>,
    /// A failed stage and its last log lines (masked).
    pub failed_logs: Vec<(String, Vec<String>)>,
}

impl Section {
    /// The section, in markdown, at most [`MAX_SECTION_CHARS`] characters.
    pub fn render(&self) -> String {
        let mut md = String::new();
        let (icon, words) = match self.finished {
            None => ("⏳", "running".to_owned()),
            Some((words, true)) => ("✅", words.to_owned()),
            Some((words, false)) => ("❌", words.to_owned()),
        };
        let duration = self
            .duration_secs
            .map(|d| format!(" in {}", seconds(d)))
            .unwrap_or_default();
        let run = match &self.run_url {
            Some(url) => format!("[run {}]({})", self.run_id, link(url)),
            None => format!("run `{}`", self.run_id),
        };
        let short: String = self.sha.chars().take(7).collect();
        md.push_str(&format!(
            "### {icon} {} {words}{duration}\n\n{run} of `{}`\n\n",
            code(&self.pipeline),
            short
        ));
        if !self.stages.is_empty() {
            md.push_str("| stage | result | duration |\n|---|---|---|\n");
            for stage in &self.stages {
                let took = stage.duration_secs.map(seconds).unwrap_or_default();
                md.push_str(&format!(
                    "| {} | {} | {took} |\n",
                    code(&stage.id),
                    result_words(stage.result.as_ref())
                ));
            }
            md.push('\n');
        }
        for (environment, url) in &self.deployed {
            match url {
                Some(url) => md.push_str(&format!("**{}**: {}\n\n", code(environment), link(url))),
                None => md.push_str(&format!("**{}** deployed\n\n", code(environment))),
            }
        }
        for (stage, plan) in &self.plans {
            md.push_str(&format!(
                "<details><summary>Plan of {}</summary>\n\n{}\n\n</details>\n\n",
                code(stage),
                untrusted_markdown(plan, MAX_PLAN_CHARS)
            ));
        }
        for (stage, lines) in &self.failed_logs {
            let text: Vec<String> = lines
                .iter()
                .map(|l| super::truncate_chars(l, MAX_LOG_LINE_CHARS))
                .collect();
            md.push_str(&format!(
                "<details><summary>Last {} log lines of {}</summary>\n\n{}\n</details>\n\n",
                lines.len(),
                code(stage),
                code_block(&text.join("\n"))
            ));
        }
        if md.chars().count() > MAX_SECTION_CHARS {
            // The plans and logs are what grow: without them it is small.
            let mut short = Section {
                plans: Vec::new(),
                failed_logs: Vec::new(),
                stages: self.stages.clone(),
                deployed: self.deployed.clone(),
                pipeline: self.pipeline.clone(),
                run_id: self.run_id.clone(),
                run_url: self.run_url.clone(),
                sha: self.sha.clone(),
                ..*self
            }
            .render();
            if short.chars().count() > MAX_SECTION_CHARS {
                short = super::truncate_chars(&short, MAX_SECTION_CHARS - 100);
                short.push('\n');
            }
            short.push_str(
                "_The plans and logs of this run are too long for this comment: see the run._\n\n",
            );
            return short;
        }
        md
    }
}

/// The comment: the marker, then the sections (by pipeline), within [`MAX_COMMENT_CHARS`].
pub(crate) fn compose(sections: &[(String, String)]) -> String {
    let mut body = format!("{COMMENT_MARKER}\n## gitops\n\n");
    let mut left_out = 0;
    for (_, section) in sections {
        // Room is kept for the note on what was left out.
        if left_out == 0
            && body.chars().count() + section.chars().count() <= MAX_COMMENT_CHARS - 200
        {
            body.push_str(section);
        } else {
            left_out += 1;
        }
    }
    if left_out > 0 {
        body.push_str(&format!(
            "_{left_out} more pipeline section(s) do not fit in this comment (GitHub's limit is {MAX_COMMENT_CHARS} characters); see the runs._\n"
        ));
    }
    no_commands(&body)
}

/// `text` with a zero-width space before the `/` of each line that starts with one (after
/// blanks), inside code blocks too: GitLab runs such lines of a note as quick actions.
fn no_commands(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let blanks = line.len() - line.trim_start().len();
        if line[blanks..].starts_with('/') {
            out.push_str(&line[..blanks]);
            out.push('\u{200b}');
            out.push_str(&line[blanks..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn result_words(result: Option<&StageResult>) -> String {
    match result {
        None => "⏳ running".to_owned(),
        Some(StageResult::Success) => "✅ passed".to_owned(),
        Some(StageResult::Failure { exit_code, .. }) => match exit_code {
            Some(code) => format!("❌ failed (exit {code})"),
            None => "❌ failed".to_owned(),
        },
        Some(StageResult::Skipped { .. }) => "⏭️ skipped".to_owned(),
        Some(StageResult::Cancelled) => "⏹️ cancelled".to_owned(),
        Some(StageResult::TimedOut { after_secs }) => {
            format!("⏱️ timed out after {}", seconds(*after_secs))
        }
    }
}

/// `text` as inline code that nothing in it can end early, on one line.
fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r', '|'], " ");
    let ticks = "`".repeat(longest_backtick_run(&text) + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// `text` in a fenced code block that nothing in it can close.
fn code_block(text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
    format!("{fence}text\n{text}\n{fence}\n")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A URL as a link target only when it is http(s) and holds nothing that ends the link; else
/// as code.
fn link(url: &str) -> String {
    let plain = (url.starts_with("https://") || url.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '[' | ']' | '`'));
    if plain { format!("<{url}>") } else { code(url) }
}

/// Markdown from a run's output, with its HTML escaped, its mentions broken, its code blocks
/// closed, and at most `max` characters.
fn untrusted_markdown(text: &str, max: usize) -> String {
    let cut = text.chars().count() > max;
    let text = super::truncate_chars(text, max);
    let mut out = String::with_capacity(text.len());
    let mut previous = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // `#12`, `owner/repo#12`: a reference the forge would link back from, as gitops.
            '#' if chars.peek().is_some_and(char::is_ascii_digit) => out.push_str("#\u{200b}"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // A zero-width space after `@`: `@name` stays readable but mentions no one.
            '@' if !previous.is_alphanumeric() => out.push_str("@\u{200b}"),
            // `![alt](url)` would show an image from anywhere: it stays text.
            '[' if previous == '!' => out.push_str("\\["),
            c => out.push(c),
        }
        previous = c;
    }
    if let Some((c, n)) = open_fence(&out) {
        out.push('\n');
        out.extend(std::iter::repeat_n(c, n));
    }
    if cut {
        out.push_str("\n\n_(cut: the plan is longer than this comment can hold)_");
    }
    out
}

/// The code block `text` leaves open, if any: its fence's character and length (CommonMark: a
/// fence is 3 or more backticks or tildes, indented at most 3 spaces; it closes with the same
/// character, at least as many, and nothing else on the line).
fn open_fence(text: &str) -> Option<(char, usize)> {
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent > 3 {
            continue;
        }
        let rest = &line[indent..];
        let Some(c) = rest.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let n = rest.chars().take_while(|x| *x == c).count();
        if n < 3 {
            continue;
        }
        match open {
            None => open = Some((c, n)),
            Some((o, m)) if o == c && n >= m && rest[n..].trim().is_empty() => open = None,
            Some(_) => {}
        }
    }
    open
}

pub(crate) fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0}s")
    } else {
        format!("{}m {:.0}s", (secs / 60.0).floor(), secs % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_section(lines: Vec<String>) -> Section {
        Section {
            pipeline: "preview".into(),
            run_id: "r1".into(),
            run_url: Some("https://ci.example/runs/r1".into()),
            sha: "0123456789abcdef".into(),
            finished: Some(("failed", false)),
            duration_secs: Some(75.0),
            stages: vec![
                StageLine {
                    id: "build".into(),
                    result: Some(StageResult::Success),
                    duration_secs: Some(3.0),
                },
                StageLine {
                    id: "test".into(),
                    result: Some(StageResult::Failure {
                        message: "exit 1".into(),
                        exit_code: Some(1),
                    }),
                    duration_secs: Some(1.0),
                },
            ],
            deployed: vec![("preview-pr-7".into(), Some("http://127.0.0.1:8080/".into()))],
            plans: vec![(
                "plan".into(),
                "### Terraform plan\n\n```diff\n+ a\n```\n".into(),
            )],
            failed_logs: vec![("test".into(), lines)],
        }
    }

    #[test]
    fn a_section_shows_stages_results_the_preview_the_plan_and_the_log_tail() {
        let md = failed_section(vec!["assertion failed".into()]).render();
        assert!(md.starts_with("### ❌ `preview` failed in 1m 15s"), "{md}");
        assert!(md.contains("[run r1](<https://ci.example/runs/r1>) of `0123456`"));
        assert!(md.contains("| `build` | ✅ passed | 3s |"));
        assert!(md.contains("| `test` | ❌ failed (exit 1) | 1s |"));
        assert!(md.contains("**`preview-pr-7`**: <http://127.0.0.1:8080/>"));
        assert!(md.contains("<details><summary>Plan of `plan`</summary>"));
        assert!(md.contains("```diff\n+ a\n```"));
        assert!(md.contains("Last 1 log lines of `test`"));
        assert!(md.contains("```text\nassertion failed\n```"));
    }

    #[test]
    fn hostile_text_cannot_leave_its_place_or_mention_anyone() {
        let mut section = failed_section(vec!["```".into(), "</details><img src=x> @admin".into()]);
        section.plans = vec![(
            "plan".into(),
            format!("</details>{COMMENT_MARKER} cc @org/team\n```diff\n+ x"),
        )];
        section.stages[0].id = "a`b|c".into();
        let md = section.render();
        // The log's fence is longer than the backticks in it.
        assert!(
            md.contains("````text\n```\n</details><img src=x> @admin\n````"),
            "{md}"
        );
        // The plan's HTML is escaped, its mention broken and its open fence closed.
        assert!(md.contains("&lt;/details&gt;&lt;!-- gitops: pull request comment --&gt;"));
        assert!(md.contains("cc @\u{200b}org/team"));
        assert_eq!(md.matches(COMMENT_MARKER).count(), 0);
        assert!(md.contains("| ``a`b c`` |"), "{md}");
        let plan_start = md.find("Plan of").unwrap();
        let plan_end = md[plan_start..].find("</details>").unwrap();
        let plan = &md[plan_start..plan_start + plan_end];
        assert_eq!(plan.matches("```").count() % 2, 0, "{plan}");
    }

    #[test]
    fn links_are_http_only_and_cannot_break_out() {
        assert_eq!(link("https://a.example/x"), "<https://a.example/x>");
        assert_eq!(link("javascript:alert(1)"), "`javascript:alert(1)`");
        assert_eq!(
            link("https://a.example/x)[y](z"),
            "`https://a.example/x)[y](z`"
        );
    }

    #[test]
    fn the_comment_stays_within_the_limit_and_says_what_it_left_out() {
        let long = vec!["x".repeat(1000); LOG_TAIL_LINES];
        let mut section = failed_section(long);
        section.plans = vec![("plan".into(), "y".repeat(50_000))];
        let rendered = section.render();
        assert!(rendered.chars().count() <= MAX_SECTION_CHARS);
        let sections: Vec<(String, String)> = (0..10)
            .map(|i| (format!("p{i}"), rendered.clone()))
            .collect();
        let body = compose(&sections);
        assert!(body.starts_with(COMMENT_MARKER));
        assert!(body.chars().count() <= MAX_COMMENT_CHARS);
        assert!(
            body.contains("more pipeline section(s) do not fit"),
            "{}",
            &body[body.len() - 300..]
        );
        // One small section: all of it, no note.
        let small = compose(&[("ci".into(), "### ✅ `ci` passed\n".into())]);
        assert!(small.ends_with("### ✅ `ci` passed\n"));
    }

    #[test]
    fn no_line_is_a_gitlab_quick_action_and_fences_close_as_they_opened() {
        let mut section = failed_section(vec!["```".into(), "/approve".into(), "  /merge".into()]);
        section.plans = vec![(
            "plan".into(),
            "~~~\n```\n/target_branch main\n![x](https://evil.example/p.png)".into(),
        )];
        let body = compose(&[("ci".into(), section.render())]);
        for line in body.lines() {
            assert!(!line.trim_start().starts_with('/'), "{line:?} in {body}");
        }
        assert!(body.contains("\u{200b}/approve") && body.contains("  \u{200b}/merge"));
        assert!(body.contains("!\\[x]"), "{body}");
        assert!(
            untrusted_markdown("see o/r#12 and #3; ### Plan", 100)
                == "see o/r#\u{200b}12 and #\u{200b}3; ### Plan"
        );
        // The plan's `~~~` block is closed with `~~~` (the backticks inside it do not close it).
        assert_eq!(open_fence("~~~\n```\nx"), Some(('~', 3)));
        assert_eq!(open_fence("````\n```\n````"), None);
        assert_eq!(open_fence("    ```\nx"), None);
        assert!(body.contains("p.png)\n~~~"), "{body}");
    }
}
