//! The route handlers. Each documents itself for the OpenAPI document (`utoipa::path`).

use super::{ApiError, ApiState};
use crate::engine::content_version;
use crate::engine::folder::ROUTES_FILE;
use crate::engine::registry::{Routes, ivr_name, parse_routes};
use crate::store::{CallFilter, CallRecord, DncEntry};
use crate::time::{rfc3339, unix_ms as now_ms};
use crate::tree::{self, TreeFile, ValidateOptions};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

type ApiResult<T> = Result<T, ApiError>;

/// How long a write waits for the watcher to put the new version in service.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// A new IVR: the hosted API's body, `{name, nodes}` (any tree extension is accepted too).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object, example = json!({"name": "Plumber Qualifier", "nodes": {"welcome": {"audio": "welcome.wav", "gather": {"1": "has_license"}}}}))]
pub struct CreateIvr(serde_json::Value);

/// `POST /ivr` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IvrCreated {
    /// The IVR's id (`ivr_…`), also its file name in the IVR folder.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `draft` until a DID is assigned, then `live`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
}

/// An IVR as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct IvrSummary {
    /// Id (file stem).
    pub id: String,
    /// Display name (the tree's `name`; the id for components).
    pub name: String,
    /// `tree` or `component`.
    pub kind: String,
    /// `live` (assigned and in service) or `draft`.
    pub status: String,
    /// DIDs routed to it.
    pub dids: Vec<String>,
    /// The version in service, if loaded.
    pub version: Option<String>,
    /// RFC 3339, from the file.
    pub created_at: String,
}

/// An IVR in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct IvrDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: IvrSummary,
    /// The tree as stored (trees only).
    #[schema(value_type = Object)]
    pub definition: Option<serde_json::Value>,
    /// Prompt files the tree names that the audio folder lacks.
    pub missing_prompts: Vec<String>,
}

/// `PATCH /ivr/{id}`: top-level fields replace, `nodes` merge node by node (`null` deletes one).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object, example = json!({"nodes": {"welcome": {"audio": "welcome.wav", "gather": {"1": "has_license", "2": "hours"}}}}))]
pub struct PatchIvr(serde_json::Value);

/// `POST /ivr/{id}/audio`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateAudio {
    /// The node whose prompt to render.
    pub node: String,
    /// What to say.
    pub text: String,
    /// A voice: `engine:voice` exactly, an installed voice's name, `default`, or a person's
    /// name or gender (`rachel`, `female`) for the default voice of that gender (`GET /voices`).
    pub voice: Option<String>,
}

/// `POST /ivr/{id}/audio` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AudioGenerated {
    /// The node.
    pub node: String,
    /// The file written in the audio folder.
    pub file: String,
    /// Its length in seconds.
    pub duration_seconds: f64,
}

/// `POST /ivr/{id}/assign`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AssignDid {
    /// An E.164 number, e.g. `+14155559876`.
    pub did: String,
}

/// `POST /ivr/{id}/assign` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Assigned {
    /// The IVR.
    pub id: String,
    /// The number.
    pub did: String,
    /// `live` once the IVR answers that number.
    pub status: String,
}

/// An audio file.
#[derive(Debug, Serialize, ToSchema)]
pub struct AudioFile {
    /// File name in the audio folder.
    pub name: String,
    /// Length in seconds.
    pub duration_seconds: f64,
    /// Size in bytes.
    pub bytes: u64,
    /// IVRs whose trees name it.
    pub used_by: Vec<String>,
}

/// A component accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentLoaded {
    /// Its name.
    pub id: String,
    /// Its version.
    pub version: String,
}

/// `POST /dnc`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddDnc {
    /// The number.
    pub number: String,
}

/// `GET /dnc` options.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DncQuery {
    /// `csv` for a CSV export (for outbound dialers).
    pub format: Option<String>,
}

/// `GET /calls/history` filters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Only this DID.
    pub did: Option<String>,
    /// Only this IVR.
    pub ivr: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Started at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Started before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

/// An IVR id names files `DIR/<id>.json|wasm|toml`: letters, digits, `-` and `_` only (no
/// dots, so no dot files, extensions or paths), and never the stem of a file the folder keeps
/// for itself (`routes`, whose `routes.toml` a `DELETE /ivr/routes` would otherwise remove).
fn check_id(id: &str) -> ApiResult<()> {
    let routes_stem = FsPath::new(ROUTES_FILE)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(ROUTES_FILE);
    if id.eq_ignore_ascii_case(routes_stem) {
        return Err(ApiError::bad_request(format!(
            "'{id}' is reserved (the folder's {ROUTES_FILE})"
        )));
    }
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("'{id}' is not a valid id")))
    }
}

fn check_file_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{name}' is not a valid file name"
        )))
    }
}

/// E.164: `+`, a non-zero digit, up to 15 digits in all.
fn is_e164(did: &str) -> bool {
    let Some(digits) = did.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

fn write_atomically(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl ApiState {
    fn tree_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read_routes(&self) -> ApiResult<Routes> {
        match std::fs::read_to_string(self.dir.join(ROUTES_FILE)) {
            Ok(text) => parse_routes(&text).map_err(ApiError::internal),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Routes::new()),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    fn write_routes(&self, routes: &Routes) -> ApiResult<()> {
        let mut text =
            String::from("# DID -> IVR. Written by the API and by hand; hot-reloaded.\n");
        for (did, ivr) in routes {
            text.push_str(&format!("{} = {}\n", toml_string(did), toml_string(ivr)));
        }
        write_atomically(&self.dir.join(ROUTES_FILE), text.as_bytes()).map_err(ApiError::internal)
    }

    fn read_tree(&self, id: &str) -> ApiResult<(String, TreeFile)> {
        let path = self.tree_path(id);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ApiError::not_found(format!("no IVR '{id}'")),
            _ => ApiError::internal(e),
        })?;
        let tree = tree::parse(&format!("{id}.json"), &text)
            .map_err(|d| ApiError::internal(d.to_string()))?;
        Ok((text, tree))
    }

    fn ivr_names(&self) -> HashSet<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| ivr_name(&e.path()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Validates a tree as a draft (prompts may be missing) and returns its pretty JSON.
    fn validate_draft(&self, id: &str, tree: &TreeFile) -> ApiResult<String> {
        let mut known = self.ivr_names();
        known.insert(id.to_owned());
        let options = ValidateOptions {
            audio_dir: None,
            known_ivrs: Some(&known),
        };
        let checked = tree::validate(&format!("{id}.json"), tree, &options);
        let errors: Vec<String> = checked.errors().map(ToString::to_string).collect();
        if !errors.is_empty() {
            return Err(ApiError::bad_request("the tree is invalid").with_details(errors));
        }
        serde_json::to_string_pretty(tree).map_err(ApiError::internal)
    }

    fn missing_prompts(&self, tree: &TreeFile) -> Vec<String> {
        let mut missing: Vec<String> = tree
            .nodes
            .values()
            .flat_map(|n| [n.audio.as_ref(), n.invalid_audio.as_ref()])
            .flatten()
            .flat_map(|a| match a {
                tree::source::AudioSpec::One(f) => vec![f.clone()],
                tree::source::AudioSpec::Many(fs) => fs.clone(),
            })
            .filter(|f| !self.audio_dir.join(f).is_file())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    fn summary(&self, id: &str, routes: &Routes) -> IvrSummary {
        let kind_path = [("json", "tree"), ("wasm", "component")]
            .into_iter()
            .map(|(ext, kind)| (self.dir.join(format!("{id}.{ext}")), kind))
            .find(|(p, _)| p.is_file());
        let (path, kind) = kind_path.unwrap_or((self.tree_path(id), "tree"));
        let name = if kind == "tree" {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| tree::parse("", &t).ok())
                .map_or_else(|| id.to_owned(), |t| t.name)
        } else {
            id.to_owned()
        };
        let dids: Vec<String> = routes
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(d, _)| d.clone())
            .collect();
        let loaded = self.registry.get(id);
        let status = if !dids.is_empty() && loaded.is_some() {
            "live"
        } else {
            "draft"
        };
        let created = std::fs::metadata(&path)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        IvrSummary {
            id: id.to_owned(),
            name,
            kind: kind.to_owned(),
            status: status.to_owned(),
            dids,
            version: loaded.map(|l| l.version.clone()),
            created_at: rfc3339(created),
        }
    }

    /// Waits until the registry serves `version` of `id` (the watcher picked the write up).
    async fn await_version(&self, id: &str, version: &str) -> bool {
        let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.registry.get(id).is_some_and(|l| l.version == version) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Waits until the registry routes `did` to `id` (or, with `None`, routes it nowhere).
    async fn await_route(&self, did: &str, id: Option<&str>) -> bool {
        let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.registry.routes().get(did).map(String::as_str) == id {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn parse_tree_body(body: serde_json::Value) -> ApiResult<TreeFile> {
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("not a tree: {e}")))
}

/// Create an IVR from a tree (a draft until a DID is assigned).
#[utoipa::path(post, path = "/ivr", request_body = CreateIvr,
    responses((status = 201, body = IvrCreated), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn create_ivr(
    State(state): State<Arc<ApiState>>,
    Json(body): Json<CreateIvr>,
) -> ApiResult<(StatusCode, Json<IvrCreated>)> {
    let tree = parse_tree_body(body.0)?;
    let _guard = state.write_lock.lock().await;
    let id = loop {
        let id = format!("ivr_{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        if !state.tree_path(&id).exists() {
            break id;
        }
    };
    let text = state.validate_draft(&id, &tree)?;
    write_atomically(&state.tree_path(&id), text.as_bytes()).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(IvrCreated {
            id,
            name: tree.name,
            status: "draft".into(),
            created_at: rfc3339(now_ms()),
        }),
    ))
}

/// List every IVR in the folder.
#[utoipa::path(get, path = "/ivr", responses((status = 200, body = Vec<IvrSummary>)))]
pub async fn list_ivrs(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<IvrSummary>>> {
    let routes = state.read_routes()?;
    let mut ids: Vec<String> = state.ivr_names().into_iter().collect();
    ids.sort();
    Ok(Json(
        ids.iter().map(|id| state.summary(id, &routes)).collect(),
    ))
}

/// An IVR's definition, status, DIDs and version.
#[utoipa::path(get, path = "/ivr/{id}", params(("id" = String, Path)),
    responses((status = 200, body = IvrDetail), (status = 404, body = ApiError)))]
pub async fn get_ivr(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<IvrDetail>> {
    check_id(&id)?;
    let routes = state.read_routes()?;
    if !state.ivr_names().contains(&id) {
        return Err(ApiError::not_found(format!("no IVR '{id}'")));
    }
    let (definition, missing_prompts) = match state.read_tree(&id) {
        Ok((text, tree)) => (
            serde_json::from_str(&text).ok(),
            state.missing_prompts(&tree),
        ),
        Err(_) => (None, Vec::new()),
    };
    Ok(Json(IvrDetail {
        summary: state.summary(&id, &routes),
        definition,
        missing_prompts,
    }))
}

/// Update an IVR: top-level fields replace, `nodes` merge node by node. The next call uses it;
/// calls in progress keep their version.
#[utoipa::path(patch, path = "/ivr/{id}", params(("id" = String, Path)), request_body = PatchIvr,
    responses((status = 200, body = IvrDetail), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn patch_ivr(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Json(patch): Json<PatchIvr>,
) -> ApiResult<Json<IvrDetail>> {
    check_id(&id)?;
    let _guard = state.write_lock.lock().await;
    let (text, _) = state.read_tree(&id)?;
    let mut current: serde_json::Value = serde_json::from_str(&text).map_err(ApiError::internal)?;
    let serde_json::Value::Object(patch) = patch.0 else {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    };
    let Some(target) = current.as_object_mut() else {
        return Err(ApiError::internal("the stored tree is not an object"));
    };
    for (field, value) in patch {
        match (field.as_str(), value) {
            ("nodes", serde_json::Value::Object(nodes)) => {
                let merged = target
                    .entry("nodes")
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                let Some(merged) = merged.as_object_mut() else {
                    return Err(ApiError::internal("the stored nodes are not an object"));
                };
                for (node, spec) in nodes {
                    if spec.is_null() {
                        merged.remove(&node);
                    } else {
                        merged.insert(node, spec);
                    }
                }
            }
            ("nodes", _) => return Err(ApiError::bad_request("\"nodes\" must be an object")),
            (_, serde_json::Value::Null) => {
                target.remove(&field);
            }
            (_, value) => {
                target.insert(field, value);
            }
        }
    }
    let tree = parse_tree_body(current)?;
    let text = state.validate_draft(&id, &tree)?;
    write_atomically(&state.tree_path(&id), text.as_bytes()).map_err(ApiError::internal)?;
    if state.missing_prompts(&tree).is_empty() && state.registry.get(&id).is_some() {
        // In service before: wait for the new version so the next call gets it.
        state
            .await_version(&id, &content_version(text.as_bytes()))
            .await;
    }
    drop(_guard);
    get_ivr(State(state), Path(id)).await
}

/// Delete an IVR (refused while DIDs are assigned to it).
#[utoipa::path(delete, path = "/ivr/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn delete_ivr(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&id)?;
    let _guard = state.write_lock.lock().await;
    let routes = state.read_routes()?;
    let dids: Vec<String> = routes
        .iter()
        .filter(|(_, v)| **v == id)
        .map(|(d, _)| d.clone())
        .collect();
    if !dids.is_empty() {
        return Err(
            ApiError::conflict(format!("'{id}' is assigned to DIDs; unassign them first"))
                .with_details(dids),
        );
    }
    // Only an IVR is deleted: a settings file without its component is not one.
    if !state.ivr_names().contains(&id) {
        return Err(ApiError::not_found(format!("no IVR '{id}'")));
    }
    let mut removed = false;
    for ext in ["json", "wasm", "toml"] {
        match std::fs::remove_file(state.dir.join(format!("{id}.{ext}"))) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no IVR '{id}'")))
    }
}

/// Render a node's prompt with TTS into the audio folder (under the node's `audio` name, or
/// `<id>-<node>.wav`, which is then set on the node).
#[utoipa::path(post, path = "/ivr/{id}/audio", params(("id" = String, Path)), request_body = GenerateAudio,
    responses((status = 200, body = AudioGenerated), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn generate_audio(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Json(request): Json<GenerateAudio>,
) -> ApiResult<Json<AudioGenerated>> {
    check_id(&id)?;
    let Some(speech) = state.speech.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, NO_TTS));
    };
    if let Err(e) = speech.resolve_voice(request.voice.as_deref()) {
        let voices = match &e {
            crate::tts::TtsError::UnknownVoice { known, .. } => known.clone(),
            _ => Vec::new(),
        };
        return Err(ApiError::bad_request(e.to_string()).with_details(voices));
    }
    let _guard = state.write_lock.lock().await;
    let (_, mut tree) = state.read_tree(&id)?;
    let Some(node) = tree.nodes.get_mut(&request.node) else {
        return Err(ApiError::not_found(format!(
            "IVR '{id}' has no node '{}'",
            request.node
        )));
    };
    let file = match &node.audio {
        Some(tree::source::AudioSpec::One(f)) => f.clone(),
        Some(tree::source::AudioSpec::Many(fs)) if !fs.is_empty() => fs[0].clone(),
        _ => {
            let file = format!("{id}-{}.wav", request.node);
            node.audio = Some(tree::source::AudioSpec::One(file.clone()));
            let text = state.validate_draft(&id, &tree)?;
            write_atomically(&state.tree_path(&id), text.as_bytes()).map_err(ApiError::internal)?;
            file
        }
    };
    check_file_name(&file)?;
    std::fs::create_dir_all(&state.audio_dir).map_err(ApiError::internal)?;
    let out = state.audio_dir.join(&file);
    let tmp = state.audio_dir.join(format!(".{file}.tmp"));
    let (text, voice) = (request.text.clone(), request.voice.clone());
    let rendered = tokio::task::spawn_blocking(move || {
        speech
            .render_file(&text, voice.as_deref(), &tmp)
            .map(|d| (d, tmp))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    std::fs::rename(&rendered.1, &out).map_err(ApiError::internal)?;
    Ok(Json(AudioGenerated {
        node: request.node,
        file,
        duration_seconds: rendered.0.as_secs_f64(),
    }))
}

/// Assign a DID: calls to it reach this IVR. Every prompt must exist first.
#[utoipa::path(post, path = "/ivr/{id}/assign", params(("id" = String, Path)), request_body = AssignDid,
    responses((status = 200, body = Assigned), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn assign_did(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Json(request): Json<AssignDid>,
) -> ApiResult<Json<Assigned>> {
    check_id(&id)?;
    let did = request.did.trim().to_owned();
    if !is_e164(&did) {
        return Err(ApiError::bad_request(format!(
            "'{did}' is not an E.164 number (e.g. +14155559876)"
        )));
    }
    let _guard = state.write_lock.lock().await;
    if !state.ivr_names().contains(&id) {
        return Err(ApiError::not_found(format!("no IVR '{id}'")));
    }
    let mut routes = state.read_routes()?;
    match routes.get(&did) {
        Some(owner) if *owner != id => {
            return Err(ApiError::conflict(format!(
                "{did} is already assigned to '{owner}'"
            )));
        }
        _ => {}
    }
    if let Ok((_, tree)) = state.read_tree(&id) {
        let missing = state.missing_prompts(&tree);
        if !missing.is_empty() {
            return Err(ApiError::bad_request(format!(
                "'{id}' cannot go live: prompts are missing"
            ))
            .with_details(missing));
        }
    }
    routes.insert(did.clone(), id.clone());
    state.write_routes(&routes)?;
    let routed = state.await_route(&did, Some(&id)).await;
    let live = routed && state.registry.route(&did).is_some();
    Ok(Json(Assigned {
        id,
        did,
        status: if live { "live" } else { "draft" }.into(),
    }))
}

/// Unassign a DID from this IVR.
#[utoipa::path(delete, path = "/ivr/{id}/assign/{did}", params(("id" = String, Path), ("did" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub async fn unassign_did(
    State(state): State<Arc<ApiState>>,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_id(&id)?;
    let _guard = state.write_lock.lock().await;
    let mut routes = state.read_routes()?;
    if routes.get(&did) != Some(&id) {
        return Err(ApiError::not_found(format!(
            "{did} is not assigned to '{id}'"
        )));
    }
    routes.remove(&did);
    state.write_routes(&routes)?;
    state.await_route(&did, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Upload a `.wav` or `.pcm` prompt (multipart field `file`); it is validated, converted to
/// 8 kHz mono 16-bit WAV (what callers hear), and stored under its name with `.wav`.
#[utoipa::path(post, path = "/audio", request_body(content_type = "multipart/form-data", content = String),
    responses((status = 201, body = AudioFile), (status = 400, body = ApiError)))]
pub async fn upload_audio(
    State(state): State<Arc<ApiState>>,
    mut multipart: Multipart,
) -> ApiResult<(StatusCode, Json<AudioFile>)> {
    use crate::media::prompt::{EncodedPrompt, PromptFormat, PromptLimits};
    let mut upload = None;
    // The error's own status: 413 past the body limit, 400 for a malformed form.
    let refused =
        |e: axum::extract::multipart::MultipartError| ApiError::new(e.status(), e.body_text());
    while let Some(field) = multipart.next_field().await.map_err(refused)? {
        if field.name() == Some("file") {
            let name = field.file_name().map(str::to_owned).unwrap_or_default();
            let bytes = field.bytes().await.map_err(refused)?;
            upload = Some((name, bytes));
        }
    }
    let Some((name, bytes)) = upload else {
        return Err(ApiError::bad_request(
            "send the audio as a multipart field named 'file'",
        ));
    };
    check_file_name(&name)?;
    let lower = name.to_ascii_lowercase();
    let (format, stem) =
        if let Some(stem) = lower.strip_suffix(".wav").map(|_| &name[..name.len() - 4]) {
            (PromptFormat::Wav, stem)
        } else if let Some(stem) = lower.strip_suffix(".pcm").map(|_| &name[..name.len() - 4]) {
            (PromptFormat::RawPcm, stem)
        } else {
            return Err(ApiError::bad_request(format!(
                "'{name}': upload a .wav or .pcm file"
            )));
        };
    let prompt = EncodedPrompt::from_bytes(&name, format, &bytes, &PromptLimits::default())
        .map_err(|e| ApiError::bad_request(format!("not usable audio: {e}")))?;
    let file = format!("{stem}.wav");
    std::fs::create_dir_all(&state.audio_dir).map_err(ApiError::internal)?;
    let wav = pcm_wav(&prompt).map_err(ApiError::internal)?;
    write_atomically(&state.audio_dir.join(&file), &wav).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(AudioFile {
            name: file,
            duration_seconds: prompt.duration().as_secs_f64(),
            bytes: wav.len() as u64,
            used_by: Vec::new(),
        }),
    ))
}

/// 8 kHz mono 16-bit WAV of a prompt, decoded from its μ-law frames: exactly what callers hear.
fn pcm_wav(prompt: &crate::media::prompt::EncodedPrompt) -> Result<Vec<u8>, hound::Error> {
    let codec = crate::media::codec::Codec::Pcmu;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec)?;
        for &byte in prompt.bytes(codec) {
            writer.write_sample(codec.decode_sample(byte))?;
        }
        writer.finalize()?;
    }
    Ok(cursor.into_inner())
}

fn trees_using(state: &ApiState, file: &str) -> Vec<String> {
    let mut users: Vec<String> = state
        .ivr_names()
        .into_iter()
        .filter(|id| {
            state
                .read_tree(id)
                .map(|(_, tree)| {
                    tree.nodes
                        .values()
                        .flat_map(|n| [n.audio.as_ref(), n.invalid_audio.as_ref()])
                        .flatten()
                        .any(|a| match a {
                            tree::source::AudioSpec::One(f) => f == file,
                            tree::source::AudioSpec::Many(fs) => fs.iter().any(|f| f == file),
                        })
                })
                .unwrap_or(false)
        })
        .collect();
    users.sort();
    users
}

/// The installed TTS voices (name, engine, gender, language) and what the default and the
/// gendered names (`rachel`, `adam`, `female`, `male`) map to.
#[utoipa::path(get, path = "/voices", responses((status = 200, body = crate::tts::VoiceList), (status = 503, body = ApiError)))]
pub async fn list_voices(
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<crate::tts::VoiceList>> {
    match &state.speech {
        Some(speech) => Ok(Json(speech.listing())),
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, NO_TTS)),
    }
}

/// The message when no engine could be found.
const NO_TTS: &str =
    "no TTS engine is installed (festival, flite or espeak-ng; run scripts/setup.sh)";

/// The audio library.
#[utoipa::path(get, path = "/audio", responses((status = 200, body = Vec<AudioFile>)))]
pub async fn list_audio(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<AudioFile>>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&state.audio_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        if name.starts_with('.') || !(lower.ends_with(".wav") || lower.ends_with(".pcm")) {
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let duration_seconds = if lower.ends_with(".pcm") {
            bytes as f64 / 16_000.0
        } else {
            hound::WavReader::open(entry.path())
                .map(|r| f64::from(r.duration()) / f64::from(r.spec().sample_rate.max(1)))
                .unwrap_or(0.0)
        };
        let used_by = trees_using(&state, &name);
        files.push(AudioFile {
            name,
            duration_seconds,
            bytes,
            used_by,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(files))
}

/// Delete a prompt (refused while a tree names it).
#[utoipa::path(delete, path = "/audio/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn delete_audio(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    check_file_name(&name)?;
    let _guard = state.write_lock.lock().await;
    let users = trees_using(&state, &name);
    if !users.is_empty() {
        return Err(ApiError::conflict(format!("'{name}' is in use")).with_details(users));
    }
    match std::fs::remove_file(state.audio_dir.join(&name)) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found(format!("no audio '{name}'")))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Upload a WebAssembly component as IVR `name`; it is compiled and checked against the IVR
/// world before it goes live (a broken one never replaces a working one).
#[utoipa::path(put, path = "/components/{name}", params(("name" = String, Path)),
    request_body(content_type = "application/wasm", content = Vec<u8>),
    responses((status = 201, body = ComponentLoaded), (status = 400, body = ApiError)))]
pub async fn put_component(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ComponentLoaded>)> {
    check_id(&name)?;
    let engine = state.engine.clone();
    let path = state.dir.join(format!("{name}.wasm"));
    let settings_path = path.with_extension("toml");
    let settings = std::fs::read_to_string(&settings_path).ok();
    let bytes = body.to_vec();
    let (check_name, check_path) = (name.clone(), path.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        engine
            .load_component(
                &check_name,
                &check_path,
                &bytes,
                settings.as_deref().map(|t| (settings_path.as_path(), t)),
            )
            .map(|ivr| (ivr.version.clone(), bytes))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let _guard = state.write_lock.lock().await;
    write_atomically(&path, &loaded.1).map_err(ApiError::internal)?;
    state.await_version(&name, &loaded.0).await;
    Ok((
        StatusCode::CREATED,
        Json(ComponentLoaded {
            id: name,
            version: loaded.0,
        }),
    ))
}

/// The do-not-call list (`?format=csv` for outbound dialers).
#[utoipa::path(get, path = "/dnc", params(DncQuery), responses((status = 200, body = Vec<DncEntry>)))]
pub async fn list_dnc(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<DncQuery>,
) -> ApiResult<Response> {
    let store = state.store.clone();
    let list = tokio::task::spawn_blocking(move || store.dnc_list())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if query.format.as_deref() == Some("csv") {
        let mut csv = String::from("number,added_at,source\n");
        for e in &list {
            csv.push_str(&format!(
                "{},{},{}\n",
                super::csv_cell(&e.number),
                rfc3339(e.added_at_ms.max(0) as u64),
                super::csv_cell(&e.source)
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(Json(list).into_response())
}

/// Add a number to the do-not-call list.
#[utoipa::path(post, path = "/dnc", request_body = AddDnc, responses((status = 201, body = DncEntry), (status = 200, body = DncEntry)))]
pub async fn add_dnc(
    State(state): State<Arc<ApiState>>,
    Json(request): Json<AddDnc>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let number = crate::store::normalize_number(&request.number);
    if number.is_empty() {
        return Err(ApiError::bad_request("an empty number"));
    }
    let store = state.store.clone();
    let n = number.clone();
    let added = tokio::task::spawn_blocking(move || store.dnc_add(&n, "api"))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({"number": number, "added": added})),
    ))
}

/// Remove a number from the do-not-call list.
#[utoipa::path(delete, path = "/dnc/{number}", params(("number" = String, Path)), responses((status = 204), (status = 404, body = ApiError)))]
pub async fn remove_dnc(
    State(state): State<Arc<ApiState>>,
    Path(number): Path<String>,
) -> ApiResult<StatusCode> {
    let store = state.store.clone();
    let removed = tokio::task::spawn_blocking(move || store.dnc_remove(&number))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not on the list"))
    }
}

/// Live calls with the step each caller is in.
#[utoipa::path(get, path = "/calls", responses((status = 200, body = Vec<crate::metrics::LiveCall>)))]
pub async fn live_calls() -> Json<Vec<crate::metrics::LiveCall>> {
    Json(crate::metrics::metrics().live_calls())
}

/// Call records, newest first, filterable.
#[utoipa::path(get, path = "/calls/history", params(HistoryQuery), responses((status = 200, body = Vec<CallRecord>)))]
pub async fn call_history(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<CallRecord>>> {
    let store = state.store.clone();
    // An unencoded `+` in a query string decodes to a space: `?did=+1415…` means `+1415…`.
    let did = q.did.map(|d| match d.strip_prefix(' ') {
        Some(rest) => format!("+{rest}"),
        None => d,
    });
    let filter = CallFilter {
        did,
        ivr: q.ivr,
        outcome: q.outcome,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        limit: q.limit,
    };
    let records = tokio::task::spawn_blocking(move || store.calls(&filter))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(records))
}

/// One call: its record, or the live call while it is up.
#[utoipa::path(get, path = "/calls/{id}", params(("id" = String, Path)), responses((status = 200, body = CallRecord), (status = 404, body = ApiError)))]
pub async fn get_call(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(live) = crate::metrics::metrics()
        .live_calls()
        .into_iter()
        .find(|c| c.call_id == id)
    {
        return Ok(Json(live).into_response());
    }
    let store = state.store.clone();
    let record = tokio::task::spawn_blocking(move || store.call(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    match record {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found("no such call")),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::metrics().render(),
    )
        .into_response()
}
