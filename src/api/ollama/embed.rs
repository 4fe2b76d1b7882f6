//! `/api/embed` and the older `/api/embeddings`.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::params::{json_body, keep_alive, Options};
use crate::api::{first_event, AppState};
use crate::engine::{EmbedTask, Event};

use super::generate::nanos;

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
pub(crate) async fn embed_texts(
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
