//! `/api/generate` and `/api/chat`: their wire types, validation, and the reply as NDJSON or
//! one JSON object.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::logprobs::{requested, token_list};
use crate::api::params::{json_body, keep_alive, now_rfc3339, Options};
use crate::api::tools::{ollama_calls, parse_tools, tool_use, EarlierCalls};
use crate::api::{collect, first_event, require_model, AppState};
use crate::engine::{
    ChatMessage, EngineError, Event, Format, GenerateTask, Generated, KeepAlive, PromptInput,
    ToolChoice,
};
use crate::store::ModelDefaults;

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
    logprobs: Option<bool>,
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
    content: Option<String>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    tool_name: Option<String>,
    tool_call_id: Option<String>,
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
    /// Alternatives per token when log-probabilities are asked for.
    logprobs: Option<usize>,
    /// What `/api/create` gave the model (the request's own values win).
    defaults: ModelDefaults,
}

fn common(state: &AppState, b: &CommonBody) -> Result<Common, ApiError> {
    let model = require_model(state, b.model.as_deref())?;
    let logprobs = requested(b.logprobs.unwrap_or(false), b.top_logprobs)?;
    match &b.think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "\"{model}\" does not support thinking"
            )))
        }
    }
    let format = parse_format(b.format.as_ref())?;
    let defaults = state.engine.store().defaults(&model);
    let mut options = defaults.options.clone();
    options.extend(b.options.clone().unwrap_or_default());
    Ok(Common {
        format,
        options: Options::parse(&options)?,
        defaults,
        keep_alive: keep_alive(b.keep_alive.as_ref())?,
        stream: b.stream.unwrap_or(true),
        truncate: b.truncate.unwrap_or(true),
        logprobs,
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
    let mut sampling = c.options.sampling();
    sampling.logprobs = c.logprobs;
    GenerateTask {
        tools: None,
        input,
        sampling,
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

pub(super) fn nanos(d: Duration) -> u64 {
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
    let template = b
        .template
        .filter(|t| !t.is_empty())
        .or_else(|| c.defaults.template.clone());
    let system = b.system.or_else(|| c.defaults.system.clone());
    let input = if b.raw {
        PromptInput::Raw(b.prompt)
    } else if let Some(template) = template {
        PromptInput::Template {
            template,
            system: system.unwrap_or_default(),
            prompt: b.prompt,
            context: b.context.unwrap_or_default(),
        }
    } else {
        let mut messages = Vec::new();
        if let Some(s) = system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new("system", s));
        }
        messages.extend(opening(&c.defaults));
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
    // Ollama has no tool_choice: the model decides.
    let tools = tool_use(parse_tools(&b.tools)?, Some(ToolChoice::Auto), true)?;
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
    let mut messages = chat_messages(b.messages)?;
    with_defaults(&mut messages, &c.defaults);
    let mut t = task(&c, PromptInput::Chat(messages));
    t.tools = tools;
    let reply = Reply {
        model: c.model.clone(),
        started,
        stream: c.stream,
        kind: ReplyKind::Chat,
    };
    run(&state, &c, t, reply).await
}

/// A created model's opening turns.
pub(crate) fn opening(d: &ModelDefaults) -> impl Iterator<Item = ChatMessage> + '_ {
    d.messages
        .iter()
        .map(|m| ChatMessage::new(&m.role, m.content.as_str()))
}

/// A conversation with a created model's system prompt (unless it brings its own) and opening
/// turns in front, as Ollama does it.
pub(crate) fn with_defaults(messages: &mut Vec<ChatMessage>, d: &ModelDefaults) {
    let has_system = messages.first().is_some_and(|m| m.role == "system");
    let at = usize::from(has_system);
    messages.splice(at..at, opening(d));
    if let (false, Some(s)) = (has_system, &d.system) {
        messages.insert(0, ChatMessage::new("system", s.as_str()));
    }
}

/// Wire messages as the engine reads them: a `tool` turn is named by its `tool_name`, or by
/// the earlier call its `tool_call_id` answers.
fn chat_messages(wire: Vec<WireMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    let mut earlier = EarlierCalls::default();
    let mut out = Vec::with_capacity(wire.len());
    for m in wire {
        let mut msg = ChatMessage::new(&m.role, m.content.unwrap_or_default());
        earlier.add(&mut msg, &m.tool_calls.unwrap_or_default())?;
        msg.tool_name = m
            .tool_name
            .or_else(|| earlier.name(m.tool_call_id.as_deref()?));
        out.push(msg);
    }
    Ok(out)
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

    /// The calls an answer made, as a chunk of their own (Ollama streams them so).
    fn calls(&self, g: &Generated) -> Option<Value> {
        if g.tool_calls.is_empty() {
            return None;
        }
        let mut v = self.chunk("");
        v["message"]["tool_calls"] = ollama_calls(&g.tool_calls);
        Some(v)
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
        // Log-probabilities come just before the text of their tokens and ride on its chunk.
        let mut pending = Vec::new();
        let with_logprobs = |mut v: Value, pending: &mut Vec<_>| {
            if !pending.is_empty() {
                v["logprobs"] = token_list(&std::mem::take(pending));
            }
            v
        };
        let lines = move |ev: Event| -> Vec<Value> {
            match ev {
                Event::Logprobs(l) => {
                    pending.extend(l);
                    vec![]
                }
                Event::Text(t) => vec![with_logprobs(reply.chunk(&t), &mut pending)],
                Event::Done(g) => reply
                    .calls(&g)
                    .into_iter()
                    .chain([with_logprobs(reply.last("", &g, load), &mut pending)])
                    .collect(),
                Event::Error(e) => vec![json!({"error": e.to_string()})],
                Event::Embeddings { .. } => vec![json!({"error": "unexpected embeddings"})],
            }
        };
        return Ok(crate::api::ndjson(
            first,
            sub.events,
            state.cut.clone(),
            lines,
        ));
    }
    let (text, done) = collect(&c.model, first, &mut sub.events).await?;
    let mut v = reply.last(&text, &done, load);
    if c.logprobs.is_some() {
        v["logprobs"] = token_list(&done.completion.logprobs);
    }
    if !done.tool_calls.is_empty() {
        v["message"]["tool_calls"] = ollama_calls(&done.tool_calls);
    }
    Ok(Json(v).into_response())
}
