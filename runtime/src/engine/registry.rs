//! The loaded IVRs and the DID routes.
//!
//! An entry is an immutable [`LoadedIvr`] behind an `Arc`: a reload builds a new one off the
//! call path and swaps it in; a call holds the `Arc` it started with, so it finishes on that
//! version while new calls get the new one.

use super::host::CallState;
use super::{EngineError, IvrEngine, content_version, wit};
use crate::tree::{self, Diagnostic, ValidateOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What kind of file an IVR came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IvrKind {
    /// A JSON tree, run by the built-in tree guest.
    Tree,
    /// A WebAssembly component.
    Component,
}

/// A loaded, ready-to-run IVR.
pub struct LoadedIvr {
    /// Its name: the file name without extension.
    pub name: String,
    /// Its version: the first 12 hex digits of the SHA-256 of its file (and settings).
    pub version: String,
    /// Tree or component.
    pub kind: IvrKind,
    /// Where it was loaded from.
    pub origin: PathBuf,
    /// What the `config` import returns: the lowered tree, or the component's settings as JSON.
    pub config: String,
    /// How long loading took (parse, validate, compile).
    pub load_time: Duration,
    /// Warnings found while loading (trees).
    pub warnings: Vec<Diagnostic>,
    /// For trees: each gather node's keys, so the engine can count invalid keys per node.
    pub gather_keys: Option<HashMap<String, HashSet<String>>>,
    pub(crate) pre: wit::IvrPre<CallState>,
}

impl std::fmt::Debug for LoadedIvr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedIvr")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why an IVR file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tree has errors; each diagnostic names the file and node.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Tree(Vec<Diagnostic>),
    /// The component could not be compiled or does not fit the IVR world.
    #[error("{path}: {source}")]
    Component {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: EngineError,
    },
    /// The component's `NAME.toml` settings are invalid.
    #[error("{path}: invalid settings: {message}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Not a `.json` or `.wasm` file.
    #[error("{0}: an IVR is a .json tree or a .wasm component")]
    UnknownKind(PathBuf),
}

/// Where a tree's audio lives and which IVRs it may name, for validation at load.
#[derive(Debug, Clone, Default)]
pub struct LoadContext {
    /// The audio folder; None skips the audio check.
    pub audio_dir: Option<PathBuf>,
    /// IVR names a transfer may enter; None skips the check.
    pub known_ivrs: Option<HashSet<String>>,
}

impl IvrEngine {
    /// Validates and lowers a JSON tree into a runnable IVR.
    pub fn load_tree(
        &self,
        name: &str,
        origin: &Path,
        text: &str,
        context: &LoadContext,
    ) -> Result<LoadedIvr, LoadError> {
        let started = Instant::now();
        let label = origin.display().to_string();
        let options = ValidateOptions {
            audio_dir: context.audio_dir.as_deref(),
            known_ivrs: context.known_ivrs.as_ref(),
        };
        let checked = tree::check_text(&label, text, &options);
        let Some(lowered) = checked.lowered else {
            return Err(LoadError::Tree(checked.errors().cloned().collect()));
        };
        let config = serde_json::to_string(&lowered).map_err(|e| {
            LoadError::Tree(vec![Diagnostic {
                severity: tree::Severity::Error,
                file: label.clone(),
                node: None,
                position: None,
                message: format!("cannot lower the tree: {e}"),
            }])
        })?;
        let gather_keys = lowered
            .nodes
            .iter()
            .filter_map(|(node, spec)| match spec {
                tree::LoweredNode::Gather { keys, .. } => {
                    Some((node.clone(), keys.keys().cloned().collect()))
                }
                _ => None,
            })
            .collect();
        Ok(LoadedIvr {
            gather_keys: Some(gather_keys),
            name: name.to_owned(),
            version: content_version(text.as_bytes()),
            kind: IvrKind::Tree,
            origin: origin.to_owned(),
            config,
            load_time: started.elapsed(),
            warnings: checked.diagnostics,
            pre: self.tree_pre(),
        })
    }

    /// Compiles a component (through the cache) into a runnable IVR, with its settings
    /// (`NAME.toml` content, converted to JSON for the `config` import).
    pub fn load_component(
        &self,
        name: &str,
        origin: &Path,
        bytes: &[u8],
        settings_toml: Option<(&Path, &str)>,
    ) -> Result<LoadedIvr, LoadError> {
        let started = Instant::now();
        let config = match settings_toml {
            None => "{}".to_owned(),
            Some((path, text)) => {
                settings_to_json(text).map_err(|message| LoadError::Settings {
                    path: path.to_owned(),
                    message,
                })?
            }
        };
        let pre = self
            .prepare_component(bytes)
            .map_err(|source| LoadError::Component {
                path: origin.to_owned(),
                source,
            })?;
        let mut versioned = bytes.to_vec();
        versioned.extend_from_slice(config.as_bytes());
        Ok(LoadedIvr {
            name: name.to_owned(),
            version: content_version(&versioned),
            kind: IvrKind::Component,
            origin: origin.to_owned(),
            config,
            load_time: started.elapsed(),
            warnings: Vec::new(),
            gather_keys: None,
            pre,
        })
    }

    /// Loads `DIR/NAME.json` or `DIR/NAME.wasm` (with `DIR/NAME.toml` settings if present).
    pub fn load_path(&self, path: &Path, context: &LoadContext) -> Result<LoadedIvr, LoadError> {
        let name = ivr_name(path).ok_or_else(|| LoadError::UnknownKind(path.to_owned()))?;
        let read_err = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let text = std::fs::read_to_string(path).map_err(read_err)?;
                self.load_tree(&name, path, &text, context)
            }
            Some("wasm") => {
                let bytes = std::fs::read(path).map_err(read_err)?;
                let settings_path = path.with_extension("toml");
                let settings = match std::fs::read_to_string(&settings_path) {
                    Ok(text) => Some(text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        return Err(LoadError::Io {
                            path: settings_path,
                            source,
                        });
                    }
                };
                self.load_component(
                    &name,
                    path,
                    &bytes,
                    settings.as_deref().map(|t| (settings_path.as_path(), t)),
                )
            }
            _ => Err(LoadError::UnknownKind(path.to_owned())),
        }
    }
}

/// The IVR name for a file: its stem, when it is a `.json` or `.wasm`.
pub fn ivr_name(path: &Path) -> Option<String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json" | "wasm") => path.file_stem()?.to_str().map(str::to_owned),
        _ => None,
    }
}

fn settings_to_json(text: &str) -> Result<String, String> {
    let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// DID → IVR name, as in `routes.toml`.
pub type Routes = BTreeMap<String, String>;

/// Parses `routes.toml`: `"+14155559876" = "plumber-qualifier"`.
pub fn parse_routes(text: &str) -> Result<Routes, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut routes = Routes::new();
    for (did, value) in table {
        let Some(name) = value.as_str() else {
            return Err(format!(
                "route \"{did}\" must map to an IVR name (a string)"
            ));
        };
        routes.insert(did, name.to_owned());
    }
    Ok(routes)
}

/// The IVRs in service and the routes to them.
#[derive(Default)]
pub struct Registry {
    ivrs: RwLock<HashMap<String, Arc<LoadedIvr>>>,
    routes: RwLock<Arc<Routes>>,
    /// When set, an IVR missing from the registry is loaded from this folder on first use
    /// (the simulator loads only what a call reaches).
    lazy_from: Option<(PathBuf, LoadContext, Arc<IvrEngine>)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry that loads IVRs from `dir` on first use.
    pub fn lazy(dir: PathBuf, context: LoadContext, engine: Arc<IvrEngine>) -> Self {
        Registry {
            lazy_from: Some((dir, context, engine)),
            ..Registry::default()
        }
    }

    /// The IVR in service under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedIvr>> {
        let found = self.ivrs.read().ok()?.get(name).cloned();
        if found.is_some() {
            return found;
        }
        let (dir, context, engine) = self.lazy_from.as_ref()?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        let path = ["wasm", "json"]
            .iter()
            .map(|ext| dir.join(format!("{name}.{ext}")))
            .find(|p| p.is_file())?;
        match engine.load_path(&path, context) {
            Ok(ivr) => Some(self.insert(ivr)),
            Err(e) => {
                tracing::warn!("cannot load IVR '{name}': {e}");
                None
            }
        }
    }

    /// Puts an IVR in service (replacing any previous version for new calls).
    pub fn insert(&self, ivr: LoadedIvr) -> Arc<LoadedIvr> {
        let ivr = Arc::new(ivr);
        if let Ok(mut map) = self.ivrs.write() {
            map.insert(ivr.name.clone(), ivr.clone());
        }
        ivr
    }

    /// Takes an IVR out of service; calls already on it finish.
    pub fn remove(&self, name: &str) -> Option<Arc<LoadedIvr>> {
        self.ivrs.write().ok()?.remove(name)
    }

    /// Every IVR in service.
    pub fn all(&self) -> Vec<Arc<LoadedIvr>> {
        self.ivrs
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The names in service, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ivrs
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Replaces the routes.
    pub fn set_routes(&self, routes: Routes) {
        if let Ok(mut current) = self.routes.write() {
            *current = Arc::new(routes);
        }
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The IVR for a dialled number. Matches the DID as written, then with or without a
    /// leading `+`, so `14155559876` and `+14155559876` reach the same route.
    pub fn route(&self, did: &str) -> Option<Arc<LoadedIvr>> {
        let routes = self.routes();
        let name = routes.get(did).or_else(|| match did.strip_prefix('+') {
            Some(bare) => routes.get(bare),
            None => routes.get(&format!("+{did}")),
        })?;
        self.get(name)
    }
}
