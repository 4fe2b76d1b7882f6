//! Every change we make to a Paperless document, recorded before it is made: the document,
//! the fields as they were and as we set them, the tags we add, when, and what triggered it.
//! One JSON line per change in `journal-<instance>.jsonl` under the data folder, flushed to
//! disk before the write goes out, so even a write cut off midway can be reviewed and undone.
//!
//! Undo restores what we changed and only that: a field goes back to its value before our
//! first change only while it still holds our value (a field the user edited since stays as
//! the user left it), and the tags we added are removed (a tag the user added stays). The
//! ai-processed marker stays, so polling does not classify the document again; removing it
//! asks for a new classification.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::Document;
use super::types::Suggestion;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the write journal {path} cannot be written: {reason} (set CANDLELIGHT_DATA_DIR to a writable folder)")]
    Write { path: String, reason: String },
    #[error("the write journal {path} cannot be read: {reason}")]
    Read { path: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A classification written to the document.
    Write,
    /// A previous write taken back.
    Undo,
    /// A classification parked for review (review mode): the review tag added, the
    /// suggestion kept here until the user removes the tag.
    Park,
}

/// One change to one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub at: String,
    pub document_id: i64,
    pub action: Action,
    /// What caused it: webhook, poll, api, cli, undo.
    pub trigger: String,
    /// The changed fields' values before the change (ids for correspondent and type).
    pub before: Map<String, Value>,
    /// The same fields' values after it.
    pub after: Map<String, Value>,
    /// Tags added (ids).
    #[serde(default)]
    pub added_tags: Vec<i64>,
    /// Tags removed (ids).
    #[serde(default)]
    pub removed_tags: Vec<i64>,
    /// Why, where the change is not a classification (the failure tag: what failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The suggestion parked for review (`Park` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<Suggestion>,
    /// Custom field values set (`Write`) or put back (`Undo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<FieldChange>,
}

/// One custom field of a document, before and after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: i64,
    /// Whether the document had the field before (attached, perhaps without a value); undo
    /// removes a field it did not have.
    pub had: bool,
    pub before: Value,
    pub after: Value,
}

/// The changes setting `set` (`{field id: value}`) makes to `doc` as it is now.
pub fn field_changes(doc: &Document, set: &Map<String, Value>) -> Vec<FieldChange> {
    set.iter()
        .filter_map(|(id, after)| {
            let field: i64 = id.parse().ok()?;
            let now = doc.field_value(field);
            Some(FieldChange {
                field,
                had: now.is_some(),
                before: now.cloned().unwrap_or(Value::Null),
                after: after.clone(),
            })
        })
        .collect()
}

/// The values of `fields` (a PATCH body) on `doc` as it is now.
pub fn current(doc: &Document, fields: &Map<String, Value>) -> Map<String, Value> {
    fields.keys().map(|k| (k.clone(), field(doc, k))).collect()
}

/// One writable field of a document as JSON.
pub fn field(doc: &Document, key: &str) -> Value {
    match key {
        "title" => Value::from(doc.title.clone()),
        "correspondent" => doc.correspondent.map_or(Value::Null, Value::from),
        "document_type" => doc.document_type.map_or(Value::Null, Value::from),
        "created" => doc.created.clone().map_or(Value::Null, Value::from),
        "storage_path" => doc.storage_path.map_or(Value::Null, Value::from),
        _ => Value::Null,
    }
}

/// What undoing our writes to a document takes, given the document as it is now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reversal {
    /// Fields to set back (a PATCH body).
    pub restore: Map<String, Value>,
    /// Tags to remove.
    pub remove_tags: Vec<i64>,
    /// Custom fields to set back (`{field id: value}`, for `modify_custom_fields`).
    pub restore_fields: Map<String, Value>,
    /// Custom fields to take off (the document did not have them before us).
    pub remove_fields: Vec<i64>,
    /// What is left as it is, and why.
    pub kept: Vec<String>,
}

impl Reversal {
    pub fn is_empty(&self) -> bool {
        self.restore.is_empty()
            && self.remove_tags.is_empty()
            && self.restore_fields.is_empty()
            && self.remove_fields.is_empty()
    }
}

/// The reversal of `writes` (our writes to one document since its last undo, oldest first).
pub fn reversal(writes: &[Record], now: &Document) -> Reversal {
    let mut out = Reversal::default();
    let mut first_before: Map<String, Value> = Map::new();
    let mut last_after: Map<String, Value> = Map::new();
    for r in writes {
        for (k, v) in &r.before {
            first_before.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &r.after {
            last_after.insert(k.clone(), v.clone());
        }
    }
    for (k, ours) in &last_after {
        let is_now = field(now, k);
        if &is_now == ours {
            if let Some(before) = first_before.get(k) {
                out.restore.insert(k.clone(), before.clone());
            }
        } else {
            out.kept
                .push(format!("{k}: changed since our write, left as it is"));
        }
    }
    let mut first: Vec<&FieldChange> = Vec::new();
    let mut last: Vec<&FieldChange> = Vec::new();
    for c in writes.iter().flat_map(|r| &r.custom_fields) {
        if !first.iter().any(|f| f.field == c.field) {
            first.push(c);
        }
        last.retain(|f| f.field != c.field);
        last.push(c);
    }
    for ours in last {
        let Some(orig) = first.iter().find(|f| f.field == ours.field) else {
            continue;
        };
        if now.field_value(ours.field) != Some(&ours.after) {
            out.kept.push(format!(
                "custom field {}: changed since our write, left as it is",
                ours.field
            ));
        } else if orig.had {
            out.restore_fields
                .insert(ours.field.to_string(), orig.before.clone());
        } else {
            out.remove_fields.push(ours.field);
        }
    }
    let mut added: Vec<i64> = writes.iter().flat_map(|r| r.added_tags.clone()).collect();
    added.sort_unstable();
    added.dedup();
    out.remove_tags = added.into_iter().filter(|t| now.tags.contains(t)).collect();
    out
}

fn ends_torn(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The journal of one Paperless instance (in memory only without a data folder).
pub struct Journal {
    path: Option<PathBuf>,
    /// Without a file, the records themselves; with one, serialises appends.
    memory: Mutex<Vec<Record>>,
}

impl Journal {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            memory: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    fn write_error(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError::Write {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason: e.to_string(),
        }
    }

    /// Appends `record` and flushes it to disk.
    pub fn record(&self, record: &Record) -> Result<(), JournalError> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else {
            memory.push(record.clone());
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.write_error(e))?;
        }
        let mut line = serde_json::to_string(record).map_err(|e| self.write_error(e))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| self.write_error(e))?;
        // A line a crash cut off must not swallow this one.
        if ends_torn(&mut f).map_err(|e| self.write_error(e))? {
            line.insert(0, '\n');
        }
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| self.write_error(e))
    }

    /// Every record, oldest first. A line cut off by a crash is skipped.
    pub fn records(&self) -> Result<Vec<Record>, JournalError> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else {
            return Ok(memory.clone());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(JournalError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Our writes to `document_id` since its last undo, oldest first.
    pub fn pending_writes(&self, document_id: i64) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::new();
        for r in self.records()? {
            if r.document_id != document_id {
                continue;
            }
            match r.action {
                Action::Write => out.push(r),
                Action::Undo => out.clear(),
                // Nothing of the document was changed but the review tag, which stays.
                Action::Park => {}
            }
        }
        Ok(out)
    }

    /// The suggestion parked for review of `document_id`, if one waits (a later write or
    /// undo settles it).
    pub fn parked(&self, document_id: i64) -> Result<Option<Suggestion>, JournalError> {
        Ok(self
            .records()?
            .into_iter()
            .rfind(|r| r.document_id == document_id && r.trigger != "give_up")
            .filter(|r| r.action == Action::Park)
            .and_then(|r| r.suggestion))
    }

    /// The records of one document (all of them when None), oldest first.
    pub fn history(&self, document_id: Option<i64>) -> Result<Vec<Record>, JournalError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| document_id.is_none_or(|d| d == r.document_id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(title: &str, ty: Option<i64>, tags: &[i64]) -> Document {
        Document {
            id: 7,
            title: title.into(),
            content: String::new(),
            tags: tags.to_vec(),
            correspondent: None,
            document_type: ty,
            created: Some("2024-01-02".into()),
            original_file_name: None,
            owner: None,
            permissions: None,
            storage_path: None,
            custom_fields: vec![],
        }
    }

    fn write(before: Value, after: Value, added: &[i64]) -> Record {
        Record {
            at: String::new(),
            document_id: 7,
            action: Action::Write,
            trigger: "poll".into(),
            before: before.as_object().unwrap().clone(),
            after: after.as_object().unwrap().clone(),
            added_tags: added.to_vec(),
            removed_tags: vec![],
            reason: None,
            suggestion: None,
            custom_fields: vec![],
        }
    }

    #[test]
    fn undo_takes_back_only_what_is_still_ours() {
        let w = write(
            json!({"title": "scan-001", "document_type": null}),
            json!({"title": "Acme Invoice", "document_type": 3}),
            &[4, 5],
        );
        // The user since renamed it and added tag 9; tag 5 they removed themselves.
        let now = doc("My own title", Some(3), &[4, 9]);
        let r = reversal(&[w], &now);
        assert_eq!(
            r.restore,
            json!({"document_type": null}).as_object().unwrap().clone()
        );
        assert_eq!(r.remove_tags, vec![4]);
        assert_eq!(r.kept.len(), 1, "{:?}", r.kept);
    }

    #[test]
    fn undo_of_custom_fields_puts_back_only_what_still_holds_our_value() {
        let mut before = doc("t", None, &[]);
        before.custom_fields = vec![
            super::super::client::FieldValue {
                field: 1,
                value: Value::Null,
            },
            super::super::client::FieldValue {
                field: 3,
                value: Value::Null,
            },
        ];
        let set = json!({"1": "EUR12.50", "2": "R-1", "3": "2024-01-01"});
        let mut w = write(json!({}), json!({}), &[]);
        w.custom_fields = field_changes(&before, set.as_object().unwrap());
        assert!(w
            .custom_fields
            .iter()
            .find(|c| c.field == 2)
            .is_some_and(|c| !c.had));
        // The user changed field 3 since.
        let mut now = doc("t", None, &[]);
        now.custom_fields = [
            (1, json!("EUR12.50")),
            (2, json!("R-1")),
            (3, json!("2024-02-02")),
        ]
        .into_iter()
        .map(|(field, value)| super::super::client::FieldValue { field, value })
        .collect();
        let r = reversal(&[w], &now);
        assert_eq!(
            r.restore_fields,
            json!({"1": null}).as_object().unwrap().clone()
        );
        assert_eq!(r.remove_fields, vec![2]);
        assert_eq!(r.kept.len(), 1, "{:?}", r.kept);
    }

    #[test]
    fn several_writes_go_back_to_the_first_before() {
        let a = write(json!({"title": "a"}), json!({"title": "b"}), &[]);
        let b = write(json!({"title": "b"}), json!({"title": "c"}), &[2]);
        let r = reversal(&[a, b], &doc("c", None, &[2]));
        assert_eq!(r.restore["title"], json!("a"));
        assert_eq!(r.remove_tags, vec![2]);
    }

    #[test]
    fn the_file_survives_and_an_undo_closes_the_pending_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let j = Journal::new(Some(path.clone()));
        j.record(&write(json!({}), json!({}), &[1])).unwrap();
        assert_eq!(
            Journal::new(Some(path.clone()))
                .pending_writes(7)
                .unwrap()
                .len(),
            1
        );
        let mut undo = write(json!({}), json!({}), &[]);
        undo.action = Action::Undo;
        j.record(&undo).unwrap();
        // A torn last line (a crash mid-append) is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"at\":")
            .unwrap();
        let j = Journal::new(Some(path));
        assert!(j.pending_writes(7).unwrap().is_empty());
        j.record(&write(json!({}), json!({}), &[3])).unwrap();
        assert_eq!(j.history(Some(7)).unwrap().len(), 3);
        assert_eq!(j.pending_writes(7).unwrap()[0].added_tags, vec![3]);
    }

    #[test]
    fn a_parked_suggestion_waits_until_a_write_or_undo_settles_it() {
        let j = Journal::new(None);
        let s = Suggestion {
            title: "Wasser".into(),
            correspondent: None,
            document_type: Some("Bill".into()),
            tags: vec![],
            ..Suggestion::default()
        };
        let park = Record {
            action: Action::Park,
            suggestion: Some(s.clone()),
            ..write(json!({}), json!({}), &[])
        };
        assert_eq!(j.parked(7).unwrap(), None);
        j.record(&park).unwrap();
        assert_eq!(j.parked(7).unwrap(), Some(s.clone()));
        assert_eq!(j.parked(8).unwrap(), None, "another document's");
        j.record(&write(json!({}), json!({}), &[])).unwrap();
        assert_eq!(j.parked(7).unwrap(), None, "written");
        j.record(&park).unwrap();
        assert_eq!(j.parked(7).unwrap(), Some(s));
    }
}
