//! The SQLite trial storage: one database file that several worker processes on one machine share
//! (WAL mode, a 30 s busy timeout, and claims inside `BEGIN IMMEDIATE` so only one writer claims at a time).

use super::{decode_params, decode_result, decode_state, mismatch, unique_trials, Claim, Storage, TrialRecord};
use crate::sweep::space::TrialParams;
use crate::sweep::{Result, SweepError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lowrank_studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lowrank_trials (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES lowrank_studies(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempt INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat_at REAL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    UNIQUE (study_id, key)
);
CREATE INDEX IF NOT EXISTS lowrank_trials_claim ON lowrank_trials (study_id, state, seq);
";

/// Trial storage in an SQLite file.
pub struct SqliteStorage {
    conn: Connection,
    path: PathBuf,
}

/// Wraps a driver error with the database path.
fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> SweepError + '_ {
    move |source| SweepError::Sqlite { path: path.to_path_buf(), source }
}

/// The current time in seconds since the Unix epoch (workers share the machine's clock).
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`, and its parent folder, and sets up the schema.
    pub fn open(path: &Path) -> Result<SqliteStorage> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| SweepError::Io {
                action: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let err = db_err(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)).map_err(&err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(&err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(&err)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        tx.execute_batch(SCHEMA).map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(SqliteStorage { conn, path: path.to_path_buf() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for SqliteStorage {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn open_study(&mut self, name: &str, space_json: &str, trials: &[TrialParams]) -> Result<i64> {
        let location = self.location();
        let err = db_err(&self.path);
        let requested = unique_trials(trials);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let existing: Option<i64> =
            tx.query_row("SELECT id FROM lowrank_studies WHERE name = ?1", params![name], |row| row.get(0)).optional().map_err(&err)?;
        let id = match existing {
            Some(id) => {
                let keys: HashSet<String> = {
                    let mut stmt = tx.prepare("SELECT key FROM lowrank_trials WHERE study_id = ?1").map_err(&err)?;
                    let rows = stmt.query_map(params![id], |row| row.get::<_, String>(0)).map_err(&err)?;
                    rows.collect::<std::result::Result<_, _>>().map_err(&err)?
                };
                if let Some(e) = mismatch(name, &location, &keys, &requested) {
                    return Err(e);
                }
                id
            }
            None => {
                tx.execute("INSERT INTO lowrank_studies (name, space, created_at) VALUES (?1, ?2, ?3)", params![name, space_json, now()])
                    .map_err(&err)?;
                let id = tx.last_insert_rowid();
                {
                    let mut stmt =
                        tx.prepare("INSERT INTO lowrank_trials (study_id, seq, key, params) VALUES (?1, ?2, ?3, ?4)").map_err(&err)?;
                    for (seq, (key, params_json)) in requested.iter().enumerate() {
                        stmt.execute(params![id, seq as i64, key, params_json]).map_err(&err)?;
                    }
                }
                id
            }
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    fn claim(&mut self, study: i64, worker: &str, stale_after: Duration) -> Result<Option<Claim>> {
        let location = self.location();
        let err = db_err(&self.path);
        // IMMEDIATE takes the write lock up front, so no other process can claim between our read and write.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let t = now();
        let cutoff = t - stale_after.as_secs_f64();
        let next: Option<(i64, i64, String, String)> = tx
            .query_row(
                "SELECT id, attempt, params, key FROM lowrank_trials
                 WHERE study_id = ?1 AND (state = 'pending' OR (state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < ?2)))
                 ORDER BY seq LIMIT 1",
                params![study, cutoff],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(&err)?;
        let Some((trial_id, attempt, params_json, key)) = next else {
            tx.commit().map_err(&err)?;
            return Ok(None);
        };
        let attempt = attempt + 1;
        tx.execute(
            "UPDATE lowrank_trials SET state = 'running', worker = ?2, attempt = ?3, heartbeat_at = ?4, started_at = ?4,
                 finished_at = NULL, result = NULL, error = NULL
             WHERE id = ?1",
            params![trial_id, worker, attempt, t],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(Some(Claim { trial_id, attempt, params: decode_params(&location, &params_json)?, key }))
    }

    fn heartbeat(&mut self, trial_id: i64, attempt: i64) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE lowrank_trials SET heartbeat_at = ?3 WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
                params![trial_id, attempt, now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(n == 1)
    }

    fn complete(&mut self, trial_id: i64, attempt: i64, result: &Value) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE lowrank_trials SET state = 'done', result = ?3, finished_at = ?4, heartbeat_at = ?4
                 WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
                params![trial_id, attempt, result.to_string(), now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(n == 1)
    }

    fn fail(&mut self, trial_id: i64, attempt: i64, error: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE lowrank_trials SET state = 'failed', error = ?3, finished_at = ?4, heartbeat_at = ?4
                 WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
                params![trial_id, attempt, error, now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(n == 1)
    }

    fn trials(&mut self, study: i64) -> Result<Vec<TrialRecord>> {
        let location = self.location();
        let err = db_err(&self.path);
        type Row =
            (i64, String, String, String, i64, Option<String>, Option<String>, Option<String>, Option<f64>, Option<f64>, Option<f64>);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, key, params, state, attempt, worker, result, error, started_at, finished_at, heartbeat_at
                 FROM lowrank_trials WHERE study_id = ?1 ORDER BY seq",
            )
            .map_err(&err)?;
        let rows: Vec<Row> = stmt
            .query_map(params![study], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })
            .map_err(&err)?
            .collect::<std::result::Result<_, _>>()
            .map_err(&err)?;
        rows.into_iter()
            .map(|(id, key, params_json, state, attempt, worker, result, error, started_at, finished_at, heartbeat_at)| {
                Ok(TrialRecord {
                    id,
                    key,
                    params: decode_params(&location, &params_json)?,
                    state: decode_state(&location, &state)?,
                    attempt,
                    worker,
                    result: decode_result(&location, result)?,
                    error,
                    started_at,
                    finished_at,
                    heartbeat_at,
                })
            })
            .collect()
    }

    fn reset_running(&mut self, study: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE lowrank_trials SET state = 'pending', worker = NULL, heartbeat_at = NULL WHERE study_id = ?1 AND state = 'running'",
                params![study],
            )
            .map_err(db_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    /// A temp folder and a factory of connections to one database file in it.
    fn with_db(test: impl FnOnce(&(dyn Fn() -> Box<dyn Storage> + Sync))) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.sqlite");
        let connect = move || -> Box<dyn Storage> { Box::new(SqliteStorage::open(&path).unwrap()) };
        test(&connect);
    }

    #[test]
    fn sqlite_open_is_idempotent() {
        with_db(|c| conformance::open_is_idempotent(c, "study"));
    }

    #[test]
    fn sqlite_claims_in_order_and_records_outcomes() {
        with_db(|c| conformance::claims_in_order_and_records_outcomes(c, "study"));
    }

    #[test]
    fn sqlite_completes_exactly_once_after_takeover() {
        with_db(|c| conformance::completes_exactly_once_after_takeover(c, "study"));
    }

    #[test]
    fn sqlite_reset_running_requeues_interrupted_trials() {
        with_db(|c| conformance::reset_running_requeues_interrupted_trials(c, "study"));
    }

    #[test]
    fn sqlite_concurrent_claims_never_share_a_trial() {
        with_db(|c| conformance::concurrent_claims_never_share_a_trial(c, "study"));
    }

    #[test]
    fn sqlite_uses_wal_and_reopens_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("s.sqlite");
        let mut s = SqliteStorage::open(&path).unwrap();
        let mode: String = s.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let id = s.open_study("x", "{}", &[TrialParams::new()]).unwrap();
        drop(s);
        let mut again = SqliteStorage::open(&path).unwrap();
        assert_eq!(again.open_study("x", "{}", &[TrialParams::new()]).unwrap(), id);
        assert_eq!(again.path(), path);
    }
}
