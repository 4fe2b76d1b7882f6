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
    /// What is left as it is, and why.
    pub kept: Vec<String>,
}

impl Reversal {
    pub fn is_empty(&self) -> bool {
        self.restore.is_empty() && self.remove_tags.is_empty()
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
            created: None,
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
