//! The accept loop and the server's lifecycle. Our own loop instead of `axum::serve`, for what
//! that one cannot bound: connections held at once, time to send the request headers (a client
//! that stalls mid-headers is dropped), and a shutdown that ends open streams with an error
//! line when the grace runs out. HTTP/1.1 only: every Ollama and OpenAI client speaks it.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use super::AppState;

/// Connection-level bounds.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections held at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send its request headers within this (also the idle keep-alive limit).
    pub header_timeout: Duration,
    /// In-flight requests may run this long after SIGTERM.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            header_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(25),
        }
    }
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

/// Serves until `stop` resolves (a shutdown signal in production). In-flight requests then get
/// `limits.grace` to finish; streams still open after it end with an error line. `cut` is the
/// sender of `state.cut`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    cut: watch::Sender<bool>,
    limits: ServeLimits,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    // Tests and scripts read the bound port (with --host 127.0.0.1:0) from this line.
    tracing::info!("listening on {addr}");
    let app = super::router(state);
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    // Tells open connections to finish their request and close.
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: Request<Incoming>| req.map(Body::new)),
        );
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all_closed = || slots.acquire_many(max as u32);
    if tokio::time::timeout(limits.grace, all_closed())
        .await
        .is_ok()
    {
        return Ok(());
    }
    tracing::warn!("requests still running after the grace period: ending them");
    let _ = cut.send(true);
    // Long enough for the streams' last lines to be written.
    let _ = tokio::time::timeout(Duration::from_secs(2), all_closed()).await;
    Ok(())
}
