//! What models there are and what they are (`/api/tags`, `/api/show`, `/api/ps`), and their
//! management (`/api/copy`, `/api/delete`, `/api/pull`).

use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::params::{json_body, rfc3339};
use crate::api::{AppState, Scope};
use crate::engine::{ChatTemplate, Loaded, ModelInfo, ModelKind};
use crate::store::LocalModel;

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
    // What /api/create gave the model comes first; the template's stop tokens after.
    let defaults = state.engine.store().defaults(&model);
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    for (k, v) in &defaults.options {
        match v {
            Value::Array(items) => lines.extend(
                items
                    .iter()
                    .map(|i| format!("{k} {}", quoted(i.as_str().unwrap_or_default()))),
            ),
            Value::String(s) => lines.push(format!("{k} {}", quoted(s))),
            other => lines.push(format!("{k} {other}")),
        }
    }
    if !defaults.options.contains_key("stop") {
        lines.extend(
            card.stop_strings
                .iter()
                .map(|s| format!("stop {}", quoted(s))),
        );
    }
    let parameters = lines.join("\n");
    let template_text = defaults
        .template
        .clone()
        .unwrap_or_else(|| card.template.go_template().to_owned());
    let mut modelfile_extra = String::new();
    if let Some(s) = &defaults.system {
        modelfile_extra.push_str(&format!("SYSTEM \"\"\"{s}\"\"\"\n"));
    }
    for m in &defaults.messages {
        modelfile_extra.push_str(&format!("MESSAGE {} \"\"\"{}\"\"\"\n", m.role, m.content));
    }
    let modified = std::fs::metadata(&resolved.path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut out = json!({
        "modelfile": format!("# Modelfile generated by candlelight\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}{}\n",
            resolved.path.display(), template_text, modelfile_extra,
            lines.iter().map(|l| format!("PARAMETER {l}\n")).collect::<String>()),
        "parameters": parameters,
        "template": template_text,
        "details": details(info),
        "model_info": model_info,
        "capabilities": card.capabilities(),
        "modified_at": rfc3339(modified),
    });
    if let Some(s) = &defaults.system {
        out["system"] = json!(s);
    } else if let ChatTemplate::ChatMl {
        default_system: Some(s),
    } = &card.template
    {
        out["system"] = json!(s);
    }
    if !defaults.messages.is_empty() {
        out["messages"] = json!(defaults.messages);
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
