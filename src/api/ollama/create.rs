//! `/api/create`, `/api/blobs/:digest` and `/api/push`: making a model from an existing one or
//! an uploaded file, with a Modelfile's defaults. Never from a path on the server: a file comes
//! in as a blob, under its sha256, into the store's own folder.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::api::error::ApiError;
use crate::api::params::{json_body, Options};
use crate::api::{AppState, Scope};
use crate::engine::template::check_go_template;
use crate::store::{blob_hex, CreateFrom, DefaultMessage, ModelDefaults};

/// Largest blob accepted (a 70B Q4 model is ~40 GB; nothing a home lab runs is bigger).
pub const MAX_BLOB_BYTES: u64 = 64 << 30;

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(alias = "name")]
    model: Option<String>,
    from: Option<String>,
    /// File name -> `sha256:<hex>` of an uploaded blob.
    files: Option<Map<String, Value>>,
    /// The older API: a Modelfile's text.
    modelfile: Option<String>,
    /// The oldest API: a Modelfile's path on the server (refused).
    path: Option<String>,
    system: Option<String>,
    template: Option<String>,
    parameters: Option<Map<String, Value>>,
    messages: Option<Vec<DefaultMessage>>,
    adapters: Option<Map<String, Value>>,
    quantize: Option<String>,
    stream: Option<bool>,
}

/// A Modelfile's instructions, as far as candlelight uses them.
#[derive(Debug, Default, PartialEq)]
struct Modelfile {
    from: Option<String>,
    defaults: ModelDefaults,
}

/// Parses the Modelfile subset people write: `FROM`, `SYSTEM`, `TEMPLATE`, `PARAMETER`,
/// `MESSAGE`, `LICENSE` (kept out), comments; values may be `"""` blocks over several lines.
fn parse_modelfile(text: &str) -> Result<Modelfile, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("modelfile: {m}"));
    let mut out = Modelfile::default();
    let mut lines = text.lines();
    let mut stops: Vec<Value> = Vec::new();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let mut rest = rest.trim().to_owned();
        // A `"""` block runs to the line that closes it.
        if let Some(open) = rest.strip_prefix("\"\"\"") {
            let mut block = open.to_owned();
            while !block.contains("\"\"\"") {
                match lines.next() {
                    Some(l) => {
                        block.push('\n');
                        block.push_str(l);
                    }
                    None => return Err(bad(format!("{word}: unclosed \"\"\""))),
                }
            }
            let end = block.find("\"\"\"").unwrap_or(block.len());
            rest = block[..end].to_owned();
        } else if rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"') {
            rest = rest[1..rest.len() - 1].to_owned();
        }
        match word.to_ascii_uppercase().as_str() {
            "FROM" => out.from = Some(rest),
            "SYSTEM" => out.defaults.system = Some(rest),
            "TEMPLATE" => out.defaults.template = Some(rest),
            "PARAMETER" => {
                let (key, value) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad(format!("PARAMETER {rest}: needs a name and a value")))?;
                let value = value.trim().trim_matches('"');
                if key == "stop" {
                    stops.push(json!(value));
                    continue;
                }
                let v = serde_json::from_str::<Value>(value)
                    .ok()
                    .filter(|v| v.is_number() || v.is_boolean())
                    .unwrap_or_else(|| json!(value));
                out.defaults.options.insert(key.to_owned(), v);
            }
            "MESSAGE" => {
                let (role, content) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad(format!("MESSAGE {rest}: needs a role and a text")))?;
                let content = content.trim();
                let content = content
                    .strip_prefix("\"\"\"")
                    .and_then(|c| c.strip_suffix("\"\"\""))
                    .unwrap_or(content);
                out.defaults.messages.push(DefaultMessage {
                    role: role.to_owned(),
                    content: content.to_owned(),
                });
            }
            "LICENSE" | "REQUIRES" => {}
            "ADAPTER" => return Err(bad("ADAPTER (LoRA) is not supported".into())),
            other => return Err(bad(format!("unknown instruction {other}"))),
        }
    }
    if !stops.is_empty() {
        out.defaults
            .options
            .insert("stop".into(), Value::Array(stops));
    }
    Ok(out)
}

/// Options a created model may set: the ones a request's `options` takes.
fn check_defaults(d: &ModelDefaults) -> Result<(), ApiError> {
    Options::parse(&d.options)?;
    if let Some(t) = &d.template {
        check_go_template(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    for m in &d.messages {
        if !["system", "user", "assistant"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "message role {:?}: use system, user or assistant",
                m.role
            )));
        }
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.guard.authorize(&headers, Scope::Models)?;
    let b: CreateBody = json_body(&body)?;
    let name = b
        .model
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    crate::store::parse_name(&name).map_err(|e| ApiError::from_store(&name, e))?;
    if b.path.is_some() {
        return Err(ApiError::bad_request(
            "a Modelfile path on the server is never read: send its text as `modelfile`, and \
             upload model files with POST /api/blobs/sha256:<digest>",
        ));
    }
    if b.quantize.is_some() {
        return Err(ApiError::bad_request(
            "quantize is not supported: create from a file already in the quantization you want",
        ));
    }
    if b.adapters.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::bad_request("adapters (LoRA) are not supported"));
    }
    let mut mf = match &b.modelfile {
        Some(text) => parse_modelfile(text)?,
        None => Modelfile::default(),
    };
    // The structured fields (the current API) win over a Modelfile's.
    let mut defaults = std::mem::take(&mut mf.defaults);
    if let Some(s) = b.system {
        defaults.system = Some(s);
    }
    if let Some(t) = b.template {
        defaults.template = Some(t);
    }
    if let Some(p) = b.parameters {
        defaults.options.extend(p);
    }
    if let Some(m) = b.messages {
        defaults.messages = m;
    }
    check_defaults(&defaults)?;
    let from = match (b.files.filter(|f| !f.is_empty()), b.from.or(mf.from)) {
        (Some(files), _) => {
            if files.len() != 1 {
                return Err(ApiError::bad_request(
                    "files: give exactly one model file (split GGUFs and projectors are not \
                     supported)",
                ));
            }
            let digest = files.values().next().and_then(Value::as_str).unwrap_or("");
            blob(&state, digest)?
        }
        (None, Some(from)) => match from.strip_prefix('@').unwrap_or(&from) {
            d if d.starts_with("sha256") => blob(&state, d)?,
            _ => CreateFrom::Model(from),
        },
        (None, None) => {
            return Err(ApiError::bad_request(
                "neither `from` nor `files`: say which model or uploaded file to create from",
            ))
        }
    };
    // An uploaded file must be a model this server can load, before it gets a name.
    if let CreateFrom::Blob(hex) = &from {
        let path = state.engine.store().blob_path(hex);
        state
            .blocking(move || crate::engine::inspect(&path))
            .await?
            .map_err(|e| ApiError::bad_request(format!("the uploaded file is not a model: {e}")))?;
    }
    let store = state.engine.store().clone();
    let (dest, src) = (name.clone(), from.clone());
    state
        .blocking(move || store.create(&dest, &src, defaults))
        .await?
        .map_err(|e| match (&from, e) {
            (CreateFrom::Model(m), crate::store::StoreError::NotFound(_)) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("model \"{m}\" not found: pull it or give an uploaded file"),
            ),
            (_, e) => ApiError::from_store(&name, e),
        })?;
    // A model loaded under this name before keeps nothing of its old defaults.
    state.engine.unload(&name).await;
    let source = match &from {
        CreateFrom::Blob(hex) => format!("using existing layer sha256:{hex}"),
        CreateFrom::Model(m) => format!("using model {m}"),
    };
    let lines = [
        json!({"status": source}),
        json!({"status": "writing manifest"}),
        json!({"status": "success"}),
    ];
    if b.stream == Some(false) {
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        text,
    )
        .into_response())
}

fn blob(state: &AppState, digest: &str) -> Result<CreateFrom, ApiError> {
    let hex = digest_param(digest)?;
    if !state.engine.store().has_blob(&hex) {
        return Err(ApiError::bad_request(format!(
            "blob sha256:{hex} not found: upload it first with POST /api/blobs/sha256:{hex}"
        )));
    }
    Ok(CreateFrom::Blob(hex))
}

/// A digest as the API spells it (`sha256:<hex>`), or a 400 that says so.
fn digest_param(digest: &str) -> Result<String, ApiError> {
    blob_hex(digest).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid digest {digest:?}: expected sha256:<64 hex>"
        ))
    })
}

/// `HEAD /api/blobs/:digest`: 200 when the blob is here, 404 when not.
pub async fn blob_exists(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.guard.authorize(&headers, Scope::Models)?;
    let hex = digest_param(&digest)?;
    Ok(if state.engine.store().has_blob(&hex) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// `POST /api/blobs/:digest`: the body is stored under its digest once its sha256 matches; a
/// body that does not match, or grows past [`MAX_BLOB_BYTES`], leaves nothing behind.
pub async fn blob_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    state.guard.authorize(&headers, Scope::Uploads)?;
    let hex = digest_param(&digest)?;
    let store = state.engine.store().clone();
    if store.has_blob(&hex) {
        return Ok(StatusCode::OK);
    }
    let upload = store
        .blob_upload_path(&hex)
        .map_err(|e| ApiError::from_store(&digest, e))?;
    let result = receive(body, &upload, &hex).await;
    let committed = match result {
        Ok(()) => store
            .commit_blob(&upload, &hex)
            .map_err(|e| ApiError::from_store(&digest, e)),
        Err(e) => Err(e),
    };
    if committed.is_err() {
        let _ = tokio::fs::remove_file(&upload).await;
    }
    committed.map(|()| StatusCode::CREATED)
}

async fn receive(body: Body, upload: &std::path::Path, hex: &str) -> Result<(), ApiError> {
    let internal = |e: std::io::Error| {
        tracing::error!(error = %e, "writing an uploaded blob failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storing the upload failed; the server log says why",
        )
    };
    let mut file = tokio::fs::File::create(upload).await.map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_BLOB_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("blobs are limited to {} GiB", MAX_BLOB_BYTES >> 30),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.sync_all().await.map_err(internal)?;
    let got = hex::encode(hasher.finalize());
    if got != hex {
        return Err(ApiError::bad_request(format!(
            "digest mismatch: the body's sha256 is {got}, the path says {hex}"
        )));
    }
    Ok(())
}

/// `/api/push`: there is no registry to push to.
pub async fn push() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "push is not supported: candlelight has no registry; copy the model file (or its \
         Ollama folder) to the other machine instead",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modelfile_subset_parses_what_people_write() {
        let mf = parse_modelfile(
            "# my assistant\nFROM smollm2:135m\nPARAMETER temperature 0.3\nPARAMETER num_ctx 4096\n\
             PARAMETER stop \"<|im_end|>\"\nPARAMETER stop END\nSYSTEM \"\"\"You file papers.\n\
             Be brief.\"\"\"\nMESSAGE user Hi\nMESSAGE assistant \"\"\"Hello!\"\"\"\nLICENSE \"\"\"MIT\n\
             text\"\"\"\n",
        )
        .unwrap();
        assert_eq!(mf.from.as_deref(), Some("smollm2:135m"));
        let d = &mf.defaults;
        assert_eq!(d.system.as_deref(), Some("You file papers.\nBe brief."));
        assert_eq!(d.options["temperature"], json!(0.3));
        assert_eq!(d.options["num_ctx"], json!(4096));
        assert_eq!(d.options["stop"], json!(["<|im_end|>", "END"]));
        assert_eq!(d.messages.len(), 2);
        assert_eq!(d.messages[1].content, "Hello!");
        assert!(parse_modelfile("ADAPTER ./lora.gguf").is_err());
        assert!(parse_modelfile("FROBNICATE x").is_err());
        assert!(parse_modelfile("SYSTEM \"\"\"never closed").is_err());
    }
}
