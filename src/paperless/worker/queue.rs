//! The queue webhooks and polling feed, its consumer, retries and giving up.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::paperless::client::PaperlessError;
use crate::paperless::journal::{Action, Record};

use super::report::{Outcome, ProcessError, Trigger};
use super::{join, Paperless};

/// Webhook events for a document processed this recently are its own echo: ignored.
const ECHO_WINDOW: Duration = Duration::from_secs(600);
/// Polling does not retry a document it already tried this recently (one that stays unmarked
/// because it has no text or the model's answer could not be written): no model run every
/// interval for the same document.
const POLL_BACKOFF: Duration = Duration::from_secs(3600);

/// How often the archive index follows Paperless when polling is off.
const ARCHIVE_REFRESH: Duration = Duration::from_secs(300);

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

pub(super) struct Job {
    pub(super) id: i64,
    pub(super) trigger: Trigger,
    pub(super) attempt: u32,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) queued: HashSet<i64>,
    pub(super) processed_at: HashMap<i64, Instant>,
    /// Failed attempts per document since its last success (or since it was given up on).
    pub(super) failures: HashMap<i64, u32>,
}

impl Paperless {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
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
                    custom_fields: Vec::new(),
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
}
