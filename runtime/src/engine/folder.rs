//! The IVR folder: `NAME.json` trees, `NAME.wasm` components (with optional `NAME.toml`
//! settings) and `routes.toml`, loaded into the [`Registry`] and kept in sync as files change.
//!
//! A sync rescans the folder and compares each IVR's content stamp with the last one seen, so
//! only what changed is reloaded. Loading happens here, on the watcher's thread, never on the
//! call path. A file that fails to load is reported and the version already in service keeps
//! serving; a deleted file is unloaded (calls on it finish). A tree's stamp also covers the
//! audio folder's listing and the IVR names in the folder, so a tree that failed for a missing
//! prompt or sub-menu loads as soon as that arrives.

use super::IvrEngine;
use super::registry::{LoadContext, Registry, ivr_name, parse_routes};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// The routes file in the IVR folder.
pub const ROUTES_FILE: &str = "routes.toml";
/// Quiet time after the last file event before a sync runs: editors and `cp` write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// IVRs loaded or reloaded: name, version, load time.
    pub loaded: Vec<(String, String, Duration)>,
    /// IVRs that failed to load (the previous version, if any, keeps serving): name, why.
    pub failed: Vec<(String, String)>,
    /// IVRs whose files were deleted.
    pub unloaded: Vec<String>,
    /// The routes file: Ok(number of routes) when it was (re)loaded, Err when it is invalid.
    pub routes: Option<Result<usize, String>>,
}

impl SyncReport {
    /// Whether anything failed.
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty() || matches!(self.routes, Some(Err(_)))
    }

    /// Writes the report to the log: one line per load, failure and unload.
    pub fn log(&self) {
        for (name, version, took) in &self.loaded {
            tracing::info!(ivr = %name, %version, took_ms = took.as_secs_f64() * 1e3, "loaded");
        }
        for (name, why) in &self.failed {
            tracing::error!(ivr = %name, "not loaded, previous version (if any) keeps serving:\n{why}");
        }
        for name in &self.unloaded {
            tracing::info!(ivr = %name, "unloaded (file deleted)");
        }
        match &self.routes {
            Some(Ok(n)) => tracing::info!(routes = n, "routes loaded"),
            Some(Err(why)) => {
                tracing::error!("{ROUTES_FILE} not loaded, previous routes keep serving: {why}")
            }
            None => {}
        }
    }
}

/// An IVR folder and what was last loaded from it.
pub struct Folder {
    dir: PathBuf,
    audio_dir: PathBuf,
    stamps: HashMap<String, String>,
    routes_stamp: Option<String>,
}

impl Folder {
    /// A folder of IVRs whose prompts live in `audio_dir`.
    pub fn new(dir: PathBuf, audio_dir: PathBuf) -> Self {
        Folder {
            dir,
            audio_dir,
            stamps: HashMap::new(),
            routes_stamp: None,
        }
    }

    /// The IVR folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audio folder.
    pub fn audio_dir(&self) -> &Path {
        &self.audio_dir
    }

    /// Brings the registry in line with the folder.
    pub fn sync(&mut self, engine: &IvrEngine, registry: &Registry) -> SyncReport {
        let mut report = SyncReport::default();
        let files = match self.list() {
            Ok(files) => files,
            Err(e) => {
                report.failed.push((
                    "*".into(),
                    format!("cannot read {}: {e}", self.dir.display()),
                ));
                return report;
            }
        };
        let names: HashSet<String> = files.keys().cloned().collect();
        let mut sorted_names: Vec<&String> = names.iter().collect();
        sorted_names.sort();
        let audio_listing = self.audio_listing();
        let context = LoadContext {
            audio_dir: Some(self.audio_dir.clone()),
            known_ivrs: Some(names.clone()),
        };

        for (name, paths) in &files {
            let path = match (&paths.wasm, &paths.json) {
                (Some(wasm), Some(_)) => {
                    tracing::warn!(ivr = %name, "both {name}.wasm and {name}.json exist; using the .wasm");
                    wasm
                }
                (Some(wasm), None) => wasm,
                (None, Some(json)) => json,
                (None, None) => continue,
            };
            let Some(stamp) = self.stamp(path, &audio_listing, &sorted_names) else {
                continue; // vanished between listing and reading: the next event covers it
            };
            if self.stamps.get(name) == Some(&stamp) {
                continue;
            }
            self.stamps.insert(name.clone(), stamp);
            match engine.load_path(path, &context) {
                Ok(ivr) => {
                    for warning in &ivr.warnings {
                        tracing::warn!("{warning}");
                    }
                    report
                        .loaded
                        .push((ivr.name.clone(), ivr.version.clone(), ivr.load_time));
                    registry.insert(ivr);
                }
                Err(e) => report.failed.push((name.clone(), e.to_string())),
            }
        }

        let gone: Vec<String> = self
            .stamps
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.stamps.remove(&name);
            if registry.remove(&name).is_some() {
                report.unloaded.push(name);
            }
        }
        self.sync_routes(registry, &mut report);
        let metrics = crate::metrics::metrics();
        metrics.reload("loaded", report.loaded.len() as u64);
        metrics.reload("failed", report.failed.len() as u64);
        metrics.reload("unloaded", report.unloaded.len() as u64);
        report
    }

    fn sync_routes(&mut self, registry: &Registry, report: &mut SyncReport) {
        let path = self.dir.join(ROUTES_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let stamp = hex_sha256(text.as_bytes());
        if self.routes_stamp.as_ref() == Some(&stamp) {
            return;
        }
        self.routes_stamp = Some(stamp);
        match parse_routes(&text) {
            Ok(routes) => {
                report.routes = Some(Ok(routes.len()));
                registry.set_routes(routes);
            }
            Err(e) => report.routes = Some(Err(e)),
        }
    }

    fn list(&self) -> std::io::Result<BTreeMap<String, Paths>> {
        let mut files: BTreeMap<String, Paths> = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = ivr_name(&path) else {
                continue;
            };
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let slot = files.entry(name).or_default();
            match path.extension().and_then(|e| e.to_str()) {
                Some("wasm") => slot.wasm = Some(path),
                _ => slot.json = Some(path),
            }
        }
        Ok(files)
    }

    fn audio_listing(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(&self.audio_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.join("\n")
    }

    fn stamp(&self, path: &Path, audio_listing: &str, names: &[&String]) -> Option<String> {
        let mut hasher = Sha256::new();
        hasher.update(std::fs::read(path).ok()?);
        if path.extension().is_some_and(|e| e == "wasm") {
            if let Ok(settings) = std::fs::read(path.with_extension("toml")) {
                hasher.update(settings);
            }
        } else {
            hasher.update(audio_listing.as_bytes());
            for name in names {
                hasher.update(name.as_bytes());
                hasher.update(b"\n");
            }
        }
        Some(hex(&hasher.finalize()))
    }
}

#[derive(Default)]
struct Paths {
    json: Option<PathBuf>,
    wasm: Option<PathBuf>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Keeps a folder in sync while it lives; dropping it stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the folder (and its audio folder) and syncs after each burst of changes, on a
/// thread of its own so compiling never blocks calls. `before_sync` runs first on each burst
/// (the server reloads its prompt library there, so trees see the prompts they name);
/// `after_sync` runs after it (the server renders new trees' TTS texts there).
pub fn watch(
    mut folder: Folder,
    engine: Arc<IvrEngine>,
    registry: Arc<Registry>,
    before_sync: impl Fn() + Send + 'static,
    after_sync: impl Fn(&Registry) + Send + 'static,
) -> notify::Result<Watcher> {
    use notify::{RecursiveMode, Watcher as _};
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    watcher.watch(folder.dir(), RecursiveMode::NonRecursive)?;
    // A non-recursive watch on the IVR folder does not see inside the audio folder, even when
    // it is a subfolder, so the audio folder gets its own watch.
    if folder.audio_dir().is_dir() {
        watcher.watch(folder.audio_dir(), RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("ivr-folder".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                if let Err(e) = first {
                    tracing::warn!("folder watch error: {e}");
                }
                // Let the burst settle, then sync once.
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                before_sync();
                folder.sync(&engine, &registry).log();
                after_sync(&registry);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(Watcher { _watcher: watcher })
}
