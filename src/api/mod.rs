//! The HTTP edge (axum): routes, shared state, streaming helpers, and the server's lifecycle.
//! Handlers stay thin: parse and validate wire JSON, call the engine, shape the reply.

pub mod classify;
pub mod error;
pub mod guard;
pub mod logprobs;
pub mod ollama;
pub mod openai;
pub mod params;
pub mod server;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{watch, Semaphore};

use std::convert::Infallible;

use crate::engine::{Engine, EngineError, Event, Generated};
use error::ApiError;
pub use guard::{Guard, Scope};
pub use server::{serve, shutdown_signal, ServeLimits};

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Model for `/api/classify` when the request names none (the connector's OLLAMA_MODEL).
    pub classify_model: String,
    /// The Paperless connection, when PAPERLESS_URL is set.
    pub paperless: Option<crate::paperless::Paperless>,
    /// Classifies posted text (`/api/classify` with `content`).
    pub classifier: Arc<crate::paperless::Classifier>,
    /// Host, origin and key rules.
    pub guard: Guard,
    pub limits: Limits,
    pub metrics: crate::metrics::Metrics,
    pub gpu: crate::gpu::GpuMonitor,
    /// File-system work (listing, hashing, reading model headers) runs on blocking threads;
    /// this bounds how many requests can hold one at a time.
    pub blocking: Arc<Semaphore>,
    /// Set when the shutdown grace has run out: open streams end with an error line.
    pub cut: watch::Receiver<bool>,
}

/// What one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bodies larger than this are refused (413).
    pub body_bytes: usize,
    /// Texts in one embedding request.
    pub embed_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 8 << 20,
            embed_inputs: 1024,
        }
    }
}

/// Blocking work a request may start at once (see [`AppState::blocking`]).
pub const BLOCKING_PERMITS: usize = 2;

impl AppState {
    /// Runs file-system work off the async threads, at most [`BLOCKING_PERMITS`] at once.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
        let _permit = self
            .blocking
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| internal(e.to_string()))
    }
}

pub fn router(state: AppState) -> Router {
    let guard = state.guard.clone();
    let cors_guard = guard.clone();
    let body_limit = state.limits.body_bytes;
    Router::new()
        .route("/", get(ollama::root).head(ollama::root))
        .route("/api/version", get(ollama::version).head(ollama::version))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags).head(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::pull))
        .route("/api/copy", post(ollama::copy))
        .route("/api/delete", delete(ollama::delete))
        .route("/api/create", post(ollama::create))
        .route("/api/push", post(ollama::push))
        .route("/api/classify", post(classify::classify_text))
        .route("/api/paperless/webhook", post(classify::webhook))
        .route("/api/paperless/undo", post(classify::undo))
        .route("/api/paperless/journal", get(classify::journal))
        .route("/metrics", get(metrics))
        .route("/api/gpu", get(gpu))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/embeddings", post(openai::embeddings))
        // Refuses a declared Content-Length over the limit before parsing or keeping a byte; the
        // extractor limit below catches chunked bodies that grow past it.
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        // Model files are uploaded as a stream, hashed and capped by the handler itself.
        .merge(Router::new().route(
            "/api/blobs/{digest}",
            post(ollama::blob_upload).head(ollama::blob_exists),
        ))
        // Outside the merge: the fallback's 404/405 and the limit's 413 are JSON too.
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            json_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            handler_panicked,
        ))
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::AllowOrigin::predicate(move |o, _| {
                    cors_guard.origin_allowed(o.to_str().unwrap_or(""))
                }))
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        )
        .layer(axum::middleware::from_fn_with_state(
            guard,
            guard::check_request,
        ))
        .with_state(state)
}

/// How much of an oversized body is read (and dropped) at most before the 413, and for how long.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request whose declared length is over `limit` gets a 413 without its body being parsed or
/// kept. What the client is still sending is read and dropped for a moment first (bounded in
/// bytes and time): a connection closed with unread bytes is reset by the kernel, and the
/// client then sees a broken connection instead of the answer that says what the limit is.
async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_none_or(|n| n <= limit as u64) {
        return next.run(req).await;
    }
    use futures_util::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let drain = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    // `json_errors` words it.
    StatusCode::PAYLOAD_TOO_LARGE.into_response()
}

/// A request body still arriving after this is dropped (a client trickling bytes holds a
/// connection and a buffer).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a panicking handler answers (the panic itself is a bug; the log has it).
pub const PANIC_MESSAGE: &str =
    "internal error: the request handler failed (a bug; the server log has the details)";

fn handler_panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(panic = %what, "request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, PANIC_MESSAGE).into_response()
}

/// An error in the shape the route's clients read: OpenAI's under `/v1`, Ollama's elsewhere.
pub(crate) fn error_response(path: &str, e: ApiError) -> Response {
    if path.starts_with("/v1/") {
        openai::OpenAiError::from(e).into_response()
    } else {
        e.into_response()
    }
}

/// Errors made outside our handlers (axum's rejections: body too large, unreadable body,
/// wrong method, unknown route) come as plain text; clients of this API parse JSON errors.
async fn json_errors(
    axum::extract::State(body_limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body too large: the limit is {body_limit} bytes")
        }
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
        StatusCode::NOT_FOUND => "404 page not found".to_owned(),
        _ => {
            let bytes = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        }
    };
    error_response(&path, ApiError::new(status, message))
}

/// Counts every request by route pattern (not the raw path: model names in `/v1/models/...`
/// must not become unbounded label values), method and status.
async fn count_requests(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    state
        .metrics
        .engine
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            endpoint,
            method,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// Prometheus scrape: OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    state.metrics.observe_gpu(&state.gpu.get());
    state
        .metrics
        .engine
        .admitted
        .set(state.engine.queued() as i64);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render_text(),
        )
            .into_response()
    }
}

/// The GPU monitor's latest sample (or why there is none).
async fn gpu(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    axum::Json(state.gpu.get()).into_response()
}

/// The request's model name, which must be given and known (404 otherwise).
pub(crate) fn require_model(state: &AppState, model: Option<&str>) -> Result<String, ApiError> {
    let model = model
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("model is required"))?
        .to_owned();
    state
        .engine
        .store()
        .resolve(&model)
        .map_err(|e| ApiError::from_store(&model, e))?;
    Ok(model)
}

/// Waits for the first event of a request. Errors that happen before any output (bad prompt,
/// context overflow) become a proper status code instead of a line in a 200 stream.
pub(crate) async fn first_event(
    model: &str,
    events: &mut UnboundedReceiver<Event>,
) -> Result<Event, ApiError> {
    match events.recv().await {
        Some(Event::Error(e)) => Err(ApiError::from_engine(model, e)),
        Some(ev) => Ok(ev),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model stopped before answering",
        )),
    }
}

/// Drains a generation into its full text and final statistics.
pub(crate) async fn collect(
    model: &str,
    first: Event,
    events: &mut UnboundedReceiver<Event>,
) -> Result<(String, Generated), ApiError> {
    let mut text = String::new();
    let mut next = Some(first);
    loop {
        match next.take() {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(g)) => return Ok((text, g)),
            Some(Event::Error(e)) => return Err(ApiError::from_engine(model, e)),
            Some(Event::Embeddings { .. } | Event::Logprobs(_)) | None => {}
        }
        next = Some(events.recv().await.ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the model stopped before finishing",
            )
        })?);
    }
}

/// Streams events as text produced by `line` (NDJSON or SSE), ending after the final event,
/// then `trailer`. A client that goes away closes the channel; the forwarding task then drops
/// the event receiver, which cancels the generation at its next token.
pub(crate) fn event_stream<F>(
    first: Event,
    mut events: UnboundedReceiver<Event>,
    mut cut: watch::Receiver<bool>,
    content_type: &'static str,
    mut line: F,
    trailer: Option<&'static str>,
) -> Response
where
    F: FnMut(Event) -> Vec<String> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let mut next = Some(first);
        loop {
            let ev = match next.take() {
                Some(ev) => ev,
                None => tokio::select! {
                    ev = events.recv() => ev.unwrap_or(Event::Error(EngineError::WorkerGone)),
                    _ = tx.closed() => return,
                    // The grace after SIGTERM ran out: say so instead of just stopping.
                    _ = cut.wait_for(|c| *c) => Event::Error(EngineError::ShuttingDown),
                },
            };
            let terminal = !matches!(ev, Event::Text(_) | Event::Logprobs(_));
            for l in line(ev) {
                if tx.send(Ok(Bytes::from(l))).await.is_err() {
                    return;
                }
            }
            if terminal {
                break;
            }
        }
        if let Some(t) = trailer {
            let _ = tx.send(Ok(Bytes::from_static(t.as_bytes()))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// NDJSON stream (Ollama): one JSON object per line.
pub(crate) fn ndjson<F>(
    first: Event,
    events: UnboundedReceiver<Event>,
    cut: watch::Receiver<bool>,
    mut line: F,
) -> Response
where
    F: FnMut(Event) -> Vec<Value> + Send + 'static,
{
    event_stream(
        first,
        events,
        cut,
        "application/x-ndjson",
        move |ev| line(ev).into_iter().map(|v| format!("{v}\n")).collect(),
        None,
    )
}
