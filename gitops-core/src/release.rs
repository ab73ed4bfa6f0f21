//! Releases as semantic versions: parsing tags (`1.2.3`, `v1.2.3`), ordering them, and matching
//! them against the version requirements of tag triggers.

use semver::{Prerelease, Version, VersionReq};

/// Parses a tag name as a semantic version, with an optional leading `v` (`v1.2.3-rc.1+build`).
///
/// Returns `None` for anything that is not a full `MAJOR.MINOR.PATCH` version.
///
/// ```
/// use gitops_core::release::parse_tag;
/// assert_eq!(parse_tag("v1.2.3").unwrap().to_string(), "1.2.3");
/// assert!(parse_tag("1.2.3-rc.1").unwrap().pre.as_str() == "rc.1");
/// assert_eq!(parse_tag("release-1"), None);
/// ```
pub fn parse_tag(tag: &str) -> Option<Version> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    Version::parse(bare).ok()
}

/// Orders tag names by semantic version, newest last; tags that are not versions are dropped.
///
/// Two tags for the same version (`1.0.0` and `v1.0.0`) keep their relative order.
pub fn sort_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, Version)> {
    let mut versions: Vec<_> = tags
        .into_iter()
        .filter_map(|t| Some((t, parse_tag(t)?)))
        .collect();
    versions.sort_by(|a, b| a.1.cmp(&b.1));
    versions
}

/// Whether `version` meets `req`; pre-releases only with `prerelease`, and then as the release
/// they precede would (see [`VersionFilter::new`]).
pub fn matches_requirement(req: &VersionReq, prerelease: bool, version: &Version) -> bool {
    if version.pre.is_empty() {
        return req.matches(version);
    }
    if !prerelease {
        return false;
    }
    let mut release = version.clone();
    release.pre = Prerelease::EMPTY;
    req.matches(&release) || req.matches(version)
}

/// Which versions a tag trigger accepts: a requirement and whether pre-releases count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFilter {
    req: VersionReq,
    prerelease: bool,
}

impl VersionFilter {
    /// A filter from a requirement such as `>=1.0.0, <2`.
    ///
    /// With `prerelease` false, a pre-release never matches. With it true, a pre-release matches
    /// when the release it precedes would (`>=1.0.0` matches `2.0.0-rc.1`).
    pub fn new(req: &str, prerelease: bool) -> Result<Self, semver::Error> {
        Ok(Self {
            req: VersionReq::parse(req)?,
            prerelease,
        })
    }

    /// A filter from a parsed requirement.
    pub fn from_requirement(req: VersionReq, prerelease: bool) -> Self {
        Self { req, prerelease }
    }

    /// A filter that accepts every release (and, with `prerelease`, every pre-release).
    pub fn any(prerelease: bool) -> Self {
        Self {
            req: VersionReq::STAR,
            prerelease,
        }
    }

    /// Whether `version` passes the filter.
    pub fn matches(&self, version: &Version) -> bool {
        matches_requirement(&self.req, self.prerelease, version)
    }

    /// The requirement, as written.
    pub fn requirement(&self) -> &VersionReq {
        &self.req
    }

    /// Whether pre-releases may match.
    pub fn allows_prerelease(&self) -> bool {
        self.prerelease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_tag(s).unwrap()
    }

    #[test]
    fn parses_tags_with_and_without_v() {
        assert_eq!(v("v1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("v1.2.3+build.5").build.as_str(), "build.5");
        assert_eq!(v("1.0.0-alpha.1").pre.as_str(), "alpha.1");
        for bad in [
            "", "v", "1.2", "vv1.2.3", "1.2.3.4", "latest", "V1.2.3", "01.2.3",
        ] {
            assert_eq!(parse_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        let sorted = sort_tags(["v1.10.0", "1.2.0", "v1.2.0-rc.1", "nightly", "v1.9.9"]);
        let names: Vec<_> = sorted.iter().map(|(t, _)| *t).collect();
        assert_eq!(names, ["v1.2.0-rc.1", "1.2.0", "v1.9.9", "v1.10.0"]);
    }

    #[test]
    fn filter_respects_ranges_and_prereleases() {
        let f = VersionFilter::new(">=1.0.0, <2", false).unwrap();
        assert!(f.matches(&v("1.0.0")));
        assert!(f.matches(&v("1.99.0")));
        assert!(!f.matches(&v("2.0.0")));
        assert!(!f.matches(&v("0.9.0")));
        assert!(!f.matches(&v("1.5.0-rc.1")));

        let pre = VersionFilter::new(">=1.0.0", true).unwrap();
        assert!(pre.matches(&v("2.0.0-rc.1")));
        assert!(pre.matches(&v("1.0.0-rc.1")));
        assert!(!pre.matches(&v("0.9.0-rc.1")));
        assert!(
            !VersionFilter::new(">=1.0.0", false)
                .unwrap()
                .matches(&v("2.0.0-rc.1"))
        );
        assert!(VersionFilter::any(false).matches(&v("0.0.1")));
        assert!(!VersionFilter::any(false).matches(&v("0.0.1-x")));
        assert!(VersionFilter::new("not a range", false).is_err());
    }
}
