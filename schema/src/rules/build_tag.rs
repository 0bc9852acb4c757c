//! The effective tag of a build: marks spread along a branch. A BAD_BUILD tag on one commit
//! also marks every later build of that repository and branch bad, until a newer commit of
//! the branch carries a GOOD_BUILD or CERTIFIED_BUILD tag; a tag on the very commit of a build
//! applies to it whatever its branch.
//!
//! Precisely: among the tags of a build name, ordered by the tagged build's commit date (then
//! by when the tag was made), take the last one whose commit date is not after the build's,
//! and walk back until a tag is on the build's commit, or on its repository and branch. The
//! first such tag is the build's effective tag. Auto-promotion never picks a build whose
//! effective tag is BAD_BUILD.

use crate::TagValue;
use crate::time::EpochMs;

/// What the rule needs of a build: its commit, where it comes from and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildFacts<'a> {
    /// Full commit.
    pub commit: &'a str,
    /// Repository.
    pub repo: &'a str,
    /// Branch.
    pub branch: &'a str,
    /// Commit date.
    pub commit_date: EpochMs,
}

/// A tag on a build, with the tagged build's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTag {
    /// Tag id.
    pub id: String,
    /// BAD_BUILD, GOOD_BUILD or CERTIFIED_BUILD.
    pub value: TagValue,
    /// The tagged build's commit.
    pub commit: String,
    /// Its repository.
    pub repo: String,
    /// Its branch.
    pub branch: String,
    /// Its commit date.
    pub commit_date: EpochMs,
    /// When the tag was made.
    pub created: EpochMs,
}

/// The effective tag of `build` among `tags` (the tags of its build name, in any order).
pub fn effective<'t>(build: &BuildFacts<'_>, tags: &'t [BuildTag]) -> Option<&'t BuildTag> {
    let mut earlier: Vec<&BuildTag> = tags.iter().filter(|t| t.commit_date <= build.commit_date).collect();
    earlier.sort_by_key(|t| (t.commit_date, t.created));
    earlier.into_iter().rev().find(|t| t.commit == build.commit || (t.repo == build.repo && t.branch == build.branch))
}

/// Whether `build`'s effective tag is BAD_BUILD.
pub fn is_bad(build: &BuildFacts<'_>, tags: &[BuildTag]) -> bool {
    effective(build, tags).is_some_and(|t| t.value == TagValue::BadBuild)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(id: &str, value: TagValue, commit: &str, branch: &str, date: EpochMs, created: EpochMs) -> BuildTag {
        BuildTag {
            id: id.into(),
            value,
            commit: commit.into(),
            repo: "org/web".into(),
            branch: branch.into(),
            commit_date: date,
            created,
        }
    }

    fn build<'a>(commit: &'a str, branch: &'a str, date: EpochMs) -> BuildFacts<'a> {
        BuildFacts { commit, repo: "org/web", branch, commit_date: date }
    }

    fn effective_id<'a>(b: &BuildFacts<'_>, tags: &'a [BuildTag]) -> Option<&'a str> {
        effective(b, tags).map(|t| t.id.as_str())
    }

    #[test]
    fn a_bad_mark_spreads_to_later_builds_of_its_branch_only() {
        let tags = [tag("bad", TagValue::BadBuild, "c2", "main", 20, 100)];
        assert!(!is_bad(&build("c1", "main", 10), &tags), "an earlier build is not touched");
        assert!(is_bad(&build("c2", "main", 20), &tags), "the build itself");
        assert!(is_bad(&build("c3", "main", 30), &tags), "a later build of the branch");
        assert!(!is_bad(&build("c3", "release", 30), &tags), "another branch");
        let other_repo = BuildFacts { repo: "org/api", ..build("c3", "main", 30) };
        assert!(!is_bad(&other_repo, &tags), "another repository");
    }

    #[test]
    fn a_newer_good_mark_ends_a_bad_one() {
        let tags = [
            tag("bad", TagValue::BadBuild, "c2", "main", 20, 100),
            tag("good", TagValue::GoodBuild, "c4", "main", 40, 101),
        ];
        assert_eq!(effective_id(&build("c3", "main", 30), &tags), Some("bad"));
        assert_eq!(effective_id(&build("c4", "main", 40), &tags), Some("good"));
        assert_eq!(effective_id(&build("c5", "main", 50), &tags), Some("good"));
        assert!(!is_bad(&build("c5", "main", 50), &tags));
    }

    #[test]
    fn a_mark_on_the_commit_applies_whatever_the_branch() {
        let tags = [tag("bad", TagValue::BadBuild, "c2", "main", 20, 100)];
        assert!(is_bad(&build("c2", "hotfix", 20), &tags), "the same commit built from another branch");
    }

    #[test]
    fn the_latest_mark_of_a_commit_wins() {
        let tags = [
            tag("bad", TagValue::BadBuild, "c2", "main", 20, 100),
            tag("ok", TagValue::CertifiedBuild, "c2", "main", 20, 200),
        ];
        assert_eq!(effective_id(&build("c2", "main", 20), &tags), Some("ok"));
        let tags = [
            tag("ok", TagValue::CertifiedBuild, "c2", "main", 20, 100),
            tag("bad", TagValue::BadBuild, "c2", "main", 20, 200),
        ];
        assert_eq!(effective_id(&build("c3", "main", 30), &tags), Some("bad"));
    }

    #[test]
    fn marks_on_other_branches_are_walked_past() {
        let tags = [
            tag("main-bad", TagValue::BadBuild, "c2", "main", 20, 100),
            tag("rel-good", TagValue::GoodBuild, "r1", "release", 25, 101),
        ];
        assert_eq!(effective_id(&build("c3", "main", 30), &tags), Some("main-bad"));
        assert_eq!(effective_id(&build("r2", "release", 30), &tags), Some("rel-good"));
        assert_eq!(effective_id(&build("x", "feature", 30), &[]), None);
    }
}
