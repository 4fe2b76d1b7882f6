//! `POST /api/classify`: a suggestion for a document's text against a taxonomy. (Classifying a
//! Paperless document by id, and the webhook receiver, come with the Paperless client.)

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::params::json_body;
use super::AppState;
use crate::paperless::{classify, ClassifyError, Taxonomy};

#[derive(Debug, Deserialize)]
struct ClassifyBody {
    content: Option<String>,
    taxonomy: Option<Taxonomy>,
    model: Option<String>,
    document_id: Option<Value>,
    num_ctx: Option<usize>,
}

pub async fn classify_text(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ClassifyBody = json_body(&body)?;
    if b.document_id.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "classifying a Paperless document by id needs the Paperless connection, which this \
             server does not have yet; send {\"content\", \"taxonomy\"} instead",
        ));
    }
    let content = b
        .content
        .ok_or_else(|| ApiError::bad_request("content is required (the document's text)"))?;
    let taxonomy = b.taxonomy.ok_or_else(|| {
        ApiError::bad_request(
            "taxonomy is required: {\"tags\", \"correspondents\", \"document_types\"}",
        )
    })?;
    let model = super::require_model(
        &state,
        Some(b.model.as_deref().unwrap_or(&state.classify_model)),
    )?;
    let c = classify(&state.engine, &model, &taxonomy, &content, b.num_ctx)
        .await
        .map_err(|e| match e {
            ClassifyError::Engine(e) => ApiError::from_engine(&model, e),
            ClassifyError::Empty => ApiError::bad_request(e.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
    Ok(Json(serde_json::to_value(c).unwrap_or_default()))
}
