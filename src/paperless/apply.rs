//! Writes a suggestion into a Paperless document without losing anything the user set:
//! tags are only ever added (bulk `modify_tags`, never a PATCH of the whole list), fields the
//! document already has are kept unless overwriting is configured, names are looked up
//! case-insensitively before anything is created, and the ai-processed tag goes on last, so a
//! failure anywhere leaves the document unmarked and it is tried again.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::client::{Document, Kind, PaperlessClient, PaperlessError};
use super::types::{by_name, Permissions, Suggestion, Taxonomy};

/// Paperless's own limit on titles.
const TITLE_LIMIT: usize = 128;

/// Which suggested fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    pub title: bool,
    pub correspondent: bool,
    pub document_type: bool,
    pub tags: bool,
    pub created: bool,
    /// Off unless named: Paperless moves the document's file when its storage path is set.
    pub storage_path: bool,
}

/// A name in CANDLELIGHT_WRITE_FIELDS that is not a field we write.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown field '{0}': choose from title, correspondent, document_type, tags, created, \
     storage_path (custom fields are named in CANDLELIGHT_CUSTOM_FIELDS)"
)]
pub struct UnknownField(pub String);

impl Fields {
    /// What is written unless configured otherwise: everything but the storage path.
    pub const DEFAULT: Fields = Fields {
        title: true,
        correspondent: true,
        document_type: true,
        tags: true,
        created: true,
        storage_path: false,
    };

    /// `title,correspondent,document_type,tags,created,storage_path` (any subset, any order).
    pub fn parse(list: &str) -> Result<Fields, UnknownField> {
        let mut f = Fields {
            title: false,
            correspondent: false,
            document_type: false,
            tags: false,
            created: false,
            storage_path: false,
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "title" => f.title = true,
                "correspondent" => f.correspondent = true,
                "document_type" => f.document_type = true,
                "tags" => f.tags = true,
                "created" => f.created = true,
                "storage_path" => f.storage_path = true,
                other => return Err(UnknownField(other.to_owned())),
            }
        }
        Ok(f)
    }
}

/// How a suggestion may change a document.
#[derive(Debug, Clone)]
pub struct Policy {
    pub write: Fields,
    /// Replace values the document already has (a title other than its file name, a set
    /// correspondent or type). Off by default: the user's choices win.
    pub overwrite: bool,
    /// Correspondents the model names that do not exist yet may be created.
    pub create_correspondents: bool,
    /// Tag marking processed documents (created if missing); None = do not mark.
    pub ai_tag: Option<String>,
    /// A correspondent we create belongs to the document's owner (else to every user).
    pub created_owned_by_document_owner: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            write: Fields::DEFAULT,
            overwrite: false,
            create_correspondents: false,
            ai_tag: Some("ai-processed".into()),
            created_owned_by_document_owner: false,
        }
    }
}

/// What was (or, in a dry run, would be) written.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Applied {
    /// Fields PATCHed, with their new values (ids for correspondent, type, storage path).
    pub fields: Map<String, Value>,
    /// Custom fields set, by name, with the values written (select: the option's id).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub custom_fields: Map<String, Value>,
    /// Names of tags added (the ai-processed tag is reported separately).
    pub added_tags: Vec<String>,
    /// Objects created, as "kind: name".
    pub created_objects: Vec<String>,
    /// Suggestions not written, and why.
    pub kept: Vec<String>,
    pub marked_processed: bool,
    pub dry_run: bool,
}

impl Applied {
    pub fn changed_anything(&self) -> bool {
        !self.fields.is_empty()
            || !self.custom_fields.is_empty()
            || !self.added_tags.is_empty()
            || self.marked_processed
    }
}

/// The title Paperless gives a document it consumed without one: the file name's stem.
fn title_is_default(doc: &Document) -> bool {
    let title = doc.title.trim();
    if title.is_empty() {
        return true;
    }
    let Some(file) = doc.original_file_name.as_deref() else {
        return false;
    };
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    stem == title
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What writing a suggestion into one document takes; nothing of the document is changed yet
/// (objects it needs, such as a new correspondent or the ai-processed tag, may be created).
#[derive(Debug, Clone)]
pub struct Plan {
    pub applied: Applied,
    /// Tags to add (ids), without the ai-processed tag.
    pub new_tags: Vec<i64>,
    /// The ai-processed tag to add last.
    pub mark: Option<i64>,
    /// Custom field values to set, by field id (as `modify_custom_fields` takes them).
    pub set_fields: Map<String, Value>,
}

impl Plan {
    /// Whether carrying it out changes the document.
    pub fn writes_anything(&self) -> bool {
        !self.applied.fields.is_empty()
            || !self.set_fields.is_empty()
            || !self.new_tags.is_empty()
            || self.mark.is_some()
    }
}

/// Writes `s` into document `doc.id`. `taxonomy` is the instance's, as the classifier saw it.
pub async fn apply(
    client: &PaperlessClient,
    doc: &Document,
    s: &Suggestion,
    taxonomy: &Taxonomy,
    policy: &Policy,
    dry_run: bool,
) -> Result<Applied, PaperlessError> {
    let p = plan(client, doc, s, taxonomy, policy, dry_run).await?;
    if !dry_run {
        write(client, doc.id, &p).await?;
    }
    Ok(p.applied)
}

/// Carries out `plan` on document `id`: fields, then tags, and the ai-processed tag last, only
/// after every other write went through (a failure midway leaves the document unmarked, so it
/// is tried again).
pub async fn write(client: &PaperlessClient, id: i64, plan: &Plan) -> Result<(), PaperlessError> {
    if !plan.applied.fields.is_empty() {
        client
            .patch(id, &Value::Object(plan.applied.fields.clone()))
            .await?;
    }
    client
        .modify_custom_fields(id, &plan.set_fields, &[])
        .await?;
    client.add_tags(id, &plan.new_tags).await?;
    if let Some(mark) = plan.mark {
        client.add_tags(id, &[mark]).await?;
    }
    Ok(())
}

/// Decides what `s` changes in `doc` under `policy`; writes nothing to the document.
pub async fn plan(
    client: &PaperlessClient,
    doc: &Document,
    s: &Suggestion,
    taxonomy: &Taxonomy,
    policy: &Policy,
    dry_run: bool,
) -> Result<Plan, PaperlessError> {
    let mut out = Applied {
        dry_run,
        ..Applied::default()
    };
    let ai_tag_id = match &policy.ai_tag {
        Some(name) => by_name(&taxonomy.tags, name).map(|n| n.id),
        None => None,
    };
    // Once processed, every field counts as set: a second run may only add, never rewrite.
    let settled = ai_tag_id.is_some_and(|id| doc.tags.contains(&id));
    let may_replace = policy.overwrite && !settled;

    if policy.write.title && !s.title.is_empty() {
        let title = cut(&s.title, TITLE_LIMIT);
        if title != doc.title {
            if title_is_default(doc) || may_replace {
                out.fields.insert("title".into(), json!(title));
            } else {
                out.kept
                    .push(format!("title: kept the user's '{}'", doc.title));
            }
        }
    }
    if policy.write.created {
        if let Some(date) = &s.created {
            if doc.created.as_deref() != Some(date.as_str()) {
                if !settled || policy.overwrite {
                    out.fields.insert("created".into(), json!(date));
                } else {
                    out.kept
                        .push("created: kept (document already processed)".to_owned());
                }
            }
        }
    }
    for (kind, enabled, suggested, current, items) in [
        (
            Kind::Correspondent,
            policy.write.correspondent,
            &s.correspondent,
            doc.correspondent,
            &taxonomy.correspondents,
        ),
        (
            Kind::DocumentType,
            policy.write.document_type,
            &s.document_type,
            doc.document_type,
            &taxonomy.document_types,
        ),
        (
            Kind::StoragePath,
            policy.write.storage_path,
            &s.storage_path,
            doc.storage_path,
            &taxonomy.storage_paths,
        ),
    ] {
        let (Some(name), true) = (suggested, enabled) else {
            continue;
        };
        if current.is_some() && !may_replace {
            if by_name(items, name).map(|n| n.id) != current {
                out.kept
                    .push(format!("{}: kept the document's own", kind.label()));
            }
            continue;
        }
        let id = match by_name(items, name) {
            Some(n) => Some(n.id),
            None if kind == Kind::Correspondent && policy.create_correspondents => {
                // The document's owner and sharing, so the name is seen by who sees the
                // document and by nobody else.
                let (owner, shared) = if policy.created_owned_by_document_owner {
                    (doc.owner, doc.permissions.as_ref())
                } else {
                    (None, None)
                };
                resolve_new(client, kind, name, None, (owner, shared), dry_run, &mut out).await?
            }
            None => {
                out.kept
                    .push(format!("{}: '{name}' does not exist", kind.label()));
                None
            }
        };
        if let Some(id) = id.filter(|id| Some(*id) != current) {
            let key = match kind {
                Kind::Correspondent => "correspondent",
                Kind::StoragePath => "storage_path",
                _ => "document_type",
            };
            out.fields.insert(key.into(), json!(id));
        }
    }

    // Custom fields: only those the owner enabled (the taxonomy carries them), only values
    // valid by Paperless's rules, and never over a value the document has, whatever the
    // overwrite setting says: a field's value is the owner's fact, not a label.
    let mut set_fields = Map::new();
    for (name, v) in s.custom_fields.iter().filter(|(_, v)| !v.is_null()) {
        let Some(def) = super::fields::by_name(&taxonomy.custom_fields, name) else {
            continue;
        };
        let value = match def.to_paperless(v) {
            Ok(value) => value,
            Err(e) => {
                out.kept.push(format!("custom field: {e}"));
                continue;
            }
        };
        match doc.field_value(def.id) {
            Some(current) if !current.is_null() => {
                if *current != value {
                    out.kept
                        .push(format!("custom field {name}: kept the document's own"));
                }
            }
            _ => {
                set_fields.insert(def.id.to_string(), value.clone());
                out.custom_fields.insert(name.clone(), value);
            }
        }
    }

    let mut new_tags = Vec::new();
    if policy.write.tags {
        for name in &s.tags {
            match by_name(&taxonomy.tags, name) {
                Some(t) if !doc.tags.contains(&t.id) && Some(t.id) != ai_tag_id => {
                    new_tags.push(t.id);
                    out.added_tags.push(t.name.clone());
                }
                Some(_) => {}
                None => out.kept.push(format!("tag: '{name}' does not exist")),
            }
        }
    }

    let mut mark = None;
    if let Some(name) = &policy.ai_tag {
        if !settled {
            mark = match ai_tag_id {
                Some(id) => Some(id),
                // The marker is workflow state every user's documents share.
                None => {
                    resolve_new(
                        client,
                        Kind::Tag,
                        name,
                        Some(0),
                        (None, None),
                        dry_run,
                        &mut out,
                    )
                    .await?
                }
            };
            out.marked_processed = true;
        }
    }
    Ok(Plan {
        applied: out,
        new_tags,
        mark,
        set_fields,
    })
}

/// Looks a name up (ignoring case) and creates it when absent; a dry run only reports.
async fn resolve_new(
    client: &PaperlessClient,
    kind: Kind,
    name: &str,
    matching_algorithm: Option<i64>,
    (owner, shared): (Option<i64>, Option<&Permissions>),
    dry_run: bool,
    out: &mut Applied,
) -> Result<Option<i64>, PaperlessError> {
    if dry_run {
        if let Some(n) = client.find(kind, name, owner).await? {
            return Ok(Some(n.id));
        }
        out.created_objects
            .push(format!("{}: {name}", kind.label()));
        return Ok(None);
    }
    let (n, created) = client
        .find_or_create(kind, name, matching_algorithm, owner, shared)
        .await?;
    if created {
        out.created_objects
            .push(format!("{}: {name}", kind.label()));
    }
    Ok(Some(n.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(title: &str, file: &str) -> Document {
        Document {
            id: 1,
            title: title.into(),
            content: String::new(),
            tags: vec![],
            correspondent: None,
            document_type: None,
            created: None,
            original_file_name: Some(file.into()),
            owner: None,
            permissions: None,
            storage_path: None,
            custom_fields: vec![],
        }
    }

    #[test]
    fn a_title_from_the_file_name_is_paperless_default() {
        assert!(title_is_default(&doc(
            "acme-invoice-2024-0387",
            "acme-invoice-2024-0387.txt"
        )));
        assert!(title_is_default(&doc("", "x.pdf")));
        assert!(!title_is_default(&doc("Acme invoice March", "scan.pdf")));
    }

    #[test]
    fn fields_parse_and_reject_unknown_names() {
        let f = Fields::parse("tags, created").unwrap();
        assert!(f.tags && f.created && !f.title && !f.correspondent);
        assert!(Fields::parse("tags,colour")
            .unwrap_err()
            .to_string()
            .contains("colour"));
    }
}
