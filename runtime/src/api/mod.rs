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

/// The API's routes, with `/openapi.json` describing them.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    use handlers::*;
    let (protected, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_ivr, list_ivrs))
        .routes(routes!(get_ivr, patch_ivr, delete_ivr))
        .routes(routes!(generate_audio))
        .routes(routes!(assign_did))
        .routes(routes!(unassign_did))
        .routes(routes!(upload_audio, list_audio))
        .routes(routes!(delete_audio))
        .routes(routes!(put_component))
        .routes(routes!(list_dnc, add_dnc))
        .routes(routes!(remove_dnc))
        .routes(routes!(live_calls))
        .routes(routes!(call_history))
        .routes(routes!(get_call))
        .routes(routes!(metrics_text))
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
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    public.merge(protected).with_state(state)
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

/// Serves the API on a bound listener until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("HTTP API stopped: {e}");
    }
}

#[cfg(test)]
mod tests;
