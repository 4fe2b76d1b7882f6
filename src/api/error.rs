//! One error type for the HTTP edge: Ollama's `{"error": "..."}` body with a status code.
//! The OpenAI routes wrap the same error in OpenAI's shape (see `openai.rs`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(model: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("model '{model}' not found"))
    }

    /// Maps a model store error for a request about `model`. Server-side failures are logged
    /// in full but answered without the server's paths.
    pub fn from_store(model: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(model),
            e @ StoreError::NotDownloaded { .. } => Self::new(
                StatusCode::NOT_FOUND,
                format!("model '{model}' not found: {e}"),
            ),
            e @ (StoreError::BadName(_) | StoreError::NotInStore(_)) => {
                Self::bad_request(e.to_string())
            }
            e @ StoreError::Exists(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            e @ StoreError::NotOwned(_) => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            e @ (StoreError::BadManifest { .. } | StoreError::Io { .. }) => {
                tracing::error!(model, error = %e, "model store failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model store failed; the server log says why",
                )
            }
        }
    }

    /// Maps an engine error for a request about `model`.
    pub fn from_engine(model: &str, e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => Self::from_store(model, e),
            EngineError::InvalidInput(_) | EngineError::ContextOverflow { .. } => {
                Self::bad_request(e.to_string())
            }
            // Ollama's wording: `"all-minilm" does not support generate`.
            EngineError::NotCapable(what) => {
                Self::bad_request(format!("{model:?} does not support {what}"))
            }
            EngineError::Overloaded(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => {
                tracing::error!(model, error = %other, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
