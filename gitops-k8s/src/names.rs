//! Names and labels Kubernetes accepts, made from run ids, stage ids and environment names.

/// Labels on everything this backend creates.
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gitops");
pub(crate) const ENVIRONMENT: &str = "gitops.dev/environment";
pub(crate) const RUN: &str = "gitops.dev/run";
pub(crate) const STAGE: &str = "gitops.dev/stage";
pub(crate) const PIPELINE: &str = "gitops.dev/pipeline";
pub(crate) const JOB: &str = "gitops.dev/job";

/// `s` as a DNS-1123 label of at most `max` characters; `fallback` when nothing is left.
pub(crate) fn dns_label(s: &str, max: usize, fallback: &str) -> String {
    gitops_core::backend::names::dns_label(s, max, fallback)
}

/// [`dns_label`] of at most `max` characters that stays distinct when `s` is longer: a cut name
/// ends with a hash of the whole.
pub(crate) fn unique_dns_label(s: &str, max: usize, fallback: &str) -> String {
    let whole = dns_label(s, usize::MAX, fallback);
    if whole.len() <= max {
        return whole;
    }
    // FNV-1a: stable across runs and builds, unlike the std hasher's seed.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in whole.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let suffix = format!("{:06x}", hash & 0xffffff);
    let head = dns_label(&whole, max - suffix.len() - 1, fallback);
    format!("{head}-{suffix}")
}

/// `s` as a label value (letters, digits, `-`, `_`, `.`, at most 63, alphanumeric at both ends).
pub(crate) fn label_value(s: &str) -> String {
    use gitops_core::backend::names::{sanitize, trim_to_alphanumeric};
    trim_to_alphanumeric(&sanitize(s, 63, "-_.", '_')).to_owned()
}

/// `with.namespace`, checked to be a DNS label.
pub(crate) fn namespace_param(
    ctx: &gitops_core::backend::StageContext,
) -> Result<Option<String>, gitops_core::backend::BackendError> {
    match ctx.param_str("namespace")? {
        None => Ok(None),
        Some(ns) if dns_label(ns, 63, "") == ns => Ok(Some(ns.to_owned())),
        Some(ns) => Err(gitops_core::backend::BackendError::InvalidParameters(
            format!(
                "`with.namespace` must be a DNS label (lower-case letters, digits and -), found \"{ns}\""
            ),
        )),
    }
}

/// The namespace of an environment.
pub(crate) fn environment_namespace(environment: &str) -> String {
    format!("gitops-{}", dns_label(environment, 56, "env"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_what_kubernetes_accepts() {
        assert_eq!(
            dns_label("Run_42/Build--Image", 63, "x"),
            "run-42-build-image"
        );
        assert_eq!(dns_label("---", 63, "x"), "x");
        assert_eq!(dns_label(&"a".repeat(80), 52, "x").len(), 52);
        assert_eq!(dns_label("abc-def", 4, "x"), "abc");
        assert_eq!(label_value("feature/login page"), "feature_login_page");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"v".repeat(70)).len(), 63);
        assert_eq!(environment_namespace("preview-pr-7"), "gitops-preview-pr-7");
        let long = |stage: &str| {
            unique_dns_label(
                &format!("gitops-run-1-{}-{stage}-1", "x".repeat(40)),
                52,
                "x",
            )
        };
        assert_eq!(long("a").len(), 52);
        assert_ne!(long("a"), long("b"), "names cut short stay apart");
        assert_eq!(long("a"), long("a"), "and stay the same");
        assert_eq!(unique_dns_label("short", 52, "x"), "short");
    }
}
