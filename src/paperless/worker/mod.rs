//! What makes documents get classified: a queue fed by webhooks (and the post-consume
//! script, which calls the same endpoint), a poller for documents without the ai-processed
//! tag, and direct requests. One document at a time: the engine has the cores anyway.
//!
//! Loops through Paperless's "Document Updated" webhooks (every write fires one) end in three
//! ways: an id already queued is not queued twice, an id processed in the last minutes is
//! ignored, and a document carrying the ai-processed tag is skipped without any write.

mod queue;
mod report;
mod undo;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::paperless::apply::{self, Applied, Policy};
use crate::paperless::archive::Archive;
use crate::paperless::classifier::{self, Classifier};
use crate::paperless::client::{Document, PaperlessClient, PaperlessError};
use crate::paperless::journal::{self, Action, Journal, Record};
use crate::paperless::neighbours::{Neighbours, NoNeighbours};
use crate::paperless::types::{by_name, Named, Suggestion, Taxonomy};

pub use queue::Enqueued;
use queue::{Job, QueueState};
pub use report::{Outcome, ProcessError, Report, Timings, Trigger};
pub use undo::UndoReport;

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub token: String,
    /// Model that classifies (the connector's OLLAMA_MODEL).
    pub model: String,
    pub num_ctx: Option<usize>,
    /// PROCESS_PREDEFINED_DOCUMENTS: only documents carrying one of these tags.
    pub only_tags: Vec<String>,
    pub policy: Policy,
    /// None: no polling.
    pub scan_interval: Option<Duration>,
    pub dry_run: bool,
    /// Pause before retrying a document after a transient failure (doubled each time).
    pub retry_delay: Duration,
    /// Documents waiting at most; a webhook beyond it is answered 503.
    pub queue_capacity: usize,
    /// Tag for documents given up on (created when first needed); None = never tag them.
    pub failed_tag: Option<String>,
    /// Failed attempts (transient failures; a permanent one counts as all) before giving up.
    pub max_attempts: u32,
    /// Review mode: suggestions are parked under this tag and applied once the user removes
    /// it (None: written at once).
    pub review_tag: Option<String>,
    /// The sentence encoder for neighbours and the meaning of names (None: without).
    pub embed_model: Option<String>,
    /// Where the archive index is kept (None: in memory only).
    pub data_dir: Option<std::path::PathBuf>,
    /// Custom fields to extract and fill, by name (CANDLELIGHT_CUSTOM_FIELDS; none by default).
    pub custom_fields: Vec<String>,
}

struct Inner {
    client: PaperlessClient,
    classifier: Classifier,
    /// The owner's labelled documents (with an encoder).
    archive: Option<Archive>,
    /// Every change we make to a document, for review and undo.
    journal: Journal,
    settings: Settings,
    metrics: Metrics,
    queue: Mutex<QueueState>,
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

/// Handle to the Paperless side of the process (cheap to clone).
#[derive(Clone)]
pub struct Paperless(Arc<Inner>);

impl Paperless {
    pub fn new(
        engine: Engine,
        settings: Settings,
        metrics: Metrics,
    ) -> Result<Paperless, PaperlessError> {
        let client = PaperlessClient::new(&settings.url, &settings.token)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let archive = match &settings.embed_model {
            Some(model) => {
                let file = settings
                    .data_dir
                    .as_ref()
                    .map(|d| d.join(format!("archive-{}.json", instance_key(&settings.url))));
                match Archive::open(file, model) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::error!(error = %e, "archive index unusable: classifying without it");
                        None
                    }
                }
            }
            None => None,
        };
        let journal = Journal::new(
            settings
                .data_dir
                .as_ref()
                .map(|d| d.join(format!("journal-{}.jsonl", instance_key(&settings.url)))),
        );
        Ok(Paperless(Arc::new(Inner {
            client,
            archive,
            journal,
            classifier: Classifier::new(engine, settings.embed_model.as_deref()),
            settings,
            metrics,
            queue: Mutex::new(QueueState::default()),
            tx,
            rx: Mutex::new(Some(rx)),
        })))
    }

    pub fn client(&self) -> &PaperlessClient {
        &self.0.client
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The instance's taxonomy, with its storage paths when they are written and the custom
    /// fields the owner enabled (only then: each is one more request per document).
    async fn taxonomy(&self) -> Result<Taxonomy, PaperlessError> {
        let c = &self.0.client;
        let mut t = c.taxonomy().await?;
        if self.0.settings.policy.write.storage_path {
            t.storage_paths = c.storage_paths().await?;
        }
        let wanted = &self.0.settings.custom_fields;
        if !wanted.is_empty() {
            let defined = c.custom_fields().await?;
            for name in wanted {
                match crate::paperless::fields::by_name(&defined, name) {
                    Some(f) if !t.custom_fields.contains(f) => t.custom_fields.push(f.clone()),
                    Some(_) => {}
                    None => tracing::warn!(
                        field = name.as_str(),
                        "CANDLELIGHT_CUSTOM_FIELDS names a custom field this Paperless does not \
                         have: create it in Paperless (Custom fields) or fix the name"
                    ),
                }
            }
        }
        Ok(t)
    }

    fn ai_tag<'a>(&self, t: &'a Taxonomy) -> Option<&'a Named> {
        by_name(&t.tags, self.0.settings.policy.ai_tag.as_deref()?)
    }

    fn failed_tag<'a>(&self, t: &'a Taxonomy) -> Option<&'a Named> {
        by_name(&t.tags, self.0.settings.failed_tag.as_deref()?)
    }

    fn only_tag_ids(&self, t: &Taxonomy) -> Vec<i64> {
        let wanted: Vec<String> = self
            .0
            .settings
            .only_tags
            .iter()
            .map(|s| s.to_lowercase())
            .collect();
        t.tags
            .iter()
            .filter(|n| wanted.contains(&n.name.to_lowercase()))
            .map(|n| n.id)
            .collect()
    }

    /// The document right after a webhook may not be committed yet (the webhook task is
    /// queued inside the consumption transaction): a 404 is retried briefly.
    async fn fetch(&self, id: i64, trigger: Trigger) -> Result<Document, PaperlessError> {
        let mut wait = Duration::from_millis(500);
        for _ in 0..4 {
            match self.0.client.document(id).await {
                Err(PaperlessError::NotFound(_)) if trigger == Trigger::Webhook => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        self.0.client.document(id).await
    }

    /// Classifies one document and writes the result back. `force` ignores the ai-processed
    /// tag and the TAGS selection (an explicit request); `dry_run` None = the configured one.
    pub async fn process(
        &self,
        id: i64,
        trigger: Trigger,
        force: bool,
        dry_run: Option<bool>,
    ) -> Result<Report, ProcessError> {
        let start = Instant::now();
        let dry_run = dry_run.unwrap_or(self.0.settings.dry_run);
        let result = self.process_inner(id, trigger, force, dry_run, start).await;
        let seconds = start.elapsed().as_secs_f64();
        match &result {
            Ok(r) => {
                let outcome = r.outcome.as_str();
                self.0.metrics.document(outcome, trigger.as_str(), seconds);
                let s = r.suggestion.as_ref();
                tracing::info!(
                    document = id,
                    trigger = trigger.as_str(),
                    outcome,
                    reason = r.reason.as_deref().unwrap_or(""),
                    seconds,
                    title = s.map(|s| s.title.as_str()).unwrap_or(""),
                    correspondent = s.and_then(|s| s.correspondent.as_deref()).unwrap_or(""),
                    document_type = s.and_then(|s| s.document_type.as_deref()).unwrap_or(""),
                    "paperless document done"
                );
            }
            Err(e) => {
                self.0.metrics.document("failed", trigger.as_str(), seconds);
                if let ProcessError::Paperless(p) = e {
                    self.0
                        .metrics
                        .paperless
                        .api_errors
                        .get_or_create(&crate::metrics::ErrorLabels {
                            kind: p.kind().to_owned(),
                        })
                        .inc();
                }
                tracing::warn!(document = id, trigger = trigger.as_str(), seconds, error = %e,
                    "paperless document failed; it stays unmarked");
            }
        }
        result
    }

    async fn process_inner(
        &self,
        id: i64,
        trigger: Trigger,
        force: bool,
        dry_run: bool,
        start: Instant,
    ) -> Result<Report, ProcessError> {
        let doc = self.fetch(id, trigger).await?;
        let taxonomy = self.taxonomy().await?;
        let mut timings = Timings {
            fetch_ms: ms(start.elapsed()),
            ..Timings::default()
        };
        let skip = |reason: &str, timings: Timings| Report {
            document_id: id,
            outcome: Outcome::Skipped,
            reason: Some(reason.to_owned()),
            suggestion: None,
            explanation: None,
            applied: None,
            prompt_tokens: 0,
            output_tokens: 0,
            truncated: false,
            timings: Timings {
                total_ms: ms(start.elapsed()),
                ..timings
            },
        };
        let ai_tag = self.ai_tag(&taxonomy).map(|n| n.id);
        let failed_tag = self.failed_tag(&taxonomy).map(|n| n.id);
        let review_tag = self.review_tag(&taxonomy).map(|n| n.id);
        let only = self.only_tag_ids(&taxonomy);
        let under_review = review_tag.is_some_and(|t| doc.tags.contains(&t));
        if !force {
            if ai_tag.is_some_and(|t| doc.tags.contains(&t)) {
                return Ok(skip("already processed", timings));
            }
            if failed_tag.is_some_and(|t| doc.tags.contains(&t)) {
                return Ok(skip(
                    "classification failed before: remove the failure tag to try again",
                    timings,
                ));
            }
            if !self.0.settings.only_tags.is_empty() && !doc.tags.iter().any(|t| only.contains(t)) {
                return Ok(skip("not tagged for processing (TAGS)", timings));
            }
            if under_review {
                return Ok(skip(
                    "waiting for review: remove the review tag to apply the suggestion",
                    timings,
                ));
            }
        }
        // Review mode: a suggestion parked earlier is applied once the user removed the tag.
        let parked = match (&self.0.settings.review_tag, under_review) {
            (Some(_), false) => self.0.journal.parked(id)?,
            _ => None,
        };
        let from_review = parked.is_some();
        // Review mode parks a fresh classification instead of writing it.
        let park = self.0.settings.review_tag.is_some() && !from_review;
        // No invented metadata for a blank scan or OCR noise: the failure tag says why.
        if !super::evidence::readable(&doc.content) {
            return Err(ProcessError::NoText);
        }
        // A document is offered only names its owner may see (an unowned document, which
        // every user sees, any name): one user's private names never reach another's
        // documents. The marker and selection tags are workflow state, not something a
        // document is about.
        let visible = match doc.owner {
            Some(owner) => taxonomy.visible_to(&self.0.client.viewer(owner).await?),
            None => taxonomy.clone(),
        };
        // What names are written as: the visible objects (another owner may have one of the
        // same name) and the marker tags, wherever they are.
        let workflow_tags = [ai_tag, failed_tag, review_tag];
        let mut scope = visible.clone();
        for t in taxonomy.tags.iter() {
            if workflow_tags.contains(&Some(t.id)) && !scope.tags.contains(t) {
                scope.tags.push(t.clone());
            }
        }
        let choices = Taxonomy {
            tags: visible
                .tags
                .iter()
                .filter(|t| !workflow_tags.contains(&Some(t.id)))
                .filter(|t| !only.contains(&t.id))
                .cloned()
                .collect(),
            ..visible.clone()
        };
        let policy = &self.0.settings.policy;
        let t = Instant::now();
        // The owner's labelled documents; a document never learns from itself, nor from
        // documents of another owner.
        let view = self.0.archive.as_ref().map(|a| a.view(doc.owner, &choices));
        let neighbours: &dyn Neighbours = match &view {
            Some(v) => v,
            None => &NoNeighbours,
        };
        let own_id = id.to_string();
        let c = match parked {
            Some(suggestion) => Classified {
                suggestion,
                explanation: None,
                prompt_tokens: 0,
                output_tokens: 0,
                truncated: false,
            },
            None => {
                let c = self
                    .0
                    .classifier
                    .classify(classifier::Job {
                        model: &self.0.settings.model,
                        taxonomy: &choices,
                        content: &doc.content,
                        num_ctx: self.0.settings.num_ctx,
                        new_correspondent: policy.create_correspondents
                            && policy.write.correspondent,
                        neighbours,
                        id: Some(&own_id),
                        fields: &choices.custom_fields,
                    })
                    .await
                    .map_err(ProcessError::Classify)?;
                Classified {
                    suggestion: c.suggestion,
                    explanation: Some(c.explanation),
                    prompt_tokens: c.prompt_tokens,
                    output_tokens: c.output_tokens,
                    truncated: c.truncated,
                }
            }
        };
        timings.classify_ms = ms(t.elapsed());
        let t = Instant::now();
        // Classifying takes seconds to tens of seconds: decide what the user has set on the
        // document as it is now, not as it was before.
        let doc = self.0.client.document(id).await?;
        let plan = apply::plan(
            &self.0.client,
            &doc,
            &c.suggestion,
            &scope,
            &self.0.settings.policy,
            dry_run || park,
        )
        .await?;
        if park && !dry_run && plan.writes_anything() {
            return self
                .park(id, trigger, &doc, c, plan.applied, timings, start)
                .await;
        }
        if !dry_run && plan.writes_anything() {
            // Recorded first: a write cut off midway can still be reviewed and undone.
            self.0.journal.record(&Record {
                at: chrono::Utc::now().to_rfc3339(),
                document_id: id,
                action: Action::Write,
                trigger: trigger.as_str().to_owned(),
                before: journal::current(&doc, &plan.applied.fields),
                after: plan.applied.fields.clone(),
                added_tags: plan.new_tags.iter().copied().chain(plan.mark).collect(),
                removed_tags: Vec::new(),
                reason: None,
                suggestion: None,
                custom_fields: journal::field_changes(&doc, &plan.set_fields),
            })?;
            apply::write(&self.0.client, id, &plan).await?;
        }
        let applied = plan.applied;
        timings.apply_ms = ms(t.elapsed());
        if !dry_run && applied.changed_anything() {
            // These labels are ours until someone edits the document: not learned from.
            if let Some(a) = &self.0.archive {
                a.wrote(id);
                if let Err(e) = a.save() {
                    tracing::warn!(error = %e, "archive index not saved");
                }
            }
        }
        timings.total_ms = ms(start.elapsed());
        let outcome = if dry_run {
            Outcome::DryRun
        } else if applied.changed_anything() {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        };
        Ok(Report {
            document_id: id,
            outcome,
            reason: from_review.then(|| "the parked suggestion, reviewed".to_owned()),
            suggestion: Some(c.suggestion),
            explanation: c.explanation,
            applied: Some(applied),
            prompt_tokens: c.prompt_tokens,
            output_tokens: c.output_tokens,
            truncated: c.truncated,
            timings,
        })
    }
}

/// A suggestion to write: just classified, or parked for review earlier.
struct Classified {
    suggestion: Suggestion,
    /// None for a parked suggestion (its explanation was reported when it was parked).
    explanation: Option<classifier::Explanation>,
    prompt_tokens: usize,
    output_tokens: usize,
    truncated: bool,
}

impl Paperless {
    /// Review mode: keeps the suggestion in the journal and puts the review tag on the
    /// document instead of writing; the fields are written once the user removes the tag.
    #[allow(clippy::too_many_arguments)]
    async fn park(
        &self,
        id: i64,
        trigger: Trigger,
        doc: &super::client::Document,
        c: Classified,
        would: Applied,
        mut timings: Timings,
        start: Instant,
    ) -> Result<Report, ProcessError> {
        let name = self.0.settings.review_tag.as_deref().unwrap_or_default();
        let tag = self.0.client.marker_tag(name).await?;
        self.0.journal.record(&Record {
            at: chrono::Utc::now().to_rfc3339(),
            document_id: id,
            action: Action::Park,
            trigger: trigger.as_str().to_owned(),
            before: journal::current(doc, &would.fields),
            after: would.fields.clone(),
            added_tags: vec![tag.id],
            removed_tags: Vec::new(),
            reason: None,
            suggestion: Some(c.suggestion.clone()),
            custom_fields: Vec::new(),
        })?;
        self.0.client.add_tags(id, &[tag.id]).await?;
        timings.total_ms = ms(start.elapsed());
        Ok(Report {
            document_id: id,
            outcome: Outcome::Parked,
            reason: Some(format!(
                "parked for review: remove the tag '{name}' to apply the suggestion"
            )),
            suggestion: Some(c.suggestion),
            explanation: c.explanation,
            applied: Some(would),
            prompt_tokens: c.prompt_tokens,
            output_tokens: c.output_tokens,
            truncated: c.truncated,
            timings,
        })
    }

    fn review_tag<'a>(&self, t: &'a Taxonomy) -> Option<&'a Named> {
        by_name(&t.tags, self.0.settings.review_tag.as_deref()?)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A short stable name for a Paperless instance (its URL), for the index file's name.
fn instance_key(url: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(url.trim_end_matches('/').as_bytes());
    hex::encode(&digest[..6])
}
