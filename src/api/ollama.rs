//! `/api/*` exactly as Ollama does it: wire types, validation, and thin handlers that turn a
//! request into an engine task and the engine's events into NDJSON or one JSON object.

use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::params::{json_body, keep_alive, now_rfc3339, rfc3339, Options};
use super::{collect, first_event, require_model, AppState, Scope};
use crate::engine::{
    ChatMessage, ChatTemplate, EmbedTask, EngineError, Event, Format, GenerateTask, Generated,
    KeepAlive, Loaded, ModelInfo, ModelKind, PromptInput,
};
use crate::store::LocalModel;

/// Version reported by `/api/version`: clients gate features on Ollama versions, so we report
/// the Ollama API level we implement, not our own crate version.
pub const OLLAMA_API_VERSION: &str = "0.12.0";

pub async fn root() -> &'static str {
    "Ollama is running"
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": OLLAMA_API_VERSION }))
}

// ---------------------------------------------------------------------------------------------
// Request types

/// Fields that generate and chat share.
#[derive(Debug, Deserialize)]
struct CommonBody {
    #[serde(alias = "name")]
    model: Option<String>,
    options: Option<Map<String, Value>>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    format: Option<Value>,
    think: Option<Value>,
    truncate: Option<bool>,
    top_logprobs: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct GenerateBody {
    #[serde(flatten)]
    common: CommonBody,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    suffix: String,
    system: Option<String>,
    template: Option<String>,
    context: Option<Vec<u32>>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(flatten)]
    common: CommonBody,
    #[serde(default)]
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Vec<Value>,
}

/// What both generate and chat check before anything runs.
struct Common {
    model: String,
    format: Option<Format>,
    options: Options,
    keep_alive: Option<KeepAlive>,
    stream: bool,
    truncate: bool,
}

fn common(state: &AppState, b: &CommonBody) -> Result<Common, ApiError> {
    let model = require_model(state, b.model.as_deref())?;
    if b.top_logprobs.is_some_and(|n| !(0..=20).contains(&n)) {
        return Err(ApiError::bad_request(
            "top_logprobs must be between 0 and 20",
        ));
    }
    match &b.think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "\"{model}\" does not support thinking"
            )))
        }
    }
    let format = parse_format(b.format.as_ref())?;
    Ok(Common {
        format,
        options: Options::parse(b.options.as_ref().unwrap_or(&Map::new()))?,
        keep_alive: keep_alive(b.keep_alive.as_ref())?,
        stream: b.stream.unwrap_or(true),
        truncate: b.truncate.unwrap_or(true),
        model,
    })
}

/// `null`/`""` mean no format; `"json"` any JSON object; an object is a JSON Schema.
fn parse_format(format: Option<&Value>) -> Result<Option<Format>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Format::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(Format::Schema(format.cloned().unwrap_or_default()))),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid format: {other}; expected \"json\" or a valid JSON Schema object"
        ))),
    }
}

fn task(c: &Common, input: PromptInput) -> GenerateTask {
    GenerateTask {
        input,
        sampling: c.options.sampling(),
        num_predict: c.options.max_tokens(),
        num_ctx: c.options.num_ctx,
        stop: c.options.stop.clone().unwrap_or_default(),
        truncate: c.truncate,
        format: c.format.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Final metrics, omitted when zero as Ollama's `omitempty` does.
#[derive(Debug, Default, Serialize)]
struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_duration: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn metrics(g: &Generated, load: Duration, started: Instant) -> Metrics {
    let c = &g.completion;
    Metrics {
        total_duration: nanos(started.elapsed()),
        load_duration: nanos(load),
        prompt_eval_count: c.prompt_tokens as u64,
        prompt_eval_duration: nanos(c.prompt_eval),
        eval_count: c.tokens.len() as u64,
        eval_duration: nanos(c.eval),
    }
}

fn merge(mut base: Value, extra: impl Serialize) -> Value {
    if let (Some(obj), Ok(Value::Object(more))) =
        (base.as_object_mut(), serde_json::to_value(extra))
    {
        obj.extend(more);
    }
    base
}

fn load_reply(model: &str, ka: Option<KeepAlive>, chat: bool) -> Value {
    let reason = if ka == Some(KeepAlive::For(Duration::ZERO)) {
        "unload"
    } else {
        "load"
    };
    let mut v =
        json!({"model": model, "created_at": now_rfc3339(), "done": true, "done_reason": reason});
    if chat {
        v["message"] = json!({"role": "assistant", "content": ""});
    } else {
        v["response"] = json!("");
    }
    v
}

// ---------------------------------------------------------------------------------------------
// /api/generate and /api/chat

pub async fn generate(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let b: GenerateBody = json_body(&body)?;
    let c = common(&state, &b.common)?;
    if b.raw && (b.template.is_some() || b.system.is_some() || b.context.is_some()) {
        return Err(ApiError::bad_request(
            "raw mode does not support template, system, or context",
        ));
    }
    if !b.images.is_empty() {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support images",
            c.model
        )));
    }
    if !b.suffix.is_empty() {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support insert",
            c.model
        )));
    }
    if b.prompt.is_empty() {
        return load_or_unload(&state, &c, false).await;
    }
    let template = b.template.filter(|t| !t.is_empty());
    let input = if b.raw {
        PromptInput::Raw(b.prompt)
    } else if let Some(template) = template {
        PromptInput::Template {
            template,
            system: b.system.unwrap_or_default(),
            prompt: b.prompt,
            context: b.context.unwrap_or_default(),
        }
    } else {
        let mut messages = Vec::new();
        if let Some(s) = b.system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", b.prompt));
        match b.context.filter(|c| !c.is_empty()) {
            Some(context) => PromptInput::Continue { context, messages },
            None => PromptInput::Chat(messages),
        }
    };
    let raw = b.raw;
    let t = task(&c, input);
    let reply = Reply {
        model: c.model.clone(),
        started,
        stream: c.stream,
        kind: ReplyKind::Generate { raw },
    };
    run(&state, &c, t, reply).await
}

pub async fn chat(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let b: ChatBody = json_body(&body)?;
    let c = common(&state, &b.common)?;
    if !b.tools.is_empty() {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support tools",
            c.model
        )));
    }
    if b.messages
        .iter()
        .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
    {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support images",
            c.model
        )));
    }
    if b.messages.is_empty() {
        return load_or_unload(&state, &c, true).await;
    }
    let messages = b
        .messages
        .into_iter()
        .map(|m| ChatMessage::new(&m.role, m.content))
        .collect();
    let t = task(&c, PromptInput::Chat(messages));
    let reply = Reply {
        model: c.model.clone(),
        started,
        stream: c.stream,
        kind: ReplyKind::Chat,
    };
    run(&state, &c, t, reply).await
}

async fn load_or_unload(state: &AppState, c: &Common, chat: bool) -> Result<Response, ApiError> {
    let e = &state.engine;
    if c.keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        e.unload(&c.model).await;
    } else {
        e.load(&c.model, c.keep_alive)
            .await
            .map_err(|err| ApiError::from_engine(&c.model, err))?;
    }
    Ok(Json(load_reply(&c.model, c.keep_alive, chat)).into_response())
}

/// How to shape the reply of one generate/chat request.
struct Reply {
    model: String,
    started: Instant,
    stream: bool,
    kind: ReplyKind,
}

#[derive(Debug, Clone, Copy)]
enum ReplyKind {
    Generate { raw: bool },
    Chat,
}

impl Reply {
    fn chunk(&self, text: &str) -> Value {
        let mut v = json!({"model": self.model, "created_at": now_rfc3339()});
        match self.kind {
            ReplyKind::Generate { .. } => v["response"] = json!(text),
            ReplyKind::Chat => v["message"] = json!({"role": "assistant", "content": text}),
        }
        v["done"] = json!(false);
        v
    }

    fn last(&self, text: &str, g: &Generated, load: Duration) -> Value {
        let mut v = self.chunk(text);
        v["done"] = json!(true);
        v["done_reason"] = json!(g.completion.finish.as_str());
        if let ReplyKind::Generate { raw: false } = self.kind {
            v["context"] = json!(g.context);
        }
        merge(v, metrics(g, load, self.started))
    }
}

async fn run(
    state: &AppState,
    c: &Common,
    t: GenerateTask,
    reply: Reply,
) -> Result<Response, ApiError> {
    let mut sub = state
        .engine
        .generate(&c.model, t, c.keep_alive)
        .await
        .map_err(|e| match (e, reply.kind) {
            (EngineError::NotCapable(_), ReplyKind::Chat) => {
                ApiError::from_engine(&c.model, EngineError::NotCapable("chat"))
            }
            (e, _) => ApiError::from_engine(&c.model, e),
        })?;
    // The prompt is evaluated before the first event, so errors about it still get a status.
    let first = first_event(&c.model, &mut sub.events).await?;
    let load = sub.load_duration;
    if reply.stream {
        let lines = move |ev: Event| -> Value {
            match ev {
                Event::Text(t) => reply.chunk(&t),
                Event::Done(g) => reply.last("", &g, load),
                Event::Error(e) => json!({"error": e.to_string()}),
                Event::Embeddings { .. } => json!({"error": "unexpected embeddings"}),
            }
        };
        return Ok(super::ndjson(first, sub.events, state.cut.clone(), lines));
    }
    let (text, done) = collect(&c.model, first, &mut sub.events).await?;
    Ok(Json(reply.last(&text, &done, load)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Model information

fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}K", n / 1e3)
    }
}

fn details(info: &ModelInfo) -> Value {
    let family = info
        .metadata
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("llama")
        .to_owned();
    json!({
        "parent_model": "",
        "format": info.format,
        "family": family,
        "families": [family],
        "parameter_size": parameter_size(info.parameter_count),
        "quantization_level": info.quantization,
    })
}

fn tag_entry(state: &AppState, m: &LocalModel) -> Option<Value> {
    let info = crate::engine::inspect(&m.path).ok()?;
    let digest = state.engine.store().digest(m).ok()?;
    Some(json!({
        "name": m.name,
        "model": m.name,
        "modified_at": rfc3339(m.modified),
        "size": m.size,
        "digest": digest,
        "details": details(&info),
    }))
}

pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let st = state.clone();
    let models = state
        .blocking(move || -> Result<Vec<Value>, ApiError> {
            let list = st
                .engine
                .store()
                .list()
                .map_err(|e| ApiError::from_store("", e))?;
            Ok(list.iter().filter_map(|m| tag_entry(&st, m)).collect())
        })
        .await??;
    Ok(Json(json!({ "models": models })))
}

#[derive(Debug, Deserialize)]
struct ShowBody {
    #[serde(alias = "name")]
    model: Option<String>,
}

pub async fn show(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: ShowBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    let resolved = state
        .engine
        .store()
        .resolve(&model)
        .map_err(|e| ApiError::from_store(&model, e))?;
    // A loaded model's card is at hand; otherwise the file's header has everything.
    let loaded = state.engine.running().await;
    let card = match loaded.iter().find(|m| m.name == resolved.name) {
        Some(m) => m.card.clone(),
        None => {
            let path = resolved.path.clone();
            let name = model.clone();
            state
                .blocking(move || {
                    crate::engine::card(&path).map_err(|e| ApiError::from_engine(&name, e))
                })
                .await??
        }
    };
    let info = &card.info;
    let mut model_info: Map<String, Value> = info.metadata.clone().into_iter().collect();
    model_info.insert(
        "general.parameter_count".into(),
        json!(info.parameter_count),
    );
    let parameters = card
        .stop_strings
        .iter()
        .map(|s| format!("stop {}", serde_json::to_string(s).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    let template_text = card.template.go_template();
    let modified = std::fs::metadata(&resolved.path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut out = json!({
        "modelfile": format!("# Modelfile generated by candlelight\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}\n",
            resolved.path.display(), template_text, parameters),
        "parameters": parameters,
        "template": template_text,
        "details": details(info),
        "model_info": model_info,
        "capabilities": card.capabilities(),
        "modified_at": rfc3339(modified),
    });
    if let ChatTemplate::ChatMl {
        default_system: Some(s),
    } = &card.template
    {
        out["system"] = json!(s);
    }
    Ok(Json(out))
}

fn ps_entry(state: &AppState, m: &Loaded) -> Value {
    let opts = state.engine.options();
    let size = m.size_bytes(opts.num_ctx, opts.num_parallel);
    // Far future for "forever", as Ollama reports it.
    let expires = m
        .expires_at()
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(10_975_683_600));
    let digest = state
        .engine
        .store()
        .list()
        .ok()
        .and_then(|l| l.into_iter().find(|x| x.path == m.card.info.path))
        .and_then(|x| state.engine.store().digest(&x).ok())
        .unwrap_or_default();
    json!({
        "name": m.name,
        "model": m.name,
        "size": size,
        "digest": digest,
        "details": details(&m.card.info),
        "expires_at": rfc3339(expires),
        "size_vram": if m.on_gpu { size } else { 0 },
        "context_length": match m.card.info.kind {
            ModelKind::Embedding => m.config.context_length,
            ModelKind::Generative => opts.num_ctx.min(m.config.max_positions),
        },
    })
}

pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let running = state.engine.running().await;
    let st = state.clone();
    let models = state
        .blocking(move || running.iter().map(|m| ps_entry(&st, m)).collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    Json(json!({ "models": models }))
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[derive(Debug, Deserialize)]
struct EmbedBody {
    model: Option<String>,
    input: Option<Value>,
    truncate: Option<bool>,
    dimensions: Option<usize>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct LegacyEmbedBody {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

/// Runs an embedding task; returns vectors, prompt tokens and load time.
pub(super) async fn embed_texts(
    state: &AppState,
    model: &str,
    inputs: Vec<String>,
    truncate: bool,
    dimensions: Option<usize>,
    options: Option<&Map<String, Value>>,
    ka: Option<&Value>,
) -> Result<(Vec<Vec<f32>>, usize, Duration), ApiError> {
    let options = Options::parse(options.unwrap_or(&Map::new()))?;
    let ka = keep_alive(ka)?;
    let most = state.limits.embed_inputs;
    if inputs.len() > most {
        return Err(ApiError::bad_request(format!(
            "too many inputs: {} in one request, at most {most}; send them in batches",
            inputs.len()
        )));
    }
    let task = EmbedTask {
        inputs,
        truncate,
        dimensions,
        num_ctx: options.num_ctx,
    };
    let mut sub = state
        .engine
        .embed(model, task, ka)
        .await
        .map_err(|e| ApiError::from_engine(model, e))?;
    match first_event(model, &mut sub.events).await? {
        Event::Embeddings {
            vectors,
            prompt_tokens,
        } => Ok((vectors, prompt_tokens, sub.load_duration)),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected reply",
        )),
    }
}

pub async fn embed(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let b: EmbedBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    let inputs = match b.input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::bad_request("invalid input type")),
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => vec![],
        Some(_) => return Err(ApiError::bad_request("invalid input type")),
    };
    if inputs.is_empty() {
        state
            .engine
            .load(&model, keep_alive(b.keep_alive.as_ref())?)
            .await
            .map_err(|e| ApiError::from_engine(&model, e))?;
        return Ok(Json(json!({"model": model, "embeddings": []})).into_response());
    }
    let (vectors, tokens, load) = embed_texts(
        &state,
        &model,
        inputs,
        b.truncate.unwrap_or(true),
        b.dimensions,
        b.options.as_ref(),
        b.keep_alive.as_ref(),
    )
    .await?;
    // Serialized straight from the vectors: a JSON value tree of a large batch would hold
    // several times its size in memory.
    #[derive(Serialize)]
    struct Reply {
        model: String,
        embeddings: Vec<Vec<f32>>,
        total_duration: u64,
        load_duration: u64,
        prompt_eval_count: usize,
    }
    Ok(Json(Reply {
        model,
        embeddings: vectors,
        total_duration: nanos(started.elapsed()),
        load_duration: nanos(load),
        prompt_eval_count: tokens,
    })
    .into_response())
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: LegacyEmbedBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    if b.prompt.is_empty() {
        return Ok(Json(json!({"embedding": []})));
    }
    let (mut vectors, _, _) = embed_texts(
        &state,
        &model,
        vec![b.prompt],
        true,
        None,
        b.options.as_ref(),
        b.keep_alive.as_ref(),
    )
    .await?;
    Ok(Json(
        json!({"embedding": vectors.pop().unwrap_or_default()}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Model management

#[derive(Debug, Deserialize)]
struct CopyBody {
    source: Option<String>,
    destination: Option<String>,
}

pub async fn copy(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state.guard.authorize(&headers, Scope::Models)?;
    let b: CopyBody = json_body(&body)?;
    let (Some(src), Some(dst)) = (b.source, b.destination) else {
        return Err(ApiError::bad_request("source and destination are required"));
    };
    state.engine.store().copy(&src, &dst).map_err(|e| match e {
        // Ollama's own wording for this one.
        crate::store::StoreError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("model \"{src}\" not found"))
        }
        e => ApiError::from_store(&src, e),
    })?;
    Ok(StatusCode::OK)
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state.guard.authorize(&headers, Scope::Models)?;
    let b: ShowBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    crate::store::parse_name(&model).map_err(|e| ApiError::from_store(&model, e))?;
    state.engine.unload(&model).await;
    state
        .engine
        .store()
        .delete(&model)
        .map_err(|e| ApiError::from_store(&model, e))?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct PullBody {
    #[serde(alias = "name")]
    model: Option<String>,
    stream: Option<bool>,
}

/// Downloads a model named by a manifest with a hub source, streaming Ollama's progress
/// lines; a model already present succeeds at once.
pub async fn pull(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::pull::PullError;
    state.guard.authorize(&headers, Scope::Models)?;
    let b: PullBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    let name = model.clone();
    let to_api = |e: PullError| match e {
        PullError::UnknownModel => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        PullError::NoSource(_) => ApiError::bad_request(e.to_string()),
        PullError::Store(e) => ApiError::from_store(&name, e),
        // The hub failing (or unreachable) is an upstream problem.
        e @ (PullError::Download { .. } | PullError::Digest { .. }) => {
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    };
    crate::pull::check(state.engine.store(), &model).map_err(to_api)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::pull::Progress>(16);
    let store = state.engine.store().clone();
    let task = tokio::spawn(async move { crate::pull::pull(&store, &model, &tx).await });
    if !b.stream.unwrap_or(true) {
        while rx.recv().await.is_some() {}
        task.await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(to_api)?;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let (lines, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
        while let Some(p) = rx.recv().await {
            if lines.send(line(json!(p))).await.is_err() {
                return;
            }
        }
        // Mid-stream failures are an extra error line, as Ollama sends them.
        if let Ok(Err(e)) = task.await {
            let _ = lines.send(line(json!({"error": e.to_string()}))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
