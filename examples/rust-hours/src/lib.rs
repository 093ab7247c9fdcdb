//! An IVR in Rust: a plumbing company's line with business hours and an after-hours PIN.
//!
//! - During office hours (from the settings, in the office's time zone, using the call's
//!   `started-at-ms`) the caller goes straight to the office extension, with the caller's number
//!   and the reason in the transfer context.
//! - Out of hours the IVR says the hours, then asks existing customers for their PIN (digits,
//!   then `#`). A valid PIN transfers to the on-call engineer with the account, the caller and
//!   the number of attempts as context; `pin_attempts` wrong or missing PINs in a row end the
//!   call.
//!
//! Every step is labelled (`welcome`, `open`, `closed`, `pin`, `pin-wrong`, `on-call`, ...), so a
//! call's path reads like the menu. Settings come from `rust-hours.toml` beside the `.wasm`
//! (see the example file in this folder).

use serde::Deserialize;
use std::collections::BTreeMap;
use wasm_ivr_sdk::{self as ivr, CallError, CallInfo, Destination, GatherResult, Ivr};

/// The IVR's settings, from `rust-hours.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Opening hour, local time (0-23).
    #[serde(default = "default_open")]
    pub open_hour: u32,
    /// Closing hour, local time (1-24); the office is open while `open_hour <= hour < close_hour`.
    #[serde(default = "default_close")]
    pub close_hour: u32,
    /// The office's offset from UTC in hours (may be fractional).
    #[serde(default)]
    pub utc_offset_hours: f64,
    /// Days closed all day: `sun`, `mon`, ... `sat`.
    #[serde(default)]
    pub closed_days: Vec<String>,
    /// The internal extension that answers during office hours.
    #[serde(default = "default_office")]
    pub office_extension: String,
    /// The SIP URI of the on-call engineer (after hours, PIN required).
    #[serde(default = "default_on_call")]
    pub on_call: String,
    /// PIN → account id.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
    /// Tries at the PIN before the call ends.
    #[serde(default = "default_attempts")]
    pub pin_attempts: u32,
}

fn default_open() -> u32 {
    8
}
fn default_close() -> u32 {
    18
}
fn default_office() -> String {
    "200".to_owned()
}
fn default_on_call() -> String {
    "oncall@pbx.example.net".to_owned()
}
fn default_attempts() -> u32 {
    3
}

/// Day names from Sunday, as `closed_days` spells them.
pub const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The office's local weekday (index into [`DAYS`]) and hour at `at_ms` (ms since the epoch).
pub fn local_day_and_hour(at_ms: u64, utc_offset_hours: f64) -> (usize, u32) {
    let offset_ms = (utc_offset_hours * 3_600_000.0).round() as i64;
    let local_ms = i64::try_from(at_ms).unwrap_or(i64::MAX) + offset_ms;
    let local_s = local_ms.div_euclid(1000);
    let days = local_s.div_euclid(86_400);
    let hour = (local_s.rem_euclid(86_400) / 3600) as u32;
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    (weekday, hour)
}

impl Settings {
    /// Whether the office is open at `at_ms` (ms since the Unix epoch).
    pub fn is_open(&self, at_ms: u64) -> bool {
        let (day, hour) = local_day_and_hour(at_ms, self.utc_offset_hours);
        let closed_today = self
            .closed_days
            .iter()
            .any(|d| d.eq_ignore_ascii_case(DAYS[day]));
        !closed_today && self.open_hour <= hour && hour < self.close_hour
    }
}

/// The IVR.
pub struct Hours;

impl Ivr for Hours {
    fn handle_call(call: CallInfo) -> Result<(), String> {
        let settings: Settings =
            ivr::config_as().map_err(|e| format!("invalid rust-hours settings: {e}"))?;
        match run(&call, &settings) {
            Ok(()) | Err(CallError::HungUp) => Ok(()),
            Err(other) => Err(format!("call failed: {other:?}")),
        }
    }
}

ivr::export_ivr!(Hours);

fn run(call: &CallInfo, settings: &Settings) -> Result<(), CallError> {
    ivr::step("welcome");
    ivr::play(&[ivr::say("Thank you for calling Acme Plumbing.")])?;
    if settings.is_open(call.started_at_ms) {
        ivr::step("open");
        let transferred = ivr::transfer(
            &Destination::Internal(settings.office_extension.clone()),
            &[("caller", call.caller.as_str()), ("reason", "office-hours")],
        );
        return match transferred {
            Err(CallError::TransferFailed(_)) => {
                ivr::step("office-busy");
                ivr::hangup(&[ivr::say(
                    "Everyone in the office is busy. Please call again shortly.",
                )]);
                Ok(())
            }
            other => other,
        };
    }

    ivr::step("closed");
    ivr::play(&[ivr::say(format!(
        "Our office is closed. We are open from {} to {} hours.",
        settings.open_hour, settings.close_hour
    ))])?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        ivr::step("pin");
        let entry = ivr::Gather::new()
            .prompt(ivr::say(
                "For an emergency, enter your customer PIN, then press hash.",
            ))
            .max_digits(8)
            .terminators("#")
            .timeout_ms(6000)
            .run()?;
        let account = match &entry {
            GatherResult::Digits(pin) => settings.pins.get(pin),
            GatherResult::Partial(_) | GatherResult::Timeout => None,
        };
        if let Some(account) = account {
            ivr::step("on-call");
            let tries = attempts.to_string();
            let transferred = ivr::transfer(
                &Destination::SipUri(settings.on_call.clone()),
                &[
                    ("account", account.as_str()),
                    ("caller", call.caller.as_str()),
                    ("pin-attempts", tries.as_str()),
                    ("reason", "after-hours-emergency"),
                ],
            );
            return match transferred {
                Err(CallError::TransferFailed(why)) => {
                    ivr::log(
                        ivr::LogLevel::Warn,
                        &format!("on-call unreachable: {why:?}"),
                    );
                    ivr::step("on-call-unreachable");
                    ivr::hangup(&[ivr::say(
                        "The engineer on call cannot be reached. We will call you back.",
                    )]);
                    Ok(())
                }
                other => other,
            };
        }
        if attempts >= settings.pin_attempts {
            ivr::step("locked");
            ivr::hangup(&[ivr::say(
                "Sorry, we could not verify your PIN. Please call during office hours.",
            )]);
            return Ok(());
        }
        ivr::step("pin-wrong");
        ivr::play(&[ivr::say("That PIN is not valid.")])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_like: &[(&str, f64)]) -> Settings {
        let mut s = Settings {
            open_hour: 8,
            close_hour: 18,
            utc_offset_hours: 0.0,
            closed_days: vec!["sat".into(), "sun".into()],
            office_extension: default_office(),
            on_call: default_on_call(),
            pins: BTreeMap::new(),
            pin_attempts: 3,
        };
        for (k, v) in toml_like {
            if *k == "utc_offset_hours" {
                s.utc_offset_hours = *v;
            }
        }
        s
    }

    // 2026-01-05 was a Monday; 00:00 UTC that day.
    const MONDAY_MIDNIGHT_UTC_MS: u64 = 1_767_571_200_000;
    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn weekday_and_hour_in_utc() {
        assert_eq!(local_day_and_hour(0, 0.0), (4, 0)); // 1970-01-01: Thursday
        assert_eq!(
            local_day_and_hour(MONDAY_MIDNIGHT_UTC_MS + 9 * HOUR_MS, 0.0),
            (1, 9)
        );
    }

    #[test]
    fn offsets_move_the_local_day() {
        // Monday 03:00 UTC is Sunday 22:00 at UTC-5.
        assert_eq!(
            local_day_and_hour(MONDAY_MIDNIGHT_UTC_MS + 3 * HOUR_MS, -5.0),
            (0, 22)
        );
        // Monday 20:00 UTC is Tuesday 01:30 at UTC+5:30.
        assert_eq!(
            local_day_and_hour(MONDAY_MIDNIGHT_UTC_MS + 20 * HOUR_MS, 5.5),
            (2, 1)
        );
    }

    #[test]
    fn open_hours_and_closed_days() {
        let s = settings(&[]);
        assert!(s.is_open(MONDAY_MIDNIGHT_UTC_MS + 8 * HOUR_MS));
        assert!(s.is_open(MONDAY_MIDNIGHT_UTC_MS + 17 * HOUR_MS));
        assert!(!s.is_open(MONDAY_MIDNIGHT_UTC_MS + 18 * HOUR_MS));
        assert!(!s.is_open(MONDAY_MIDNIGHT_UTC_MS + 7 * HOUR_MS));
        // Saturday at noon.
        assert!(!s.is_open(MONDAY_MIDNIGHT_UTC_MS + 5 * 24 * HOUR_MS + 12 * HOUR_MS));
        // Monday 14:00 UTC is 09:00 at UTC-5: open.
        let s = settings(&[("utc_offset_hours", -5.0)]);
        assert!(s.is_open(MONDAY_MIDNIGHT_UTC_MS + 14 * HOUR_MS));
        assert!(!s.is_open(MONDAY_MIDNIGHT_UTC_MS + 12 * HOUR_MS));
    }
}
