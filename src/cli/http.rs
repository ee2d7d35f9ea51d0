//! The operator HTTP endpoint (`--http ADDR`, `[http] listen`; on 127.0.0.1:9090 by default):
//! `/health`, `/ready`, `/metrics` and the dashboard (`/` and `/api/`, in `dashboard/`), served
//! by axum on the broker's runtime. It binds before the logs are opened, so `/health` answers
//! during recovery and `/ready` says 503 (and `/api/` too) until the broker serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use strata_frontend::BrokerMetrics;
use strata_frontend::admin::Admin;

use super::token::AdminToken;

/// What the endpoints report; the broker's start and shutdown update it.
#[derive(Default)]
pub struct HttpState {
    ready: AtomicBool,
    metrics: OnceLock<BrokerMetrics>,
    /// What the dashboard's `/api/` reads and changes through; set with `metrics`.
    admin: OnceLock<Admin>,
    /// `[http] token_file`: what `/metrics` and the dashboard's `/api/` want; `/health`,
    /// `/ready` and the dashboard's page and assets stay open.
    token: Option<AdminToken>,
}

impl HttpState {
    /// Recovery has finished and the listeners are up: `/ready` says 200, `/metrics` serves.
    pub fn set_ready(&self, metrics: BrokerMetrics, admin: Admin) {
        let _ = self.metrics.set(metrics);
        let _ = self.admin.set(admin);
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `headers` carry the token, when one is set.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        self.token.as_ref().is_none_or(|token| token.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())))
    }

    /// Whether `[http] token_file` is set.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The admin operations, once the broker serves.
    pub(crate) fn admin(&self) -> Option<Admin> {
        self.admin.get().cloned()
    }

    /// Shutdown began: `/ready` says 503 again, so load balancers stop sending clients.
    pub fn set_stopping(&self) {
        self.ready.store(false, Ordering::Release);
    }
}

const JSON: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "application/json")];

async fn health() -> impl IntoResponse {
    (StatusCode::OK, JSON, "{\"status\":\"ok\"}\n")
}

async fn ready(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, JSON, "{\"ready\":false}\n".to_owned());
    }
    // A partition that refuses publishes (a failed fsync, a full disk) makes the broker
    // unready: a load balancer should send publishers elsewhere until it is fixed.
    let problems = state.metrics.get().map(BrokerMetrics::storage_problems).unwrap_or_default();
    if problems.is_empty() {
        return (StatusCode::OK, JSON, "{\"ready\":true}\n".to_owned());
    }
    let body = serde_json::json!({ "ready": false, "problems": problems });
    (StatusCode::SERVICE_UNAVAILABLE, JSON, format!("{body}\n"))
}

async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> impl IntoResponse {
    if !state.admits(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong token (http.token_file)\n".to_owned(),
        );
    }
    match state.metrics.get() {
        Some(metrics) => {
            let metrics = metrics.clone();
            // Reading every partition's size lists its segments: off the async workers.
            match tokio::task::spawn_blocking(move || metrics.render()).await {
                Ok(text) => {
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                }
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::new()),
            }
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/plain")], "starting\n".to_owned()),
    }
}

/// Binds `addr` and serves the endpoints in a task of the current runtime until it ends.
pub async fn start(addr: SocketAddr, token: Option<AdminToken>) -> anyhow::Result<(SocketAddr, Arc<HttpState>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("HTTP endpoint: listening on {addr} (http.listen or --http; \"off\" turns it off)"))?;
    let local = listener.local_addr().context("reading the HTTP listener address")?;
    let state = Arc::new(HttpState { token, ..HttpState::default() });
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(super::dashboard::routes())
        .with_state(Arc::clone(&state));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the HTTP endpoint stopped");
        }
    });
    Ok((local, state))
}
