//! Inference, with no HTTP and no wire types: models, tokenizers, templates, sampling, the decode
//! loop, and the [`Engine`] handle that loads models on demand, admits requests into a bounded
//! queue and hands each to the worker thread that owns the model.

pub mod constraint;
pub mod device;
mod error;
pub mod generate;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod request;
pub mod sampler;
pub mod template;
pub mod tokenizer;
pub mod tools;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use candle_core::Device;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub use constraint::{Constraint, ConstraintFactory, Format, Grammars};
pub use device::{select_device, DeviceChoice};
pub use error::EngineError;
pub use generate::{
    generate, generate_constrained, Alternative, Completion, ConstraintStats, FinishReason,
    GenerateRequest, Session, TokenLogprob,
};
pub use model::{
    card, inspect, load, LanguageModel, LoadOptions, LoadedModel, ModelCard, ModelConfig,
    ModelInfo, ModelKind,
};
pub use request::{EmbedTask, Event, GenerateTask, Generated, KeepAlive, PromptInput};
pub use sampler::{Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::Tokenizer;
pub use tools::{Tool, ToolCall, ToolChoice, ToolSyntax, ToolUse};

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
    /// Which of our CPU kernels may run (`CANDLELIGHT_SIMD`).
    pub simd: kernels::SimdLevel,
}

/// A model that is loaded and has a worker thread.
pub struct Loaded {
    pub name: String,
    pub card: ModelCard,
    pub config: ModelConfig,
    /// Compiles a request's format at admission, before it is queued.
    grammars: Grammars,
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
        if self.card.info.kind == ModelKind::Embedding {
            return self.card.info.file_size;
        }
        let c = &self.config;
        let kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * num_ctx.min(c.max_positions) * 4;
        self.card.info.file_size + (kv * slots.max(1)) as u64
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
    /// The loaded models; locked only for lookups and inserts, never across a load.
    models: StdMutex<HashMap<String, Arc<Loaded>>>,
    /// One gate per model: two requests for one model load it once, and a request for another
    /// model (or `/api/ps`, or the reaper) never waits on that load. Gates stay (one small
    /// mutex per model the store resolved), so no request has to clean up after another.
    loading: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    queued: Arc<AtomicUsize>,
}

impl Inner {
    fn models(&self) -> MutexGuard<'_, HashMap<String, Arc<Loaded>>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    pub fn new(store: ModelStore, opts: EngineOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                opts,
                models: StdMutex::new(HashMap::new()),
                loading: StdMutex::new(HashMap::new()),
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
        self.acquire_resolved(resolved).await
    }

    async fn acquire_resolved(
        &self,
        resolved: crate::store::ResolvedModel,
    ) -> Result<(Arc<Loaded>, Duration), EngineError> {
        if let Some(m) = self.inner.models().get(&resolved.name) {
            return Ok((m.clone(), Duration::ZERO));
        }
        let gate = self
            .inner
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(resolved.name.clone())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        // Whoever held the gate before us may have loaded it.
        if let Some(m) = self.inner.models().get(&resolved.name) {
            return Ok((m.clone(), Duration::ZERO));
        }
        Self::evict_for_room(&mut self.inner.models(), self.inner.opts.max_loaded, None);
        let opts = LoadOptions {
            device: self.inner.opts.device.clone(),
            max_context: usize::MAX,
            exact_weights: false,
            simd: self.inner.opts.simd,
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
            card: lm.card.clone(),
            config: lm.model.config().clone(),
            grammars: lm.grammars.clone(),
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
            .map_err(EngineError::Thread)?;
        {
            let mut models = self.inner.models();
            models.insert(resolved.name.clone(), loaded.clone());
            // Loads of other models ran beside this one; trim back to the limit.
            Self::evict_for_room(
                &mut models,
                self.inner.opts.max_loaded + 1,
                Some(&resolved.name),
            );
        }
        Ok((loaded, load_duration))
    }

    /// Unloads idle models, least recently used first, until fewer than `limit` are loaded
    /// (`keep` is never chosen).
    fn evict_for_room(models: &mut HashMap<String, Arc<Loaded>>, limit: usize, keep: Option<&str>) {
        while models.len() >= limit.max(1) {
            let victim = models
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != keep)
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

    /// Admits a generation: the model must generate, and its format must compile (both
    /// refused here, before anything is queued).
    pub async fn generate(
        &self,
        name: &str,
        task: GenerateTask,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Submission, EngineError> {
        let resolved = self.inner.store.resolve(name)?;
        // An embedding model is not loaded just to refuse the request.
        if !self.inner.models().contains_key(&resolved.name) {
            let path = resolved.path.clone();
            let info = tokio::task::spawn_blocking(move || inspect(&path))
                .await
                .map_err(|_| EngineError::WorkerGone)??;
            if info.kind != ModelKind::Generative {
                return Err(EngineError::NotCapable("generate"));
            }
        }
        let (model, load_duration) = self.acquire_resolved(resolved).await?;
        if model.card.info.kind != ModelKind::Generative {
            return Err(EngineError::NotCapable("generate"));
        }
        let tools = match task.tools.clone() {
            Some(tools) => {
                let syntax = model.card.template.tool_syntax();
                Some((syntax.ok_or(EngineError::NotCapable("tools"))?, tools))
            }
            None => None,
        };
        let (grammars, format) = (model.grammars.clone(), task.format.clone());
        // Compiling walks the grammar (and, once per model, the vocabulary): off the async
        // threads, and only for requests that have one.
        let constraint = if tools.is_none() && format.is_none() {
            None
        } else {
            tokio::task::spawn_blocking(move || {
                let tools = tools.as_ref().map(|(syntax, t)| (*syntax, t));
                grammars.compile_request(tools, format.as_ref())
            })
            .await
            .map_err(|_| EngineError::WorkerGone)??
            .map(Box::new)
        };
        self.submit(
            model,
            Task::Generate(Box::new(task), constraint),
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

    /// Unloads a model now if it is loaded (a running request finishes first: the worker
    /// thread ends when its queue is empty). Returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> bool {
        let canonical = self
            .inner
            .store
            .resolve(name)
            .map(|r| r.name)
            .unwrap_or_else(|_| crate::store::canonical_name(name));
        self.inner.models().remove(&canonical).is_some()
    }

    pub async fn running(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<_> = self.inner.models().values().cloned().collect();
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
                inner.models().retain(|name, m| {
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
