//! `/api/*` exactly as Ollama does it: wire types, validation, and thin handlers that turn a
//! request into an engine task and the engine's events into NDJSON or one JSON object; one
//! file per concern.

mod create;
mod embed;
mod generate;
mod models;

use axum::Json;
use serde_json::{json, Value};

pub use create::{blob_exists, blob_upload, create, push};
pub(crate) use embed::embed_texts;
pub use embed::{embed, embeddings};
pub(crate) use generate::with_defaults;
pub use generate::{chat, generate};
pub use models::{copy, delete, ps, pull, show, tags};

/// Version reported by `/api/version`: clients gate features on Ollama versions, so we report
/// the Ollama API level we implement, not our own crate version.
pub const OLLAMA_API_VERSION: &str = "0.12.0";

pub async fn root() -> &'static str {
    "Ollama is running"
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": OLLAMA_API_VERSION }))
}
