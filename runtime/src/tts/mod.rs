//! Text to speech for `say` prompts: engines behind [`SpeechEngine`] (Festival with an HTS voice
//! by default, Flite, espeak-ng as the light fallback), voices chosen by what a name means
//! ([`Speech::resolve_voice`]), every render levelled and trimmed ([`level`]), and two caches
//! bounded in size ([`cache`]) keyed by a hash of engine, voice and text: levelled 8 kHz WAVs
//! on disk and pre-encoded frames in memory, so a sentence is rendered once and then played
//! like any prompt.
//!
//! Trees' `say` texts are rendered when the tree loads; a component's dynamic text is rendered
//! on first use (off the async threads) and cached from then on.

pub mod cache;
mod engines;
pub mod level;
pub mod voices;

pub use cache::CacheLimits;
pub use engines::{EngineKind, EspeakNg, Festival, Flite};
pub use voices::{Gender, Synthesis, VoiceInfo};

use crate::media::prompt::{EncodedPrompt, PromptFormat, PromptLimits};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest text rendered in one prompt.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Voice names that stand for the default voice.
pub const DEFAULT_VOICE_ALIASES: [&str; 1] = ["default"];

/// Changes when [`level::condition`] changes what it makes of a render (part of the cache key).
const LEVEL_VERSION: &str = "level-1";

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
    /// The id callers use in `engine:voice` (`festival`, `flite`, `espeak-ng`).
    fn id(&self) -> &str;
    /// A name that changes when the engine's output would (its version; part of the cache key).
    fn name(&self) -> &str;
    /// The voices it accepts.
    fn voices(&self) -> &[VoiceInfo];
    /// Its best voice of `gender`, if it has one: by default the first of that gender in
    /// [`SpeechEngine::voices`], which engines list best first.
    fn default_voice(&self, gender: Gender) -> Option<&str> {
        self.voices()
            .iter()
            .find(|v| v.gender == Some(gender))
            .map(|v| v.name.as_str())
    }
    /// Renders `text` in `voice` to a WAV file (any rate, any channels) at `out`.
    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError>;
}

/// A voice of an installed engine, as resolved from what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voice {
    /// The engine's id.
    pub engine: String,
    /// The engine's voice name.
    pub name: String,
}

impl std::fmt::Display for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.engine, self.name)
    }
}

/// What `GET /voices` and `wasm-ivr tts --list-voices` show.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct VoiceList {
    /// The voice used when none is named (`engine:voice`).
    pub default: String,
    /// What female names (`rachel`, `female`) map to.
    pub female: Option<String>,
    /// What male names (`adam`, `male`) map to.
    pub male: Option<String>,
    /// Every installed voice.
    pub voices: Vec<VoiceInfo>,
}

/// Rendered speech, cached.
pub struct Speech {
    /// The primary engine first.
    engines: Vec<Box<dyn SpeechEngine>>,
    default: Voice,
    female: Option<Voice>,
    male: Option<Voice>,
    cache_dir: PathBuf,
    limits: CacheLimits,
    memory: Mutex<cache::MemoryCache>,
    /// Names already logged as mapped (only names of the fixed table get in: bounded).
    logged: Mutex<HashSet<String>>,
    tmp_counter: AtomicU64,
}

impl Speech {
    /// Speech from one `engine`, caching WAVs in `cache_dir` within the default limits.
    pub fn new(engine: Box<dyn SpeechEngine>, cache_dir: PathBuf) -> Self {
        Self::with_engines(vec![engine], cache_dir, CacheLimits::default())
    }

    /// Speech from the installed engines, `primary` first (it gives the default voices when it
    /// has them; the others serve `engine:voice` and the genders it lacks).
    pub fn detect(
        primary: EngineKind,
        cache_dir: PathBuf,
        limits: CacheLimits,
    ) -> Result<Self, TtsError> {
        let mut engines = Vec::new();
        let mut failures = Vec::new();
        let order =
            std::iter::once(primary).chain(EngineKind::ALL.into_iter().filter(|k| *k != primary));
        for kind in order {
            match kind.detect() {
                Ok(engine) => engines.push(engine),
                Err(e) => {
                    tracing::warn!(engine = kind.id(), "TTS engine unavailable: {e}");
                    failures.push(format!("{}: {e}", kind.id()));
                }
            }
        }
        if engines.is_empty() {
            return Err(TtsError::Engine(failures.join("; ")));
        }
        Ok(Self::with_engines(engines, cache_dir, limits))
    }

    /// Speech from `engines`, the first the primary. Panics on none: a programming error.
    pub fn with_engines(
        engines: Vec<Box<dyn SpeechEngine>>,
        cache_dir: PathBuf,
        limits: CacheLimits,
    ) -> Self {
        assert!(!engines.is_empty(), "Speech needs an engine");
        let pick = |gender: Gender| -> Option<Voice> {
            if let Some(name) = engines[0].default_voice(gender) {
                return Some(Voice {
                    engine: engines[0].id().to_owned(),
                    name: name.to_owned(),
                });
            }
            // The best-synthesised voice of that gender elsewhere; earlier engines win ties.
            engines[1..]
                .iter()
                .flat_map(|e| e.voices())
                .filter(|v| v.gender == Some(gender))
                .fold(None::<&VoiceInfo>, |best, v| match best {
                    Some(b) if b.synthesis >= v.synthesis => Some(b),
                    _ => Some(v),
                })
                .map(|v| Voice {
                    engine: v.engine.clone(),
                    name: v.name.clone(),
                })
        };
        let female = pick(Gender::Female);
        let male = pick(Gender::Male);
        let default = female
            .clone()
            .or_else(|| male.clone())
            .unwrap_or_else(|| Voice {
                engine: engines[0].id().to_owned(),
                name: engines[0]
                    .voices()
                    .first()
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
            });
        Speech {
            engines,
            default,
            female,
            male,
            cache_dir,
            limits,
            memory: Mutex::new(cache::MemoryCache::new(limits.memory_bytes)),
            logged: Mutex::new(HashSet::new()),
            tmp_counter: AtomicU64::new(0),
        }
    }

    /// Every installed voice, the primary engine's first.
    pub fn voices(&self) -> Vec<VoiceInfo> {
        self.engines
            .iter()
            .flat_map(|e| e.voices())
            .cloned()
            .collect()
    }

    /// The voices and what the default and gendered names map to.
    pub fn listing(&self) -> VoiceList {
        VoiceList {
            default: self.default.to_string(),
            female: self.female.as_ref().map(Voice::to_string),
            male: self.male.as_ref().map(Voice::to_string),
            voices: self.voices(),
        }
    }

    /// The default voice of `gender`, if one is installed.
    pub fn default_for(&self, gender: Gender) -> Option<&Voice> {
        match gender {
            Gender::Female => self.female.as_ref(),
            Gender::Male => self.male.as_ref(),
        }
    }

    fn engine(&self, id: &str) -> Option<&dyn SpeechEngine> {
        self.engines
            .iter()
            .find(|e| e.id().eq_ignore_ascii_case(id))
            .map(|e| e.as_ref())
    }

    /// The voice for a requested name: none or `default` is the default voice; `engine:voice`
    /// exactly that voice; an installed voice's name that voice; a person's name or gender word
    /// (`rachel`, `adam`, `female`) the default voice of that gender (logged once per name).
    pub fn resolve_voice(&self, voice: Option<&str>) -> Result<Voice, TtsError> {
        let Some(requested) = voice.map(str::trim) else {
            return Ok(self.default.clone());
        };
        if DEFAULT_VOICE_ALIASES
            .iter()
            .any(|a| a.eq_ignore_ascii_case(requested))
        {
            return Ok(self.default.clone());
        }
        let has =
            |engine: &dyn SpeechEngine, name: &str| engine.voices().iter().any(|v| v.name == name);
        if let Some((engine, name)) = requested.split_once(':') {
            if let Some(engine) = self.engine(engine).filter(|e| has(*e, name)) {
                return Ok(Voice {
                    engine: engine.id().to_owned(),
                    name: name.to_owned(),
                });
            }
        } else if let Some(engine) = self.engines.iter().find(|e| has(e.as_ref(), requested)) {
            return Ok(Voice {
                engine: engine.id().to_owned(),
                name: requested.to_owned(),
            });
        } else if let Some(gender) = voices::gender_of_name(requested) {
            let (voice, fallback) = match self.default_for(gender) {
                Some(v) => (v.clone(), false),
                None => (self.default.clone(), true),
            };
            let first_time = self
                .logged
                .lock()
                .map(|mut l| l.insert(requested.to_ascii_lowercase()))
                .unwrap_or(false);
            if first_time {
                if fallback {
                    tracing::warn!(
                        "voice '{requested}' ({gender}): no {gender} voice is installed, using the default {voice}"
                    );
                } else {
                    tracing::info!(
                        "voice '{requested}' is not installed; using the default {gender} voice {voice}"
                    );
                }
            }
            return Ok(voice);
        }
        Err(TtsError::UnknownVoice {
            voice: requested.to_owned(),
            known: ["default", "female", "male"]
                .into_iter()
                .map(str::to_owned)
                .chain(self.voices().into_iter().map(|v| v.id))
                .collect(),
        })
    }

    fn key(&self, text: &str, voice: &Voice) -> String {
        let engine = self.engine(&voice.engine).map_or("", |e| e.name());
        let digest =
            Sha256::digest(format!("{engine}\0{voice}\0{LEVEL_VERSION}\0{text}").as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The prompt if it is already rendered and loaded (never blocks on the engine).
    pub fn cached(&self, text: &str, voice: Option<&str>) -> Option<EncodedPrompt> {
        let voice = self.resolve_voice(voice).ok()?;
        let key = self.key(text, &voice);
        self.memory.lock().ok()?.get(&key)
    }

    fn check_text(text: &str) -> Result<(), TtsError> {
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS || text.trim().is_empty() {
            return Err(TtsError::BadText);
        }
        Ok(())
    }

    /// The prompt for `text`, rendering it if needed. Blocks on the engine: call it off the
    /// async threads (`spawn_blocking`) or at load.
    pub fn prompt(&self, text: &str, voice: Option<&str>) -> Result<EncodedPrompt, TtsError> {
        Self::check_text(text)?;
        let voice = self.resolve_voice(voice)?;
        let key = self.key(text, &voice);
        if let Some(prompt) = self.memory.lock().ok().and_then(|mut m| m.get(&key)) {
            return Ok(prompt);
        }
        let wav = self.render_cached(text, &voice, &key)?;
        let prompt =
            EncodedPrompt::from_bytes(&key, PromptFormat::Wav, &wav, &PromptLimits::default())
                .map_err(|e| TtsError::Audio(e.to_string()))?;
        if let Ok(mut memory) = self.memory.lock() {
            memory.insert(key, prompt.clone());
        }
        Ok(prompt)
    }

    fn tmp_path(&self, key: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        // Not `.wav`: disk eviction counts only finished files.
        self.cache_dir
            .join(format!("{key}.{}-{n}.tmp", std::process::id()))
    }

    /// The levelled 8 kHz WAV for `text` in `voice`: from the disk cache, or rendered, levelled
    /// and stored there (evicting the least recently used files beyond the limit).
    fn render_cached(&self, text: &str, voice: &Voice, key: &str) -> Result<Vec<u8>, TtsError> {
        let audio = |e: &dyn std::fmt::Display| TtsError::Audio(e.to_string());
        let path = self.cache_dir.join(format!("{key}.wav"));
        if let Ok(bytes) = std::fs::read(&path) {
            cache::touch(&path);
            return Ok(bytes);
        }
        let Some(engine) = self.engine(&voice.engine) else {
            return Err(TtsError::Engine(format!("no engine '{}'", voice.engine)));
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| audio(&e))?;
        let raw = self.tmp_path(key);
        let rendered = engine
            .render(text, &voice.name, &raw)
            .and_then(|()| std::fs::read(&raw).map_err(|e| audio(&e)));
        let _ = std::fs::remove_file(&raw);
        let samples = EncodedPrompt::decode_wav_8k(key, &rendered?, &PromptLimits::default())
            .map_err(|e| audio(&e))?;
        let levelled = level::condition(&samples).map_err(|e| audio(&e))?;
        let wav = encode_wav(&levelled).map_err(|e| audio(&e))?;
        let tmp = self.tmp_path(key);
        std::fs::write(&tmp, &wav)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                audio(&e)
            })?;
        let evicted = cache::evict_disk(&self.cache_dir, self.limits.disk_bytes, &path);
        if evicted > 0 {
            tracing::debug!(evicted, "TTS disk cache over its limit");
        }
        Ok(wav)
    }

    /// Renders `text` to a WAV file at `out` (8 kHz mono 16-bit, levelled and trimmed), for
    /// `wasm-ivr tts` and the API.
    pub fn render_file(
        &self,
        text: &str,
        voice: Option<&str>,
        out: &Path,
    ) -> Result<Duration, TtsError> {
        Self::check_text(text)?;
        let voice = self.resolve_voice(voice)?;
        let key = self.key(text, &voice);
        let wav = self.render_cached(text, &voice, &key)?;
        let reader = hound::WavReader::new(std::io::Cursor::new(&wav))
            .map_err(|e| TtsError::Audio(e.to_string()))?;
        let length = Duration::from_micros(u64::from(reader.duration()) * 125);
        std::fs::write(out, &wav).map_err(|e| TtsError::Audio(e.to_string()))?;
        Ok(length)
    }
}

/// 16-bit 8 kHz mono WAV bytes (the samples are already limited below full scale).
fn encode_wav(samples: &[f32]) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut writer = hound::WavWriter::new(&mut bytes, spec)?;
    for &s in samples {
        writer.write_sample((s * 32767.0).round().clamp(-32767.0, 32767.0) as i16)?;
    }
    writer.finalize()?;
    Ok(bytes.into_inner())
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

    /// The Plumber Qualifier's five prompts (examples/plumber-qualifier/make-prompts.sh).
    const SEED_PROMPTS: [&str; 5] = [
        "Thanks for calling. Press 1 if you are a licensed plumber, or press 9 to be removed from our list.",
        "Great. Press 1 if you serve the Phoenix metro area, or press 2 if you do not.",
        "Press 1 to speak with our assistant now, or press 2 if you work outside the area.",
        "Sorry, this program is for licensed plumbers only. Goodbye.",
        "Sorry, we only work with plumbers in the Phoenix metro area. Goodbye.",
    ];

    fn engine(kind: EngineKind) -> Box<dyn SpeechEngine> {
        kind.detect()
            .unwrap_or_else(|e| panic!("{} is installed by scripts/setup.sh: {e}", kind.id()))
    }

    /// What a caller's prompt must be, measured on the file `render_file` writes.
    fn check_prompt(path: &Path, text: &str, what: &str) {
        let mut reader = hound::WavReader::open(path).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (8000, 1, 16),
            "{what}"
        );
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let seconds = samples.len() as f64 / 8000.0;
        // Telephone prompts are spoken at roughly 130 to 220 words a minute.
        let words = text.split_whitespace().count() as f64;
        let wpm = words * 60.0 / seconds;
        assert!(
            (100.0..=260.0).contains(&wpm),
            "{what}: {wpm:.0} words/min, {seconds:.2} s"
        );
        let float: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let rms = level::rms_dbfs(&float);
        assert!(
            (rms - level::TARGET_RMS_DBFS).abs() <= 3.0,
            "{what}: {rms:.1} dBFS RMS"
        );
        let clipped = samples
            .iter()
            .filter(|&&s| s == i16::MAX || s <= -i16::MAX)
            .count();
        assert_eq!(clipped, 0, "{what}: clipped samples");
        // Leading silence: until the first sample above -40 dBFS.
        let lead = samples
            .iter()
            .position(|s| s.unsigned_abs() > 328)
            .unwrap_or(samples.len());
        assert!(lead < 800, "{what}: {} ms of leading silence", lead / 8);
        eprintln!(
            "{what}: {seconds:.2} s, {wpm:.0} words/min, {rms:.1} dBFS RMS, peak {}, lead {} ms",
            samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0),
            lead / 8
        );
    }

    #[test]
    fn seed_prompts_meet_the_telephony_bar_with_every_engine() {
        let dir = tempfile::tempdir().unwrap();
        for kind in EngineKind::ALL {
            let speech = Speech::new(engine(kind), dir.path().join(kind.id()));
            // Debian has no male HTS voice for Festival; the others have both.
            let voices: Vec<Voice> = [Gender::Female, Gender::Male]
                .into_iter()
                .filter_map(|g| speech.default_for(g).cloned())
                .collect();
            assert_eq!(
                voices.len(),
                if kind == EngineKind::Festival { 1 } else { 2 },
                "{}: {voices:?}",
                kind.id()
            );
            for voice in voices {
                assert_eq!(voice.engine, kind.id());
                for (i, text) in SEED_PROMPTS.iter().enumerate() {
                    let out = dir
                        .path()
                        .join(format!("{}-{}-{i}.wav", kind.id(), voice.name));
                    let length = speech
                        .render_file(text, Some(&voice.to_string()), &out)
                        .unwrap();
                    check_prompt(&out, text, &format!("{voice} prompt {i}"));
                    assert!(length > Duration::from_secs(2), "{voice} {i}: {length:?}");
                }
            }
        }
    }

    #[test]
    fn names_map_to_voices_of_their_gender_and_ids_select_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let speech = Speech::detect(
            EngineKind::Festival,
            dir.path().to_owned(),
            CacheLimits::default(),
        )
        .unwrap();
        let slt = Voice {
            engine: "festival".into(),
            name: "cmu_us_slt_arctic_hts".into(),
        };
        let rms = Voice {
            engine: "flite".into(),
            name: "rms".into(),
        };
        assert_eq!(
            speech.resolve_voice(None).unwrap(),
            slt,
            "the documented default"
        );
        for name in ["rachel", "Rachel", "default", "female", "joanna"] {
            assert_eq!(speech.resolve_voice(Some(name)).unwrap(), slt, "{name}");
        }
        for name in ["adam", "Josh", "male", "matthew"] {
            assert_eq!(speech.resolve_voice(Some(name)).unwrap(), rms, "{name}");
        }
        for id in [
            "flite:slt",
            "espeak-ng:en-us",
            "festival:cmu_us_slt_arctic_hts",
            "flite:awb",
        ] {
            assert_eq!(speech.resolve_voice(Some(id)).unwrap().to_string(), id);
        }
        assert_eq!(
            speech.resolve_voice(Some("en-us")).unwrap().to_string(),
            "espeak-ng:en-us"
        );
        for bad in ["flite:rachel", "sapi:slt", "nobody", "festival:(exit)"] {
            let err = speech.resolve_voice(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("unknown voice") && err.contains("flite:rms"),
                "{err}"
            );
        }
        let list = speech.listing();
        assert_eq!(list.default, slt.to_string());
        assert_eq!(list.male.as_deref(), Some("flite:rms"));
        let hts = list
            .voices
            .iter()
            .find(|v| v.id == "festival:cmu_us_slt_arctic_hts")
            .unwrap();
        assert_eq!(
            (hts.gender, hts.language.as_str(), hts.synthesis),
            (Some(Gender::Female), "en-US", Synthesis::Hts)
        );
        for engine in ["festival", "flite", "espeak-ng"] {
            assert!(list.voices.iter().any(|v| v.engine == engine), "{engine}");
        }
    }

    #[test]
    fn the_cache_keeps_engines_and_voices_apart() {
        let dir = tempfile::tempdir().unwrap();
        let speech = Speech::detect(
            EngineKind::Festival,
            dir.path().to_owned(),
            CacheLimits::default(),
        )
        .unwrap();
        let text = "Press 1 for sales.";
        let voices = [
            "festival:cmu_us_slt_arctic_hts",
            "flite:slt",
            "flite:rms",
            "espeak-ng:en-us",
        ];
        let mut prompts = Vec::new();
        for voice in voices {
            prompts.push(speech.prompt(text, Some(voice)).unwrap());
        }
        let wavs = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(wavs, voices.len(), "one WAV per engine and voice");
        for (i, voice) in voices.iter().enumerate() {
            assert_eq!(
                speech.cached(text, Some(voice)).as_ref(),
                Some(&prompts[i]),
                "{voice}"
            );
            for other in &prompts[i + 1..] {
                assert_ne!(
                    &prompts[i], other,
                    "{voice} shares audio with another voice"
                );
            }
        }
        // "rachel" is the festival voice's entry, not a new one.
        assert_eq!(
            speech.cached(text, Some("rachel")).as_ref(),
            Some(&prompts[0])
        );
    }

    #[test]
    fn caches_stay_within_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let one = Speech::new(engine(EngineKind::EspeakNg), dir.path().join("sizing"))
            .prompt("One.", None)
            .unwrap();
        let one = one.bytes(crate::media::codec::Codec::Pcmu).len() as u64 * 2;
        let dir = tempfile::tempdir().unwrap();
        let limits = CacheLimits {
            memory_bytes: one * 3 / 2, // room for one short prompt, not two
            disk_bytes: 1,
        };
        let speech = Speech::with_engines(
            vec![engine(EngineKind::EspeakNg)],
            dir.path().to_owned(),
            limits,
        );
        for text in ["One.", "Two.", "Three."] {
            speech.prompt(text, None).unwrap();
            let memory = speech.memory.lock().unwrap();
            assert!(
                memory.bytes() <= limits.memory_bytes && memory.len() == 1,
                "{text}: {} prompts, {} bytes",
                memory.len(),
                memory.bytes()
            );
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "only the newest WAV is kept: {files:?}");
        assert!(speech.cached("One.", None).is_none());
        assert!(speech.cached("Three.", None).is_some());
        // Evicted from both: rendered again, same result.
        assert!(speech.prompt("One.", None).unwrap().duration() > Duration::from_millis(200));
    }
}
