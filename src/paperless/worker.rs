//! What makes documents get classified: a queue fed by webhooks (and the post-consume
//! script, which calls the same endpoint), a poller for documents without the ai-processed
//! tag, and direct requests. One document at a time: the engine has the cores anyway.
//!
//! Loops through Paperless's "Document Updated" webhooks (every write fires one) end in three
//! ways: an id already queued is not queued twice, an id processed in the last minutes is
//! ignored, and a document carrying the ai-processed tag is skipped without any write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::apply::{self, Applied, Policy};
use super::archive::Archive;
use super::classifier::{self, Classifier, ClassifyError};
use super::client::{Document, PaperlessClient, PaperlessError};
use super::journal::{self, Action, Journal, JournalError, Record};
use super::neighbours::{Neighbours, NoNeighbours};
use super::types::{by_name, Named, Suggestion, Taxonomy};
use crate::engine::{Engine, EngineError};
use crate::metrics::Metrics;

/// Webhook events for a document processed this recently are its own echo: ignored.
const ECHO_WINDOW: Duration = Duration::from_secs(600);
/// Polling does not retry a document it already tried this recently (one that stays unmarked
/// because it has no text or the model's answer could not be written): no model run every
/// interval for the same document.
const POLL_BACKOFF: Duration = Duration::from_secs(3600);

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
}

/// How often the archive index follows Paperless when polling is off.
const ARCHIVE_REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Webhook,
    Poll,
    Api,
    Cli,
}

impl Trigger {
    fn as_str(self) -> &'static str {
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

    fn is_transient(&self) -> bool {
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

/// What became of an enqueue request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    Queued,
    AlreadyQueued,
    /// Processed moments ago: this event is (most likely) the echo of our own write.
    RecentlyProcessed,
    /// The queue holds `queue_capacity` documents already.
    Full,
}

struct Job {
    id: i64,
    trigger: Trigger,
    attempt: u32,
}

#[derive(Default)]
struct QueueState {
    queued: HashSet<i64>,
    processed_at: HashMap<i64, Instant>,
    /// Failed attempts per document since its last success (or since it was given up on).
    failures: HashMap<i64, u32>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.0.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn queue_capacity(&self) -> usize {
        self.0.settings.queue_capacity
    }

    /// Queues a document unless it is queued already, was just processed, or the queue is full.
    pub fn enqueue(&self, id: i64, trigger: Trigger) -> Enqueued {
        let mut q = self.lock();
        if q.queued.contains(&id) {
            return Enqueued::AlreadyQueued;
        }
        if q.queued.len() >= self.0.settings.queue_capacity.max(1) {
            return Enqueued::Full;
        }
        let window = match trigger {
            Trigger::Webhook => ECHO_WINDOW,
            Trigger::Poll => POLL_BACKOFF,
            Trigger::Api | Trigger::Cli => Duration::ZERO,
        };
        if q.processed_at
            .get(&id)
            .is_some_and(|t| t.elapsed() < window)
        {
            return Enqueued::RecentlyProcessed;
        }
        q.queued.insert(id);
        self.0
            .metrics
            .paperless
            .queue_depth
            .set(q.queued.len() as i64);
        let _ = self.0.tx.send(Job {
            id,
            trigger,
            attempt: 0,
        });
        Enqueued::Queued
    }

    /// Starts the queue consumer and, with a scan interval, the poller. Call once.
    pub fn start(&self) {
        let Some(mut rx) = self.0.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                me.run_job(job).await;
            }
        });
        if self.0.archive.is_some() {
            let me = self.clone();
            let every = self.0.settings.scan_interval.unwrap_or(ARCHIVE_REFRESH);
            tokio::spawn(async move {
                loop {
                    me.sync_archive().await;
                    tokio::time::sleep(every).await;
                }
            });
        }
        if let Some(every) = self.0.settings.scan_interval {
            if self.0.settings.policy.ai_tag.is_none() {
                tracing::warn!(
                    "polling is off: without ADD_AI_PROCESSED_TAG nothing tells processed \
                     documents apart (use the webhook or post-consume trigger)"
                );
                return;
            }
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = me.poll_once().await {
                        tracing::warn!(error = %e, "polling Paperless failed; trying again next interval");
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
    }

    /// Brings the archive index up to date (logged; a failure waits for the next round).
    pub async fn sync_archive(&self) {
        let (Some(archive), Some(encoder)) = (&self.0.archive, self.0.classifier.encoder()) else {
            return;
        };
        let synced = async {
            let taxonomy = self.0.client.taxonomy().await.map_err(|e| e.to_string())?;
            let ai = self.ai_tag(&taxonomy).map(|t| t.id);
            let mut workflow = self.only_tag_ids(&taxonomy);
            workflow.extend(self.failed_tag(&taxonomy).map(|t| t.id));
            archive
                .sync(&self.0.client, encoder, ai, &workflow)
                .await
                .map_err(|e| e.to_string())
        };
        match synced.await {
            Ok(s) if s.embedded + s.removed > 0 => tracing::info!(
                embedded = s.embedded,
                removed = s.removed,
                documents = s.total,
                "archive index updated"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archive index not updated; trying again later"),
        }
    }

    async fn run_job(&self, job: Job) {
        let result = self.process(job.id, job.trigger, false, None).await;
        let failures = {
            let mut q = self.lock();
            q.queued.remove(&job.id);
            // A parked document comes back when the user removes the review tag, however
            // soon: no backoff for it (the tag keeps polling away until then).
            if matches!(&result, Ok(r) if r.outcome == Outcome::Parked) {
                q.processed_at.remove(&job.id);
            } else {
                q.processed_at.insert(job.id, Instant::now());
            }
            q.processed_at.retain(|_, t| t.elapsed() < POLL_BACKOFF);
            self.0
                .metrics
                .paperless
                .queue_depth
                .set(q.queued.len() as i64);
            match &result {
                Ok(_) => {
                    q.failures.remove(&job.id);
                    0
                }
                Err(e) => {
                    let n = q.failures.entry(job.id).or_insert(0);
                    // A failure that trying again cannot fix counts as every attempt.
                    *n = if e.is_transient() {
                        *n + 1
                    } else {
                        self.0.settings.max_attempts
                    };
                    *n
                }
            }
        };
        if let Err(e) = result {
            if failures >= self.0.settings.max_attempts.max(1) {
                self.give_up(job.id, &e).await;
            } else if e.is_transient() {
                let me = self.clone();
                let delay = self.0.settings.retry_delay * 2u32.pow(job.attempt.min(8));
                tracing::warn!(document = job.id, error = %e, retry_in = ?delay, "will retry");
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut q = me.lock();
                    if q.queued.insert(job.id) {
                        q.processed_at.remove(&job.id);
                        let _ = me.0.tx.send(Job {
                            attempt: job.attempt + 1,
                            ..job
                        });
                    }
                });
            }
        }
    }

    /// Tags a document that cannot be classified with the failure tag, so that it is not
    /// tried again until someone removes the tag, and says why in the log and the metrics.
    async fn give_up(&self, id: i64, e: &ProcessError) {
        let reason = e.reason();
        self.0
            .metrics
            .paperless
            .given_up
            .get_or_create(&crate::metrics::ErrorLabels {
                kind: reason.to_owned(),
            })
            .inc();
        {
            let mut q = self.lock();
            q.failures.remove(&id);
            // The tag keeps it from being polled; removing the tag retries at the next poll.
            q.processed_at.remove(&id);
        }
        let Some(tag) = &self.0.settings.failed_tag else {
            tracing::error!(document = id, reason, error = %e,
                "giving up on this document (no CANDLELIGHT_FAILED_TAG to mark it)");
            return;
        };
        if self.0.settings.dry_run {
            tracing::error!(document = id, reason, error = %e, "giving up (dry run: not tagged)");
            return;
        }
        let tagged = async {
            let t = self
                .0
                .client
                .marker_tag(tag)
                .await
                .map_err(|pe| pe.to_string())?;
            self.0
                .journal
                .record(&Record {
                    at: chrono::Utc::now().to_rfc3339(),
                    document_id: id,
                    action: Action::Write,
                    trigger: "give_up".to_owned(),
                    before: serde_json::Map::new(),
                    after: serde_json::Map::new(),
                    added_tags: vec![t.id],
                    removed_tags: Vec::new(),
                    reason: Some(e.to_string()),
                    suggestion: None,
                })
                .map_err(|je| je.to_string())?;
            self.0
                .client
                .add_tags(id, &[t.id])
                .await
                .map_err(|pe| pe.to_string())
        };
        match tagged.await {
            Ok(()) => tracing::error!(document = id, reason, error = %e, tag,
                "giving up on this document: tagged; remove the tag to try again"),
            Err(te) => tracing::error!(document = id, reason, error = %e, tag_error = %te,
                "giving up on this document, but the failure tag could not be set"),
        }
    }

    /// Queues every document without the ai-processed tag (and, with
    /// PROCESS_PREDEFINED_DOCUMENTS, with one of the chosen tags). Documents with the failure
    /// tag wait until someone removes it.
    pub async fn poll_once(&self) -> Result<usize, PaperlessError> {
        let taxonomy = self.0.client.taxonomy().await?;
        let mut filter = Vec::new();
        let done: Vec<i64> = [
            self.ai_tag(&taxonomy),
            self.failed_tag(&taxonomy),
            self.review_tag(&taxonomy),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.id)
        .collect();
        if !done.is_empty() {
            filter.push(format!("tags__id__none={}", join(&done)));
        }
        if !self.0.settings.only_tags.is_empty() {
            let ids = self.only_tag_ids(&taxonomy);
            if ids.is_empty() {
                tracing::warn!(tags = ?self.0.settings.only_tags, "none of TAGS exists in Paperless: nothing to process");
                return Ok(0);
            }
            filter.push(format!("tags__id__in={}", join(&ids)));
        }
        let ids = self.0.client.document_ids(&filter.join("&")).await?;
        let mut queued = 0;
        for id in ids {
            match self.enqueue(id, Trigger::Poll) {
                Enqueued::Queued => queued += 1,
                Enqueued::Full => break,
                _ => {}
            }
        }
        if queued > 0 {
            tracing::info!(queued, "polling found unprocessed documents");
        }
        Ok(queued)
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
        let taxonomy = self.0.client.taxonomy().await?;
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
