//! The operator HTTP endpoint (`--http ADDR`, `[http] listen`; on 127.0.0.1:9090 by default):
//! `/health`, `/ready`, `/metrics`, `/cluster/status` and the dashboard (`/` and `/api/`, in
//! `dashboard/`), served by axum on the broker's runtime. It binds before the logs are opened,
//! so `/health` answers during recovery and `/ready` says 503 (and `/api/` too) until the
//! broker serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_frontend::BrokerMetrics;
use strata_frontend::admin::{Admin, AdminError};

use super::token::AdminToken;

/// What the endpoints report; the broker's start and shutdown update it.
#[derive(Default)]
pub struct HttpState {
    ready: AtomicBool,
    metrics: OnceLock<BrokerMetrics>,
    /// What the dashboard's `/api/` reads and changes through; set with `metrics`.
    admin: OnceLock<Admin>,
    /// `[http] token_file`: what `/metrics`, `/cluster/status` and the dashboard's `/api/`
    /// want; `/health`, `/ready` and the dashboard's page and assets stay open.
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
    let storage = state.metrics.get().map(BrokerMetrics::storage_problems).unwrap_or_default();
    let have_leaders = state.admin.get().is_none_or(Admin::partitions_have_leaders);
    let (status, body) = readiness(storage, have_leaders);
    (status, JSON, body)
}

/// `/ready` once the broker serves: 200, or 503 with `"problems"` naming each.
///
/// A partition that refuses publishes (a failed fsync, a full disk: `storage_problems`) makes
/// the broker unready, so a load balancer sends publishers elsewhere until it is fixed. So
/// does a partition this node replicates while it has no leader (an election under way, or
/// too few replicas reachable): publishes to it cannot commit.
fn readiness(mut problems: Vec<String>, partitions_have_leaders: bool) -> (StatusCode, String) {
    if !partitions_have_leaders {
        problems.push(LEADERLESS.to_owned());
    }
    if problems.is_empty() {
        return (StatusCode::OK, "{\"ready\":true}\n".to_owned());
    }
    let body = serde_json::json!({ "ready": false, "problems": problems });
    (StatusCode::SERVICE_UNAVAILABLE, format!("{body}\n"))
}

/// The `/ready` problem while a partition this node leads or follows has no leader.
const LEADERLESS: &str = "a partition this node replicates has no leader (see strata cluster status)";

/// `GET /cluster/status`: the JSON of `strata cluster status --output json`, behind the
/// `/metrics` token. 409 with `{"error": ...}` on a node without `[cluster]` (the refusal of
/// the admin API, as the dashboard's `/api/` answers refusals), 503 while the broker starts.
async fn cluster_status(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let error = |status: StatusCode, message: String| {
        let body = serde_json::json!({ "error": message });
        (status, JSON, format!("{body}\n")).into_response()
    };
    if !state.admits(&headers) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong token (http.token_file)".to_owned());
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(admin) = state.admin() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the broker is starting".to_owned());
    };
    match admin.cluster_status().await {
        Ok(status) => (StatusCode::OK, JSON, format!("{}\n", super::cluster_status::to_json(&status))).into_response(),
        Err(refused @ AdminError::Refused(_)) => error(StatusCode::CONFLICT, refused.to_string()),
        Err(AdminError::ShuttingDown) => error(StatusCode::SERVICE_UNAVAILABLE, AdminError::ShuttingDown.to_string()),
        Err(other) => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
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
        .route("/cluster/status", get(cluster_status))
        .merge(super::dashboard::routes())
        .with_state(Arc::clone(&state));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the HTTP endpoint stopped");
        }
    });
    Ok((local, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_names_every_problem_the_leaderless_partitions_included() {
        assert_eq!(readiness(vec![], true), (StatusCode::OK, "{\"ready\":true}\n".to_owned()));
        let (status, body) = readiness(vec![], false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"ready": false, "problems": [LEADERLESS]}));
        let (status, body) = readiness(vec!["default/0: the disk is full".to_owned()], false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["problems"], serde_json::json!(["default/0: the disk is full", LEADERLESS]));
        let (status, _) = readiness(vec!["default/0: the disk is full".to_owned()], true);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
