//! `POST /api/classify` (a document's text against a taxonomy, or a Paperless document by id)
//! and `POST /api/paperless/webhook`, the receiver for Paperless workflows and the
//! post-consume script: it answers 202 at once (Paperless gives webhooks 5 s) and queues.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::params::json_body;
use super::{AppState, Scope};
use crate::paperless::fields::{select, CustomField};
use crate::paperless::neighbours::Neighbours;
use crate::paperless::triggers::webhook_document_id;
use crate::paperless::{
    ClassifyError, Enqueued, Example, ExampleSet, Job, NoNeighbours, Paperless, PaperlessError,
    ProcessError, Taxonomy, Trigger,
};

#[derive(Debug, Deserialize)]
struct ClassifyBody {
    content: Option<String>,
    taxonomy: Option<Taxonomy>,
    model: Option<String>,
    document_id: Option<Value>,
    dry_run: Option<bool>,
    num_ctx: Option<usize>,
    /// Labelled documents to learn from, as the archive would be.
    examples: Option<Vec<Example>>,
    /// Names of the taxonomy's custom fields to extract.
    custom_fields: Option<Vec<String>>,
}

/// Examples one request may carry (each is embedded).
const MAX_EXAMPLES: usize = 2000;

fn paperless(state: &AppState) -> Result<&Paperless, ApiError> {
    state.paperless.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no Paperless connection: start it with PAPERLESS_URL and \
             PAPERLESS_API_TOKEN (or send {\"content\", \"taxonomy\"} to classify text)",
        )
    })
}

/// A document id given as a number or a numeric string.
fn document_id(v: &Value) -> Result<i64, ApiError> {
    let id = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    id.filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "document_id must be a positive integer (or a string holding one), got {v}"
        ))
    })
}

fn classify_error(model: &str, e: ClassifyError) -> ApiError {
    match e {
        ClassifyError::Engine(e) => ApiError::from_engine(model, e),
        ClassifyError::Empty => ApiError::bad_request(e.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn process_error(model: &str, e: ProcessError) -> ApiError {
    match e {
        ProcessError::Classify(e) => classify_error(model, e),
        ProcessError::Paperless(PaperlessError::NotFound(what)) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("not found in Paperless: {what}"),
        ),
        e @ ProcessError::NoText => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        // Paperless failing (or refusing our token) is an upstream problem, not the caller's.
        ProcessError::Paperless(e) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        e @ ProcessError::Journal(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// The taxonomy's custom fields named in the request, in the request's order.
fn requested_fields(t: &Taxonomy, names: &[String]) -> Result<Vec<CustomField>, ApiError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    select(&t.custom_fields, &names).map_err(|name| {
        let known: Vec<&str> = t.custom_fields.iter().map(|f| f.name.as_str()).collect();
        ApiError::bad_request(format!(
            "custom field {name:?} is not among the taxonomy's custom_fields ({}): send \
             its definition as Paperless's /api/custom_fields/ lists it",
            if known.is_empty() {
                "it has none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

pub async fn classify_text(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ClassifyBody = json_body(&body)?;
    if let Some(id) = &b.document_id {
        state.guard.authorize(&headers, Scope::Paperless)?;
        if b.custom_fields.is_some() {
            return Err(ApiError::bad_request(
                "custom_fields goes with {\"content\", \"taxonomy\"}: for a Paperless \
                 document the fields filled are those named in CANDLELIGHT_CUSTOM_FIELDS",
            ));
        }
        let id = document_id(id)?;
        let p = paperless(&state)?;
        super::require_model(&state, Some(&p.settings().model))?;
        let report = p
            .process(id, Trigger::Api, true, b.dry_run)
            .await
            .map_err(|e| process_error(&p.settings().model, e))?;
        return Ok(Json(serde_json::to_value(report).unwrap_or_default()));
    }
    let content = b.content.ok_or_else(|| {
        ApiError::bad_request(
            "send {\"content\", \"taxonomy\"} (a document's text) or {\"document_id\"} \
             (a Paperless document)",
        )
    })?;
    let taxonomy = b.taxonomy.ok_or_else(|| {
        ApiError::bad_request(
            "taxonomy is required: {\"tags\", \"correspondents\", \"document_types\"}",
        )
    })?;
    let fields = requested_fields(&taxonomy, b.custom_fields.as_deref().unwrap_or_default())?;
    let model = super::require_model(
        &state,
        Some(b.model.as_deref().unwrap_or(&state.classify_model)),
    )?;
    let examples = b.examples.unwrap_or_default();
    if examples.len() > MAX_EXAMPLES {
        return Err(ApiError::bad_request(format!(
            "too many examples: {} (at most {MAX_EXAMPLES}); send the most relevant ones",
            examples.len()
        )));
    }
    let classifier = &state.classifier;
    let set = match (examples.is_empty(), classifier.encoder()) {
        (true, _) => None,
        (false, None) => {
            return Err(ApiError::bad_request(
                "examples need the embedding model: this server runs with \
                 CANDLELIGHT_EMBED_MODEL empty",
            ))
        }
        (false, Some(enc)) => Some(
            ExampleSet::new(enc, examples)
                .await
                .map_err(|e| ApiError::from_engine(enc.model(), e))?,
        ),
    };
    let neighbours: &dyn Neighbours = match &set {
        Some(s) => s,
        None => &NoNeighbours,
    };
    let c = classifier
        .classify(Job {
            model: &model,
            taxonomy: &taxonomy,
            content: &content,
            num_ctx: b.num_ctx,
            new_correspondent: false,
            neighbours,
            id: None,
            fields: &fields,
        })
        .await
        .map_err(|e| classify_error(&model, e))?;
    Ok(Json(serde_json::to_value(c).unwrap_or_default()))
}

pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.guard.authorize(&headers, Scope::Paperless)?;
    let p = paperless(&state)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let id = webhook_document_id(content_type, &body)
        .await
        .ok_or_else(|| {
            ApiError::bad_request(
                "no document id in the webhook: configure the workflow's params as \
             {\"document_id\": \"{{ doc_id }}\"} or {\"doc_url\": \"{{ doc_url }}\"}",
            )
        })?;
    let status = p.enqueue(id, Trigger::Webhook);
    if status == Enqueued::Full {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the classification queue is full ({} documents waiting); polling picks this \
                 document up later, or send the webhook again",
                p.queue_capacity()
            ),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"document_id": id, "status": status})),
    ))
}

/// `POST /api/paperless/undo {"document_id": N}`: takes back our writes to one document (a
/// write to Paperless: the same keys as the webhook guard it).
pub async fn undo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.guard.authorize(&headers, Scope::Paperless)?;
    let b: Value = json_body(&body)?;
    let id = document_id(b.get("document_id").unwrap_or(&Value::Null))?;
    let p = paperless(&state)?;
    let report = p
        .undo(id, Trigger::Api)
        .await
        .map_err(|e| process_error(&p.settings().model, e))?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// `GET /api/paperless/journal[?document_id=N]`: our changes to documents, oldest first. It
/// shows titles of the owner's documents, so it is guarded like the writes.
pub async fn journal(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    state.guard.authorize(&headers, Scope::Paperless)?;
    let p = paperless(&state)?;
    let mut id = None;
    let query = query.unwrap_or_default();
    for (k, v) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match k {
            "document_id" => id = Some(document_id(&Value::String(v.to_owned()))?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}': the journal takes document_id"
                )))
            }
        }
    }
    let records = p
        .history(id)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "records": records })))
}
