//! What processing one document gives: its trigger, outcome, timings and report, and the
//! errors that end it.

use serde::Serialize;

use crate::engine::EngineError;
use crate::paperless::apply::Applied;
use crate::paperless::classifier::{self, ClassifyError};
use crate::paperless::client::PaperlessError;
use crate::paperless::journal::JournalError;
use crate::paperless::types::Suggestion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Webhook,
    Poll,
    Api,
    Cli,
}

impl Trigger {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Poll => "poll",
            Trigger::Api => "api",
            Trigger::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Something was written.
    Applied,
    /// Classified, but the document already had everything: nothing written.
    Unchanged,
    /// Not classified (already processed, not selected, no text).
    Skipped,
    DryRun,
    /// Review mode: the suggestion waits for the user under the review tag.
    Parked,
}

impl Outcome {
    /// The same words as the JSON (`serde(rename_all)`), for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::DryRun => "dry_run",
            Outcome::Parked => "parked",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub fetch_ms: u64,
    pub classify_ms: u64,
    pub apply_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub document_id: i64,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub suggestion: Option<Suggestion>,
    /// Why each field has its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<classifier::Explanation>,
    pub applied: Option<Applied>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub truncated: bool,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Paperless(#[from] PaperlessError),
    #[error(transparent)]
    Classify(ClassifyError),
    #[error(
        "the document has no readable text to classify (is it a blank scan, or did OCR fail?)"
    )]
    NoText,
    /// A write we could not record is a write nobody could undo: not made.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl ProcessError {
    /// The metric label and log word for giving up on a document.
    pub fn reason(&self) -> &'static str {
        match self {
            ProcessError::NoText => "no_text",
            ProcessError::Paperless(_) => "paperless",
            ProcessError::Classify(ClassifyError::Engine(EngineError::ContextOverflow {
                ..
            })) => "does_not_fit",
            ProcessError::Classify(ClassifyError::Engine(_)) => "engine",
            ProcessError::Classify(_) => "answer",
            ProcessError::Journal(_) => "journal",
        }
    }

    pub(super) fn is_transient(&self) -> bool {
        match self {
            ProcessError::Paperless(e) => e.is_transient(),
            ProcessError::Classify(ClassifyError::Engine(e)) => {
                matches!(e, EngineError::Overloaded(_) | EngineError::WorkerGone)
            }
            // The data folder is the operator's to fix; the document is not at fault.
            ProcessError::Journal(_) => true,
            ProcessError::Classify(_) | ProcessError::NoText => false,
        }
    }
}
