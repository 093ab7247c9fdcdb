//! The prompt library: every file of the audio folder, decoded, resampled and encoded once,
//! shared by every call. The one part of `media` that reads files.
//!
//! [`PromptLibrary::sync`] rescans the folder and (re)loads only files whose size or
//! modification time changed, so the folder watcher can call it on every change. A file that
//! fails to load is reported and the version already loaded (if any) keeps playing.

use super::prompt::{EncodedPrompt, PromptLimits};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

/// What one sync of the library did.
#[derive(Debug, Default)]
pub struct LibraryReport {
    /// Prompts (re)loaded: name, length, load time.
    pub loaded: Vec<(String, Duration, Duration)>,
    /// Files that could not be loaded: name, why.
    pub failed: Vec<(String, String)>,
    /// Prompts whose files were deleted.
    pub removed: Vec<String>,
}

impl LibraryReport {
    /// Writes the report to the log.
    pub fn log(&self) {
        for (name, length, took) in &self.loaded {
            tracing::info!(prompt = %name, length_ms = length.as_millis() as u64, took_ms = took.as_millis() as u64, "prompt loaded");
        }
        for (name, why) in &self.failed {
            tracing::error!(prompt = %name, "prompt not loaded: {why}");
        }
        for name in &self.removed {
            tracing::info!(prompt = %name, "prompt removed");
        }
    }
}

struct Entry {
    stamp: (SystemTime, u64),
    prompt: EncodedPrompt,
}

/// The audio folder's prompts, ready to play.
pub struct PromptLibrary {
    dir: PathBuf,
    limits: PromptLimits,
    prompts: RwLock<HashMap<String, Entry>>,
}

impl PromptLibrary {
    /// An empty library over `dir`; call [`PromptLibrary::sync`] to load it.
    pub fn new(dir: PathBuf) -> Self {
        PromptLibrary {
            dir,
            limits: PromptLimits::default(),
            prompts: RwLock::new(HashMap::new()),
        }
    }

    /// The audio folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prompt for a file name, if loaded.
    pub fn get(&self, name: &str) -> Option<EncodedPrompt> {
        self.prompts
            .read()
            .ok()?
            .get(name)
            .map(|e| e.prompt.clone())
    }

    /// How many prompts are loaded.
    pub fn len(&self) -> usize {
        self.prompts.read().map(|p| p.len()).unwrap_or(0)
    }

    /// Whether no prompt is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the library in line with the folder.
    pub fn sync(&self) -> LibraryReport {
        let mut report = LibraryReport::default();
        let mut seen: HashMap<String, (PathBuf, (SystemTime, u64))> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                let lower = name.to_ascii_lowercase();
                if name.starts_with('.') || !(lower.ends_with(".wav") || lower.ends_with(".pcm")) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                seen.insert(name, (path, stamp));
            }
        }
        let stale: Vec<(String, PathBuf, (SystemTime, u64))> = {
            let Ok(current) = self.prompts.read() else {
                return report;
            };
            seen.iter()
                .filter(|(name, (_, stamp))| current.get(*name).is_none_or(|e| e.stamp != *stamp))
                .map(|(name, (path, stamp))| (name.clone(), path.clone(), *stamp))
                .collect()
        };
        // Decode outside the lock: calls keep playing what is loaded meanwhile.
        let mut fresh = Vec::new();
        for (name, path, stamp) in stale {
            let started = Instant::now();
            match EncodedPrompt::load(&path, &self.limits) {
                Ok(prompt) => {
                    report
                        .loaded
                        .push((name.clone(), prompt.duration(), started.elapsed()));
                    fresh.push((name, Entry { stamp, prompt }));
                }
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        if let Ok(mut current) = self.prompts.write() {
            current.extend(fresh);
            let gone: Vec<String> = current
                .keys()
                .filter(|n| !seen.contains_key(*n))
                .cloned()
                .collect();
            for name in gone {
                current.remove(&name);
                report.removed.push(name);
            }
        }
        report
    }
}
