//! The operator HTTP API: the hosted IVR API's routes (create a tree, generate its audio with
//! TTS, assign a DID, patch it), plus the audio library, components, the do-not-call list, call
//! records, health, metrics and an OpenAPI document generated from these handlers.
//!
//! One source of truth: the API writes the same IVR folder and `routes.toml` the folder watcher
//! reads (an IVR created here is `DIR/<id>.json`), so API and hand-dropped files never disagree
//! and a restart loses nothing. After a write, the API waits until the registry serves the new
//! version before it answers, so the next call uses it.
//!
//! Auth: bearer API keys, compared in constant time; every route but `/healthz` needs one.
//! Without keys the API binds loopback only, and since a web page in the operator's browser
//! can reach loopback too, it then also refuses what only a browser would send
//! ([`browser_guard`]): a `Host` that is not a loopback name (DNS rebinding), an `Origin` that is
//! not a loopback origin, and a form-encodable state change (CSRF) without `X-Requested-With`.
//!
//! Limits ([`HttpLimits`]): connections open at once, time to send a request's header section,
//! time for a whole request, and a body size per route (413 beyond it).

mod handlers;

use crate::engine::{IvrEngine, Registry};
use crate::store::Store;
use crate::tts::Speech;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the handlers work on.
pub struct ApiState {
    /// The IVR folder.
    pub dir: PathBuf,
    /// The audio folder.
    pub audio_dir: PathBuf,
    /// The IVRs in service.
    pub registry: Arc<Registry>,
    /// Compiles uploaded components (to validate them before they go live).
    pub engine: Arc<IvrEngine>,
    /// Do-not-call list and call records.
    pub store: Arc<dyn Store>,
    /// TTS for `POST /ivr/{id}/audio`; None when no engine is installed.
    pub speech: Option<Arc<Speech>>,
    /// SHA-256 of each accepted API key; empty means no auth (loopback only).
    key_hashes: Vec<[u8; 32]>,
    /// Serialises writes to the folder and routes.toml.
    write_lock: tokio::sync::Mutex<()>,
}

impl ApiState {
    /// State over a folder; `keys` are the accepted bearer tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        audio_dir: PathBuf,
        registry: Arc<Registry>,
        engine: Arc<IvrEngine>,
        store: Arc<dyn Store>,
        speech: Option<Arc<Speech>>,
        keys: &[String],
    ) -> Self {
        ApiState {
            dir,
            audio_dir,
            registry,
            engine,
            store,
            speech,
            key_hashes: keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether requests need a key.
    pub fn requires_key(&self) -> bool {
        !self.key_hashes.is_empty()
    }

    /// Checks a presented token against every key without early exit on a match, so timing
    /// says nothing about which bytes were right (hashing first also hides the key length).
    fn accepts(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.key_hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, key| {
                acc | key.ct_eq(&presented)
            })
            .into()
    }
}

/// A JSON error: `{"error": "...", "details": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// What went wrong.
    pub error: String,
    /// Specifics: validation findings, missing prompts, voices, DIDs in use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            details: Vec::new(),
        }
    }

    /// Adds specifics.
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    fn bad_request(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    fn not_found(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    fn conflict(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, error)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wasm-ivr operator API", description = "IVRs, audio, DIDs, do-not-call list, call records"),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Largest JSON body (a tree, a patch, a DID): generous for the largest sane tree.
pub const JSON_BODY_LIMIT: usize = 1 << 20;
/// Largest upload (`POST /audio`, `PUT /components/{name}`).
pub const UPLOAD_BODY_LIMIT: usize = 64 << 20;

/// The API's routes, with `/openapi.json` describing them.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    use handlers::*;
    // Each group's body limit applies to the routes added before its layer.
    let json = OpenApiRouter::new()
        .routes(routes!(create_ivr, list_ivrs))
        .routes(routes!(get_ivr, patch_ivr, delete_ivr))
        .routes(routes!(generate_audio))
        .routes(routes!(assign_did))
        .routes(routes!(unassign_did))
        .routes(routes!(list_voices))
        .routes(routes!(delete_audio))
        .routes(routes!(list_dnc, add_dnc))
        .routes(routes!(remove_dnc))
        .routes(routes!(live_calls))
        .routes(routes!(call_history))
        .routes(routes!(get_call))
        .routes(routes!(metrics_text))
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT));
    let uploads = OpenApiRouter::new()
        .routes(routes!(upload_audio, list_audio))
        .routes(routes!(put_component))
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_BODY_LIMIT));
    let (protected, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(json)
        .merge(uploads)
        .split_for_parts();
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .split_for_parts();
    let mut openapi = openapi;
    openapi.merge(public_doc);
    let openapi = Arc::new(openapi);
    let protected = protected
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    public
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser_guard,
        ))
        .with_state(state)
}

/// Without API keys, refuses what a web page could make the operator's browser send to the
/// loopback API (with keys these checks are moot: a page cannot attach the bearer key):
///
/// - a `Host` that is not `localhost`, `127.x.y.z` or `[::1]` (with any port): a page whose
///   name was rebound to 127.0.0.1 reaches us under its own name (DNS rebinding);
/// - an `Origin` that is not an `http(s)` origin on such a host (`null` included): a page from
///   elsewhere (cross-site requests);
/// - a state change a plain HTML form or a no-CORS `fetch` can send: any method but GET, HEAD
///   and OPTIONS with `Content-Type` `application/x-www-form-urlencoded`, `multipart/form-data`
///   or `text/plain`, or a POST with none, unless it carries `X-Requested-With` (any value). A
///   page cannot add that header across origins without a CORS preflight, which this API never
///   grants; curl and scripts add it (`curl -H 'X-Requested-With: curl' -F file=@a.wav ...`).
pub async fn browser_guard(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.requires_key() {
        return next.run(request).await;
    }
    match browser_refusal(&request) {
        None => next.run(request).await,
        Some(why) => ApiError::new(StatusCode::FORBIDDEN, why).into_response(),
    }
}

/// Why [`browser_guard`] refuses a request, if it does.
fn browser_refusal(request: &Request) -> Option<&'static str> {
    let headers = request.headers();
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if host.is_some_and(|h| !is_loopback_authority(h)) {
        return Some(
            "without API keys the API answers only to a loopback Host (localhost, 127.0.0.1, [::1])",
        );
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    if let Some(origin) = origin {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(is_loopback_authority) {
            return Some("without API keys the API refuses requests from web pages elsewhere");
        }
    }
    let method = request.method();
    let safe = matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let essence = headers.get(header::CONTENT_TYPE).map(|c| {
        let c = c.to_str().unwrap_or("");
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let form_encodable = match essence.as_deref() {
        None => *method == axum::http::Method::POST,
        Some(e) => matches!(
            e,
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ),
    };
    if !safe && form_encodable && !headers.contains_key("x-requested-with") {
        return Some(
            "without API keys a form-encodable request that changes state needs an X-Requested-With header",
        );
    }
    None
}

/// `localhost`, an address in 127.0.0.0/8 or `[::1]`, each with an optional port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                return inside
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.is_loopback());
            }
            _ => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        },
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

async fn require_key(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if !state.requires_key() {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(token) if state.accepts(token.trim()) => next.run(request).await,
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send Authorization: Bearer <key>",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Liveness, without a key: `{"status": "ok", "ivrs": N}`.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Object)))]
async fn healthz(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "ivrs": state.registry.names().len()}))
}

/// One CSV cell (RFC 4180), safe to open in a spreadsheet: quoted when it holds a comma, quote
/// or line break, and prefixed with `'` when a spreadsheet would read it as a formula (it
/// starts with `=`, `+`, `-`, `@`, tab or CR) unless it is a plain number such as
/// `+14155550100`, which a spreadsheet reads as the number it is.
pub fn csv_cell(value: &str) -> std::borrow::Cow<'_, str> {
    let number = value
        .strip_prefix(['+', '-'])
        .unwrap_or(value)
        .bytes()
        .all(|b| b.is_ascii_digit());
    let formula = !number && value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = value.contains([',', '"', '\r', '\n']);
    if !formula && !quoted {
        return std::borrow::Cow::Borrowed(value);
    }
    let text = if formula {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if quoted || text.contains([',', '"', '\r', '\n']) {
        std::borrow::Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Owned(text)
    }
}

/// The HTTP server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Time to send a request's start line and headers (also how long an idle keep-alive
    /// connection is kept): a client trickling headers is cut off after it.
    pub header_timeout: Duration,
    /// Time for a whole request, body and handler included; 408 after it.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves the API on a bound listener until the task is dropped: HTTP/1.1, at most
/// `limits.max_connections` connections, each request's head within `limits.header_timeout`
/// and the whole request within `limits.request_timeout`.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>, limits: HttpLimits) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let app = router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // Waiting for a slot before accepting leaves the excess in the kernel's backlog, where
        // it holds no file descriptor of ours.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, typically: wait rather than spin.
                tracing::warn!("HTTP API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!("HTTP API connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests;
