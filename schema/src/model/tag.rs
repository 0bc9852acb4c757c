//! Tags (Teletraan's `TagBean`): marks on builds (BAD_BUILD, GOOD_BUILD, CERTIFIED_BUILD),
//! stages and the system. A build tag is stored against the build's name, with the tagged
//! build's facts, so it can mark later builds of the same branch (see `rules::build_tag`).

use serde::{Deserialize, Serialize};

use super::{Invalid, check_text, invalid};
use crate::time::EpochMs;
use crate::{TagTargetType, TagValue};

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Tag id.
    pub id: String,
    /// The mark.
    pub value: TagValue,
    /// What it marks.
    pub target_type: TagTargetType,
    /// For a build: its build name; for a stage: its id; for the system: `TELETRAAN`.
    pub target_id: String,
    /// For a build: the tagged build's id.
    pub build_id: Option<String>,
    /// Who made it.
    pub operator: String,
    /// When.
    pub created_date: EpochMs,
    /// Why.
    pub comments: Option<String>,
    /// For a build: the tagged build, as JSON text (Teletraan's `metaInfo`).
    pub meta_info: Option<String>,
}

/// A build with its effective tag (Teletraan's `BuildTagBean`): the mark that applies to it,
/// maybe made on an earlier build of its branch; `null` when none does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BuildWithTag {
    /// The build.
    pub build: super::Build,
    /// Its effective tag.
    pub tag: Option<Tag>,
}

/// A tag as users send it. For a BUILD tag, `targetId` is the build's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TagInput {
    pub value: Option<TagValue>,
    pub target_type: Option<TagTargetType>,
    pub target_id: Option<String>,
    pub comments: Option<String>,
}

/// A checked tag request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTag {
    /// The mark.
    pub value: TagValue,
    /// What it marks.
    pub target_type: TagTargetType,
    /// As sent (a build id for BUILD tags).
    pub target_id: String,
    /// Why.
    pub comments: Option<String>,
}

impl TagInput {
    /// Checks the request: a value that fits the target, a target, short comments.
    pub fn check(self) -> Result<NewTag, Invalid> {
        let value = self.value.ok_or_else(|| invalid("value", "is required"))?;
        let target_type = self.target_type.ok_or_else(|| invalid("targetType", "is required"))?;
        let target_id = self.target_id.map(|t| t.trim().to_string()).unwrap_or_default();
        if target_id.is_empty() {
            return Err(invalid("targetId", "is required"));
        }
        check_text("targetId", &target_id, 128)?;
        match target_type {
            TagTargetType::Build if !value.is_build_tag() => {
                return Err(invalid(
                    "value",
                    format!("{value} is not a build tag (BAD_BUILD, GOOD_BUILD, CERTIFIED_BUILD)"),
                ));
            }
            TagTargetType::Environment | TagTargetType::Teletraan if value.is_build_tag() => {
                return Err(invalid("value", format!("{value} marks builds only")));
            }
            TagTargetType::Teletraan if target_id != "TELETRAAN" => {
                return Err(invalid("targetId", "must be TELETRAAN for a system tag"));
            }
            _ => {}
        }
        if let Some(c) = &self.comments {
            check_text("comments", c, 256)?;
        }
        Ok(NewTag { value, target_type, target_id, comments: self.comments.filter(|c| !c.is_empty()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_must_fit_their_target() {
        let check = |json: &str| serde_json::from_str::<TagInput>(json).unwrap().check();
        assert!(check(r#"{"value":"BAD_BUILD","targetType":"BUILD","targetId":"b1"}"#).is_ok());
        let cases = [
            (r#"{"targetType":"BUILD","targetId":"b1"}"#, "value"),
            (r#"{"value":"BAD_BUILD","targetId":"b1"}"#, "targetType"),
            (r#"{"value":"BAD_BUILD","targetType":"BUILD","targetId":" "}"#, "targetId"),
            (r#"{"value":"ENABLE_ENV","targetType":"BUILD","targetId":"b1"}"#, "value"),
            (r#"{"value":"GOOD_BUILD","targetType":"ENVIRONMENT","targetId":"e1"}"#, "value"),
            (r#"{"value":"DISABLE_ENV","targetType":"TELETRAAN","targetId":"x"}"#, "targetId"),
            (r#"{"value":"BAD_BUILD","targetType":"BUILD","targetId":"b1","comments":"a\u0000"}"#, "comments"),
        ];
        for (json, field) in cases {
            assert_eq!(check(json).unwrap_err().field, field, "{json}");
        }
    }
}
