//! Trial storage shared by sweep workers: one [`Storage`] trait, with an SQLite backend (workers on one
//! machine) and a PostgreSQL backend (workers on several machines), and [`open_storage`] to pick one from
//! a `--storage` URL.
//!
//! A study is the set of trials of one sweep. Each trial moves `pending → running → done | failed`.
//! A worker [`claim`](Storage::claim)s a trial, [`heartbeat`](Storage::heartbeat)s while it trains, and
//! ends it with [`complete`](Storage::complete) or [`fail`](Storage::fail). Every claim bumps the trial's
//! `attempt`, and heartbeat/complete/fail act only while the trial is still running under the caller's
//! attempt, so a trial whose worker was presumed dead and taken over ends exactly once.

pub mod postgres;
pub mod sqlite;

pub use self::postgres::PostgresStorage;
pub use self::sqlite::SqliteStorage;

use super::space::TrialParams;
use super::{Result, SweepError};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The file name of the default SQLite storage inside a sweep folder.
pub const DEFAULT_SQLITE_FILE: &str = "sweep.sqlite";

/// Where a trial is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// Not started yet (or interrupted and reset).
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished with a result (final).
    Done,
    /// Finished with an error (final: not retried).
    Failed,
}

impl TrialState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Pending => "pending",
            TrialState::Running => "running",
            TrialState::Done => "done",
            TrialState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<TrialState> {
        match s {
            "pending" => Some(TrialState::Pending),
            "running" => Some(TrialState::Running),
            "done" => Some(TrialState::Done),
            "failed" => Some(TrialState::Failed),
            _ => None,
        }
    }
}

/// A trial handed to a worker by [`Storage::claim`].
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The trial's id in storage.
    pub trial_id: i64,
    /// This claim's attempt number (1 for the first run); pass it back to heartbeat/complete/fail.
    pub attempt: i64,
    /// The trial's parameters.
    pub params: TrialParams,
    /// The trial's key ([`trial_key`](super::space::trial_key) of `params`).
    pub key: String,
}

/// One trial as stored, for reports and the runner's bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRecord {
    /// The trial's id in storage.
    pub id: i64,
    /// The trial's key ([`trial_key`](super::space::trial_key) of `params`).
    pub key: String,
    /// The trial's parameters.
    pub params: TrialParams,
    /// Its state.
    pub state: TrialState,
    /// How many times it has been claimed.
    pub attempt: i64,
    /// The worker that claimed it last, if any.
    pub worker: Option<String>,
    /// The result recorded by [`Storage::complete`].
    pub result: Option<Value>,
    /// The error recorded by [`Storage::fail`].
    pub error: Option<String>,
    /// When the last claim started, in seconds since the Unix epoch.
    pub started_at: Option<f64>,
    /// When it finished (done or failed), in seconds since the Unix epoch.
    pub finished_at: Option<f64>,
    /// The last heartbeat, in seconds since the Unix epoch.
    pub heartbeat_at: Option<f64>,
}

/// Trial storage shared by the workers of a sweep.
pub trait Storage: Send {
    /// Where the storage lives (a file path, or a URL without its password), for messages.
    fn location(&self) -> String;

    /// Creates the study `name` with `trials` as pending trials and returns its id. Reopening a study with
    /// the same set of trials (in any order) returns the same id and adds nothing; reopening it with a
    /// different set is [`SweepError::StudyMismatch`]. `space_json` is kept for the record when the study
    /// is created. Duplicate trials (same key) are stored once.
    fn open_study(&mut self, name: &str, space_json: &str, trials: &[TrialParams]) -> Result<i64>;

    /// Atomically takes the next trial (in the study's order) that is pending, or running with a heartbeat
    /// older than `stale_after` (its worker is presumed dead): marks it running under `worker` with a fresh
    /// heartbeat and `attempt + 1`. `None` when no trial is available.
    fn claim(&mut self, study: i64, worker: &str, stale_after: Duration) -> Result<Option<Claim>>;

    /// Refreshes the heartbeat of a running trial. `false` means the trial is no longer running under this
    /// attempt (taken over or reset): the worker should stop working on it.
    fn heartbeat(&mut self, trial_id: i64, attempt: i64) -> Result<bool>;

    /// Records `result` and marks the trial done, only if it is still running under this attempt.
    /// `false` means it was not recorded (another attempt owns the trial, or it already ended).
    fn complete(&mut self, trial_id: i64, attempt: i64, result: &Value) -> Result<bool>;

    /// Records `error` and marks the trial failed (final: failed trials are not retried), only if it is
    /// still running under this attempt. `false` means it was not recorded.
    fn fail(&mut self, trial_id: i64, attempt: i64, error: &str) -> Result<bool>;

    /// Every trial of the study, in the study's order.
    fn trials(&mut self, study: i64) -> Result<Vec<TrialRecord>>;

    /// Puts every running trial of the study back to pending and returns how many. For restarting a sweep
    /// on one machine, where no other worker can be alive; their attempts keep counting, so a late
    /// complete() from an old worker is refused.
    fn reset_running(&mut self, study: i64) -> Result<usize>;
}

/// Opens the storage named by `--storage`: `None` is the SQLite file `SWEEP_DIR/sweep.sqlite`,
/// `sqlite://PATH` an SQLite file (`sqlite:///abs/path` or `sqlite://rel/path`, relative to the current
/// directory), and `postgres://...` or `postgresql://...` a PostgreSQL server.
pub fn open_storage(url_or_none: Option<&str>, sweep_dir: &Path) -> Result<Box<dyn Storage>> {
    let Some(url) = url_or_none else {
        return Ok(Box::new(SqliteStorage::open(&sweep_dir.join(DEFAULT_SQLITE_FILE))?));
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(SweepError::StorageUrl { url: url.to_string() });
        }
        return Ok(Box::new(SqliteStorage::open(Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PostgresStorage::connect(url)?));
    }
    Err(SweepError::StorageUrl { url: redact_url(url) })
}

/// A URL with the password (if any) replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Decodes stored params JSON.
fn decode_params(storage: &str, text: &str) -> Result<TrialParams> {
    serde_json::from_str(text)
        .map_err(|e| SweepError::Corrupt { storage: storage.to_string(), message: format!("trial params {text:?}: {e}") })
}

/// Decodes a stored state name.
fn decode_state(storage: &str, text: &str) -> Result<TrialState> {
    TrialState::parse(text)
        .ok_or_else(|| SweepError::Corrupt { storage: storage.to_string(), message: format!("unknown trial state {text:?}") })
}

/// Decodes a stored result JSON.
fn decode_result(storage: &str, text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| SweepError::Corrupt { storage: storage.to_string(), message: format!("trial result {t:?}: {e}") })
    })
    .transpose()
}

/// The trials to insert: keys and params JSON, deduplicated by key, in first-seen order.
fn unique_trials(trials: &[TrialParams]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::with_capacity(trials.len());
    let mut out = Vec::with_capacity(trials.len());
    for t in trials {
        let key = super::space::trial_key(t);
        if seen.insert(key.clone()) {
            // The key is canonical JSON of the params, so it doubles as their stored form.
            out.push((key.clone(), key));
        }
    }
    out
}

/// The error for reopening a study with a different set of trials.
fn mismatch(
    study: &str,
    storage: &str,
    existing: &std::collections::HashSet<String>,
    requested: &[(String, String)],
) -> Option<SweepError> {
    let requested_keys: std::collections::HashSet<&String> = requested.iter().map(|(k, _)| k).collect();
    let added = requested_keys.iter().filter(|k| !existing.contains(k.as_str())).count();
    let removed = existing.iter().filter(|k| !requested_keys.contains(k)).count();
    (added > 0 || removed > 0).then(|| SweepError::StudyMismatch {
        study: study.to_string(),
        storage: storage.to_string(),
        existing: existing.len(),
        requested: requested_keys.len(),
        added,
        removed,
    })
}

/// The behaviour every backend must have, run by each backend's tests.
#[cfg(test)]
mod conformance {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    /// Makes a new connection to the same storage.
    pub(super) type Factory<'a> = &'a (dyn Fn() -> Box<dyn Storage> + Sync);

    fn params(n: usize) -> Vec<TrialParams> {
        (0..n).map(|i| TrialParams::from([("lora_r".to_string(), json!(i + 1)), ("lr".to_string(), json!(1e-4))])).collect()
    }

    pub(super) fn open_is_idempotent(connect: Factory, study: &str) {
        let mut s = connect();
        let trials = params(5);
        let id = s.open_study(study, "{}", &trials).unwrap();
        assert_eq!(s.open_study(study, "{}", &trials).unwrap(), id);
        let mut reversed = trials.clone();
        reversed.reverse();
        assert_eq!(connect().open_study(study, "{\"changed\":1}", &reversed).unwrap(), id, "order and space text do not matter");
        let records = s.trials(id).unwrap();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.state == TrialState::Pending && r.attempt == 0 && r.worker.is_none()));
        assert_eq!(records.iter().map(|r| r.params.clone()).collect::<Vec<_>>(), trials, "stored in the given order");

        let err = s.open_study(study, "{}", &params(6)).unwrap_err();
        assert!(matches!(err, SweepError::StudyMismatch { added: 1, removed: 0, .. }), "{err}");
        assert!(err.to_string().contains(study), "{err}");
        assert_eq!(s.trials(id).unwrap().len(), 5, "a refused reopen adds nothing");

        let other = format!("{study}-other");
        let dup = [trials[0].clone(), trials[0].clone()];
        let other_id = s.open_study(&other, "{}", &dup).unwrap();
        assert_ne!(other_id, id);
        assert_eq!(s.trials(other_id).unwrap().len(), 1, "duplicates are stored once");
    }

    pub(super) fn claims_in_order_and_records_outcomes(connect: Factory, study: &str) {
        let mut s = connect();
        let trials = params(3);
        let id = s.open_study(study, "{}", &trials).unwrap();
        let hour = Duration::from_secs(3600);
        let a = s.claim(id, "w1", hour).unwrap().unwrap();
        assert_eq!((a.attempt, &a.params, a.key.clone()), (1, &trials[0], crate::sweep::space::trial_key(&trials[0])));
        let b = s.claim(id, "w1", hour).unwrap().unwrap();
        assert_eq!(b.params, trials[1]);
        assert!(s.heartbeat(a.trial_id, 1).unwrap());
        assert!(s.complete(a.trial_id, 1, &json!({"accuracy": 0.9})).unwrap());
        assert!(s.fail(b.trial_id, 1, "out of memory").unwrap());
        assert!(!s.heartbeat(a.trial_id, 1).unwrap(), "a finished trial has no heartbeat");
        let c = s.claim(id, "w2", hour).unwrap().unwrap();
        assert_eq!(c.params, trials[2]);
        assert!(s.claim(id, "w2", hour).unwrap().is_none(), "failed trials are final and running ones are fresh");

        let records = s.trials(id).unwrap();
        let states: Vec<TrialState> = records.iter().map(|r| r.state).collect();
        assert_eq!(states, [TrialState::Done, TrialState::Failed, TrialState::Running]);
        assert_eq!(records[0].result, Some(json!({"accuracy": 0.9})));
        assert_eq!(records[1].error.as_deref(), Some("out of memory"));
        assert_eq!(records[2].worker.as_deref(), Some("w2"));
        assert!(records[0].started_at.is_some() && records[0].finished_at.is_some());
        assert!(records[2].started_at.is_some() && records[2].finished_at.is_none() && records[2].heartbeat_at.is_some());
        assert!(records[0].finished_at >= records[0].started_at);
    }

    pub(super) fn completes_exactly_once_after_takeover(connect: Factory, study: &str) {
        let mut first = connect();
        let mut second = connect();
        let id = first.open_study(study, "{}", &params(2)).unwrap();
        let hour = Duration::from_secs(3600);
        let a = first.claim(id, "first", hour).unwrap().unwrap();
        let fresh = second.claim(id, "second", hour).unwrap().unwrap();
        assert_ne!(fresh.trial_id, a.trial_id, "a fresh running trial is not taken over");
        assert!(second.complete(fresh.trial_id, fresh.attempt, &json!({"n": 0})).unwrap());

        std::thread::sleep(Duration::from_millis(60));
        let b = second.claim(id, "second", Duration::from_millis(10)).unwrap().unwrap();
        assert_eq!((b.trial_id, b.attempt), (a.trial_id, 2), "a stale trial is taken over with a new attempt");
        assert!(!first.heartbeat(a.trial_id, a.attempt).unwrap(), "the presumed-dead worker is told to stop");
        assert!(!first.complete(a.trial_id, a.attempt, &json!({"n": 1})).unwrap());
        assert!(second.complete(b.trial_id, b.attempt, &json!({"n": 2})).unwrap());
        assert!(!second.complete(b.trial_id, b.attempt, &json!({"n": 3})).unwrap(), "a trial ends once");
        assert!(!first.fail(a.trial_id, a.attempt, "woke up late").unwrap());
        let record = first.trials(id).unwrap().into_iter().find(|r| r.id == a.trial_id).unwrap();
        assert_eq!((record.state, record.attempt, record.result, record.error), (TrialState::Done, 2, Some(json!({"n": 2})), None));
        assert_eq!(record.worker.as_deref(), Some("second"));
        assert!(second.claim(id, "second", Duration::ZERO).unwrap().is_none(), "done trials are never reclaimed");
    }

    pub(super) fn reset_running_requeues_interrupted_trials(connect: Factory, study: &str) {
        let mut s = connect();
        let trials = params(3);
        let id = s.open_study(study, "{}", &trials).unwrap();
        let hour = Duration::from_secs(3600);
        let a = s.claim(id, "w", hour).unwrap().unwrap();
        let b = s.claim(id, "w", hour).unwrap().unwrap();
        assert!(s.complete(b.trial_id, b.attempt, &json!({})).unwrap());
        assert_eq!(s.reset_running(id).unwrap(), 1);
        assert_eq!(s.reset_running(id).unwrap(), 0);
        let states: Vec<TrialState> = s.trials(id).unwrap().iter().map(|r| r.state).collect();
        assert_eq!(states, [TrialState::Pending, TrialState::Done, TrialState::Pending]);
        let again = s.claim(id, "w", hour).unwrap().unwrap();
        assert_eq!((again.trial_id, again.attempt), (a.trial_id, 2));
        assert!(!s.complete(a.trial_id, a.attempt, &json!({})).unwrap(), "the interrupted attempt cannot complete");
        assert!(s.complete(again.trial_id, again.attempt, &json!({})).unwrap());
    }

    pub(super) fn concurrent_claims_never_share_a_trial(connect: Factory, study: &str) {
        let id = connect().open_study(study, "{}", &params(50)).unwrap();
        let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|w| {
                    scope.spawn(move || {
                        let mut s = connect();
                        let worker = format!("thread-{w}");
                        let mut mine = Vec::new();
                        while let Some(c) = s.claim(id, &worker, Duration::from_secs(3600)).unwrap() {
                            assert_eq!(c.attempt, 1, "no trial is claimed twice");
                            assert!(s.complete(c.trial_id, c.attempt, &json!({"worker": worker})).unwrap());
                            mine.push(c.trial_id);
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: usize = claimed.iter().map(Vec::len).sum();
        let unique: BTreeSet<i64> = claimed.iter().flatten().copied().collect();
        assert_eq!((total, unique.len()), (50, 50));
        let records = connect().trials(id).unwrap();
        assert!(records.iter().all(|r| r.state == TrialState::Done && r.attempt == 1));
        assert_eq!(records.iter().map(|r| r.id).collect::<BTreeSet<_>>(), unique);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgresql://h/db?user=x"), "postgresql://h/db?user=x");
        assert_eq!(redact_url("mysql://u:p@h/db"), "mysql://u:***@h/db");
    }

    #[test]
    fn open_storage_picks_the_backend_from_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = dir.path().join("sweep-out");
        let default = open_storage(None, &sweep).unwrap();
        assert!(default.location().ends_with("sweep-out/sweep.sqlite"), "{}", default.location());
        assert!(sweep.join(DEFAULT_SQLITE_FILE).exists());

        let file = dir.path().join("other.db");
        let explicit = open_storage(Some(&format!("sqlite://{}", file.display())), &sweep).unwrap();
        assert_eq!(explicit.location(), file.display().to_string());
        assert!(file.exists());

        for bad in ["mysql://u:pw@h/db", "sweep.sqlite", "sqlite://"] {
            let err = open_storage(Some(bad), &sweep).err().expect("refused").to_string();
            assert!(err.contains("sqlite://PATH") && err.contains("postgres://"), "{err}");
            assert!(!err.contains("pw@"), "passwords are not printed: {err}");
        }
    }
}
