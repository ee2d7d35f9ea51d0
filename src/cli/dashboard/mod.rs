//! The operator's dashboard (issue 23): `/` on the HTTP endpoint serves a page and its script
//! and style, embedded in the binary (no build step, nothing from a CDN), and `/api/...`
//! answers the page's JSON calls. Every figure is read, and every change made, through
//! [`strata_frontend::admin::Admin`], the code path of the gRPC admin API and the CLI.
//!
//! The assets hold no data and are served to anyone who reaches the listener; `/api/` wants
//! `[http] token_file`'s token as `Authorization: Bearer`, like `/metrics` (the page asks for
//! it and keeps it in the tab's `sessionStorage`). Changes are POSTs of
//! `Content-Type: application/json`, which a page of another origin cannot send without a
//! CORS preflight this endpoint never grants. Without a token, `/api/` answers only requests
//! addressed to an IP address or `localhost` (DNS rebinding, see [`addressed_by_ip`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use strata_frontend::admin::{
    Admin, AdminError, BrowsePage, GroupInfo, GroupKind, MAX_BROWSE_RECORDS, Overview, PartitionInfo,
    PartitionSelector, ResetTarget, SegmentMap, StreamChange, StreamInfo,
};
use strata_frontend::replay::{OffsetSpec, parse_offset_spec};

use super::http::HttpState;

mod query;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Payload bytes of one message that Browse sends to the page (the rest is cut, and the
/// page says so).
const PAYLOAD_SHOWN: usize = 4096;

/// The dashboard's routes, to merge into the HTTP endpoint's router.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/overview", get(overview))
        .route("/api/streams", get(streams))
        .route("/api/streams/{name}", get(stream))
        .route("/api/streams/{name}/settings", post(alter_settings))
        .route("/api/streams/{name}/partitions/{partition}/segments", get(segments))
        .route("/api/streams/{name}/messages", get(messages))
        .route("/api/groups", get(groups))
        .route("/api/groups/reset", post(reset_group))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // The page and its assets change only with the binary: no caching surprises after an
    // upgrade, and nothing sensitive to keep.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// An answer to the page: a JSON body, or an [`ApiError`].
type ApiResult = Result<Response, ApiError>;

/// A refused or failed call: its status and `{"error": message}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = respond(self.status, &json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")];
    (status, headers, body.to_string()).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into() }
}

fn ok(body: Value) -> ApiResult {
    Ok(respond(StatusCode::OK, &body))
}

fn admin_error(e: AdminError) -> ApiError {
    let status = match e {
        AdminError::UnknownStream(_) | AdminError::UnknownGroup(_) => StatusCode::NOT_FOUND,
        AdminError::NotCompacted(_) | AdminError::Refused(_) | AdminError::StreamExists(_) => StatusCode::CONFLICT,
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
        AdminError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        AdminError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Whether the request was addressed to an IP address or `localhost`. Without a token, that
/// is all `/api/` answers: a page of another site whose host name an attacker re-points at
/// this address (DNS rebinding) is same-origin for the browser, but its requests carry that
/// host name.
fn addressed_by_ip(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    if host.starts_with('[') {
        return host.split(']').next().is_some_and(|ip| ip[1..].parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// The token check and the admin handle, for every `/api/` call.
fn admin(state: &HttpState, headers: &HeaderMap) -> Result<Admin, ApiError> {
    if !state.admits(headers) {
        return Err(error(StatusCode::UNAUTHORIZED, "missing or wrong token (http.token_file)"));
    }
    if !state.has_token() && !addressed_by_ip(headers) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "without [http] token_file the dashboard answers only at an IP address or localhost; \
             set a token to reach it by a host name",
        ));
    }
    state.admin().ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "the broker is starting"))
}

/// Runs `f` off the async workers (reading sizes lists segment files, browsing reads them).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("dashboard task failed: {e}")))
}

/// A change must come as JSON: that a browser sends only after a CORS preflight when the
/// page is of another origin, so another site cannot make a visitor's browser change things.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the change as Content-Type: application/json"));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

fn overview_json(o: &Overview) -> Value {
    json!({
        "connections": o.connections,
        "messages_received": o.messages_received,
        "messages_sent": o.messages_sent,
        "bytes_received": o.bytes_received,
        "bytes_sent": o.bytes_sent,
        "streams": o.streams,
        "partitions": o.partitions,
        "disk_bytes": o.disk_bytes,
        "healthy": o.storage_problems.is_empty(),
        "storage_problems": o.storage_problems,
        // Clustering comes later: one node, this one, until then.
        "nodes": 1,
    })
}

fn partition_json(p: &PartitionInfo) -> Value {
    json!({
        "partition": p.partition,
        "log_start": p.log_start,
        "cleaned_up_to": p.cleaned_up_to,
        "high_watermark": p.high_watermark,
        "log_end": p.log_end,
        "size_bytes": p.size_bytes,
        "segment_count": p.segment_count,
    })
}

fn stream_json(s: &StreamInfo) -> Value {
    let settings: serde_json::Map<String, Value> =
        s.settings.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "name": s.name,
        "topics": s.topics,
        "cleanup_policy": s.cleanup_policy,
        "size_bytes": s.partitions.iter().map(|p| p.size_bytes).sum::<u64>(),
        "messages": s.partitions.iter().map(|p| p.log_end.saturating_sub(p.log_start)).sum::<u64>(),
        "partitions": s.partitions.iter().map(partition_json).collect::<Vec<_>>(),
        "settings": settings,
    })
}

fn group_json(g: &GroupInfo) -> Value {
    json!({
        "name": g.name,
        "kind": g.kind.as_str(),
        "filter": g.filter,
        "members": g.members,
        "lag": g.lag(),
        "partitions": g.partitions.iter().map(|p| json!({
            "stream": p.stream,
            "partition": p.partition,
            "committed": p.committed,
            "high_watermark": p.high_watermark,
            "log_end": p.log_end,
            "lag": p.lag,
        })).collect::<Vec<_>>(),
    })
}

fn segment_map_json(map: &SegmentMap) -> Value {
    json!({
        "stream": map.stream,
        "cleanup_policy": map.cleanup_policy,
        "partition": partition_json(&map.partition),
        "segments": map.segments.iter().map(|s| json!({
            "base_offset": s.base_offset,
            "next_offset": s.next_offset,
            "size_bytes": s.size_bytes,
            "max_timestamp": s.max_timestamp,
            "active": s.active,
            "retention": s.retention.map(|r| match r {
                strata_log::RetentionReason::Time => "retention_ms",
                strata_log::RetentionReason::Bytes => "retention_bytes",
                strata_log::RetentionReason::Messages => "retention_messages",
            }),
            "cleaned": s.cleaned,
        })).collect::<Vec<_>>(),
    })
}

fn text_or_none(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn browse_json(page: &BrowsePage) -> Value {
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|m| {
            let shown = &m.payload[..m.payload.len().min(PAYLOAD_SHOWN)];
            json!({
                "partition": m.partition,
                "offset": m.offset,
                "timestamp": m.timestamp,
                "topic": m.topic,
                "key": m.key.as_deref().map(|k| text_or_none(k).map_or_else(|| hex(k), str::to_owned)),
                "qos": m.qos,
                "retain": m.retain,
                "payload_bytes": m.payload.len(),
                "payload_text": text_or_none(shown),
                "payload_hex": hex(shown),
            })
        })
        .collect();
    let next: Vec<Value> = page.next.iter().map(|(p, o)| json!({ "partition": p, "offset": o })).collect();
    json!({ "messages": messages, "next": next })
}

async fn overview(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let overview = blocking(move || admin.overview()).await?;
    ok(overview_json(&overview))
}

async fn streams(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let streams = blocking(move || admin.list_streams()).await?;
    ok(json!({ "streams": streams.iter().map(stream_json).collect::<Vec<_>>() }))
}

async fn stream(State(state): State<Arc<HttpState>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let stream = blocking(move || admin.describe_stream(&name)).await?.map_err(admin_error)?;
    ok(stream_json(&stream))
}

async fn segments(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path((name, partition)): Path<(String, u32)>,
) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let map = blocking(move || admin.segment_map(&name, partition)).await?.map_err(admin_error)?;
    ok(segment_map_json(&map))
}

/// `?from=earliest|latest|<offset>|timestamp:<unix-ms>&partition=<n>&limit=<n>`: the
/// `stream-offset` forms of a `$stream` replay.
async fn messages(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let params = query::parse(raw.as_deref().unwrap_or(""));
    let get = |key: &str| params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let from = match get("from") {
        None | Some("") => OffsetSpec::Earliest,
        Some(spec) => parse_offset_spec(spec).map_err(|e| error(StatusCode::BAD_REQUEST, e))?,
    };
    let partition = match get("partition") {
        None | Some("") | Some("all") => None,
        Some(p) => Some(p.parse::<u32>().map_err(|_| {
            error(StatusCode::BAD_REQUEST, format!("partition {p:?}: must be a partition number or \"all\""))
        })?),
    };
    let limit =
        match get("limit") {
            None | Some("") => 100,
            Some(n) => n.parse::<usize>().ok().filter(|n| (1..=MAX_BROWSE_RECORDS).contains(n)).ok_or_else(|| {
                error(StatusCode::BAD_REQUEST, format!("limit {n:?}: must be 1 to {MAX_BROWSE_RECORDS}"))
            })?,
        };
    let page = blocking(move || admin.browse(&name, partition, from, limit)).await?.map_err(admin_error)?;
    ok(browse_json(&page))
}

async fn groups(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let groups = blocking(move || admin.list_groups()).await?;
    ok(json!({ "groups": groups.iter().map(group_json).collect::<Vec<_>>() }))
}

/// `{"settings": {"retention_ms": "3600000", ...}}`: the same change as
/// `strata stream alter <name> --config retention_ms=3600000`.
async fn alter_settings(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let body = json_body(&headers, &body)?;
    let Some(given) = body.get("settings").and_then(Value::as_object) else {
        return Err(error(StatusCode::BAD_REQUEST, "expected {\"settings\": {\"key\": \"value\", ...}}"));
    };
    let mut settings = Vec::with_capacity(given.len());
    for (key, value) in given {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(error(StatusCode::BAD_REQUEST, format!("setting {key}: {other} is not a value"))),
        };
        settings.push((key.clone(), value));
    }
    if settings.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "no setting to change"));
    }
    let change = StreamChange { settings, ..StreamChange::default() };
    let outcome = admin.alter_stream(&name, change).await.map_err(admin_error)?;
    tracing::info!(stream = %name, "stream settings altered from the dashboard");
    ok(json!({ "stream": stream_json(&outcome.stream), "at_restart": outcome.at_restart }))
}

/// `{"name": ..., "kind": "share"|"session", "stream": ..., "partition": n, "to":
/// "earliest"|"latest"|"<offset>"|"timestamp:<unix-ms>"}`: the same reset as
/// `strata group reset-offsets`.
async fn reset_group(State(state): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let admin = admin(&state, &headers)?;
    let body = json_body(&headers, &body)?;
    let text = |key: &str| body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(name) = text("name") else { return Err(error(StatusCode::BAD_REQUEST, "name: missing")) };
    let kind = match text("kind") {
        None => None,
        Some("share") => Some(GroupKind::Share),
        Some("session") => Some(GroupKind::Session),
        Some(other) => {
            return Err(error(StatusCode::BAD_REQUEST, format!("kind {other:?}: must be \"share\" or \"session\"")));
        }
    };
    let partition = match body.get("partition") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "partition: must be a partition number"))?,
        ),
    };
    let select = PartitionSelector { stream: text("stream").map(str::to_owned), partition };
    let target = match parse_offset_spec(text("to").unwrap_or("")) {
        Ok(OffsetSpec::Earliest) => ResetTarget::Earliest,
        Ok(OffsetSpec::Latest) => ResetTarget::Latest,
        Ok(OffsetSpec::At(offset)) => ResetTarget::Offset(offset),
        Ok(OffsetSpec::Timestamp(ms)) => ResetTarget::Timestamp(ms),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("to: {e}"))),
    };
    let group = admin.reset_offsets(name, kind, &select, target).await.map_err(admin_error)?;
    tracing::info!(group = name, kind = group.kind.as_str(), "offsets reset from the dashboard");
    ok(group_json(&group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_addresses_and_localhost_count_as_addressed_by_ip() {
        for ok in ["127.0.0.1:9090", "127.0.0.1", "localhost:9090", "LOCALHOST", "[::1]:9090", "[::1]", "10.1.2.3:80"] {
            assert!(addressed_by_ip(&host(ok)), "{ok}");
        }
        for refused in
            ["evil.example:9090", "evil.example", "127.0.0.1.evil.example", "[evil]:9090", "", "localhost.evil:1"]
        {
            assert!(!addressed_by_ip(&host(refused)), "{refused}");
        }
        assert!(!addressed_by_ip(&HeaderMap::new()), "no Host header");
    }
}
