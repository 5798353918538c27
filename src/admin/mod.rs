//! What operators use: the HTTP endpoint on `server.admin_listen` — `/metrics` (Prometheus
//! text format), `/healthz` (the process serves) and `/readyz` (a primary backend passed its
//! last check, so writes can be served) — and the admin console (`console`).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub mod console;

use crate::state::State;

/// Serves until pgward shuts down. Each connection is its own task; a slow scraper holds
/// nothing but its own connection.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = state.shutdown.cancelled() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// Server connections by backend and state, counted from the pools at scrape time.
fn server_gauges(state: &State) {
    let mut counts: Vec<(String, i64, i64)> = Vec::new();
    for pool in state.pools.all() {
        let (active, idle) = (pool.in_use() as i64, pool.idle_connections().len() as i64);
        match counts.iter_mut().find(|c| c.0 == pool.key.backend) {
            Some(c) => {
                c.1 += active;
                c.2 += idle;
            }
            None => counts.push((pool.key.backend.clone(), active, idle)),
        }
    }
    crate::metrics::server_connections(&counts);
}

fn respond(req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => {
            server_gauges(state);
            if let Some(cache) = &state.cache {
                cache.results.refresh_metrics();
            }
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let rt = state.runtime.load();
            if rt.router.primary_usable() {
                (StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no primary backend is up\n".into(),
                )
            }
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
