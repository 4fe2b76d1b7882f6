//! The classifier's vocabulary, shared by the REST client, the classifier, the archive and the
//! write-back: the instance's taxonomy, a suggestion, and a labelled example.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::CustomField;

/// Paperless's `matching_algorithm` values (`documents/models.py`, `MatchingModel`).
pub mod matching {
    pub const NONE: i64 = 0;
    pub const ANY: i64 = 1;
    pub const ALL: i64 = 2;
    pub const LITERAL: i64 = 3;
    pub const REGEX: i64 = 4;
    pub const FUZZY: i64 = 5;
    pub const AUTO: i64 = 6;
}

fn insensitive() -> bool {
    true
}

/// A named Paperless object (tag, correspondent, document type) with the owner's own matching
/// rule, as Paperless's REST objects carry it (other fields are ignored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Named {
    pub id: i64,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub matching_algorithm: i64,
    #[serde(default, rename = "match", skip_serializing_if = "String::is_empty")]
    pub match_text: String,
    #[serde(default = "insensitive")]
    pub is_insensitive: bool,
    /// Its owner in Paperless (None: every user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<i64>,
    /// Who else may see it (lists fetched with `full_perms=true` carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

/// Paperless's object permissions beyond the owner.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Permissions {
    #[serde(default)]
    pub view: Grant,
    #[serde(default)]
    pub change: Grant,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Grant {
    #[serde(default)]
    pub users: Vec<i64>,
    #[serde(default)]
    pub groups: Vec<i64>,
}

/// A Paperless user, as far as what they may see goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewer {
    pub user: i64,
    pub groups: Vec<i64>,
    pub superuser: bool,
}

impl Named {
    /// Whether Paperless lets `v` see this object: unowned, theirs, or shared with them or
    /// one of their groups.
    pub fn visible_to(&self, v: &Viewer) -> bool {
        let shared =
            |g: &Grant| g.users.contains(&v.user) || g.groups.iter().any(|x| v.groups.contains(x));
        v.superuser
            || self.owner.is_none_or(|o| o == v.user)
            || self
                .permissions
                .as_ref()
                .is_some_and(|p| shared(&p.view) || shared(&p.change))
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Named {
    pub fn new(id: i64, name: &str) -> Named {
        Named {
            id,
            name: name.to_owned(),
            is_insensitive: true,
            ..Named::default()
        }
    }
}

/// What a document may be classified into: the instance's tags, correspondents, types and
/// storage paths, and the custom fields it defines.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Taxonomy {
    #[serde(default)]
    pub tags: Vec<Named>,
    #[serde(default)]
    pub correspondents: Vec<Named>,
    #[serde(default)]
    pub document_types: Vec<Named>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_paths: Vec<Named>,
    /// Field definitions (Paperless's have no owner: every user sees them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
}

impl Taxonomy {
    /// Only what `v` may see: a document's owner is never offered another owner's names.
    pub fn visible_to(&self, v: &Viewer) -> Taxonomy {
        let keep = |items: &[Named]| items.iter().filter(|n| n.visible_to(v)).cloned().collect();
        Taxonomy {
            tags: keep(&self.tags),
            correspondents: keep(&self.correspondents),
            document_types: keep(&self.document_types),
            storage_paths: keep(&self.storage_paths),
            custom_fields: self.custom_fields.clone(),
        }
    }
}

/// The classifier's answer, by name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Suggestion {
    /// (Absent from the model's answer when the title is composed from the text.)
    #[serde(default)]
    pub title: String,
    pub correspondent: Option<String>,
    pub document_type: Option<String>,
    pub tags: Vec<String>,
    pub created: Option<String>,
    /// Only when storage paths were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// The custom fields asked for, by name, each in Paperless's own format (`EUR812.37`,
    /// `2026-01-23`, a select option's label), `null` where the document states none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, Value>,
}

/// A labelled document: what the owner decided for it, by name. The archive's documents and
/// the `examples` of `/api/classify` and `candlelight classify --examples` are both these.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Example {
    /// The caller's id for it (a Paperless document id, or any string): a document is never
    /// its own example (leave-one-out evaluation).
    #[serde(default, deserialize_with = "id_as_string")]
    pub id: Option<String>,
    pub content: String,
    #[serde(default)]
    pub correspondent: Option<String>,
    #[serde(default)]
    pub document_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// Custom field values by field name (a select option by its label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, Value>,
}

/// Ids given as numbers or strings.
fn id_as_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// The item called `name`: the exact spelling first, else ignoring case (Paperless's own
/// uniqueness is case-sensitive, so "finance" may sit next to "Finance").
pub fn by_name<'a>(items: &'a [Named], name: &str) -> Option<&'a Named> {
    named(items, name, |n| &n.name)
}

/// The item whose `name_of` is `name`: the exact spelling first, else ignoring case.
pub fn named<'a, T>(items: &'a [T], name: &str, name_of: impl Fn(&T) -> &str) -> Option<&'a T> {
    items.iter().find(|n| name_of(n) == name).or_else(|| {
        let lower = name.to_lowercase();
        items.iter().find(|n| name_of(n).to_lowercase() == lower)
    })
}
