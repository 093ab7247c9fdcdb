//! The engines, each an offline Debian package run as a child process (no shell; text on
//! stdin or as one argument, voice names checked against the installed list first).

use super::voices::{Gender, Synthesis, VoiceInfo};
use super::{SpeechEngine, TtsError};
use std::io::{Read, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which engine, by its id in `engine:voice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
pub enum EngineKind {
    /// Festival with HTS voices (`festival`, `festvox-us-slt-hts`): the default.
    #[default]
    #[serde(rename = "festival")]
    Festival,
    /// Flite and its built-in CMU voices (`flite`).
    #[serde(rename = "flite")]
    Flite,
    /// espeak-ng (`espeak-ng`): the light fallback.
    #[serde(rename = "espeak-ng")]
    EspeakNg,
}

impl EngineKind {
    /// Every engine, the preferred (best-sounding) first.
    pub const ALL: [EngineKind; 3] = [
        EngineKind::Festival,
        EngineKind::Flite,
        EngineKind::EspeakNg,
    ];

    /// The id used in `engine:voice` and listings.
    pub fn id(self) -> &'static str {
        match self {
            EngineKind::Festival => "festival",
            EngineKind::Flite => "flite",
            EngineKind::EspeakNg => "espeak-ng",
        }
    }

    /// Finds the engine and its voices.
    pub fn detect(self) -> Result<Box<dyn SpeechEngine>, TtsError> {
        Ok(match self {
            EngineKind::Festival => Box::new(Festival::new()?),
            EngineKind::Flite => Box::new(Flite::new()?),
            EngineKind::EspeakNg => Box::new(EspeakNg::new()?),
        })
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.id().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown TTS engine '{s}' (festival, flite, espeak-ng)"))
    }
}

/// How long one render may take: Festival speaks the longest text (2000 characters) in about
/// 20 s on a slow core; an engine still running after this is stuck and is killed.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);
/// The most an engine's stdout or stderr is read (listings and messages are small).
const MAX_OUTPUT: u64 = 1 << 20;

/// Runs `command`, feeding `stdin`, within [`ENGINE_TIMEOUT`], and turns a failure into the
/// engine's own message.
fn run(command: Command, what: &str, stdin: Option<&str>) -> Result<Vec<u8>, TtsError> {
    run_within(command, what, stdin, ENGINE_TIMEOUT)
}

fn run_within(
    mut command: Command,
    what: &str,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u8>, TtsError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| TtsError::Engine(format!("{what} not found ({e}); run scripts/setup.sh")))?;
    // Readers on their own threads, so a chatty engine never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means the engine exited early; its status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TtsError::Engine(format!(
                    "{what} did not finish in {:?}",
                    timeout
                )));
            }
            Err(e) => return Err(TtsError::Engine(format!("{what}: {e}"))),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(TtsError::Engine(format!(
            "{what} failed ({status}): {}",
            stderr.trim().chars().take(500).collect::<String>()
        )));
    }
    Ok(stdout)
}

/// espeak-ng: offline, tiny, formant-synthesised; installed from Debian's `espeak-ng`.
pub struct EspeakNg {
    name: String,
    voices: Vec<VoiceInfo>,
}

/// espeak-ng's female variant of its US English voice, the fallback `rachel`.
const ESPEAK_FEMALE: &str = "en-us+f3";

impl EspeakNg {
    /// Finds espeak-ng and its voices.
    pub fn new() -> Result<Self, TtsError> {
        let version = {
            let mut c = Command::new("espeak-ng");
            c.arg("--version");
            run(c, "espeak-ng", None)?
        };
        let listing = {
            let mut c = Command::new("espeak-ng");
            c.arg("--voices");
            run(c, "espeak-ng", None)?
        };
        let mut voices: Vec<VoiceInfo> = String::from_utf8_lossy(&listing)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace().skip(1);
                let language = fields.next()?;
                let gender = match fields.next()?.rsplit('/').next()? {
                    "F" => Some(Gender::Female),
                    "M" => Some(Gender::Male),
                    _ => None,
                };
                Some(VoiceInfo::new(
                    "espeak-ng",
                    language,
                    gender,
                    language,
                    Synthesis::Formant,
                ))
            })
            .collect();
        if voices.iter().any(|v| v.name == "en-us") {
            voices.push(VoiceInfo::new(
                "espeak-ng",
                ESPEAK_FEMALE,
                Some(Gender::Female),
                "en-us",
                Synthesis::Formant,
            ));
        }
        voices.sort_by(|a, b| a.name.cmp(&b.name));
        voices.dedup_by(|a, b| a.name == b.name);
        Ok(EspeakNg {
            name: format!("espeak-ng {}", String::from_utf8_lossy(&version).trim()),
            voices,
        })
    }
}

impl SpeechEngine for EspeakNg {
    fn id(&self) -> &str {
        "espeak-ng"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn default_voice(&self, gender: Gender) -> Option<&str> {
        let name = match gender {
            Gender::Female => ESPEAK_FEMALE,
            Gender::Male => "en-us",
        };
        self.voices
            .iter()
            .find(|v| v.name == name)
            .or_else(|| self.voices.iter().find(|v| v.name == "en"))
            .map(|v| v.name.as_str())
    }

    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError> {
        // `-w` writes a complete header; espeak-ng's stdout WAV has a placeholder length.
        let mut c = Command::new("espeak-ng");
        c.args(["-v", voice, "-w"]).arg(out).arg("--").arg(text);
        run(c, "espeak-ng", None).map(drop)
    }
}

/// Festival voices this module knows the speaker of (Debian's `festvox-*` packages).
const FESTIVAL_VOICES: &[(&str, Gender, &str, Synthesis)] = &[
    (
        "cmu_us_slt_arctic_hts",
        Gender::Female,
        "en-US",
        Synthesis::Hts,
    ),
    ("kal_diphone", Gender::Male, "en-US", Synthesis::Diphone),
    ("ked_diphone", Gender::Male, "en-US", Synthesis::Diphone),
    ("rab_diphone", Gender::Male, "en-GB", Synthesis::Diphone),
];

/// Where Debian's festvox packages put voices: `<root>/<language>/<voice>/`.
const FESTIVAL_VOICE_ROOT: &str = "/usr/share/festival/voices";

/// Festival, run through `text2wave` with one of its installed voices.
pub struct Festival {
    name: String,
    voices: Vec<VoiceInfo>,
}

impl Festival {
    /// Finds Festival and the known voices installed for it.
    pub fn new() -> Result<Self, TtsError> {
        let version = {
            let mut c = Command::new("festival");
            c.arg("--version");
            run(c, "festival", None)?
        };
        let mut voices = Vec::new();
        let languages = std::fs::read_dir(FESTIVAL_VOICE_ROOT)
            .map_err(|e| TtsError::Engine(format!("{FESTIVAL_VOICE_ROOT}: {e}")))?;
        for language in languages.flatten() {
            let Ok(entries) = std::fs::read_dir(language.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Only voices whose speaker we know: their name also goes into a Scheme call.
                if let Some((_, gender, lang, synthesis)) =
                    FESTIVAL_VOICES.iter().find(|(n, ..)| *n == name)
                {
                    voices.push(VoiceInfo::new(
                        "festival",
                        &name,
                        Some(*gender),
                        lang,
                        *synthesis,
                    ));
                }
            }
        }
        if voices.is_empty() {
            return Err(TtsError::Engine(format!(
                "festival has no known voice in {FESTIVAL_VOICE_ROOT}; install festvox-us-slt-hts"
            )));
        }
        voices.sort_by(|a, b| b.synthesis.cmp(&a.synthesis).then(a.name.cmp(&b.name)));
        Ok(Festival {
            name: String::from_utf8_lossy(&version).trim().to_owned(),
            voices,
        })
    }
}

impl SpeechEngine for Festival {
    fn id(&self) -> &str {
        "festival"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError> {
        // The name is spliced into Scheme: only a listed voice (a fixed table entry) gets here.
        if !self.voices.iter().any(|v| v.name == voice) {
            return Err(TtsError::Engine(format!("festival has no voice '{voice}'")));
        }
        let mut c = Command::new("text2wave");
        c.args(["-eval", &format!("(voice_{voice})"), "-o"])
            .arg(out);
        // Text mode on stdin: Festival reads it as text to say, never as Scheme.
        run(c, "text2wave (festival)", Some(&format!("{text}\n"))).map(drop)
    }
}

/// Flite's built-in voices this module knows (`awb_time` is limited to saying the time).
const FLITE_VOICES: &[(&str, Gender, &str, Synthesis)] = &[
    ("slt", Gender::Female, "en-US", Synthesis::Clustergen),
    ("rms", Gender::Male, "en-US", Synthesis::Clustergen),
    ("awb", Gender::Male, "en-GB", Synthesis::Clustergen),
    ("kal16", Gender::Male, "en-US", Synthesis::Diphone),
    ("kal", Gender::Male, "en-US", Synthesis::Diphone),
];

/// Flite (CMU's small C engine) with its built-in voices.
pub struct Flite {
    name: String,
    voices: Vec<VoiceInfo>,
}

impl Flite {
    /// Finds Flite and its voices.
    pub fn new() -> Result<Self, TtsError> {
        // `flite --version` exits 1 after printing; `-lv` is the check that it runs.
        let version = Command::new("flite")
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let listing = {
            let mut c = Command::new("flite");
            c.arg("-lv");
            run(c, "flite", None)?
        };
        let listing = String::from_utf8_lossy(&listing);
        let installed: Vec<&str> = listing
            .split(':')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // In the table's order: best synthesis first.
        let voices: Vec<VoiceInfo> = FLITE_VOICES
            .iter()
            .filter(|(name, ..)| installed.contains(name))
            .map(|(name, gender, lang, synthesis)| {
                VoiceInfo::new("flite", name, Some(*gender), lang, *synthesis)
            })
            .collect();
        if voices.is_empty() {
            return Err(TtsError::Engine(format!(
                "flite lists no known voice: {}",
                listing.trim()
            )));
        }
        Ok(Flite {
            name: String::from_utf8_lossy(&version)
                .lines()
                .find_map(|l| l.trim().strip_prefix("version:"))
                .map_or_else(|| "flite".to_owned(), |v| format!("flite {}", v.trim())),
            voices,
        })
    }
}

impl SpeechEngine for Flite {
    fn id(&self) -> &str {
        "flite"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn render(&self, text: &str, voice: &str, out: &Path) -> Result<(), TtsError> {
        let mut c = Command::new("flite");
        c.args(["-voice", voice, "-o"]).arg(out).arg("-t").arg(text);
        run(c, "flite", None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_engine_is_killed_and_a_failing_one_reports_why() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let started = Instant::now();
        let err = run_within(sleep, "sleep", None, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let mut cat = Command::new("sh");
        cat.args(["-c", "cat; echo broken >&2; exit 3"]);
        let err = run_within(cat, "sh", Some("text"), Duration::from_secs(20)).unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        let mut echo = Command::new("cat");
        echo.arg("-");
        let out = run_within(echo, "cat", Some("hello"), Duration::from_secs(20)).unwrap();
        assert_eq!(out, b"hello");
        let missing = run(Command::new("no-such-engine-here"), "x", None).unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
    }
}
