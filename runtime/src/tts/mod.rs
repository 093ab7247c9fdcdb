//! Text to speech for `say` prompts: an engine behind [`SpeechEngine`] (espeak-ng by default)
//! and a cache keyed by a hash of engine, voice and text, on disk (WAV) and in memory
//! (pre-encoded frames), so a sentence is rendered once and then played like any prompt.
//!
//! Trees' `say` texts are rendered when the tree loads; a component's dynamic text is rendered
//! on first use (off the async threads) and cached from then on.

use crate::media::prompt::{EncodedPrompt, PromptLimits};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;

/// The longest text rendered in one prompt.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Voice names that stand for the engine's default voice: the hosted API's seed uses "rachel".
pub const DEFAULT_VOICE_ALIASES: [&str; 2] = ["default", "rachel"];

/// Text-to-speech failures.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    /// The voice is not installed.
    #[error("unknown voice '{voice}'; voices: {}", known.join(", "))]
    UnknownVoice {
        /// What was asked for.
        voice: String,
        /// What exists.
        known: Vec<String>,
    },
    /// Empty or too long text.
    #[error("text must be 1 to {MAX_TEXT_CHARS} characters")]
    BadText,
    /// The engine failed.
    #[error("the TTS engine failed: {0}")]
    Engine(String),
    /// The rendered audio could not be loaded or cached.
    #[error("rendered audio unusable: {0}")]
    Audio(String),
}

/// A text-to-speech engine.
pub trait SpeechEngine: Send + Sync {
    /// A name that changes when the engine's output would (part of the cache key).
    fn name(&self) -> &str;
    /// The voices it accepts.
    fn voices(&self) -> &[String];
    /// The voice used when none is named.
    fn default_voice(&self) -> &str;
    /// Renders `text` in `voice` to a WAV file at `out`.
    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError>;
}

/// espeak-ng, the default engine: offline, installed from Debian's `espeak-ng`.
pub struct EspeakNg {
    name: String,
    voices: Vec<String>,
    default_voice: String,
}

impl EspeakNg {
    /// Finds espeak-ng and its voices.
    pub fn new() -> Result<Self, TtsError> {
        let version = Command::new("espeak-ng")
            .arg("--version")
            .output()
            .map_err(|e| {
                TtsError::Engine(format!("espeak-ng not found ({e}); install espeak-ng"))
            })?;
        let listing = Command::new("espeak-ng")
            .arg("--voices")
            .output()
            .map_err(|e| TtsError::Engine(e.to_string()))?;
        let mut voices: Vec<String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        voices.sort();
        voices.dedup();
        let default_voice = if voices.iter().any(|v| v == "en-us") {
            "en-us"
        } else {
            "en"
        };
        Ok(EspeakNg {
            name: format!(
                "espeak-ng {}",
                String::from_utf8_lossy(&version.stdout).trim()
            ),
            voices,
            default_voice: default_voice.to_owned(),
        })
    }
}

impl SpeechEngine for EspeakNg {
    fn name(&self) -> &str {
        &self.name
    }

    fn voices(&self) -> &[String] {
        &self.voices
    }

    fn default_voice(&self) -> &str {
        &self.default_voice
    }

    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError> {
        // `-w` writes a complete header; espeak-ng's stdout WAV has a placeholder length.
        let output = Command::new("espeak-ng")
            .args(["-v", voice, "-w"])
            .arg(out)
            .arg("--")
            .arg(text)
            .output()
            .map_err(|e| TtsError::Engine(e.to_string()))?;
        if !output.status.success() {
            return Err(TtsError::Engine(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Ok(())
    }
}

/// Rendered speech, cached.
pub struct Speech {
    engine: Box<dyn SpeechEngine>,
    cache_dir: PathBuf,
    memory: RwLock<HashMap<String, EncodedPrompt>>,
}

impl Speech {
    /// Speech from `engine`, caching WAVs in `cache_dir`.
    pub fn new(engine: Box<dyn SpeechEngine>, cache_dir: PathBuf) -> Self {
        Speech {
            engine,
            cache_dir,
            memory: RwLock::new(HashMap::new()),
        }
    }

    /// The engine's voices.
    pub fn voices(&self) -> &[String] {
        self.engine.voices()
    }

    /// The engine voice for a requested name: the default for none or an alias, else the name
    /// itself when installed.
    pub fn resolve_voice(&self, voice: Option<&str>) -> Result<String, TtsError> {
        match voice {
            None => Ok(self.engine.default_voice().to_owned()),
            Some(v)
                if DEFAULT_VOICE_ALIASES
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(v)) =>
            {
                Ok(self.engine.default_voice().to_owned())
            }
            Some(v) if self.engine.voices().iter().any(|known| known == v) => Ok(v.to_owned()),
            Some(v) => Err(TtsError::UnknownVoice {
                voice: v.to_owned(),
                known: DEFAULT_VOICE_ALIASES
                    .iter()
                    .map(|a| (*a).to_owned())
                    .chain(self.engine.voices().iter().cloned())
                    .collect(),
            }),
        }
    }

    fn key(&self, text: &str, voice: &str) -> String {
        let digest = Sha256::digest(format!("{}\0{voice}\0{text}", self.engine.name()).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The prompt if it is already rendered and loaded (never blocks on the engine).
    pub fn cached(&self, text: &str, voice: Option<&str>) -> Option<EncodedPrompt> {
        let voice = self.resolve_voice(voice).ok()?;
        let key = self.key(text, &voice);
        self.memory.read().ok()?.get(&key).cloned()
    }

    /// The prompt for `text`, rendering it if needed. Blocks on the engine: call it off the
    /// async threads (`spawn_blocking`) or at load.
    pub fn prompt(&self, text: &str, voice: Option<&str>) -> Result<EncodedPrompt, TtsError> {
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS || text.trim().is_empty() {
            return Err(TtsError::BadText);
        }
        let voice = self.resolve_voice(voice)?;
        let key = self.key(text, &voice);
        if let Some(prompt) = self.memory.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(prompt);
        }
        let path = self.render_to_cache(text, &voice, &key)?;
        let prompt = EncodedPrompt::load(&path, &PromptLimits::default())
            .map_err(|e| TtsError::Audio(e.to_string()))?;
        if let Ok(mut memory) = self.memory.write() {
            memory.insert(key, prompt.clone());
        }
        Ok(prompt)
    }

    /// Renders into the disk cache (or finds it there) and returns the WAV's path.
    pub fn render_to_cache(&self, text: &str, voice: &str, key: &str) -> Result<PathBuf, TtsError> {
        let path = self.cache_dir.join(format!("{key}.wav"));
        if path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| TtsError::Audio(e.to_string()))?;
        let tmp = self
            .cache_dir
            .join(format!("{key}.{}.tmp.wav", std::process::id()));
        self.engine.render(text, voice, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| TtsError::Audio(e.to_string()))?;
        Ok(path)
    }

    /// Renders `text` to a WAV file at `out` (8 kHz mono 16-bit), for `wasm-ivr tts`.
    pub fn render_file(
        &self,
        text: &str,
        voice: Option<&str>,
        out: &Path,
    ) -> Result<std::time::Duration, TtsError> {
        let prompt = self.prompt(text, voice)?;
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let audio_err = |e: hound::Error| TtsError::Audio(e.to_string());
        let mut writer = hound::WavWriter::create(out, spec).map_err(audio_err)?;
        let codec = crate::media::codec::Codec::Pcmu;
        for &byte in prompt.bytes(codec) {
            writer
                .write_sample(codec.decode_sample(byte))
                .map_err(audio_err)?;
        }
        writer.finalize().map_err(audio_err)?;
        Ok(prompt.duration())
    }
}

impl Speech {
    /// Renders every `say` text of the trees in service that is not cached yet, so calls never
    /// wait for the engine on a tree's prompts. Returns how many texts were rendered.
    pub fn prerender(&self, registry: &crate::engine::Registry) -> usize {
        let mut rendered = 0;
        for ivr in registry.all() {
            if ivr.kind != crate::engine::IvrKind::Tree {
                continue;
            }
            let Ok(tree) = serde_json::from_str::<crate::tree::LoweredTree>(&ivr.config) else {
                continue;
            };
            for (text, voice) in tree.say_texts() {
                if self.cached(&text, voice.as_deref()).is_some() {
                    continue;
                }
                match self.prompt(&text, voice.as_deref()) {
                    Ok(_) => rendered += 1,
                    Err(e) => tracing::warn!(ivr = %ivr.name, "cannot render \"{text}\": {e}"),
                }
            }
        }
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caches_and_maps_voices() {
        let Ok(engine) = EspeakNg::new() else {
            panic!("espeak-ng is installed by scripts/setup.sh");
        };
        let dir = tempfile::tempdir().unwrap();
        let speech = Speech::new(Box::new(engine), dir.path().to_owned());
        assert_eq!(
            speech.resolve_voice(Some("rachel")).unwrap(),
            speech.resolve_voice(None).unwrap()
        );
        let err = speech
            .resolve_voice(Some("nobody"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown voice 'nobody'") && err.contains("en-us"),
            "{err}"
        );
        assert!(speech.cached("Press one", None).is_none());
        let prompt = speech
            .prompt("Press one for sales.", Some("rachel"))
            .unwrap();
        assert!(
            prompt.duration() > std::time::Duration::from_millis(500),
            "{:?}",
            prompt.duration()
        );
        assert!(speech.cached("Press one for sales.", None).is_some());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "one WAV in the cache"
        );
        assert!(matches!(speech.prompt("", None), Err(TtsError::BadText)));
        let out = dir.path().join("out.wav");
        let length = speech.render_file("Goodbye.", None, &out).unwrap();
        let reader = hound::WavReader::open(&out).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        assert!(length.as_millis() > 200);
    }
}
