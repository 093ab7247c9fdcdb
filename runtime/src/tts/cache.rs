//! The two TTS caches, each bounded by size with least-recently-used eviction: encoded prompts
//! in memory, levelled 8 kHz WAVs on disk. Dynamic `say` texts come from guests and API
//! callers, so neither cache may grow with what they send.

use crate::media::prompt::EncodedPrompt;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default bound of the in-memory cache: about 70 minutes of prompts (PCMU + PCMA).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// Default bound of the disk cache: about 4.5 hours of 16-bit 8 kHz WAV.
pub const DEFAULT_DISK_BYTES: u64 = 256 << 20;

/// How large the caches may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Encoded prompts kept in memory, in bytes.
    pub memory_bytes: u64,
    /// WAV files kept in the cache folder, in bytes.
    pub disk_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            disk_bytes: DEFAULT_DISK_BYTES,
        }
    }
}

fn prompt_bytes(prompt: &EncodedPrompt) -> u64 {
    use crate::media::codec::Codec;
    (prompt.bytes(Codec::Pcmu).len() + prompt.bytes(Codec::Pcma).len()) as u64
}

/// Encoded prompts by key, least recently used first.
pub struct MemoryCache {
    entries: IndexMap<String, EncodedPrompt>,
    bytes: u64,
    limit: u64,
}

impl MemoryCache {
    /// An empty cache holding at most `limit` bytes of audio.
    pub fn new(limit: u64) -> Self {
        MemoryCache {
            entries: IndexMap::new(),
            bytes: 0,
            limit,
        }
    }

    /// The prompt, marked as just used.
    pub fn get(&mut self, key: &str) -> Option<EncodedPrompt> {
        let index = self.entries.get_index_of(key)?;
        let last = self.entries.len() - 1;
        self.entries.move_index(index, last);
        self.entries.get_index(last).map(|(_, p)| p.clone())
    }

    /// Adds a prompt, evicting the least recently used ones beyond the limit. A prompt larger
    /// than the whole cache is not kept.
    pub fn insert(&mut self, key: String, prompt: EncodedPrompt) {
        let size = prompt_bytes(&prompt);
        if size > self.limit {
            return;
        }
        if let Some(old) = self.entries.shift_remove(&key) {
            self.bytes -= prompt_bytes(&old);
        }
        while self.bytes + size > self.limit {
            let Some((_, evicted)) = self.entries.shift_remove_index(0) else {
                break;
            };
            self.bytes -= prompt_bytes(&evicted);
        }
        self.bytes += size;
        self.entries.insert(key, prompt);
    }

    /// Bytes of audio held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Prompts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Marks a cached file as just used (its modification time is the LRU order on disk).
pub fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Deletes the least recently used WAVs in `dir` until the rest fit in `limit` bytes; `keep`
/// (the file just written) is never deleted. Returns how many were deleted.
pub fn evict_disk(dir: &Path, limit: u64, keep: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wav"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    let mut deleted = 0;
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            deleted += 1;
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::prompt::PromptLimits;

    fn prompt(seconds: usize) -> EncodedPrompt {
        EncodedPrompt::from_mono(
            "t",
            &vec![0.1; 8000 * seconds],
            8000,
            &PromptLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn memory_cache_evicts_least_recently_used() {
        let one = prompt_bytes(&prompt(1)); // 16 000 bytes
        let mut cache = MemoryCache::new(one * 3);
        for key in ["a", "b", "c"] {
            cache.insert(key.into(), prompt(1));
        }
        assert!(cache.get("a").is_some()); // now b is the oldest
        cache.insert("d".into(), prompt(1));
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some() && cache.get("c").is_some() && cache.get("d").is_some());
        assert_eq!(cache.bytes(), one * 3);
        cache.insert("big".into(), prompt(4));
        assert!(
            cache.get("big").is_none(),
            "larger than the cache: not kept"
        );
        assert_eq!(cache.len(), 3);
        cache.insert("two".into(), prompt(2));
        assert_eq!(
            cache.len(),
            2,
            "two oldest evicted for a double-size prompt"
        );
        assert!(cache.bytes() <= one * 3);
    }

    #[test]
    fn disk_eviction_deletes_oldest_first_and_keeps_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.wav"));
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 5000]).unwrap();
        touch(&dir.path().join("old.wav")); // used again: now the newest
        let keep = dir.path().join("new.wav");
        assert_eq!(evict_disk(dir.path(), 2000, &keep), 1);
        assert!(!dir.path().join("mid.wav").exists());
        assert!(dir.path().join("old.wav").exists() && keep.exists());
        assert_eq!(evict_disk(dir.path(), 0, &keep), 1);
        assert!(keep.exists(), "the file just written stays");
        assert!(
            dir.path().join("other.txt").exists(),
            "only WAVs are the cache's"
        );
    }
}
