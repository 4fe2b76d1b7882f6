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
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenerationLabels {
    pub model: String,
    /// stop, length, error, cancelled
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern (`/api/chat`, `/v1/models/{*model}`), `unmatched` for 404s.
    pub endpoint: String,
    pub method: String,
    pub status: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Inference, recorded where it happens (the model's worker thread) so that every caller —
/// Ollama and OpenAI endpoints, the classifier — is counted the same way.
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub generations: Family<GenerationLabels, Counter>,
    pub prompt_tokens: Family<ModelLabels, Counter>,
    /// Prompt tokens served from the prefix cache instead of being evaluated.
    pub cached_prompt_tokens: Family<ModelLabels, Counter>,
    pub generated_tokens: Family<ModelLabels, Counter>,
    pub time_to_first_token: Histogram,
    pub inter_token: Histogram,
    pub prefill_tokens_per_second: Family<ModelLabels, FloatGauge>,
    pub decode_tokens_per_second: Family<ModelLabels, FloatGauge>,
    pub running: Gauge,
    pub admitted: Gauge,
    pub model_load_seconds: Family<ModelLabels, FloatGauge>,
    pub constraint_mask_seconds: Histogram,
    pub constraint_forced_tokens: Counter,
}

impl EngineMetrics {
    fn new(registry: &mut Registry) -> Self {
        use prometheus_client::metrics::histogram::exponential_buckets;
        let m = EngineMetrics {
            http_requests: Family::default(),
            generations: Family::default(),
            prompt_tokens: Family::default(),
            cached_prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            // 10 ms … ~80 s: a warm GPU answers in tens of ms, a long CPU prefill in tens of s.
            time_to_first_token: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            // 1 ms … ~1 s per token.
            inter_token: Histogram::new(exponential_buckets(0.001, 2.0, 11)),
            prefill_tokens_per_second: Family::default(),
            decode_tokens_per_second: Family::default(),
            running: Gauge::default(),
            admitted: Gauge::default(),
            model_load_seconds: Family::default(),
            // 10 µs … ~160 ms.
            constraint_mask_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 15)),
            constraint_forced_tokens: Counter::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "generations",
            "Generations finished, by model and outcome",
            m.generations.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens, including those served from the prefix cache",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "prompt_cached_tokens",
            "Prompt tokens served from the prefix cache (not evaluated)",
            m.cached_prompt_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            m.generated_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From admission to the first streamed token (queue wait + prefill)",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "inter_token_seconds",
            "Between streamed tokens of one generation",
            m.inter_token.clone(),
        );
        registry.register(
            "prefill_tokens_per_second",
            "Prompt evaluation speed of the last generation",
            m.prefill_tokens_per_second.clone(),
        );
        registry.register(
            "decode_tokens_per_second",
            "Generation speed of the last generation",
            m.decode_tokens_per_second.clone(),
        );
        registry.register(
            "running_requests",
            "Generations running in a model slot",
            m.running.clone(),
        );
        registry.register(
            "admitted_requests",
            "Requests admitted and not finished (running + waiting; 503 beyond OLLAMA_MAX_QUEUE)",
            m.admitted.clone(),
        );
        registry.register(
            "model_load_seconds",
            "Time the last load of each model took",
            m.model_load_seconds.clone(),
        );
        registry.register(
            "constraint_mask_seconds",
            "Time of each full grammar mask computation in constrained decoding",
            m.constraint_mask_seconds.clone(),
        );
        registry.register(
            "constraint_forced_tokens",
            "Tokens appended because the grammar allowed only one",
            m.constraint_forced_tokens.clone(),
        );
        m
    }
}

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
    /// Failed Paperless calls by kind (unauthorized, unavailable, rejected, ...).
    pub api_errors: Family<ErrorLabels, Counter>,
    /// Documents given up on (tagged with the failure tag), by reason.
    pub given_up: Family<ErrorLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

/// Labels as DCGM exporter names them (`gpu`, `UUID`, `modelName`), so the two series can be
/// joined in one query.
pub type GpuLabels = [(&'static str, String); 3];

/// GPU gauges, in DCGM exporter's units (MiB, %, °C, W, MHz): `candlelight_gpu_fb_used_mib`
/// ↔ `DCGM_FI_DEV_FB_USED`, `..._fb_free_mib` ↔ `DCGM_FI_DEV_FB_FREE`, `..._util_percent` ↔
/// `DCGM_FI_DEV_GPU_UTIL`, `..._mem_copy_util_percent` ↔ `DCGM_FI_DEV_MEM_COPY_UTIL`,
/// `..._temp_celsius` ↔ `DCGM_FI_DEV_GPU_TEMP`, `..._power_watts` ↔ `DCGM_FI_DEV_POWER_USAGE`,
/// `..._sm_clock_mhz` ↔ `DCGM_FI_DEV_SM_CLOCK`.
#[derive(Clone, Default)]
pub struct GpuMetrics {
    pub available: Gauge,
    pub fb_total_mib: Family<GpuLabels, Gauge>,
    pub fb_used_mib: Family<GpuLabels, Gauge>,
    pub fb_free_mib: Family<GpuLabels, Gauge>,
    pub process_fb_used_mib: Family<GpuLabels, Gauge>,
    pub util_percent: Family<GpuLabels, Gauge>,
    pub mem_copy_util_percent: Family<GpuLabels, Gauge>,
    pub temp_celsius: Family<GpuLabels, Gauge>,
    pub power_watts: Family<GpuLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub sm_clock_mhz: Family<GpuLabels, Gauge>,
}

/// Names and help of the integer GPU gauges, in `GpuMetrics::integer_families` order.
const GPU_GAUGES: [(&str, &str); 8] = [
    ("gpu_fb_total_mib", "GPU memory installed, MiB"),
    (
        "gpu_fb_used_mib",
        "GPU memory used, MiB (DCGM_FI_DEV_FB_USED)",
    ),
    (
        "gpu_fb_free_mib",
        "GPU memory free, MiB (DCGM_FI_DEV_FB_FREE)",
    ),
    (
        "gpu_process_fb_used_mib",
        "GPU memory used by this process, MiB",
    ),
    (
        "gpu_util_percent",
        "GPU utilization, % (DCGM_FI_DEV_GPU_UTIL)",
    ),
    (
        "gpu_mem_copy_util_percent",
        "GPU memory utilization, % (DCGM_FI_DEV_MEM_COPY_UTIL)",
    ),
    (
        "gpu_temp_celsius",
        "GPU temperature, °C (DCGM_FI_DEV_GPU_TEMP)",
    ),
    ("gpu_sm_clock_mhz", "SM clock, MHz (DCGM_FI_DEV_SM_CLOCK)"),
];

impl GpuMetrics {
    fn integer_families(&self) -> [&Family<GpuLabels, Gauge>; 8] {
        [
            &self.fb_total_mib,
            &self.fb_used_mib,
            &self.fb_free_mib,
            &self.process_fb_used_mib,
            &self.util_percent,
            &self.mem_copy_util_percent,
            &self.temp_celsius,
            &self.sm_clock_mhz,
        ]
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub engine: EngineMetrics,
    pub paperless: PaperlessMetrics,
    pub gpu: GpuMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("candlelight");
        let engine = EngineMetrics::new(&mut registry);
        let paperless = PaperlessMetrics {
            documents: Family::default(),
            // 0.25 s … ~2 min: a document takes seconds on a GPU, tens of seconds on a CPU.
            document_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.25, 2.0, 10),
            ),
            queue_depth: Gauge::default(),
            api_errors: Family::default(),
            given_up: Family::default(),
        };
        registry.register(
            "paperless_given_up",
            "Paperless documents that could not be classified and got the failure tag, by \
             reason (no_text, does_not_fit, answer, engine, paperless)",
            paperless.given_up.clone(),
        );
        registry.register(
            "paperless_api_errors",
            "Paperless API calls that failed after retries, by kind",
            paperless.api_errors.clone(),
        );
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
        let gpu = GpuMetrics::default();
        registry.register(
            "gpu_available",
            "1 when NVML answers (a GPU and its driver are present), else 0",
            gpu.available.clone(),
        );
        for ((name, help), family) in GPU_GAUGES.iter().zip(gpu.integer_families()) {
            registry.register(*name, *help, family.clone());
        }
        registry.register(
            "gpu_power_watts",
            "GPU power draw, W (DCGM_FI_DEV_POWER_USAGE)",
            gpu.power_watts.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            engine,
            paperless,
            gpu,
        }
    }

    /// Copies the GPU monitor's latest state into the gauges (called per scrape: the monitor
    /// samples on its own thread, a scrape only reads).
    pub fn observe_gpu(&self, state: &crate::gpu::GpuState) {
        let g = &self.gpu;
        for f in g.integer_families() {
            f.clear();
        }
        g.power_watts.clear();
        let crate::gpu::GpuState::Available { gpus, .. } = state else {
            g.available.set(0);
            return;
        };
        g.available.set(1);
        let mib = |b: u64| (b / (1024 * 1024)) as i64;
        for s in gpus {
            let l: GpuLabels = [
                ("gpu", s.index.to_string()),
                ("UUID", s.uuid.clone()),
                ("modelName", s.name.clone()),
            ];
            g.fb_total_mib
                .get_or_create(&l)
                .set(mib(s.memory_total_bytes));
            g.fb_used_mib
                .get_or_create(&l)
                .set(mib(s.memory_used_bytes));
            g.fb_free_mib
                .get_or_create(&l)
                .set(mib(s.memory_free_bytes));
            let optional = [
                (&g.process_fb_used_mib, s.process_memory_bytes.map(mib)),
                (&g.util_percent, s.utilization_gpu_percent.map(i64::from)),
                (
                    &g.mem_copy_util_percent,
                    s.utilization_memory_percent.map(i64::from),
                ),
                (&g.temp_celsius, s.temperature_celsius.map(i64::from)),
                (&g.sm_clock_mhz, s.sm_clock_mhz.map(i64::from)),
            ];
            for (family, value) in optional {
                if let Some(v) = value {
                    family.get_or_create(&l).set(v);
                }
            }
            if let Some(w) = s.power_watts {
                g.power_watts.get_or_create(&l).set(w);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools that do not speak
    /// OpenMetrics (`promtool check metrics`, older Prometheus): counters are declared under
    /// their `_total` sample name, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
    pub fn render_text(&self) -> String {
        let om = self.render();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
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
        let classic = m.render_text();
        assert!(classic.contains("# TYPE candlelight_paperless_documents_total counter"));
        assert!(classic.contains("# HELP candlelight_paperless_documents_total "));
        assert!(!classic.contains("# EOF"));
    }

    #[test]
    fn gpu_gauges_follow_the_monitor_in_dcgm_units() {
        let m = Metrics::new();
        m.observe_gpu(&crate::gpu::GpuState::Unavailable {
            reason: "no driver".into(),
        });
        let text = m.render();
        assert!(text.contains("candlelight_gpu_available 0"), "{text}");
        assert!(!text.contains("candlelight_gpu_fb_used_mib{"));
        let sample = crate::gpu::GpuSample {
            index: 0,
            name: "NVIDIA GeForce RTX 3060".into(),
            uuid: "GPU-0f6c".into(),
            memory_total_bytes: 12288 << 20,
            memory_used_bytes: 1536 << 20,
            memory_free_bytes: 10752 << 20,
            process_memory_bytes: Some(1200 << 20),
            utilization_gpu_percent: Some(87),
            utilization_memory_percent: None,
            temperature_celsius: Some(61),
            power_watts: Some(142.25),
            sm_clock_mhz: Some(1837),
        };
        m.observe_gpu(&crate::gpu::GpuState::Available {
            gpus: vec![sample],
            sampled_at: "2026-11-24T10:00:00Z".into(),
        });
        let text = m.render();
        let labels = "{gpu=\"0\",UUID=\"GPU-0f6c\",modelName=\"NVIDIA GeForce RTX 3060\"}";
        for line in [
            "candlelight_gpu_available 1".to_owned(),
            format!("candlelight_gpu_fb_used_mib{labels} 1536"),
            format!("candlelight_gpu_fb_free_mib{labels} 10752"),
            format!("candlelight_gpu_process_fb_used_mib{labels} 1200"),
            format!("candlelight_gpu_util_percent{labels} 87"),
            format!("candlelight_gpu_power_watts{labels} 142.25"),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            !text.contains("candlelight_gpu_mem_copy_util_percent{"),
            "unknown stays absent"
        );
    }
}
