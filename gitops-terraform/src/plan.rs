//! A saved plan as `terraform show -json` describes it: what changes, counted, and as Markdown
//! for a pull request comment.

use serde::Deserialize;

/// What a resource change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    /// Created.
    Create,
    /// Updated in place.
    Update,
    /// Destroyed and created again (`-/+` or `+/-`).
    Replace,
    /// Destroyed.
    Delete,
    /// Read (a data source).
    Read,
    /// Nothing.
    NoOp,
}

impl Action {
    fn from_actions(actions: &[String]) -> Action {
        let has = |a: &str| actions.iter().any(|x| x == a);
        match () {
            _ if has("create") && has("delete") => Action::Replace,
            _ if has("create") => Action::Create,
            _ if has("update") => Action::Update,
            _ if has("delete") => Action::Delete,
            _ if has("read") => Action::Read,
            _ => Action::NoOp,
        }
    }

    /// Its name: `create`, `update`, `replace`, `delete`, `read`, `no-op`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Read => "read",
            Action::NoOp => "no-op",
        }
    }
}

/// One resource the plan changes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceChange {
    /// Its address (`module.net.aws_vpc.main`, `terraform_data.a`).
    pub address: String,
    /// What happens to it.
    pub action: Action,
}

/// What a saved plan does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanSummary {
    /// Resources created (replacements count here and in `destroy`, as terraform counts them).
    pub add: u64,
    /// Resources updated in place.
    pub change: u64,
    /// Resources destroyed.
    pub destroy: u64,
    /// The resources that change, in the plan's order (no-ops and reads left out).
    pub resources: Vec<ResourceChange>,
    /// Outputs that change, with what happens to them.
    pub outputs: Vec<(String, Action)>,
}

#[derive(Deserialize)]
struct ShowJson {
    #[serde(default)]
    resource_changes: Vec<ShowResource>,
    #[serde(default)]
    output_changes: std::collections::BTreeMap<String, ShowChange>,
}

#[derive(Deserialize)]
struct ShowResource {
    address: String,
    change: ShowChange,
}

#[derive(Deserialize)]
struct ShowChange {
    #[serde(default)]
    actions: Vec<String>,
}

impl PlanSummary {
    /// Reads the JSON of `terraform show -json PLANFILE`.
    pub fn from_show_json(json: &str) -> Result<PlanSummary, serde_json::Error> {
        let show: ShowJson = serde_json::from_str(json)?;
        let mut out = PlanSummary::default();
        for r in show.resource_changes {
            let action = Action::from_actions(&r.change.actions);
            match action {
                Action::Create => out.add += 1,
                Action::Update => out.change += 1,
                Action::Delete => out.destroy += 1,
                Action::Replace => {
                    out.add += 1;
                    out.destroy += 1;
                }
                Action::Read | Action::NoOp => continue,
            }
            out.resources.push(ResourceChange {
                address: r.address,
                action,
            });
        }
        for (name, change) in show.output_changes {
            let action = Action::from_actions(&change.actions);
            if action != Action::NoOp {
                out.outputs.push((name, action));
            }
        }
        Ok(out)
    }

    /// Whether the plan changes any resource or output.
    pub fn has_changes(&self) -> bool {
        !self.resources.is_empty() || !self.outputs.is_empty()
    }

    /// `Plan: 1 to add, 2 to change, 0 to destroy.`, as terraform says it.
    pub fn line(&self) -> String {
        if !self.has_changes() {
            return "No changes.".to_owned();
        }
        format!(
            "Plan: {} to add, {} to change, {} to destroy.",
            self.add, self.change, self.destroy
        )
    }

    /// The plan as Markdown for a pull request comment: a heading naming `title` (the workspace,
    /// the directory), the counts, and the changing resources and outputs.
    pub fn markdown(&self, title: &str) -> String {
        let mut md = format!("### Terraform plan: {title}\n\n**{}**\n", self.line());
        if !self.resources.is_empty() {
            md.push_str("\n```diff\n");
            for r in &self.resources {
                let sign = match r.action {
                    Action::Create => "+",
                    Action::Delete => "-",
                    Action::Replace => "!",
                    _ => "~",
                };
                md.push_str(&format!("{sign} {} ({})\n", r.address, r.action.name()));
            }
            md.push_str("```\n");
        }
        if !self.outputs.is_empty() {
            md.push_str("\nOutputs: ");
            let outputs: Vec<String> = self
                .outputs
                .iter()
                .map(|(name, action)| format!("`{name}` ({})", action.name()))
                .collect();
            md.push_str(&outputs.join(", "));
            md.push('\n');
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_terraform_and_the_markdown_lists_what_changes() {
        let json = r#"{"format_version":"1.2","resource_changes":[
            {"address":"terraform_data.new","change":{"actions":["create"]}},
            {"address":"terraform_data.same","change":{"actions":["no-op"]}},
            {"address":"terraform_data.edit","change":{"actions":["update"]}},
            {"address":"terraform_data.swap","change":{"actions":["delete","create"]}},
            {"address":"terraform_data.gone","change":{"actions":["delete"]}},
            {"address":"data.x.y","change":{"actions":["read"]}}],
            "output_changes":{"url":{"actions":["update"]},"same":{"actions":["no-op"]}}}"#;
        let plan = PlanSummary::from_show_json(json).unwrap();
        assert_eq!((plan.add, plan.change, plan.destroy), (2, 1, 2));
        let addresses: Vec<&str> = plan.resources.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(
            addresses,
            [
                "terraform_data.new",
                "terraform_data.edit",
                "terraform_data.swap",
                "terraform_data.gone"
            ]
        );
        assert_eq!(
            plan.markdown("staging"),
            "### Terraform plan: staging\n\n**Plan: 2 to add, 1 to change, 2 to destroy.**\n\n```diff\n\
             + terraform_data.new (create)\n~ terraform_data.edit (update)\n\
             ! terraform_data.swap (replace)\n- terraform_data.gone (delete)\n```\n\n\
             Outputs: `url` (update)\n"
        );
        let empty = PlanSummary::from_show_json(r#"{"resource_changes":[]}"#).unwrap();
        assert!(!empty.has_changes());
        assert_eq!(empty.line(), "No changes.");
        assert!(PlanSummary::from_show_json("{not json").is_err());
    }
}
