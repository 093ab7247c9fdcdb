//! Prompts: decoded once at load, resampled to 8 kHz, pre-encoded to PCMU and PCMA 20 ms frames.
//!
//! Every call playing a prompt shares one [`EncodedPrompt`] (two `Arc<[u8]>`s), so playout is a
//! slice copy into the RTP packet and no call ever decodes, resamples or encodes audio.
//!
//! Accepted inputs:
//! - WAV through `hound`: any sample rate, 8/16/24/32-bit integer or 32-bit float, any number of
//!   channels (mixed down to mono by averaging);
//! - WAV whose format tag is μ-law (7) or A-law (6), which `hound` refuses: a minimal,
//!   bounds-checked RIFF walk in this module reads those (telephony tools write them often);
//! - raw `.pcm` / `.raw`: 16-bit little-endian signed, 8 kHz, mono (the carrier upload format).
//!
//! Resampling uses `rubato`'s synchronous FFT resampler (fixed ratio, windowed-sinc anti-alias
//! filter), run once over the whole clip with its start-up delay trimmed.

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use thiserror::Error;

use super::codec::{Codec, FRAME_SAMPLES, SAMPLE_RATE};

/// Limits applied while loading a prompt, so a bad upload cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLimits {
    /// Longest accepted prompt (checked from the header, before decoding).
    pub max_duration: Duration,
    /// Largest accepted file, in bytes (checked before reading the file).
    pub max_file_bytes: u64,
}

impl Default for PromptLimits {
    /// Ten minutes (hold music included) and 256 MiB (ten minutes of 48 kHz stereo 32-bit is
    /// ~230 MB).
    fn default() -> Self {
        PromptLimits {
            max_duration: Duration::from_secs(600),
            max_file_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why a prompt could not be loaded. Every message starts with the file name.
#[derive(Debug, Error)]
pub enum PromptError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file (or upload) name.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The content is neither a WAV file nor raw PCM.
    #[error("{file}: not a WAV or raw PCM prompt: {reason}")]
    NotAudio {
        /// The file (or upload) name.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// The file holds no samples.
    #[error("{file}: prompt is empty (no audio samples)")]
    Empty {
        /// The file (or upload) name.
        file: String,
    },
    /// The audio is longer than [`PromptLimits::max_duration`].
    #[error("{file}: prompt is too long: {actual:.1?} exceeds the limit of {limit:.1?}")]
    TooLong {
        /// The file (or upload) name.
        file: String,
        /// Duration announced by the file.
        actual: Duration,
        /// The configured limit.
        limit: Duration,
    },
    /// The file is larger than [`PromptLimits::max_file_bytes`].
    #[error("{file}: file is too large: {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The file (or upload) name.
        file: String,
        /// Size of the file.
        bytes: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A WAV encoding this loader does not handle (ADPCM, 64-bit float, ...).
    #[error("{file}: unsupported audio format: {reason}")]
    Unsupported {
        /// The file (or upload) name.
        file: String,
        /// Which format, and why it is not supported.
        reason: String,
    },
    /// The file looks like audio but is damaged (truncated, inconsistent header, ...).
    #[error("{file}: malformed audio file: {reason}")]
    Malformed {
        /// The file (or upload) name.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// The resampler rejected the input (for example an absurd sample rate).
    #[error("{file}: cannot resample from {rate} Hz to 8000 Hz: {reason}")]
    Resample {
        /// The file (or upload) name.
        file: String,
        /// The file's sample rate.
        rate: u32,
        /// The resampler's explanation.
        reason: String,
    },
}

/// A prompt ready to play: 8 kHz audio pre-encoded as PCMU and PCMA 20 ms frames.
///
/// Cloning copies two `Arc`s; every call playing the prompt shares the same bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// Length of the audio itself (before the last frame was padded).
    duration: Duration,
    /// μ-law bytes, a multiple of [`FRAME_SAMPLES`] long.
    pcmu: Arc<[u8]>,
    /// A-law bytes, a multiple of [`FRAME_SAMPLES`] long.
    pcma: Arc<[u8]>,
}

impl fmt::Debug for EncodedPrompt {
    /// Summarises instead of dumping the audio bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedPrompt")
            .field("duration", &self.duration)
            .field("frames", &self.frame_count())
            .finish()
    }
}

/// What kind of content a byte buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// A RIFF/WAVE file.
    Wav,
    /// Headerless 16-bit little-endian signed PCM, 8 kHz, mono.
    RawPcm,
}

impl EncodedPrompt {
    /// Loads a prompt file: `.wav` (or any file with a RIFF/WAVE header) or `.pcm` / `.raw`.
    pub fn load(path: &Path, limits: &PromptLimits) -> Result<EncodedPrompt, PromptError> {
        let file = path.display().to_string();
        let io = |source| PromptError::Io {
            file: file.clone(),
            source,
        };
        let handle = std::fs::File::open(path).map_err(io)?;
        let bytes_on_disk = handle.metadata().map_err(io)?.len();
        if bytes_on_disk > limits.max_file_bytes {
            return Err(PromptError::TooLarge {
                file,
                bytes: bytes_on_disk,
                limit: limits.max_file_bytes,
            });
        }
        // `take` guards against a file that grows between the size check and the read.
        let mut bytes = Vec::new();
        handle
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(PromptError::TooLarge {
                file,
                bytes: bytes.len() as u64,
                limit: limits.max_file_bytes,
            });
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        // Sniff first: a WAV renamed to .pcm would otherwise be played as noise.
        let format = if is_riff_wave(&bytes) {
            PromptFormat::Wav
        } else {
            match ext.as_deref() {
                Some("pcm" | "raw") => PromptFormat::RawPcm,
                Some("wav" | "wave") => {
                    return Err(PromptError::NotAudio {
                        file,
                        reason: "the file has a .wav name but no RIFF/WAVE header".into(),
                    });
                }
                _ => {
                    return Err(PromptError::NotAudio {
                        file,
                        reason: "expected a .wav file (RIFF/WAVE) or .pcm/.raw (16-bit 8 kHz mono)"
                            .into(),
                    });
                }
            }
        };
        Self::from_bytes(&file, format, &bytes, limits)
    }

    /// Decodes an in-memory prompt (an HTTP upload, a TTS result); `name` is used in errors.
    pub fn from_bytes(
        name: &str,
        format: PromptFormat,
        bytes: &[u8],
        limits: &PromptLimits,
    ) -> Result<EncodedPrompt, PromptError> {
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(PromptError::TooLarge {
                file: name.to_owned(),
                bytes: bytes.len() as u64,
                limit: limits.max_file_bytes,
            });
        }
        let (mono, rate) = match format {
            PromptFormat::Wav => decode_wav(name, bytes, limits)?,
            PromptFormat::RawPcm => (decode_raw_pcm(name, bytes, limits)?, SAMPLE_RATE),
        };
        Self::from_mono(name, &mono, rate, limits)
    }

    /// Decodes a WAV to mono samples at 8 kHz without encoding them, for callers that process
    /// the audio first (TTS output is levelled and trimmed before it is cached).
    pub fn decode_wav_8k(
        name: &str,
        bytes: &[u8],
        limits: &PromptLimits,
    ) -> Result<Vec<f32>, PromptError> {
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(PromptError::TooLarge {
                file: name.to_owned(),
                bytes: bytes.len() as u64,
                limit: limits.max_file_bytes,
            });
        }
        let (mono, rate) = decode_wav(name, bytes, limits)?;
        check_duration(name, mono.len() as u64, rate, limits)?;
        if rate == SAMPLE_RATE {
            Ok(mono)
        } else {
            resample_to_8k(name, &mono, rate)
        }
    }

    /// Resamples and encodes mono samples in `[-1.0, 1.0]` at `sample_rate`.
    pub fn from_mono(
        name: &str,
        samples: &[f32],
        sample_rate: u32,
        limits: &PromptLimits,
    ) -> Result<EncodedPrompt, PromptError> {
        if samples.is_empty() {
            return Err(PromptError::Empty {
                file: name.to_owned(),
            });
        }
        check_duration(name, samples.len() as u64, sample_rate, limits)?;
        let resampled;
        let at_8k: &[f32] = if sample_rate == SAMPLE_RATE {
            samples
        } else {
            resampled = resample_to_8k(name, samples, sample_rate)?;
            &resampled
        };
        if at_8k.is_empty() {
            return Err(PromptError::Empty {
                file: name.to_owned(),
            });
        }
        let pcm: Vec<i16> = at_8k.iter().map(|&x| to_i16(x)).collect();
        Ok(EncodedPrompt {
            duration: samples_to_duration(pcm.len()),
            pcmu: encode_frames(Codec::Pcmu, &pcm),
            pcma: encode_frames(Codec::Pcma, &pcm),
        })
    }

    /// Length of the audio (the padding of the last frame not counted).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Number of 20 ms frames (the last one padded with the codec's silence byte).
    pub fn frame_count(&self) -> usize {
        self.pcmu.len() / FRAME_SAMPLES
    }

    /// All encoded bytes for `codec`, a whole number of frames.
    pub fn bytes(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }

    /// The 20 ms frames for `codec`, in order.
    pub fn frames(&self, codec: Codec) -> &[[u8; FRAME_SAMPLES]] {
        // The constructor only builds whole frames, so the remainder is always empty.
        self.bytes(codec).as_chunks::<FRAME_SAMPLES>().0
    }

    /// Frame `index` for `codec`, `None` past the end.
    pub fn frame(&self, codec: Codec, index: usize) -> Option<&[u8; FRAME_SAMPLES]> {
        self.frames(codec).get(index)
    }
}

/// `true` when `bytes` starts with a RIFF/WAVE header.
fn is_riff_wave(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

/// Input sample rates accepted (telephone-band 4 kHz recordings up to studio 384 kHz).
const SUPPORTED_RATES: std::ops::RangeInclusive<u32> = 4000..=384_000;

fn samples_to_duration(samples: usize) -> Duration {
    // One 8 kHz sample is exactly 125 µs.
    Duration::from_micros(samples as u64 * 125)
}

fn check_duration(
    name: &str,
    frames: u64,
    rate: u32,
    limits: &PromptLimits,
) -> Result<(), PromptError> {
    // A hostile header must not make the FFT resampler plan a multi-gigabyte transform.
    if !SUPPORTED_RATES.contains(&rate) {
        return Err(PromptError::Unsupported {
            file: name.to_owned(),
            reason: format!(
                "sample rate {rate} Hz (supported: {}-{} Hz)",
                SUPPORTED_RATES.start(),
                SUPPORTED_RATES.end()
            ),
        });
    }
    let actual = Duration::from_secs_f64(frames as f64 / f64::from(rate));
    if actual > limits.max_duration {
        return Err(PromptError::TooLong {
            file: name.to_owned(),
            actual,
            limit: limits.max_duration,
        });
    }
    Ok(())
}

fn to_i16(x: f32) -> i16 {
    // The resampler's sinc filter can overshoot full scale slightly: clamp, don't wrap.
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

fn encode_frames(codec: Codec, pcm: &[i16]) -> Arc<[u8]> {
    let frames = pcm.len().div_ceil(FRAME_SAMPLES);
    let mut out = vec![codec.silence_byte(); frames * FRAME_SAMPLES];
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = codec.encode_sample(s);
    }
    out.into()
}

fn resample_to_8k(name: &str, mono: &[f32], rate: u32) -> Result<Vec<f32>, PromptError> {
    let err = |reason: String| PromptError::Resample {
        file: name.to_owned(),
        rate,
        reason,
    };
    // 1024-frame chunks: rubato splits them into ~256-frame FFT blocks, a good quality/size
    // trade-off; the clip is processed once, so speed hardly matters.
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        SAMPLE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| err(e.to_string()))?;
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| err(e.to_string()))?;
    let out = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| err(e.to_string()))?;
    Ok(out.take_data())
}

fn decode_raw_pcm(
    name: &str,
    bytes: &[u8],
    limits: &PromptLimits,
) -> Result<Vec<f32>, PromptError> {
    if bytes.is_empty() {
        return Err(PromptError::Empty {
            file: name.to_owned(),
        });
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(PromptError::Malformed {
            file: name.to_owned(),
            reason: format!(
                "raw PCM must be 16-bit samples but the file has an odd length ({} bytes)",
                bytes.len()
            ),
        });
    }
    check_duration(name, bytes.len() as u64 / 2, SAMPLE_RATE, limits)?;
    let (pairs, _) = bytes.as_chunks::<2>();
    Ok(pairs
        .iter()
        .map(|&p| f32::from(i16::from_le_bytes(p)) / 32768.0)
        .collect())
}

/// Decodes a WAV file to mono `f32` and its sample rate.
fn decode_wav(
    name: &str,
    bytes: &[u8],
    limits: &PromptLimits,
) -> Result<(Vec<f32>, u32), PromptError> {
    if !is_riff_wave(bytes) {
        return Err(PromptError::NotAudio {
            file: name.to_owned(),
            reason: "no RIFF/WAVE header".into(),
        });
    }
    // Our own header walk decides the route: hound refuses μ-law/A-law (and validates the
    // header in an order that turns "ADPCM" into a confusing "bits per sample" error).
    let header = scan_wav(name, bytes)?;
    match header.format.tag {
        WAVE_FORMAT_MULAW => decode_g711_wav(name, &header, Codec::Pcmu, limits),
        WAVE_FORMAT_ALAW => decode_g711_wav(name, &header, Codec::Pcma, limits),
        WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT => match hound::WavReader::new(Cursor::new(bytes))
        {
            Ok(reader) => decode_with_hound(name, reader, limits),
            Err(hound::Error::Unsupported) => Err(PromptError::Unsupported {
                file: name.to_owned(),
                reason: describe_unsupported(header.format.tag, header.format.bits_per_sample),
            }),
            Err(hound::Error::IoError(e)) => Err(PromptError::Malformed {
                file: name.to_owned(),
                reason: format!("truncated WAV header ({e})"),
            }),
            Err(e) => Err(PromptError::Malformed {
                file: name.to_owned(),
                reason: e.to_string(),
            }),
        },
        other => Err(PromptError::Unsupported {
            file: name.to_owned(),
            reason: describe_unsupported(other, header.format.bits_per_sample),
        }),
    }
}

fn decode_with_hound(
    name: &str,
    mut reader: hound::WavReader<Cursor<&[u8]>>,
    limits: &PromptLimits,
) -> Result<(Vec<f32>, u32), PromptError> {
    let spec = reader.spec();
    let frames = reader.duration();
    if frames == 0 {
        return Err(PromptError::Empty {
            file: name.to_owned(),
        });
    }
    check_duration(name, u64::from(frames), spec.sample_rate, limits)?;
    let malformed = |e: hound::Error| PromptError::Malformed {
        file: name.to_owned(),
        reason: format!("cannot read samples: {e}"),
    };
    let channels = usize::from(spec.channels.max(1));
    let mut mixer = Mixer::new(channels, frames as usize);
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for s in reader.samples::<f32>() {
                mixer.push(s.map_err(malformed)?);
            }
        }
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(PromptError::Unsupported {
                    file: name.to_owned(),
                    reason: format!("{}-bit integer samples", spec.bits_per_sample),
                });
            }
            // Scale by the declared width so 8-, 16-, 24- and 32-bit files all land in [-1, 1].
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            for s in reader.samples::<i32>() {
                mixer.push((f64::from(s.map_err(malformed)?) * scale) as f32);
            }
        }
    }
    Ok((mixer.finish(), spec.sample_rate))
}

/// Averages interleaved channels into mono.
struct Mixer {
    channels: usize,
    gain: f32,
    acc: f32,
    in_frame: usize,
    out: Vec<f32>,
}

impl Mixer {
    fn new(channels: usize, frames_hint: usize) -> Mixer {
        Mixer {
            channels,
            gain: 1.0 / channels as f32,
            acc: 0.0,
            in_frame: 0,
            out: Vec::with_capacity(frames_hint),
        }
    }

    fn push(&mut self, sample: f32) {
        self.acc += sample;
        self.in_frame += 1;
        if self.in_frame == self.channels {
            self.out.push(self.acc * self.gain);
            self.acc = 0.0;
            self.in_frame = 0;
        }
    }

    /// The mixed samples; a trailing incomplete frame (a truncated file) is dropped.
    fn finish(self) -> Vec<f32> {
        self.out
    }
}

/// The `fmt ` fields this loader needs.
struct WavFormat {
    tag: u16,
    channels: u16,
    sample_rate: u32,
    block_align: u16,
    bits_per_sample: u16,
}

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        *b.get(at..at.checked_add(2)?)?.as_array()?,
    ))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        *b.get(at..at.checked_add(4)?)?.as_array()?,
    ))
}

/// What the minimal RIFF walk found.
struct WavHeader<'a> {
    format: WavFormat,
    /// The `data` chunk, clipped to the bytes really present.
    data: Option<&'a [u8]>,
}

/// A minimal, bounds-checked RIFF walk: finds `fmt ` and `data`, nothing else.
fn scan_wav<'a>(name: &str, bytes: &'a [u8]) -> Result<WavHeader<'a>, PromptError> {
    let malformed = |reason: &str| PromptError::Malformed {
        file: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut format: Option<WavFormat> = None;
    let mut data: Option<&[u8]> = None;
    // Chunks start after "RIFF", the RIFF size and "WAVE".
    let mut pos = 12usize;
    while pos.checked_add(8).is_some_and(|end| end <= bytes.len()) {
        let id = &bytes[pos..pos + 4];
        let size =
            le_u32(bytes, pos + 4).ok_or_else(|| malformed("truncated chunk header"))? as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(size);
        match id {
            b"fmt " => {
                let body = bytes
                    .get(body_start..body_end)
                    .ok_or_else(|| malformed("fmt chunk runs past the end of the file"))?;
                if body.len() < 16 {
                    return Err(malformed("fmt chunk shorter than 16 bytes"));
                }
                let mut tag = le_u16(body, 0).unwrap_or_default();
                // WAVE_FORMAT_EXTENSIBLE keeps the real tag in the first two bytes of the
                // SubFormat GUID (offset 24 of the chunk).
                if tag == WAVE_FORMAT_EXTENSIBLE {
                    tag = le_u16(body, 24)
                        .ok_or_else(|| malformed("WAVE_FORMAT_EXTENSIBLE fmt chunk too short"))?;
                }
                format = Some(WavFormat {
                    tag,
                    channels: le_u16(body, 2).unwrap_or_default(),
                    sample_rate: le_u32(body, 4).unwrap_or_default(),
                    block_align: le_u16(body, 12).unwrap_or_default(),
                    bits_per_sample: le_u16(body, 14).unwrap_or_default(),
                });
            }
            b"data" => {
                // A streamed WAV may carry a placeholder size; take what is really there.
                let end = body_end.min(bytes.len());
                data = Some(&bytes[body_start..end]);
                break;
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = body_end.saturating_add(size & 1);
    }
    let format = format.ok_or_else(|| malformed("no fmt chunk before the audio data"))?;
    Ok(WavHeader { format, data })
}

/// Reads a μ-law or A-law WAV (8-bit code words, interleaved channels).
fn decode_g711_wav(
    name: &str,
    header: &WavHeader<'_>,
    codec: Codec,
    limits: &PromptLimits,
) -> Result<(Vec<f32>, u32), PromptError> {
    let format = &header.format;
    let malformed = |reason: &str| PromptError::Malformed {
        file: name.to_owned(),
        reason: reason.to_owned(),
    };
    if format.bits_per_sample != 8 {
        return Err(PromptError::Unsupported {
            file: name.to_owned(),
            reason: format!(
                "{} WAV with {} bits per sample (G.711 is 8-bit)",
                codec.name(),
                format.bits_per_sample
            ),
        });
    }
    if format.channels == 0 || format.block_align != format.channels {
        return Err(malformed(
            "G.711 WAV with inconsistent channel count / block align",
        ));
    }
    let data = header.data.ok_or_else(|| malformed("no data chunk"))?;
    let channels = usize::from(format.channels);
    let frames = data.len() / channels;
    if frames == 0 {
        return Err(PromptError::Empty {
            file: name.to_owned(),
        });
    }
    check_duration(name, frames as u64, format.sample_rate, limits)?;
    let mut mixer = Mixer::new(channels, frames);
    for &b in data {
        mixer.push(f32::from(codec.decode_sample(b)) / 32768.0);
    }
    Ok((mixer.finish(), format.sample_rate))
}

fn describe_unsupported(tag: u16, bits: u16) -> String {
    let what = match tag {
        0x0001 => format!("PCM with {bits} bits per sample"),
        0x0002 => "Microsoft ADPCM".to_owned(),
        0x0003 => {
            format!("IEEE float with {bits} bits per sample (only 32-bit float is supported)")
        }
        0x0011 => "IMA ADPCM".to_owned(),
        0x0031 => "GSM 6.10".to_owned(),
        0x0040 => "G.721 ADPCM".to_owned(),
        0x0055 => "MPEG layer 3".to_owned(),
        _ => "an unknown encoding".to_owned(),
    };
    format!(
        "format tag {tag:#06x} ({what}); use PCM (8/16/24/32-bit), 32-bit float, μ-law or A-law"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::f32::consts::TAU;

    fn sine(freq: f32, rate: u32, secs: f32, amp: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| amp * (TAU * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    fn wav_int(rate: u32, channels: u16, bits: u16, mono: &[f32]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut buf = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        let full = ((1i64 << (bits - 1)) - 1) as f32;
        for &x in mono {
            for _ in 0..channels {
                w.write_sample((x * full) as i32).unwrap();
            }
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    fn wav_float(rate: u32, channels: u16, frames: &[Vec<f32>]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut buf = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for f in frames {
            for &x in f {
                w.write_sample(x).unwrap();
            }
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    /// A WAV with an arbitrary format tag, written by hand (hound cannot write these).
    fn wav_raw(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block_align = channels * bits.div_ceil(8);
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(4 + 8 + 18 + 8 + 8 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&18u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
        v.extend_from_slice(&block_align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        // An odd-sized chunk the walker must skip, padding included.
        v.extend_from_slice(b"fact");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&[1, 2, 3, 0]);
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn decoded(p: &EncodedPrompt, codec: Codec) -> Vec<f32> {
        p.bytes(codec)
            .iter()
            .map(|&b| f32::from(codec.decode_sample(b)) / 32768.0)
            .collect()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    fn load(format: PromptFormat, bytes: &[u8]) -> Result<EncodedPrompt, PromptError> {
        EncodedPrompt::from_bytes("test.wav", format, bytes, &PromptLimits::default())
    }

    #[test]
    fn wav_8k_16bit_is_encoded_sample_exact() {
        let tone = sine(440.0, 8000, 1.0, 0.5);
        let p = load(PromptFormat::Wav, &wav_int(8000, 1, 16, &tone)).unwrap();
        assert_eq!(p.duration(), Duration::from_secs(1));
        assert_eq!(p.frame_count(), 50);
        for (i, &x) in tone.iter().enumerate() {
            let s = (x * 32767.0) as i16;
            assert_eq!(p.bytes(Codec::Pcmu)[i], Codec::Pcmu.encode_sample(s));
            assert_eq!(p.bytes(Codec::Pcma)[i], Codec::Pcma.encode_sample(s));
        }
        // Cheap to share: clones point at the same bytes.
        let q = p.clone();
        assert!(std::ptr::eq(p.bytes(Codec::Pcmu), q.bytes(Codec::Pcmu)));
    }

    #[test]
    fn last_frame_padded_with_silence_byte() {
        let p = load(
            PromptFormat::Wav,
            &wav_int(8000, 1, 16, &sine(300.0, 8000, 0.0125, 0.5)),
        )
        .unwrap();
        assert_eq!(p.frame_count(), 1);
        assert_eq!(p.duration(), Duration::from_micros(12_500));
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let f = p.frame(codec, 0).unwrap();
            assert!(f[100..].iter().all(|&b| b == codec.silence_byte()));
            assert!(p.frame(codec, 1).is_none());
        }
    }

    #[test]
    fn resamples_stereo_24bit_16k() {
        let tone = sine(1000.0, 16000, 1.0, 0.5);
        let p = load(PromptFormat::Wav, &wav_int(16000, 2, 24, &tone)).unwrap();
        let d = p.duration().as_secs_f64();
        assert!((d - 1.0).abs() < 0.02, "duration {d}");
        let x = decoded(&p, Codec::Pcma);
        // 1 kHz: 2000 zero crossings per second.
        let zc = zero_crossings(&x[800..7200]) as f64 / 0.8;
        assert!((zc - 2000.0).abs() < 20.0, "zero crossings {zc}");
        assert!((rms(&x[800..7200]) - 0.5 / 2f32.sqrt()).abs() < 0.02);
    }

    #[test]
    fn resamples_and_mixes_float_44k1_three_channels() {
        // One channel carries the tone, two are silent: the mix is a third of the level.
        let tone = sine(500.0, 44100, 0.5, 0.9);
        let frames: Vec<Vec<f32>> = tone.iter().map(|&x| vec![x, 0.0, 0.0]).collect();
        let p = load(PromptFormat::Wav, &wav_float(44100, 3, &frames)).unwrap();
        assert!((p.duration().as_secs_f64() - 0.5).abs() < 0.02);
        let x = decoded(&p, Codec::Pcmu);
        assert!((rms(&x[400..3600]) - 0.3 / 2f32.sqrt()).abs() < 0.01);
        let zc = zero_crossings(&x[400..3600]) as f64 / 0.4;
        assert!((zc - 1000.0).abs() < 15.0, "zero crossings {zc}");
    }

    #[test]
    fn eight_bit_and_32bit_int() {
        for bits in [8, 32] {
            let p = load(
                PromptFormat::Wav,
                &wav_int(22050, 1, bits, &sine(700.0, 22050, 0.3, 0.5)),
            )
            .unwrap();
            let x = decoded(&p, Codec::Pcmu);
            assert!(
                (rms(&x[400..2000]) - 0.5 / 2f32.sqrt()).abs() < 0.03,
                "{bits}-bit"
            );
        }
    }

    #[test]
    fn resampler_removes_content_above_4khz() {
        // A 6 kHz tone at 48 kHz would alias to 2 kHz with naive decimation.
        let p = load(
            PromptFormat::Wav,
            &wav_int(48000, 1, 16, &sine(6000.0, 48000, 0.5, 0.8)),
        )
        .unwrap();
        let x = decoded(&p, Codec::Pcma);
        assert!(rms(&x[400..3600]) < 0.01, "alias leaked: rms {}", rms(&x));
    }

    #[test]
    fn mulaw_and_alaw_wavs_load() {
        let tone = sine(600.0, 8000, 0.25, 0.5);
        for (tag, codec) in [
            (WAVE_FORMAT_MULAW, Codec::Pcmu),
            (WAVE_FORMAT_ALAW, Codec::Pcma),
        ] {
            let data: Vec<u8> = tone
                .iter()
                .map(|&x| codec.encode_sample((x * 32767.0) as i16))
                .collect();
            let p = load(PromptFormat::Wav, &wav_raw(tag, 1, 8000, 8, &data)).unwrap();
            assert_eq!(p.duration(), Duration::from_millis(250));
            // Same law in, same law out: the bytes survive decode/encode unchanged (μ-law's
            // "negative zero" 0x7F comes back as 0xFF, the same sample).
            let canonical: Vec<u8> = data
                .iter()
                .map(|&b| if b == 0x7F { 0xFF } else { b })
                .collect();
            assert_eq!(&p.bytes(codec)[..data.len()], &canonical[..]);
        }
        // Stereo μ-law at 16 kHz: mixed and resampled.
        let data: Vec<u8> = sine(600.0, 16000, 0.25, 0.5)
            .iter()
            .flat_map(|&x| [Codec::Pcmu.encode_sample((x * 32767.0) as i16); 2])
            .collect();
        let p = load(
            PromptFormat::Wav,
            &wav_raw(WAVE_FORMAT_MULAW, 2, 16000, 8, &data),
        )
        .unwrap();
        assert!((p.duration().as_secs_f64() - 0.25).abs() < 0.02);
    }

    #[test]
    fn raw_pcm() {
        let bytes: Vec<u8> = (0..320i16).flat_map(|i| (i * 50).to_le_bytes()).collect();
        let p = load(PromptFormat::RawPcm, &bytes).unwrap();
        assert_eq!(p.frame_count(), 2);
        assert_eq!(p.duration(), Duration::from_millis(40));
        assert_eq!(p.bytes(Codec::Pcmu)[10], Codec::Pcmu.encode_sample(500));
        assert!(matches!(
            load(PromptFormat::RawPcm, &[]),
            Err(PromptError::Empty { .. })
        ));
        let e = load(PromptFormat::RawPcm, &[1, 2, 3]).unwrap_err();
        assert!(matches!(e, PromptError::Malformed { .. }));
        assert!(e.to_string().starts_with("test.wav: "), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let e = load(PromptFormat::Wav, b"ID3\x03 this is an mp3").unwrap_err();
        assert!(matches!(e, PromptError::NotAudio { .. }), "{e}");
        assert!(e.to_string().contains("test.wav"));

        let e = load(PromptFormat::Wav, &wav_raw(2, 1, 8000, 4, &[0; 64])).unwrap_err();
        assert!(matches!(e, PromptError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("Microsoft ADPCM"), "{e}");

        let mut absurd = wav_int(8000, 1, 16, &sine(440.0, 8000, 0.1, 0.5));
        absurd[24..28].copy_from_slice(&2_000_000_000u32.to_le_bytes()); // sample rate
        absurd[28..32].copy_from_slice(&4_000_000_000u32.to_le_bytes()); // byte rate
        let e = load(PromptFormat::Wav, &absurd).unwrap_err();
        assert!(matches!(e, PromptError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("sample rate 2000000000 Hz"), "{e}");

        let e = load(PromptFormat::Wav, &wav_int(8000, 1, 16, &[])).unwrap_err();
        assert!(matches!(e, PromptError::Empty { .. }), "{e}");

        let e = load(
            PromptFormat::Wav,
            &wav_raw(WAVE_FORMAT_MULAW, 1, 8000, 8, &[]),
        )
        .unwrap_err();
        assert!(matches!(e, PromptError::Empty { .. }), "{e}");

        let mut truncated = wav_int(8000, 1, 16, &sine(440.0, 8000, 0.1, 0.5));
        truncated.truncate(30);
        let e = load(PromptFormat::Wav, &truncated).unwrap_err();
        assert!(matches!(e, PromptError::Malformed { .. }), "{e}");

        let limits = PromptLimits {
            max_duration: Duration::from_secs(1),
            ..PromptLimits::default()
        };
        let long = wav_int(8000, 1, 16, &sine(440.0, 8000, 2.0, 0.5));
        let e =
            EncodedPrompt::from_bytes("long.wav", PromptFormat::Wav, &long, &limits).unwrap_err();
        assert!(matches!(e, PromptError::TooLong { .. }), "{e}");
        assert!(
            e.to_string().starts_with("long.wav: prompt is too long"),
            "{e}"
        );

        let limits = PromptLimits {
            max_file_bytes: 100,
            ..PromptLimits::default()
        };
        let e =
            EncodedPrompt::from_bytes("big.wav", PromptFormat::Wav, &long, &limits).unwrap_err();
        assert!(matches!(e, PromptError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn load_from_disk_picks_format_by_header_and_extension() {
        let dir = std::env::temp_dir().join(format!("media-prompt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wav = dir.join("hello.wav");
        std::fs::write(&wav, wav_int(8000, 1, 16, &sine(440.0, 8000, 0.1, 0.5))).unwrap();
        let limits = PromptLimits::default();
        assert_eq!(EncodedPrompt::load(&wav, &limits).unwrap().frame_count(), 5);

        // A WAV renamed to .pcm is still read as WAV.
        let renamed = dir.join("renamed.pcm");
        std::fs::copy(&wav, &renamed).unwrap();
        assert_eq!(
            EncodedPrompt::load(&renamed, &limits)
                .unwrap()
                .frame_count(),
            5
        );

        let pcm = dir.join("raw.pcm");
        std::fs::write(&pcm, [0u8; 480]).unwrap();
        assert_eq!(EncodedPrompt::load(&pcm, &limits).unwrap().frame_count(), 2);

        let txt = dir.join("notes.txt");
        std::fs::write(&txt, b"hello").unwrap();
        let e = EncodedPrompt::load(&txt, &limits).unwrap_err();
        assert!(matches!(e, PromptError::NotAudio { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"));

        let fake = dir.join("fake.wav");
        std::fs::write(&fake, b"not really").unwrap();
        assert!(matches!(
            EncodedPrompt::load(&fake, &limits),
            Err(PromptError::NotAudio { .. })
        ));

        let e = EncodedPrompt::load(&dir.join("missing.wav"), &limits).unwrap_err();
        assert!(matches!(e, PromptError::Io { .. }));
        assert!(e.to_string().contains("missing.wav"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[allow(clippy::print_stdout)]
    fn rough_timing() {
        // Rough numbers printed with --nocapture; not an assertion.
        let wav = wav_int(44100, 2, 16, &sine(440.0, 44100, 10.0, 0.5));
        let start = std::time::Instant::now();
        let p = load(PromptFormat::Wav, &wav).unwrap();
        println!(
            "rough: load 10 s 44.1 kHz stereo WAV -> {} frames in {:?}",
            p.frame_count(),
            start.elapsed()
        );
    }
}
