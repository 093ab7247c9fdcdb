//! Prompt hygiene, applied to every engine's output at 8 kHz: leading and trailing silence cut
//! to a fixed pad, loudness brought to a telephony level, peaks kept below full scale. Engines
//! differ by 10 dB in level and by hundreds of milliseconds in silence; after this every node's
//! prompt starts promptly and sounds as loud as the last one.

use std::time::Duration;

/// Target RMS level of the speech (dBFS): a common telephony prompt level, loud enough over
/// G.711 without pushing peaks into the codec's top segment.
pub const TARGET_RMS_DBFS: f64 = -20.0;
/// Silence kept before the first sound.
pub const LEAD_PAD: Duration = Duration::from_millis(50);
/// Silence kept after the last sound (a breath before the caller is expected to answer).
pub const TAIL_PAD: Duration = Duration::from_millis(100);
/// Peaks are softly limited to this (about −0.3 dBFS), so no sample reaches full scale.
pub const CEILING: f32 = 0.97;

const RATE: usize = 8000;
/// 10 ms analysis windows.
const WINDOW: usize = RATE / 100;
/// A window is sound when louder than this, absolutely...
const FLOOR_DBFS: f64 = -50.0;
/// ...and not more than this far below the loudest window (engines' noise floors differ).
const BELOW_PEAK_DB: f64 = 40.0;
/// ...and not more than this far below the speech's own RMS level: quieter windows (breath,
/// engine noise, a fricative's tail filtered away by the 8 kHz resampling) would otherwise
/// stand before the first audible sound as apparent silence.
const BELOW_SPEECH_DB: f64 = 22.0;
/// The largest gain applied (a near-silent render is an engine fault, not a quiet voice).
const MAX_GAIN_DB: f64 = 40.0;
/// Where the soft limiter starts bending.
const KNEE: f32 = 0.8;
/// Fades at the cuts, so trimming never leaves a click.
const FADE: usize = RATE / 200;

/// Why a render cannot be made into a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// Nothing above the silence threshold.
    #[error("the engine produced only silence")]
    Silent,
}

fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// RMS level of `samples` in dBFS (a full-scale square wave is 0), −∞ for silence.
pub fn rms_dbfs(samples: &[f32]) -> f64 {
    20.0 * rms(samples).log10()
}

fn db_to_gain(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

fn soft_limit(x: f32) -> f32 {
    let magnitude = x.abs();
    if magnitude <= KNEE {
        return x;
    }
    let range = CEILING - KNEE;
    let bent = KNEE + range * ((magnitude - KNEE) / range).tanh();
    bent.copysign(x)
}

/// Trims, levels and pads 8 kHz mono speech.
pub fn condition(samples: &[f32]) -> Result<Vec<f32>, LevelError> {
    // DC offset would count as level and bias the silence detection.
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(|&s| f64::from(s)).sum::<f64>() / samples.len() as f64
    };
    let centred: Vec<f32> = samples.iter().map(|&s| s - mean as f32).collect();
    let levels: Vec<f64> = centred.chunks(WINDOW).map(rms_dbfs).collect();
    let loudest = levels.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = |threshold: f64| {
        Some((
            levels.iter().position(|&l| l > threshold)?,
            levels.iter().rposition(|&l| l > threshold)?,
        ))
    };
    let rough_threshold = FLOOR_DBFS.max(loudest - BELOW_PEAK_DB);
    let Some((first, last)) = span(rough_threshold) else {
        return Err(LevelError::Silent);
    };
    // The speech's level decides what counts as silence around it.
    let speech_level = rms_dbfs(&centred[first * WINDOW..((last + 1) * WINDOW).min(centred.len())]);
    let Some((first, last)) = span(rough_threshold.max(speech_level - BELOW_SPEECH_DB)) else {
        return Err(LevelError::Silent);
    };
    // One window of margin each side keeps soft onsets ("s", "th") and decays.
    let start = first.saturating_sub(1) * WINDOW;
    let end = ((last + 2) * WINDOW).min(centred.len());
    let mut speech = centred[start..end].to_vec();
    let fade = FADE.min(speech.len() / 2);
    for i in 0..fade {
        let g = i as f32 / fade as f32;
        speech[i] *= g;
        let j = speech.len() - 1 - i;
        speech[j] *= g;
    }
    let gain_db = (TARGET_RMS_DBFS - rms_dbfs(&speech)).min(MAX_GAIN_DB);
    let gain = db_to_gain(gain_db) as f32;
    let lead = LEAD_PAD.as_millis() as usize * RATE / 1000;
    let tail = TAIL_PAD.as_millis() as usize * RATE / 1000;
    let mut out = Vec::with_capacity(lead + speech.len() + tail);
    out.resize(lead, 0.0);
    out.extend(speech.iter().map(|&s| soft_limit(s * gain)));
    out.resize(out.len() + tail, 0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f32, amplitude: f32) -> Vec<f32> {
        (0..(seconds * RATE as f32) as usize)
            .map(|i| {
                amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32).sin()
            })
            .collect()
    }

    #[test]
    fn trims_pads_and_levels_quiet_and_loud_input() {
        for amplitude in [0.01, 0.3, 1.0] {
            let mut input = vec![0.0; RATE]; // 1 s of silence
            input.extend(tone(1.0, amplitude));
            input.extend(vec![0.0005; RATE / 2]); // a noise floor, not speech
            let out = condition(&input).unwrap();
            let lead = out.iter().position(|s| s.abs() > 0.001).unwrap();
            assert!(lead <= RATE * 70 / 1000, "lead {lead} samples");
            let trail = out.len() - out.iter().rposition(|s| s.abs() > 0.001).unwrap();
            assert!(trail <= RATE * 120 / 1000, "trail {trail} samples");
            let level = rms_dbfs(&out);
            assert!(
                (level - TARGET_RMS_DBFS).abs() < 1.0,
                "{amplitude}: {level} dBFS"
            );
            assert!(out.iter().all(|s| s.abs() < CEILING + 1e-6));
        }
    }

    #[test]
    fn limits_peaks_below_full_scale() {
        // A crest factor of 30 dB: levelling to −20 dBFS would put the clicks at +10 dBFS.
        let mut input = tone(1.0, 0.01);
        for i in (0..input.len()).step_by(800) {
            input[i] = 0.99;
        }
        let out = condition(&input).unwrap();
        let peak = out.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak < CEILING + 1e-6 && peak > KNEE, "{peak}");
    }

    #[test]
    fn silence_is_an_error() {
        assert_eq!(condition(&[0.0; 8000]), Err(LevelError::Silent));
        assert_eq!(condition(&[]), Err(LevelError::Silent));
    }
}
