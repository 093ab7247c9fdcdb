//! Process-wide counters, rendered as Prometheus text for `GET /metrics`, and the table of live
//! calls for `GET /calls`.
//!
//! Counters are atomics or small maps behind a mutex, bumped where things happen (the engine,
//! the call task, the pacer, the folder watcher); reading them never blocks a call for long.
//! Labelled series are bounded: step labels beyond [`MAX_SERIES`] distinct series are folded into
//! one `other` series, so a guest inventing labels cannot grow memory without bound.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Most distinct series per labelled counter.
pub const MAX_SERIES: usize = 10_000;

/// A counter with labels.
#[derive(Default)]
struct Labelled(Mutex<BTreeMap<Vec<String>, u64>>);

impl Labelled {
    fn add(&self, labels: &[&str], by: u64) {
        let Ok(mut map) = self.0.lock() else { return };
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        if !map.contains_key(&key) && map.len() >= MAX_SERIES {
            *map.entry(labels.iter().map(|_| "other".to_owned()).collect())
                .or_insert(0) += by;
            return;
        }
        *map.entry(key).or_insert(0) += by;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let Ok(map) = self.0.lock() else { return };
        for (values, count) in map.iter() {
            let labels: Vec<String> = label_names
                .iter()
                .zip(values)
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {count}", labels.join(","));
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One live call, as `GET /calls` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveCall {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The caller.
    pub caller: String,
    /// The number dialled.
    pub did: String,
    /// The IVR handling it.
    pub ivr: String,
    /// The IVR's version.
    pub version: String,
    /// The step the caller is in now.
    pub step: String,
    /// When it was answered, ms since the Unix epoch.
    pub answered_at_ms: u64,
}

/// Everything counted.
#[derive(Default)]
pub struct Metrics {
    calls_active: AtomicU64,
    calls: Labelled,
    steps: Labelled,
    gathers: Labelled,
    dtmf: Labelled,
    invalid_keys: Labelled,
    instantiations: AtomicU64,
    instantiate_micros: AtomicU64,
    rtp_packets: AtomicU64,
    rtp_send_errors: AtomicU64,
    pacer_late_ticks: AtomicU64,
    rtp_foreign_dropped: AtomicU64,
    reloads: Labelled,
    live: Mutex<BTreeMap<String, LiveCall>>,
    store_errors: Labelled,
    pruned: Labelled,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// A call was answered and its IVR starts.
    pub fn call_started(&self, call: LiveCall) {
        self.calls_active.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut live) = self.live.lock() {
            live.insert(call.call_id.clone(), call);
        }
    }

    /// A call ended with this outcome label.
    pub fn call_ended(&self, call_id: &str, ivr: &str, outcome: &str) {
        let was_live = self
            .live
            .lock()
            .map(|mut l| l.remove(call_id).is_some())
            .unwrap_or(false);
        if was_live {
            self.calls_active.fetch_sub(1, Ordering::Relaxed);
        }
        self.calls.add(&[ivr, outcome], 1);
    }

    /// A call entered a step.
    pub fn step(&self, call_id: &str, ivr: &str, step: &str) {
        self.steps.add(&[ivr, step], 1);
        if let Ok(mut live) = self.live.lock()
            && let Some(call) = live.get_mut(call_id)
        {
            call.step = step.to_owned();
        }
    }

    /// A gather ended: `digits`, `partial`, `timeout`, `hung-up`, `error`.
    pub fn gather(&self, ivr: &str, result: &str) {
        self.gathers.add(&[ivr, result], 1);
    }

    /// A caller's entry matched none of a tree node's keys.
    pub fn invalid_key(&self, ivr: &str, node: &str) {
        self.invalid_keys.add(&[ivr, node], 1);
    }

    /// A digit arrived by this transport (`rfc4733`, `sip-info`, `inband`).
    pub fn dtmf(&self, transport: &str) {
        self.dtmf.add(&[transport], 1);
    }

    /// A guest was instantiated in this many microseconds.
    pub fn instantiated(&self, micros: u64) {
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        self.instantiate_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// RTP packets sent and refused.
    pub fn rtp(&self, sent: u64, errors: u64) {
        self.rtp_packets.fetch_add(sent, Ordering::Relaxed);
        self.rtp_send_errors.fetch_add(errors, Ordering::Relaxed);
    }

    /// A pacer tick ran more than a frame late.
    pub fn late_tick(&self) {
        self.pacer_late_ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// An RTP packet came from a source that is not its call's media and was dropped.
    pub fn rtp_foreign_dropped(&self) {
        self.rtp_foreign_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A folder sync loaded (`loaded`), refused (`failed`) or unloaded (`unloaded`) an IVR.
    pub fn reload(&self, result: &str, count: u64) {
        if count > 0 {
            self.reloads.add(&[result], count);
        }
    }

    /// A store operation failed for good (after its retries).
    pub fn store_error(&self, op: &str) {
        self.store_errors.add(&[op], 1);
    }

    /// Retention removed old call records (`records`) or trace files (`traces`).
    pub fn pruned(&self, what: &str, count: u64) {
        if count > 0 {
            self.pruned.add(&[what], count);
        }
    }

    /// The live calls.
    pub fn live_calls(&self) -> Vec<LiveCall> {
        self.live
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "wasm_ivr_calls_active",
            "Calls answered and not yet ended.",
            "gauge",
            self.calls_active.load(Ordering::Relaxed),
        );
        self.calls.render(
            &mut out,
            "wasm_ivr_calls_total",
            "Finished calls by IVR and outcome.",
            &["ivr", "outcome"],
        );
        self.steps.render(
            &mut out,
            "wasm_ivr_step_visits_total",
            "Steps entered, by IVR and step label.",
            &["ivr", "step"],
        );
        self.gathers.render(
            &mut out,
            "wasm_ivr_gathers_total",
            "Gathers by IVR and result (timeout = no key).",
            &["ivr", "result"],
        );
        self.dtmf.render(
            &mut out,
            "wasm_ivr_dtmf_digits_total",
            "Digits received, by transport.",
            &["transport"],
        );
        self.invalid_keys.render(
            &mut out,
            "wasm_ivr_invalid_keys_total",
            "Tree entries that matched no key, by IVR and node.",
            &["ivr", "node"],
        );
        gauge(
            &mut out,
            "wasm_ivr_guest_instantiations_total",
            "Guest instances created.",
            "counter",
            self.instantiations.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP wasm_ivr_guest_instantiate_seconds_total Time spent instantiating guests.\n\
             # TYPE wasm_ivr_guest_instantiate_seconds_total counter\n\
             wasm_ivr_guest_instantiate_seconds_total {:.6}",
            self.instantiate_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        gauge(
            &mut out,
            "wasm_ivr_rtp_packets_sent_total",
            "RTP packets sent to callers.",
            "counter",
            self.rtp_packets.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "wasm_ivr_rtp_send_errors_total",
            "RTP packets the socket refused.",
            "counter",
            self.rtp_send_errors.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "wasm_ivr_pacer_late_ticks_total",
            "Pacer ticks more than a frame late.",
            "counter",
            self.pacer_late_ticks.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "wasm_ivr_rtp_foreign_dropped_total",
            "RTP packets dropped because they did not come from their call's media source.",
            "counter",
            self.rtp_foreign_dropped.load(Ordering::Relaxed),
        );
        // The soak (scripts/soak.sh) watches this for leaked tasks; outside a runtime (the unit
        // tests) there is nothing to count.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            gauge(
                &mut out,
                "wasm_ivr_runtime_tasks_alive",
                "Tokio tasks spawned and not yet finished.",
                "gauge",
                handle.metrics().num_alive_tasks() as u64,
            );
        }
        self.reloads.render(
            &mut out,
            "wasm_ivr_reloads_total",
            "IVR folder changes by result.",
            &["result"],
        );
        self.store_errors.render(
            &mut out,
            "wasm_ivr_store_errors_total",
            "Store operations that failed after their retries, by operation.",
            &["op"],
        );
        self.pruned.render(
            &mut out,
            "wasm_ivr_pruned_total",
            "Call records and trace files removed by retention.",
            &["what"],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_and_bounds_series() {
        let m = Metrics::default();
        m.call_started(LiveCall {
            call_id: "c1".into(),
            caller: "+1".into(),
            did: "+2".into(),
            ivr: "menu".into(),
            version: "v".into(),
            step: String::new(),
            answered_at_ms: 0,
        });
        m.step("c1", "menu", "welcome");
        assert_eq!(m.live_calls()[0].step, "welcome");
        m.call_ended("c1", "menu", "hangup");
        m.dtmf("rfc4733");
        let text = m.render();
        assert!(text.contains("wasm_ivr_calls_active 0"), "{text}");
        assert!(
            text.contains("wasm_ivr_calls_total{ivr=\"menu\",outcome=\"hangup\"} 1"),
            "{text}"
        );
        assert!(text.contains("wasm_ivr_step_visits_total{ivr=\"menu\",step=\"welcome\"} 1"));
        for i in 0..(MAX_SERIES + 5) {
            m.step("x", "menu", &format!("s{i}"));
        }
        // One series existed already, so six of the new ones fold into `other`.
        assert!(m.render().contains("step=\"other\"} 6"), "{}", m.render());
    }
}
