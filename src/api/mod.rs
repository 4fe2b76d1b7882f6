//! The HTTP edge (axum): routes, shared state, streaming helpers, and the server's lifecycle.
//! Handlers stay thin: parse and validate wire JSON, call the engine, shape the reply.

pub mod classify;
pub mod error;
pub mod ollama;
pub mod openai;
pub mod params;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use std::convert::Infallible;

use crate::engine::{Engine, EngineError, Event, Generated};
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Model for `/api/classify` when the request names none (the connector's OLLAMA_MODEL).
    pub classify_model: String,
    /// The Paperless connection, when PAPERLESS_URL is set.
    pub paperless: Option<crate::paperless::Paperless>,
    /// Required on the webhook endpoint when set.
    pub webhook_token: Option<String>,
    pub metrics: crate::metrics::Metrics,
    pub gpu: crate::gpu::GpuMonitor,
}

/// Request bodies larger than this are refused (413): a prompt of a whole book fits easily.
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
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
        .route("/api/classify", post(classify::classify_text))
        .route("/api/paperless/webhook", post(classify::webhook))
        .route("/metrics", get(metrics))
        .route("/api/gpu", get(gpu))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/embeddings", post(openai::embeddings))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::AllowOrigin::predicate(|o, _| {
                    allowed_origin(o.to_str().unwrap_or(""))
                }))
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        )
        .with_state(state)
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

/// Ollama's default CORS origins: local hosts on any port and app schemes.
fn allowed_origin(origin: &str) -> bool {
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .map(|h| h.split(':').next().unwrap_or(""));
    matches!(host, Some("localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]"))
        || [
            "app://",
            "file://",
            "tauri://",
            "vscode-webview://",
            "vscode-file://",
        ]
        .iter()
        .any(|s| origin.starts_with(s))
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
        .map_err(|e| ApiError::from_engine(&model, e.into()))?;
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
            Some(Event::Embeddings { .. }) | None => {}
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
                },
            };
            let terminal = !matches!(ev, Event::Text(_));
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
pub(crate) fn ndjson<F>(first: Event, events: UnboundedReceiver<Event>, mut line: F) -> Response
where
    F: FnMut(Event) -> Value + Send + 'static,
{
    event_stream(
        first,
        events,
        "application/x-ndjson",
        move |ev| vec![format!("{}\n", line(ev))],
        None,
    )
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Serves until a shutdown signal; in-flight requests are allowed `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    grace: Duration,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    // Tests and scripts read the bound port (with --host 127.0.0.1:0) from this line.
    tracing::info!("listening on {addr}");
    let app = router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = tx.send(());
    });
    tokio::select! {
        r = server => r,
        _ = async {
            let _ = rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("requests still running after the grace period: stopping anyway");
            Ok(())
        }
    }
}
