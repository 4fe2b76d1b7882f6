//! `/v1/*` for OpenAI-style clients, as Ollama's compatibility layer does it: same engine,
//! OpenAI's request/response shapes, SSE streaming and OpenAI's error shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::logprobs::{legacy, requested, token_list, MAX_TOP_LOGPROBS};
use super::ollama::{embed_texts, with_defaults};
use super::params::{json_body, Options};
use super::tools::{openai_calls, parse_choice, parse_tools, tool_use, EarlierCalls};
use super::{collect, event_stream, first_event, require_model, AppState};
use crate::engine::{
    ChatMessage, Event, Format, GenerateTask, Generated, PromptInput, TokenLogprob, ToolUse,
};
use crate::store::ModelDefaults;

/// An [`ApiError`] in OpenAI's `{"error": {"message", "type", ...}}` shape.
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let kind = match self.0.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        let body = json!({"error": {"message": self.0.message, "type": kind, "param": null, "code": null}});
        (self.0.status, Json(body)).into_response()
    }
}

type OaResult<T> = Result<T, OpenAiError>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Fields shared by chat and legacy completions.
#[derive(Debug, Deserialize)]
struct Sampling {
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<Value>,
    response_format: Option<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// Chat: a boolean; legacy completions: how many alternatives.
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(flatten)]
    s: Sampling,
    #[serde(default)]
    messages: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    #[serde(flatten)]
    s: Sampling,
    prompt: Option<Value>,
    #[serde(default)]
    suffix: String,
}

/// Messages as the engine reads them; a `tool` message is named by the earlier call its
/// `tool_call_id` answers (or its own `name`).
fn messages(wire: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut earlier = EarlierCalls::default();
    let mut out = Vec::with_capacity(wire.len());
    for v in wire {
        let mut m = message(v)?;
        if let Some(calls) = v.get("tool_calls").and_then(Value::as_array) {
            earlier.add(&mut m, calls)?;
        }
        if m.role == "tool" {
            m.tool_name = v
                .get("tool_call_id")
                .and_then(Value::as_str)
                .and_then(|id| earlier.name(id))
                .or_else(|| v.get("name").and_then(Value::as_str).map(str::to_owned));
        }
        out.push(m);
    }
    Ok(out)
}

/// Message content: a string or an array of parts, of which text parts are used.
fn message(v: &Value) -> Result<ChatMessage, ApiError> {
    let role = v["role"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("invalid message: role is required"))?;
    let content = match &v["content"] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => text.push_str(p["text"].as_str().unwrap_or("")),
                    Some("image_url") => {
                        return Err(ApiError::bad_request("this model does not support images"))
                    }
                    _ => return Err(ApiError::bad_request("invalid message content part")),
                }
            }
            text
        }
        _ => return Err(ApiError::bad_request("invalid message content type")),
    };
    Ok(ChatMessage::new(role, content))
}

/// The request's sampling fields over a created model's defaults.
fn options(s: &Sampling, defaults: &ModelDefaults) -> Result<Options, ApiError> {
    let mut map = defaults.options.clone();
    if let Some(t) = s.temperature {
        map.insert("temperature".into(), json!(t));
    }
    if let Some(p) = s.top_p {
        map.insert("top_p".into(), json!(p));
    }
    if let Some(seed) = s.seed {
        map.insert("seed".into(), json!(seed));
    }
    if let Some(n) = s.max_completion_tokens.or(s.max_tokens) {
        map.insert("num_predict".into(), json!(n));
    }
    if let Some(stop) = &s.stop {
        map.insert("stop".into(), stop.clone());
    }
    Options::parse(&map)
}

/// Alternatives per token when log-probabilities are asked for: chat's `logprobs: true` with
/// `top_logprobs`, legacy completions' `logprobs: n`.
fn logprobs(s: &Sampling, chat: bool) -> Result<Option<usize>, ApiError> {
    let on = match (&s.logprobs, chat) {
        (None | Some(Value::Null), _) => false,
        (Some(Value::Bool(on)), true) => *on,
        (Some(Value::Number(n)), false) => {
            let n = n.as_i64().unwrap_or(-1);
            return requested(true, Some(n)).map_err(|_| {
                ApiError::bad_request(format!("logprobs must be between 0 and {MAX_TOP_LOGPROBS}"))
            });
        }
        (Some(_), true) => return Err(ApiError::bad_request("logprobs must be a boolean")),
        (Some(_), false) => return Err(ApiError::bad_request("logprobs must be an integer")),
    };
    if !on && s.top_logprobs.is_some_and(|n| n > 0) {
        return Err(ApiError::bad_request("top_logprobs needs logprobs: true"));
    }
    // `top_logprobs` is range-checked whenever it is given, as on the Ollama routes.
    requested(on, s.top_logprobs)
}

fn tools(s: &Sampling) -> Result<Option<ToolUse>, ApiError> {
    tool_use(
        parse_tools(&s.tools)?,
        parse_choice(s.tool_choice.as_ref())?,
        s.parallel_tool_calls.unwrap_or(true),
    )
}

/// OpenAI `response_format`: `text`, `json_object`, or `json_schema` with a `schema`.
fn response_format(s: &Sampling) -> Result<Option<Format>, ApiError> {
    let Some(f) = &s.response_format else {
        return Ok(None);
    };
    match f["type"].as_str() {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Format::JsonObject)),
        Some("json_schema") => match f["json_schema"].get("schema") {
            Some(schema) if schema.is_object() => Ok(Some(Format::Schema(schema.clone()))),
            _ => Err(ApiError::bad_request(
                "response_format json_schema needs json_schema.schema",
            )),
        },
        Some(t) => Err(ApiError::bad_request(format!(
            "invalid response_format type: {t}"
        ))),
    }
}

/// `tool_calls` when the answer called functions, else why generation ended.
fn finish_reason(g: &Generated) -> &'static str {
    if g.tool_calls.is_empty() {
        g.completion.finish.as_str()
    } else {
        "tool_calls"
    }
}

fn usage(g: &Generated) -> Value {
    let p = g.completion.prompt_tokens;
    let c = g.completion.tokens.len();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// Shapes one generation as `chat.completion` (`chat: true`) or `text_completion`.
struct Shape {
    id: String,
    model: String,
    created: u64,
    chat: bool,
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created,
               "model": self.model, "system_fingerprint": "fp_ollama", "choices": choices})
    }

    /// `choices[].logprobs`: chat's `{"content": [...]}` or legacy completions' lists.
    fn logprobs(&self, lp: &[TokenLogprob], offset: usize) -> Value {
        if self.chat {
            json!({"content": token_list(lp)})
        } else {
            legacy(lp, offset)
        }
    }

    fn choice(&self, text: &str, finish: Option<&str>, chunk: bool) -> Value {
        match (self.chat, chunk) {
            (true, false) => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": finish}),
            (true, true) => json!({"index": 0, "delta": {"role": "assistant", "content": text},
                                   "finish_reason": finish}),
            (false, _) => json!({"index": 0, "text": text, "finish_reason": finish}),
        }
    }
}

async fn run(state: AppState, s: Sampling, input: PromptInput, chat: bool) -> OaResult<Response> {
    let model = require_model(&state, s.model.as_deref())?;
    let defaults = state.engine.store().defaults(&model);
    let o = options(&s, &defaults)?;
    let input = match input {
        PromptInput::Chat(mut m) => {
            with_defaults(&mut m, &defaults);
            PromptInput::Chat(m)
        }
        other => other,
    };
    let format = response_format(&s)?;
    let tools = if chat { tools(&s)? } else { None };
    let report = logprobs(&s, chat)?;
    let mut sampling = o.sampling();
    sampling.logprobs = report;
    let task = GenerateTask {
        tools,
        input,
        sampling,
        num_predict: o.max_tokens(),
        num_ctx: o.num_ctx,
        stop: o.stop.clone().unwrap_or_default(),
        truncate: true,
        format,
    };
    let mut sub = state
        .engine
        .generate(&model, task, None)
        .await
        .map_err(|e| ApiError::from_engine(&model, e))?;
    let first = first_event(&model, &mut sub.events).await?;
    let shape = Shape {
        id: next_id(if chat { "chatcmpl" } else { "cmpl" }),
        model,
        created: unix(SystemTime::now()),
        chat,
    };
    if !s.stream {
        let (text, g) = collect(&shape.model, first, &mut sub.events).await?;
        let mut choice = shape.choice(&text, Some(finish_reason(&g)), false);
        if report.is_some() {
            choice["logprobs"] = shape.logprobs(&g.completion.logprobs, 0);
        }
        if !g.tool_calls.is_empty() {
            let message = &mut choice["message"];
            message["tool_calls"] = openai_calls(&g.tool_calls, false);
            if text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        let mut v = shape.envelope(false, json!([choice]));
        v["usage"] = usage(&g);
        return Ok(Json(v).into_response());
    }
    let include_usage = s.stream_options.is_some_and(|o| o.include_usage);
    let sse = |v: Value| format!("data: {v}\n\n");
    // Log-probabilities come just before the text of their tokens and ride on its chunk.
    let mut pending = Vec::new();
    let mut offset = 0;
    let lines = move |ev: Event| -> Vec<String> {
        match ev {
            Event::Logprobs(l) => {
                pending.extend(l);
                vec![]
            }
            Event::Text(t) => {
                let mut choice = shape.choice(&t, None, true);
                if !pending.is_empty() {
                    choice["logprobs"] = shape.logprobs(&std::mem::take(&mut pending), offset);
                }
                offset += t.len();
                vec![sse(shape.envelope(true, json!([choice])))]
            }
            Event::Done(g) => {
                let mut out = Vec::new();
                if !g.tool_calls.is_empty() {
                    let mut choice = shape.choice("", None, true);
                    choice["delta"]["tool_calls"] = openai_calls(&g.tool_calls, true);
                    choice["delta"]["content"] = Value::Null;
                    out.push(sse(shape.envelope(true, json!([choice]))));
                }
                let finish = finish_reason(&g);
                out.push(sse(
                    shape.envelope(true, json!([shape.choice("", Some(finish), true)]))
                ));
                if include_usage {
                    let mut u = shape.envelope(true, json!([]));
                    u["usage"] = usage(&g);
                    out.push(sse(u));
                }
                out
            }
            Event::Error(e) => vec![sse(
                json!({"error": {"message": e.to_string(), "type": "api_error"}}),
            )],
            Event::Embeddings { .. } => vec![],
        }
    };
    Ok(event_stream(
        first,
        sub.events,
        state.cut.clone(),
        "text/event-stream",
        lines,
        Some("data: [DONE]\n\n"),
    ))
}

pub async fn chat_completions(State(state): State<AppState>, body: Bytes) -> OaResult<Response> {
    let b: ChatBody = json_body(&body)?;
    if b.messages.is_empty() {
        return Err(ApiError::bad_request("[] is too short - 'messages'").into());
    }
    let messages = messages(&b.messages)?;
    run(state, b.s, PromptInput::Chat(messages), true).await
}

pub async fn completions(State(state): State<AppState>, body: Bytes) -> OaResult<Response> {
    let b: CompletionBody = json_body(&body)?;
    if !b.suffix.is_empty() {
        return Err(ApiError::bad_request("suffix is not supported by this model").into());
    }
    let prompt = match b.prompt {
        Some(Value::String(p)) => p,
        _ => return Err(ApiError::bad_request("prompt must be a string").into()),
    };
    // Legacy completions continue the text as is, like Ollama's raw mode.
    run(state, b.s, PromptInput::Raw(prompt), false).await
}

fn model_entry(m: &crate::store::LocalModel) -> Value {
    json!({"id": m.name, "object": "model", "created": unix(m.modified), "owned_by": "library"})
}

/// The store's models, listed on a blocking thread.
async fn list(state: &AppState) -> Result<Vec<crate::store::LocalModel>, ApiError> {
    let st = state.clone();
    state
        .blocking(move || st.engine.store().list())
        .await?
        .map_err(|e| ApiError::from_store("", e))
}

pub async fn models(State(state): State<AppState>) -> OaResult<Json<Value>> {
    let list = list(&state).await?;
    let data: Vec<Value> = list.iter().map(model_entry).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> OaResult<Json<Value>> {
    let canonical = crate::store::canonical_name(&model);
    list(&state)
        .await?
        .iter()
        .find(|m| m.name == canonical || m.name == model)
        .map(|m| Json(model_entry(m)))
        .ok_or_else(|| ApiError::not_found(&model).into())
}

#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

pub async fn embeddings(State(state): State<AppState>, body: Bytes) -> OaResult<Json<Value>> {
    let b: EmbeddingsBody = json_body(&body)?;
    let model = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    let inputs: Vec<String> = match b.input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) if !a.is_empty() => a
            .into_iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("invalid input type"))?,
        _ => return Err(ApiError::bad_request("invalid input").into()),
    };
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("invalid encoding_format: {other}")).into())
        }
    };
    let (vectors, tokens, _) =
        embed_texts(&state, &model, inputs, true, b.dimensions, None, None).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})))
}
