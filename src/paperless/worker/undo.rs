//! Undo: every change we made to a document, put back from the journal.

use serde::Serialize;

use crate::paperless::journal::{self, Action, FieldChange, JournalError, Record};

use super::report::{ProcessError, Trigger};
use super::Paperless;

/// What an undo did to one document.
#[derive(Debug, Clone, Serialize)]
pub struct UndoReport {
    pub document_id: i64,
    /// `undone`, or `nothing_to_undo` (no write of ours since the last undo, or every change
    /// was edited by the user since).
    pub outcome: &'static str,
    /// Our writes taken back.
    pub writes: usize,
    /// Fields set back, with the values they have again.
    pub restored: serde_json::Map<String, serde_json::Value>,
    /// Names of the tags removed.
    pub removed_tags: Vec<String>,
    /// Custom fields set back (by id, with the values they have again) or taken off.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub restored_fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_fields: Vec<i64>,
    /// What was left as it is, and why.
    pub kept: Vec<String>,
}

impl Paperless {
    /// The journal's records of one document (of all when None), oldest first.
    pub fn history(&self, id: Option<i64>) -> Result<Vec<Record>, JournalError> {
        self.0.journal.history(id)
    }

    /// Takes back our writes to document `id` since its last undo: fields that still hold our
    /// values get their earlier ones back, tags we added are removed; what the user changed
    /// since stays, and so does the ai-processed marker (polling would classify it again).
    pub async fn undo(&self, id: i64, trigger: Trigger) -> Result<UndoReport, ProcessError> {
        let writes = self.0.journal.pending_writes(id)?;
        let doc = self.0.client.document(id).await?;
        let taxonomy = self.0.client.taxonomy().await?;
        let marker = self.ai_tag(&taxonomy).map(|n| n.id);
        let mut rev = journal::reversal(&writes, &doc);
        if let Some(m) = marker.filter(|m| rev.remove_tags.contains(m)) {
            rev.remove_tags.retain(|t| *t != m);
            rev.kept.push(format!(
                "tag {}: kept, so the document is not classified again (remove it to have it \
                 classified again)",
                self.0.settings.policy.ai_tag.as_deref().unwrap_or_default()
            ));
        }
        let name = |t: &i64| {
            taxonomy
                .tags
                .iter()
                .find(|n| n.id == *t)
                .map_or_else(|| t.to_string(), |n| n.name.clone())
        };
        let mut report = UndoReport {
            document_id: id,
            outcome: "nothing_to_undo",
            writes: writes.len(),
            restored: rev.restore.clone(),
            removed_tags: rev.remove_tags.iter().map(name).collect(),
            restored_fields: rev.restore_fields.clone(),
            removed_fields: rev.remove_fields.clone(),
            kept: rev.kept.clone(),
        };
        if writes.is_empty() {
            report
                .kept
                .push("no write of ours to undo since the last undo".to_owned());
            return Ok(report);
        }
        if !rev.restore.is_empty() {
            self.0
                .client
                .patch(id, &serde_json::Value::Object(rev.restore.clone()))
                .await?;
        }
        self.0
            .client
            .modify_custom_fields(id, &rev.restore_fields, &rev.remove_fields)
            .await?;
        self.0.client.remove_tags(id, &rev.remove_tags).await?;
        // Recorded once done: an undo cut off midway is simply asked for again (what it
        // already restored no longer holds our values and is left alone).
        self.0.journal.record(&Record {
            at: chrono::Utc::now().to_rfc3339(),
            document_id: id,
            action: Action::Undo,
            trigger: trigger.as_str().to_owned(),
            before: journal::current(&doc, &rev.restore),
            after: rev.restore.clone(),
            added_tags: Vec::new(),
            removed_tags: rev.remove_tags.clone(),
            reason: None,
            suggestion: None,
            custom_fields: rev
                .restore_fields
                .iter()
                .filter_map(|(k, v)| {
                    let field = k.parse().ok()?;
                    Some(FieldChange {
                        field,
                        had: true,
                        before: doc.field_value(field).cloned().unwrap_or_default(),
                        after: v.clone(),
                    })
                })
                .collect(),
        })?;
        if !rev.is_empty() {
            report.outcome = "undone";
        }
        tracing::info!(
            document = id,
            trigger = trigger.as_str(),
            writes = writes.len(),
            restored = rev.restore.len(),
            removed_tags = rev.remove_tags.len(),
            "paperless document undone"
        );
        Ok(report)
    }
}
