//! What the runtime keeps: the do-not-call list and call records.
//!
//! [`Store`] is the interface (so a shared PostgreSQL or Redis backend can serve several
//! runtime nodes later); [`SqliteStore`] is the default: one embedded SQLite file, nothing to
//! start. Writes are durable when they return (WAL with `synchronous = FULL`): a caller who
//! asked to be suppressed is on the list before the BYE goes out, and stays there after a
//! crash. Every method blocks; call them from `spawn_blocking` on async paths.

pub mod retention;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The store's lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
}

/// The header the runtime adds to `call-info.headers` when it could not check the do-not-call
/// list (value `failed`): `caller-on-dnc-list` is then false for want of an answer, not because
/// the caller is not listed. A header of this name sent by the caller is dropped.
pub const DNC_LOOKUP_HEADER: &str = "X-IVR-DNC-Lookup";

/// One do-not-call entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DncEntry {
    /// The normalised number.
    pub number: String,
    /// When it was added, ms since the Unix epoch.
    pub added_at_ms: i64,
    /// Who added it: `ivr:NAME` (the caller pressed suppress), `cli`, `api`.
    pub source: String,
}

/// One finished call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallRecord {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The caller, normalised.
    pub caller: String,
    /// The number dialled.
    pub did: String,
    /// The IVR that answered (empty when none did).
    pub ivr: String,
    /// Its version.
    pub version: String,
    /// Step labels in order.
    pub path: Vec<String>,
    /// Key entries in order.
    pub digits: Vec<String>,
    /// `transfer`, `hangup`, `suppress`, `caller-hangup`, `media-timeout`, `max-duration`, `error`, `cancelled`, `rejected`.
    pub outcome: String,
    /// Where a transfer went.
    pub destination: Option<String>,
    /// More about the outcome (an error message, a SIP status).
    pub detail: Option<String>,
    /// When the INVITE arrived, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When the call was answered, if it was.
    pub answered_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: i64,
}

/// Which records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallFilter {
    /// Only this DID.
    pub did: Option<String>,
    /// Only this IVR.
    pub ivr: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Started at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Started before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// At most this many, newest first (default 100, at most 10 000).
    pub limit: Option<u32>,
}

/// The runtime's persistent state.
pub trait Store: Send + Sync {
    /// Adds a number to the do-not-call list; durable on return. False if it was there.
    fn dnc_add(&self, number: &str, source: &str) -> Result<bool, StoreError>;
    /// Removes a number; false if it was not there.
    fn dnc_remove(&self, number: &str) -> Result<bool, StoreError>;
    /// Whether a number is on the list.
    fn dnc_contains(&self, number: &str) -> Result<bool, StoreError>;
    /// The whole list, oldest first.
    fn dnc_list(&self) -> Result<Vec<DncEntry>, StoreError>;
    /// Writes a call record.
    fn record_call(&self, record: &CallRecord) -> Result<(), StoreError>;
    /// Lists call records, newest first.
    fn calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError>;
    /// The newest record with this Call-ID.
    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Deletes call records that the retention settings no longer keep: those that ended
    /// before `ended_before_ms`, then the oldest beyond the newest `keep_at_most`. Returns how
    /// many went.
    fn prune_calls(
        &self,
        ended_before_ms: Option<i64>,
        keep_at_most: Option<u64>,
    ) -> Result<u64, StoreError>;
}

/// A store operation on a call's path, for logs and the `wasm_ivr_store_errors_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Listing a caller who asked to be suppressed.
    DncAdd,
    /// Checking whether a caller is listed, when the call starts.
    DncLookup,
    /// Writing a finished call's record.
    RecordCall,
    /// Deleting old call records.
    Prune,
}

impl StoreOp {
    /// The metric label: `dnc-add`, `dnc-lookup`, `record-call`, `prune`.
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::DncAdd => "dnc-add",
            StoreOp::DncLookup => "dnc-lookup",
            StoreOp::RecordCall => "record-call",
            StoreOp::Prune => "prune",
        }
    }
}

impl StoreOp {
    /// The pauses before each retry. On a call's path (listing a caller, the lookup at the
    /// start) they ride out a checkpoint or a brief lock yet keep a waiting caller's silence
    /// short (each attempt may also wait up to the busy timeout on a lock). Off the call's path
    /// (the record, pruning) there is time to wait for a store that comes back.
    pub fn retry_pauses(self) -> &'static [std::time::Duration] {
        use std::time::Duration;
        const ON_CALL: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];
        const AFTER_CALL: [Duration; 3] = [
            Duration::from_millis(250),
            Duration::from_secs(1),
            Duration::from_secs(4),
        ];
        match self {
            StoreOp::DncAdd | StoreOp::DncLookup => &ON_CALL,
            StoreOp::RecordCall | StoreOp::Prune => &AFTER_CALL,
        }
    }
}

/// Runs one store operation off the async threads, retrying as [`StoreOp::retry_pauses`] says. A final
/// failure is counted in the metrics and returned; logging it, and what it means for the
/// call, is the caller's part.
pub async fn with_retries<T, F>(
    store: &std::sync::Arc<dyn Store>,
    op: StoreOp,
    f: F,
) -> Result<T, String>
where
    T: Send + 'static,
    F: Fn(&dyn Store) -> Result<T, StoreError> + Send + Sync + 'static,
{
    let f = std::sync::Arc::new(f);
    let mut pauses = op.retry_pauses().iter();
    loop {
        let (store, f) = (store.clone(), f.clone());
        let result = match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("store task failed: {e}"),
        };
        match pauses.next() {
            Some(pause) => {
                tracing::warn!(
                    op = op.label(),
                    "store operation failed, retrying: {result}"
                );
                tokio::time::sleep(*pause).await;
            }
            None => {
                crate::metrics::metrics().store_error(op.label());
                return Err(result);
            }
        }
    }
}

/// Normalises a phone number for the list: visual separators go, a leading `+` stays. Anything
/// that is not a number (an anonymous caller, a SIP user name) is kept lower-cased as it is.
pub fn normalize_number(raw: &str) -> String {
    let trimmed = raw.trim();
    let stripped = trimmed.strip_prefix("tel:").unwrap_or(trimmed);
    let plus = stripped.starts_with('+');
    let kept: String = stripped
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | ' ' | '(' | ')' | '+'))
        .collect();
    if !kept.is_empty() && kept.chars().all(|c| c.is_ascii_digit()) {
        if plus { format!("+{kept}") } else { kept }
    } else {
        trimmed.to_ascii_lowercase()
    }
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS dnc (
                 number TEXT PRIMARY KEY,
                 added_at_ms INTEGER NOT NULL,
                 source TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS calls (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 call_id TEXT NOT NULL,
                 caller TEXT NOT NULL,
                 did TEXT NOT NULL,
                 ivr TEXT NOT NULL,
                 version TEXT NOT NULL,
                 path TEXT NOT NULL,
                 digits TEXT NOT NULL,
                 outcome TEXT NOT NULL,
                 destination TEXT,
                 detail TEXT,
                 started_at_ms INTEGER NOT NULL,
                 answered_at_ms INTEGER,
                 ended_at_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS calls_call_id ON calls (call_id);
             CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at_ms);
             CREATE INDEX IF NOT EXISTS calls_did ON calls (did, started_at_ms);
             CREATE INDEX IF NOT EXISTS calls_ivr ON calls (ivr, started_at_ms);",
        )
        .map_err(err)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }
}

fn now_ms() -> i64 {
    i64::try_from(crate::time::unix_ms()).unwrap_or(i64::MAX)
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
    let path: String = row.get("path")?;
    let digits: String = row.get("digits")?;
    Ok(CallRecord {
        call_id: row.get("call_id")?,
        caller: row.get("caller")?,
        did: row.get("did")?,
        ivr: row.get("ivr")?,
        version: row.get("version")?,
        path: serde_json::from_str(&path).unwrap_or_default(),
        digits: serde_json::from_str(&digits).unwrap_or_default(),
        outcome: row.get("outcome")?,
        destination: row.get("destination")?,
        detail: row.get("detail")?,
        started_at_ms: row.get("started_at_ms")?,
        answered_at_ms: row.get("answered_at_ms")?,
        ended_at_ms: row.get("ended_at_ms")?,
    })
}

impl Store for SqliteStore {
    fn dnc_add(&self, number: &str, source: &str) -> Result<bool, StoreError> {
        let number = normalize_number(number);
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO dnc (number, added_at_ms, source) VALUES (?1, ?2, ?3)",
                params![number, now_ms(), source],
            )
            .map(|n| n > 0)
        })
    }

    fn dnc_remove(&self, number: &str) -> Result<bool, StoreError> {
        let number = normalize_number(number);
        self.with(|c| {
            c.execute("DELETE FROM dnc WHERE number = ?1", params![number])
                .map(|n| n > 0)
        })
    }

    fn dnc_contains(&self, number: &str) -> Result<bool, StoreError> {
        let number = normalize_number(number);
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM dnc WHERE number = ?1",
                params![number],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
        })
    }

    fn dnc_list(&self) -> Result<Vec<DncEntry>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT number, added_at_ms, source FROM dnc ORDER BY added_at_ms, number",
            )?;
            statement
                .query_map([], |row| {
                    Ok(DncEntry {
                        number: row.get(0)?,
                        added_at_ms: row.get(1)?,
                        source: row.get(2)?,
                    })
                })?
                .collect()
        })
    }

    fn record_call(&self, r: &CallRecord) -> Result<(), StoreError> {
        let path = serde_json::to_string(&r.path).unwrap_or_else(|_| "[]".into());
        let digits = serde_json::to_string(&r.digits).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "INSERT INTO calls (call_id, caller, did, ivr, version, path, digits, outcome,
                   destination, detail, started_at_ms, answered_at_ms, ended_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    r.call_id,
                    r.caller,
                    r.did,
                    r.ivr,
                    r.version,
                    path,
                    digits,
                    r.outcome,
                    r.destination,
                    r.detail,
                    r.started_at_ms,
                    r.answered_at_ms,
                    r.ended_at_ms
                ],
            )
            .map(|_| ())
        })
    }

    fn calls(&self, f: &CallFilter) -> Result<Vec<CallRecord>, StoreError> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT * FROM calls
                 WHERE (?1 IS NULL OR did = ?1) AND (?2 IS NULL OR ivr = ?2)
                   AND (?3 IS NULL OR outcome = ?3)
                   AND (?4 IS NULL OR started_at_ms >= ?4) AND (?5 IS NULL OR started_at_ms < ?5)
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?6",
            )?;
            statement
                .query_map(
                    params![f.did, f.ivr, f.outcome, f.since_ms, f.until_ms, limit],
                    record_from_row,
                )?
                .collect()
        })
    }

    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT * FROM calls WHERE call_id = ?1 ORDER BY id DESC LIMIT 1",
                params![call_id],
                record_from_row,
            )
            .optional()
        })
    }

    fn prune_calls(
        &self,
        ended_before_ms: Option<i64>,
        keep_at_most: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.with(|c| {
            let mut gone = 0;
            if let Some(before) = ended_before_ms {
                gone += c.execute("DELETE FROM calls WHERE ended_at_ms < ?1", params![before])?;
            }
            if let Some(keep) = keep_at_most {
                // Rows are inserted as calls end, so the highest ids are the newest records.
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                gone += c.execute(
                    "DELETE FROM calls WHERE id <= (SELECT id FROM calls ORDER BY id DESC
                       LIMIT 1 OFFSET ?1)",
                    params![keep],
                )?;
            }
            Ok(u64::try_from(gone).unwrap_or(u64::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalise() {
        assert_eq!(normalize_number("+1 (415) 555-9876"), "+14155559876");
        assert_eq!(normalize_number("tel:+1-415-555-9876"), "+14155559876");
        assert_eq!(normalize_number("4155559876"), "4155559876");
        assert_eq!(normalize_number("Anonymous"), "anonymous");
    }

    #[test]
    fn dnc_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.dnc_add("+1 415 555 9876", "ivr:plumber").unwrap());
        assert!(
            !store.dnc_add("+14155559876", "cli").unwrap(),
            "already listed"
        );
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.dnc_contains("+1-415-555-9876").unwrap());
        let list = store.dnc_list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].source, "ivr:plumber");
        assert!(store.dnc_remove("+14155559876").unwrap());
        assert!(!store.dnc_contains("+14155559876").unwrap());
    }

    #[test]
    fn call_records_filter_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for (i, (did, outcome)) in [("+1", "hangup"), ("+2", "transfer"), ("+1", "transfer")]
            .iter()
            .enumerate()
        {
            store
                .record_call(&CallRecord {
                    call_id: format!("c{i}"),
                    caller: "+1555".into(),
                    did: (*did).into(),
                    ivr: "menu".into(),
                    version: "abc".into(),
                    path: vec!["welcome".into(), "x".into()],
                    digits: vec!["1".into()],
                    outcome: (*outcome).into(),
                    destination: None,
                    detail: None,
                    started_at_ms: 1000 + i as i64,
                    answered_at_ms: Some(1001 + i as i64),
                    ended_at_ms: 2000,
                })
                .unwrap();
        }
        let all = store.calls(&CallFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(),
            ["c2", "c1", "c0"]
        );
        let filtered = store
            .calls(&CallFilter {
                did: Some("+1".into()),
                outcome: Some("transfer".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(filtered.len(), 1);
        assert_eq!(filtered[0].path, ["welcome", "x"]);
        assert_eq!(store.call("c1").unwrap().map(|r| r.did), Some("+2".into()));
        assert!(store.call("nope").unwrap().is_none());
    }

    fn record(i: i64, ended_at_ms: i64) -> CallRecord {
        CallRecord {
            call_id: format!("c{i}"),
            caller: "+1555".into(),
            did: "+1".into(),
            ivr: "menu".into(),
            version: "abc".into(),
            path: Vec::new(),
            digits: Vec::new(),
            outcome: "hangup".into(),
            destination: None,
            detail: None,
            started_at_ms: ended_at_ms - 10,
            answered_at_ms: None,
            ended_at_ms,
        }
    }

    fn ids(store: &SqliteStore) -> Vec<String> {
        let mut ids: Vec<String> = store
            .calls(&CallFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn pruning_keeps_the_newest_records_within_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for i in 0..10 {
            store.record_call(&record(i, 1_000 + i * 100)).unwrap();
        }
        // Nothing to do: the limits are above what there is.
        assert_eq!(store.prune_calls(Some(0), Some(100)).unwrap(), 0);
        assert_eq!(ids(&store).len(), 10);
        // Age: c0..c2 ended before 1 300.
        assert_eq!(store.prune_calls(Some(1_300), None).unwrap(), 3);
        assert_eq!(ids(&store), ["c3", "c4", "c5", "c6", "c7", "c8", "c9"]);
        // Count: the newest four stay.
        assert_eq!(store.prune_calls(None, Some(4)).unwrap(), 3);
        assert_eq!(ids(&store), ["c6", "c7", "c8", "c9"]);
        // Keeping none empties the table.
        assert_eq!(store.prune_calls(None, Some(0)).unwrap(), 4);
        assert!(ids(&store).is_empty());
    }
}
