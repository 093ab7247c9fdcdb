//! Retention: call records and trace files are pruned at start and then periodically, so a busy
//! runtime's state stays bounded (`[calls] records_keep_days`, `records_max`, `traces_keep`).

use super::{Store, StoreOp};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default age limit of call records, in days.
pub const DEFAULT_RECORDS_KEEP_DAYS: u64 = 90;
/// Default count limit of call records.
pub const DEFAULT_RECORDS_MAX: u64 = 1_000_000;
/// Default count limit of trace files.
pub const DEFAULT_TRACES_KEEP: u64 = 10_000;
/// How often retention runs after the first pass at start.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What to keep. `None` keeps everything along that axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Call records older than this (by their end) go.
    pub records_keep: Option<Duration>,
    /// At most this many call records, newest kept.
    pub records_max: Option<u64>,
    /// The trace folder, if traces are written.
    pub traces_dir: Option<PathBuf>,
    /// At most this many trace files, newest kept.
    pub traces_keep: Option<u64>,
}

impl Retention {
    /// From the settings' numbers, where 0 means "no limit" and an unset value the default.
    pub fn from_settings(
        records_keep_days: Option<u64>,
        records_max: Option<u64>,
        traces_keep: Option<u64>,
        traces_dir: Option<PathBuf>,
    ) -> Retention {
        let limit =
            |value: Option<u64>, default: u64| Some(value.unwrap_or(default)).filter(|v| *v > 0);
        Retention {
            records_keep: limit(records_keep_days, DEFAULT_RECORDS_KEEP_DAYS)
                .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
            records_max: limit(records_max, DEFAULT_RECORDS_MAX),
            traces_dir,
            traces_keep: limit(traces_keep, DEFAULT_TRACES_KEEP),
        }
    }
}

/// Removes all but the newest `keep` `*.json` files of `dir` (by modification time, then
/// name). Other files are left alone. Returns how many went.
pub fn prune_traces(dir: &Path, keep: u64) -> std::io::Result<u64> {
    let mut traces: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    if traces.len() <= keep {
        return Ok(0);
    }
    traces.sort();
    let surplus = traces.len() - keep;
    let mut removed = 0;
    for (_, path) in traces.into_iter().take(surplus) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            // Already gone (an operator, a second pass): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "cannot remove an old trace: {e}"),
        }
    }
    Ok(removed)
}

/// One retention pass: old records, then surplus traces. Failures are logged and counted, never
/// fatal: the next pass tries again.
pub async fn prune_once(store: &Arc<dyn Store>, retention: &Retention) {
    if retention.records_keep.is_some() || retention.records_max.is_some() {
        let before = retention.records_keep.map(|keep| {
            let now = crate::time::unix_ms();
            let keep = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
            i64::try_from(now.saturating_sub(keep)).unwrap_or(i64::MAX)
        });
        let max = retention.records_max;
        match super::with_retries(store, StoreOp::Prune, move |s| s.prune_calls(before, max)).await
        {
            Ok(n) => {
                crate::metrics::metrics().pruned("records", n);
                if n > 0 {
                    tracing::info!(removed = n, "old call records pruned");
                }
            }
            Err(e) => tracing::error!("call records not pruned: {e}"),
        }
    }
    if let (Some(dir), Some(keep)) = (retention.traces_dir.clone(), retention.traces_keep) {
        let pruned = tokio::task::spawn_blocking(move || prune_traces(&dir, keep)).await;
        match pruned {
            Ok(Ok(n)) => {
                crate::metrics::metrics().pruned("traces", n);
                if n > 0 {
                    tracing::info!(removed = n, "old call traces pruned");
                }
            }
            Ok(Err(e)) => tracing::warn!("call traces not pruned: {e}"),
            Err(e) => tracing::warn!("call traces not pruned: {e}"),
        }
    }
}

/// Prunes now and then every `interval`, for as long as the task runs.
pub async fn run(store: Arc<dyn Store>, retention: Retention, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        prune_once(&store, &retention).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_no_limit_and_unset_means_the_default() {
        let r = Retention::from_settings(None, Some(0), Some(5), None);
        assert_eq!(
            r.records_keep,
            Some(Duration::from_secs(DEFAULT_RECORDS_KEEP_DAYS * 86_400))
        );
        assert_eq!(r.records_max, None);
        assert_eq!(r.traces_keep, Some(5));
    }

    #[test]
    fn only_the_newest_traces_stay() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            let path = dir.path().join(format!("call-{i}.json"));
            std::fs::write(&path, "{}").unwrap();
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
        assert_eq!(prune_traces(dir.path(), 4).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "call-2.json",
                "call-3.json",
                "call-4.json",
                "call-5.json",
                "notes.txt"
            ]
        );
        assert_eq!(prune_traces(dir.path(), 4).unwrap(), 0);
    }
}
