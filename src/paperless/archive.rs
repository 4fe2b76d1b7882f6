//! The owner's labelled documents, as vectors: what the classifier learns from. Every
//! document the token can see that carries a correspondent, a type or a tag of the owner's is
//! embedded once (its head, by the sentence encoder) and kept with its labels by id and its
//! owner. The index follows Paperless incrementally (documents modified since the last sync),
//! drops documents that are gone, and lives in one file under the data folder, so a restart
//! embeds nothing again.
//!
//! It never learns from our own unreviewed output: a document we wrote to counts only once
//! someone changed it afterwards (its `modified` is later than our write), and a document
//! carrying the ai-processed tag that we have no record of counts not at all. Neighbours
//! respect owners: a document only ever sees neighbours with its own owner, or with none.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::client::{FieldValue, PaperlessClient, PaperlessError};
use super::meaning::{cosine, Encoder};
use super::neighbours::{embedding_text, top_k, Filing, Neighbour, Neighbours};
use super::types::Taxonomy;
use crate::engine::EngineError;

/// Our write must be older than the document's `modified` by this much before the document
/// counts as reviewed (Paperless's own bookkeeping right after our write moves `modified` a
/// little; clocks of two hosts differ a little).
const REVIEW_SLACK: chrono::Duration = chrono::Duration::seconds(120);
/// Characters of a document's text kept for the model's examples.
const HEAD_CHARS: usize = 600;
/// Documents embedded per encoder call while syncing.
const SYNC_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Paperless(#[from] PaperlessError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("archive index {path}: {reason}")]
    File { path: String, reason: String },
}

/// One labelled document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    id: i64,
    owner: Option<i64>,
    modified: String,
    #[serde(with = "vector_b64")]
    vector: Vec<f32>,
    head: String,
    correspondent: Option<i64>,
    document_type: Option<i64>,
    tags: Vec<i64>,
    /// Absent in indexes written before storage paths were learned.
    #[serde(default)]
    storage_path: Option<i64>,
    /// Custom field values (select: option ids), as Paperless sends them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    custom_fields: Vec<FieldValue>,
}

mod vector_b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// The encoder the vectors came from: another one means embedding everything again.
    encoder: String,
    /// The latest `modified` seen: the next sync asks for documents modified after it.
    synced_until: Option<String>,
    entries: HashMap<i64, Entry>,
    /// Documents we wrote to, and when (RFC 3339).
    written: HashMap<i64, String>,
}

/// A document as the sync reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Labelled {
    pub id: i64,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub owner: Option<i64>,
    #[serde(default)]
    pub modified: Option<String>,
    #[serde(default)]
    pub tags: Vec<i64>,
    pub correspondent: Option<i64>,
    pub document_type: Option<i64>,
    #[serde(default)]
    pub storage_path: Option<i64>,
    #[serde(default)]
    pub custom_fields: Vec<FieldValue>,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Synced {
    pub embedded: usize,
    pub removed: usize,
    pub total: usize,
}

pub struct Archive {
    file: Option<PathBuf>,
    state: RwLock<State>,
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t).ok()
}

impl Archive {
    /// The index in `file` (created on the first sync), or in memory only with None.
    pub fn open(file: Option<PathBuf>, encoder: &str) -> Result<Archive, ArchiveError> {
        let mut state = match &file {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|e| ArchiveError::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                // An unreadable index is rebuilt, not fatal: it holds nothing that Paperless
                // does not hold, apart from our write times.
                serde_json::from_str(&text).unwrap_or_else(|e| {
                    tracing::warn!(file = %p.display(), error = %e, "archive index unreadable: rebuilding");
                    State::default()
                })
            }
            _ => State::default(),
        };
        if state.encoder != encoder {
            state.entries.clear();
            state.synced_until = None;
            state.encoder = encoder.to_owned();
        }
        Ok(Archive {
            file,
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the index all at once (a crash leaves the old file or the new one).
    pub fn save(&self) -> Result<(), ArchiveError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let err = |e: String| ArchiveError::File {
            path: path.display().to_string(),
            reason: e,
        };
        let text = serde_json::to_string(&*self.read()).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Records that we wrote to document `id` now: its labels are ours until someone edits it.
    pub fn wrote(&self, id: i64) {
        let mut s = self.write();
        s.written.insert(id, chrono::Utc::now().to_rfc3339());
        s.entries.remove(&id);
    }

    /// Whether a document's labels are the owner's: not written by us, or edited after.
    fn reviewed(&self, s: &State, d: &Labelled, ai_tag: Option<i64>) -> bool {
        match s.written.get(&d.id) {
            Some(at) => match (parse_time(at), d.modified.as_deref().and_then(parse_time)) {
                (Some(ours), Some(theirs)) => theirs > ours + REVIEW_SLACK,
                _ => false,
            },
            None => !ai_tag.is_some_and(|t| d.tags.contains(&t)),
        }
    }

    /// Brings the index up to date with what the token sees: embeds the labelled documents
    /// modified since the last sync, drops those that lost their labels, were edited by no
    /// one after our write, or are gone. `workflow_tags` (ai-processed, failure, selection
    /// tags) are not labels.
    pub async fn sync(
        &self,
        client: &PaperlessClient,
        encoder: &Encoder,
        ai_tag: Option<i64>,
        workflow_tags: &[i64],
    ) -> Result<Synced, ArchiveError> {
        let since = self.read().synced_until.clone();
        let filter = since
            .as_deref()
            .map(|t| format!("modified__gt={}&", urlencode(t)))
            .unwrap_or_default();
        let q = format!(
            "/api/documents/?{filter}ordering=modified&fields=id,content,owner,modified,tags,\
             correspondent,document_type,storage_path,custom_fields"
        );
        let changed: Vec<Labelled> = client.list(&q).await?;
        let mut out = Synced::default();
        let mut latest = since;
        let mut to_embed: Vec<Labelled> = Vec::new();
        {
            let mut s = self.write();
            for mut d in changed {
                if let Some(m) = &d.modified {
                    if latest.as_deref().is_none_or(|l| m.as_str() > l) {
                        latest = Some(m.clone());
                    }
                }
                // Whose labels these are is read off the tags as they are; then the workflow
                // tags are no labels.
                let reviewed = self.reviewed(&s, &d, ai_tag);
                d.tags
                    .retain(|t| !workflow_tags.contains(t) && Some(*t) != ai_tag);
                let labelled = d.correspondent.is_some()
                    || d.document_type.is_some()
                    || d.storage_path.is_some()
                    || d.custom_fields.iter().any(|f| !f.value.is_null())
                    || !d.tags.is_empty();
                let keep = labelled && !d.content.trim().is_empty();
                if keep && reviewed {
                    to_embed.push(d);
                } else if s.entries.remove(&d.id).is_some() {
                    out.removed += 1;
                }
            }
        }
        for batch in to_embed.chunks(SYNC_BATCH) {
            let texts: Vec<String> = batch.iter().map(|d| embedding_text(&d.content)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = encoder.embed(&refs).await?;
            let mut s = self.write();
            for (d, v) in batch.iter().zip(vectors) {
                s.entries.insert(
                    d.id,
                    Entry {
                        id: d.id,
                        owner: d.owner,
                        modified: d.modified.clone().unwrap_or_default(),
                        vector: v.as_ref().clone(),
                        head: d.content.chars().take(HEAD_CHARS).collect(),
                        correspondent: d.correspondent,
                        document_type: d.document_type,
                        tags: d.tags.clone(),
                        storage_path: d.storage_path,
                        custom_fields: d.custom_fields.clone(),
                    },
                );
                out.embedded += 1;
            }
        }
        // Documents deleted in Paperless (or no longer visible to the token) go too.
        if !self.is_empty() {
            let ids: std::collections::HashSet<i64> =
                client.document_ids("").await?.into_iter().collect();
            let mut s = self.write();
            let before = s.entries.len();
            s.entries.retain(|id, _| ids.contains(id));
            out.removed += before - s.entries.len();
        }
        let mut s = self.write();
        s.synced_until = latest;
        out.total = s.entries.len();
        drop(s);
        self.save()?;
        Ok(out)
    }

    /// The neighbours a document of `owner` may learn from, with labels by name from
    /// `taxonomy` (labels it no longer has are dropped).
    pub fn view<'a>(&'a self, owner: Option<i64>, taxonomy: &'a Taxonomy) -> ArchiveView<'a> {
        ArchiveView {
            archive: self,
            owner,
            taxonomy,
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The archive as one document of one owner may see it.
pub struct ArchiveView<'a> {
    archive: &'a Archive,
    owner: Option<i64>,
    taxonomy: &'a Taxonomy,
}

impl ArchiveView<'_> {
    fn name(items: &[super::types::Named], id: i64) -> Option<String> {
        items.iter().find(|n| n.id == id).map(|n| n.name.clone())
    }

    /// An entry's type and tags by name (labels the taxonomy no longer has are dropped).
    fn labels(&self, e: &Entry) -> (Option<String>, Vec<String>) {
        let t = self.taxonomy;
        let kind = e
            .document_type
            .and_then(|c| Self::name(&t.document_types, c));
        let tags = e
            .tags
            .iter()
            .filter_map(|c| Self::name(&t.tags, *c))
            .collect();
        (kind, tags)
    }

    /// The entries this view may learn from, but `exclude`.
    fn visible<'s>(&self, s: &'s State, exclude: Option<&str>) -> Vec<&'s Entry> {
        s.entries
            .values()
            .filter(|e| e.owner.is_none() || e.owner == self.owner)
            .filter(|e| exclude != Some(e.id.to_string().as_str()))
            .collect()
    }
}

impl Neighbours for ArchiveView<'_> {
    fn nearest(&self, vector: &[f32], k: usize, exclude: Option<&str>) -> Vec<Neighbour> {
        let s = self.archive.read();
        let entries = self.visible(&s, exclude);
        let scored = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (cosine(vector, &e.vector), i))
            .collect();
        let t = self.taxonomy;
        top_k(scored, k)
            .into_iter()
            .map(|(similarity, i)| {
                let e = entries[i];
                let (document_type, tags) = self.labels(e);
                Neighbour {
                    id: e.id.to_string(),
                    similarity,
                    content: e.head.clone(),
                    correspondent: e
                        .correspondent
                        .and_then(|c| Self::name(&t.correspondents, c)),
                    document_type,
                    tags,
                    storage_path: e.storage_path.and_then(|c| Self::name(&t.storage_paths, c)),
                    custom_fields: e
                        .custom_fields
                        .iter()
                        .filter_map(|v| {
                            let f = t.custom_fields.iter().find(|f| f.id == v.field)?;
                            let value = f.value_from_paperless(&v.value);
                            (!value.is_null()).then(|| (f.name.clone(), value))
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn each_labelled(&self, exclude: Option<&str>, f: &mut dyn FnMut(Filing<'_>)) {
        let s = self.archive.read();
        for e in self.visible(&s, exclude) {
            let (kind, tags) = self.labels(e);
            f(Filing {
                text: &e.head,
                document_type: kind.as_deref(),
                tags: &tags,
            });
        }
    }
}

/// Shared handle.
pub type SharedArchive = Arc<Archive>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(id: i64, owner: Option<i64>, v: [f32; 2], ty: i64) -> Entry {
        Entry {
            id,
            owner,
            modified: String::new(),
            vector: v.to_vec(),
            head: format!("doc {id}"),
            correspondent: None,
            document_type: Some(ty),
            tags: vec![],
            storage_path: None,
            custom_fields: vec![],
        }
    }

    #[test]
    fn neighbours_carry_custom_field_values_by_name_and_label() {
        let a = Archive::open(None, "e").unwrap();
        let mut e = entry(1, None, [1.0, 0.0], 10);
        e.custom_fields = [(5, json!("b2")), (6, json!("EUR12.00")), (7, json!(true))]
            .into_iter()
            .map(|(field, value)| FieldValue { field, value })
            .collect();
        a.write().entries.insert(1, e);
        let field = |v: Value| crate::paperless::fields::CustomField::from_paperless(&v).unwrap();
        let t = Taxonomy {
            custom_fields: vec![
                field(
                    json!({"id": 5, "name": "Zahlweise", "data_type": "select", "extra_data":
                    {"select_options": [{"id": "a1", "label": "Lastschrift"},
                                        {"id": "b2", "label": "Überweisung"}]}}),
                ),
                field(json!({"id": 6, "name": "Betrag", "data_type": "monetary"})),
            ],
            ..Taxonomy::default()
        };
        let n = a.view(None, &t).nearest(&[1.0, 0.0], 1, None);
        assert_eq!(
            n[0].custom_fields,
            [
                ("Zahlweise".to_owned(), json!("Überweisung")),
                ("Betrag".to_owned(), json!("EUR12.00"))
            ]
            .into(),
            "fields the owner did not enable (7) are left out"
        );
    }

    #[test]
    fn neighbours_never_cross_owners_and_never_include_the_document() {
        let a = Archive::open(None, "e").unwrap();
        {
            let mut s = a.write();
            s.entries.insert(1, entry(1, Some(1), [1.0, 0.0], 10));
            s.entries.insert(2, entry(2, Some(2), [1.0, 0.0], 11));
            s.entries.insert(3, entry(3, None, [0.8, 0.6], 10));
            s.entries.insert(4, entry(4, Some(1), [0.9, 0.1], 11));
        }
        let t = Taxonomy {
            document_types: vec![
                super::super::types::Named::new(10, "Invoice"),
                super::super::types::Named::new(11, "Letter"),
            ],
            ..Taxonomy::default()
        };
        let ids = |owner: Option<i64>, exclude: Option<&str>| -> Vec<String> {
            a.view(owner, &t)
                .nearest(&[1.0, 0.0], 10, exclude)
                .into_iter()
                .map(|n| n.id)
                .collect()
        };
        assert_eq!(ids(Some(1), None), vec!["1", "4", "3"]);
        assert_eq!(ids(Some(1), Some("1")), vec!["4", "3"]);
        assert_eq!(ids(Some(2), None), vec!["2", "3"]);
        assert_eq!(
            ids(None, None),
            vec!["3"],
            "an unowned document sees unowned ones only"
        );
        let n = a.view(Some(1), &t).nearest(&[1.0, 0.0], 1, None);
        assert_eq!(n[0].document_type.as_deref(), Some("Invoice"));
    }

    #[test]
    fn our_writes_count_only_once_someone_edits_the_document() {
        let a = Archive::open(None, "e").unwrap();
        let doc = |modified: &str, tags: Vec<i64>| Labelled {
            id: 5,
            content: "x".into(),
            owner: None,
            modified: Some(modified.into()),
            tags,
            correspondent: Some(1),
            document_type: None,
            storage_path: None,
            custom_fields: vec![],
        };
        let ai = Some(99);
        let s = a.read().clone();
        assert!(a.reviewed(&s, &doc("2026-01-01T00:00:00+00:00", vec![]), ai));
        assert!(!a.reviewed(&s, &doc("2026-01-01T00:00:00+00:00", vec![99]), ai));
        a.wrote(5);
        let s = a.read().clone();
        let ours = parse_time(&s.written[&5]).unwrap();
        let just_after = (ours + chrono::Duration::seconds(5)).to_rfc3339();
        let edited = (ours + chrono::Duration::hours(1)).to_rfc3339();
        assert!(!a.reviewed(&s, &doc(&just_after, vec![99]), ai));
        assert!(a.reviewed(&s, &doc(&edited, vec![99]), ai));
    }

    #[test]
    fn the_index_survives_a_restart_and_a_new_encoder_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("archive.json");
        let a = Archive::open(Some(file.clone()), "e5").unwrap();
        a.write().entries.insert(1, entry(1, None, [0.6, 0.8], 10));
        a.wrote(7);
        a.save().unwrap();
        let b = Archive::open(Some(file.clone()), "e5").unwrap();
        assert_eq!(b.read().entries[&1], entry(1, None, [0.6, 0.8], 10));
        assert!(b.read().written.contains_key(&7));
        let c = Archive::open(Some(file), "other").unwrap();
        assert!(c.is_empty());
        assert!(c.read().written.contains_key(&7), "our writes are kept");
    }

    #[test]
    fn vectors_round_trip_through_base64() {
        let e = entry(1, None, [0.25, -1.5], 1);
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"vector\":\""));
        let back: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }
}
