//! The PostgreSQL trial storage, for workers on several machines: the schema is created on connect under
//! a transaction-level advisory lock, claims use `SELECT ... FOR UPDATE SKIP LOCKED`, and every timestamp
//! (heartbeats included) is the server's `now()`, so the workers' clocks need not agree.

use super::{decode_params, decode_result, decode_state, mismatch, redact_url, unique_trials, Claim, Storage, TrialRecord};
use crate::sweep::space::TrialParams;
use crate::sweep::{Result, SweepError};
use ::postgres::{Client, NoTls};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// The advisory lock key that serialises schema creation and study creation ("lowrank" in ASCII).
const LOCK_KEY: i64 = 0x006c_6f77_7261_6e6b;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lowrank_studies (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS lowrank_trials (
    id BIGSERIAL PRIMARY KEY,
    study_id BIGINT NOT NULL REFERENCES lowrank_studies(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    key TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempt BIGINT NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    result TEXT,
    error TEXT,
    UNIQUE (study_id, key)
);
CREATE INDEX IF NOT EXISTS lowrank_trials_claim ON lowrank_trials (study_id, state, seq);
";

/// Trial storage in a PostgreSQL database.
pub struct PostgresStorage {
    client: Client,
    /// The URL without its password, for messages.
    url: String,
}

/// Wraps a driver error with the (redacted) server URL.
fn db_err(url: &str) -> impl Fn(::postgres::Error) -> SweepError + '_ {
    move |source| SweepError::Postgres { url: url.to_string(), source: Box::new(source) }
}

impl PostgresStorage {
    /// Connects (without TLS) to the server at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) and
    /// creates lowrank's tables if they are missing.
    pub fn connect(url: &str) -> Result<PostgresStorage> {
        let shown = redact_url(url);
        let err = db_err(&shown);
        let mut client = Client::connect(url, NoTls).map_err(&err)?;
        let mut tx = client.transaction().map_err(&err)?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog; the lock serialises it.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).map_err(&err)?;
        tx.batch_execute(SCHEMA).map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(PostgresStorage { client, url: shown.clone() })
    }
}

impl Storage for PostgresStorage {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn open_study(&mut self, name: &str, space_json: &str, trials: &[TrialParams]) -> Result<i64> {
        let err = db_err(&self.url);
        let requested = unique_trials(trials);
        let mut tx = self.client.transaction().map_err(&err)?;
        // Two workers opening the same new study at once must not both insert it.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).map_err(&err)?;
        let existing = tx.query_opt("SELECT id FROM lowrank_studies WHERE name = $1", &[&name]).map_err(&err)?;
        let id: i64 = match existing {
            Some(row) => {
                let id: i64 = row.get(0);
                let keys: HashSet<String> = tx
                    .query("SELECT key FROM lowrank_trials WHERE study_id = $1", &[&id])
                    .map_err(&err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Some(e) = mismatch(name, &self.url, &keys, &requested) {
                    return Err(e);
                }
                id
            }
            None => {
                let id: i64 = tx
                    .query_one("INSERT INTO lowrank_studies (name, space) VALUES ($1, $2) RETURNING id", &[&name, &space_json])
                    .map_err(&err)?
                    .get(0);
                let seqs: Vec<i64> = (0..requested.len() as i64).collect();
                let keys: Vec<&str> = requested.iter().map(|(k, _)| k.as_str()).collect();
                let params_json: Vec<&str> = requested.iter().map(|(_, p)| p.as_str()).collect();
                tx.execute(
                    "INSERT INTO lowrank_trials (study_id, seq, key, params)
                     SELECT $1, s, k, p FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS t(s, k, p)",
                    &[&id, &seqs, &keys, &params_json],
                )
                .map_err(&err)?;
                id
            }
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    fn claim(&mut self, study: i64, worker: &str, stale_after: Duration) -> Result<Option<Claim>> {
        let err = db_err(&self.url);
        let stale_secs = stale_after.as_secs_f64();
        let mut tx = self.client.transaction().map_err(&err)?;
        // SKIP LOCKED: a trial another worker is claiming right now is passed over, not waited for.
        let next = tx
            .query_opt(
                "SELECT id, params, key FROM lowrank_trials
                 WHERE study_id = $1 AND (state = 'pending'
                     OR (state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $2))))
                 ORDER BY seq LIMIT 1
                 FOR UPDATE SKIP LOCKED",
                &[&study, &stale_secs],
            )
            .map_err(&err)?;
        let Some(row) = next else {
            tx.commit().map_err(&err)?;
            return Ok(None);
        };
        let trial_id: i64 = row.get(0);
        let params_json: String = row.get(1);
        let key: String = row.get(2);
        let attempt: i64 = tx
            .query_one(
                "UPDATE lowrank_trials SET state = 'running', worker = $2, attempt = attempt + 1, heartbeat_at = now(), started_at = now(),
                     finished_at = NULL, result = NULL, error = NULL
                 WHERE id = $1 RETURNING attempt",
                &[&trial_id, &worker],
            )
            .map_err(&err)?
            .get(0);
        tx.commit().map_err(&err)?;
        Ok(Some(Claim { trial_id, attempt, params: decode_params(&self.url, &params_json)?, key }))
    }

    fn heartbeat(&mut self, trial_id: i64, attempt: i64) -> Result<bool> {
        let n = self
            .client
            .execute(
                "UPDATE lowrank_trials SET heartbeat_at = now() WHERE id = $1 AND attempt = $2 AND state = 'running'",
                &[&trial_id, &attempt],
            )
            .map_err(db_err(&self.url))?;
        Ok(n == 1)
    }

    fn complete(&mut self, trial_id: i64, attempt: i64, result: &Value) -> Result<bool> {
        let n = self
            .client
            .execute(
                "UPDATE lowrank_trials SET state = 'done', result = $3, finished_at = now(), heartbeat_at = now()
                 WHERE id = $1 AND attempt = $2 AND state = 'running'",
                &[&trial_id, &attempt, &result.to_string()],
            )
            .map_err(db_err(&self.url))?;
        Ok(n == 1)
    }

    fn fail(&mut self, trial_id: i64, attempt: i64, error: &str) -> Result<bool> {
        let n = self
            .client
            .execute(
                "UPDATE lowrank_trials SET state = 'failed', error = $3, finished_at = now(), heartbeat_at = now()
                 WHERE id = $1 AND attempt = $2 AND state = 'running'",
                &[&trial_id, &attempt, &error],
            )
            .map_err(db_err(&self.url))?;
        Ok(n == 1)
    }

    fn trials(&mut self, study: i64) -> Result<Vec<TrialRecord>> {
        let rows = self
            .client
            .query(
                "SELECT id, key, params, state, attempt, worker, result, error,
                        extract(epoch FROM started_at)::FLOAT8, extract(epoch FROM finished_at)::FLOAT8, extract(epoch FROM heartbeat_at)::FLOAT8
                 FROM lowrank_trials WHERE study_id = $1 ORDER BY seq",
                &[&study],
            )
            .map_err(db_err(&self.url))?;
        rows.iter()
            .map(|r| {
                Ok(TrialRecord {
                    id: r.try_get(0).map_err(db_err(&self.url))?,
                    key: r.try_get(1).map_err(db_err(&self.url))?,
                    params: decode_params(&self.url, r.try_get(2).map_err(db_err(&self.url))?)?,
                    state: decode_state(&self.url, r.try_get(3).map_err(db_err(&self.url))?)?,
                    attempt: r.try_get(4).map_err(db_err(&self.url))?,
                    worker: r.try_get(5).map_err(db_err(&self.url))?,
                    result: decode_result(&self.url, r.try_get(6).map_err(db_err(&self.url))?)?,
                    error: r.try_get(7).map_err(db_err(&self.url))?,
                    started_at: r.try_get(8).map_err(db_err(&self.url))?,
                    finished_at: r.try_get(9).map_err(db_err(&self.url))?,
                    heartbeat_at: r.try_get(10).map_err(db_err(&self.url))?,
                })
            })
            .collect()
    }

    fn reset_running(&mut self, study: i64) -> Result<usize> {
        let n = self
            .client
            .execute(
                "UPDATE lowrank_trials SET state = 'pending', worker = NULL, heartbeat_at = NULL WHERE study_id = $1 AND state = 'running'",
                &[&study],
            )
            .map_err(db_err(&self.url))?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    /// The test server's URL, from `LOWRANK_TEST_POSTGRES`. Without it the tests return early on a
    /// developer's machine, but fail under CI (env `CI` set), where skipping would hide the backend.
    fn test_url() -> Option<String> {
        if let Some(url) = std::env::var("LOWRANK_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
            return Some(url);
        }
        crate::ci::missing(
            "a PostgreSQL server (LOWRANK_TEST_POSTGRES)",
            "run `export LOWRANK_TEST_POSTGRES=$(scripts/pg-test-server.sh start)` before cargo test",
        );
        None
    }

    /// A study name no other test run uses, since the test database outlives each run.
    fn unique(test: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        format!("{test}-{}-{nanos}", std::process::id())
    }

    fn with_pg(test: &str, run: impl FnOnce(&(dyn Fn() -> Box<dyn Storage> + Sync), &str)) {
        let Some(url) = test_url() else { return };
        let connect = move || -> Box<dyn Storage> { Box::new(PostgresStorage::connect(&url).unwrap()) };
        run(&connect, &unique(test));
    }

    #[test]
    fn postgres_open_is_idempotent() {
        with_pg("open", conformance::open_is_idempotent);
    }

    #[test]
    fn postgres_claims_in_order_and_records_outcomes() {
        with_pg("order", conformance::claims_in_order_and_records_outcomes);
    }

    #[test]
    fn postgres_completes_exactly_once_after_takeover() {
        with_pg("takeover", conformance::completes_exactly_once_after_takeover);
    }

    #[test]
    fn postgres_reset_running_requeues_interrupted_trials() {
        with_pg("reset", conformance::reset_running_requeues_interrupted_trials);
    }

    #[test]
    fn postgres_concurrent_claims_never_share_a_trial() {
        with_pg("concurrent", conformance::concurrent_claims_never_share_a_trial);
    }

    #[test]
    fn postgres_open_storage_accepts_both_schemes_and_redacts_errors() {
        let Some(url) = test_url() else { return };
        let dir = tempfile::tempdir().unwrap();
        let alt = url.replacen("postgres://", "postgresql://", 1);
        for u in [url.as_str(), alt.as_str()] {
            assert!(super::super::open_storage(Some(u), dir.path()).is_ok(), "{u}");
        }
        // A closed port: the error names the URL without the password.
        let err = PostgresStorage::connect("postgres://someone:hunter2@127.0.0.1:1/nowhere").err().expect("refused").to_string();
        assert!(err.contains("postgres://someone:***@127.0.0.1:1/nowhere") && !err.contains("hunter2"), "{err}");
    }
}
