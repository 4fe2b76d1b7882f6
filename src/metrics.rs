//! The process's Prometheus metrics: one registry, owned by whoever starts the server (no
//! global recorder), rendered as OpenMetrics text on `GET /metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocumentLabels {
    /// applied, unchanged, skipped, failed, dry_run
    pub outcome: String,
    /// webhook, poll, api, cli
    pub trigger: String,
}

/// Paperless classification: one counter per outcome, one latency histogram, the queue.
#[derive(Clone)]
pub struct PaperlessMetrics {
    pub documents: Family<DocumentLabels, Counter>,
    pub document_seconds: Histogram,
    pub queue_depth: Gauge,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub paperless: PaperlessMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("candlelight");
        let paperless = PaperlessMetrics {
            documents: Family::default(),
            // 0.25 s … ~2 min: a document takes seconds on a GPU, tens of seconds on a CPU.
            document_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.25, 2.0, 10),
            ),
            queue_depth: Gauge::default(),
        };
        registry.register(
            "paperless_documents",
            "Paperless documents handled, by outcome and trigger",
            paperless.documents.clone(),
        );
        registry.register(
            "paperless_document_seconds",
            "Time per Paperless document: fetch, classify and write back",
            paperless.document_seconds.clone(),
        );
        registry.register(
            "paperless_queue_depth",
            "Paperless documents waiting to be classified",
            paperless.queue_depth.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            paperless,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn document(&self, outcome: &str, trigger: &str, seconds: f64) {
        self.paperless
            .documents
            .get_or_create(&DocumentLabels {
                outcome: outcome.to_owned(),
                trigger: trigger.to_owned(),
            })
            .inc();
        self.paperless.document_seconds.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::new();
        m.document("applied", "webhook", 3.2);
        let text = m.render();
        assert!(
            text.contains(
                "candlelight_paperless_documents_total{outcome=\"applied\",trigger=\"webhook\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("candlelight_paperless_document_seconds_count 1"));
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
