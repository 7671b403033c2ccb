//! Hyperparameter sweeps: the search space ([`space`]), the trial storage shared by workers ([`storage`]),
//! the workers that run trials ([`runner`]), starting and joining a sweep ([`launch`]), the results
//! ([`report`]), and the error type ([`SweepError`]).

pub mod launch;
pub mod report;
pub mod runner;
pub mod space;
pub mod storage;

use std::path::PathBuf;

/// Shorthand for results whose error is a [`SweepError`].
pub type Result<T, E = SweepError> = std::result::Result<T, E>;

/// Errors raised while reading a search space, talking to trial storage, or running a trial.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A trial's training run (or another library step) failed.
    #[error(transparent)]
    Run(#[from] crate::error::Error),

    /// A file or folder could not be read, written or created.
    #[error("cannot {action} {}: {source}; check that the path exists and is writable", path.display())]
    Io {
        /// What was being done ("read", "create directory", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The seed's grid CSV (`--seed-grid`) cannot be read.
    #[error("seed grid {}: {message}; pass ../shared/reference/raschka_grid.csv", path.display())]
    SeedGrid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A search space file is not valid TOML or JSON, or has a field of the wrong shape.
    #[error("malformed search space {origin}: {message}; a space has method = \"grid\" or \"random\", an optional seed, trials (random only) and a params table mapping train options to a value, a list, or a range such as {{ log_uniform = [1e-5, 1e-3] }}")]
    MalformedSpace {
        /// The file (or preset name) being read.
        origin: String,
        /// The parser's message.
        message: String,
    },

    /// A search space file's extension is neither `.toml` nor `.json`.
    #[error("search space {}: unknown extension; name the file *.toml or *.json, or pass a preset name ({presets})", path.display())]
    SpaceExtension {
        /// The file.
        path: PathBuf,
        /// The preset names, comma-separated.
        presets: String,
    },

    /// `--space` named neither an existing file nor a preset.
    #[error("search space {arg:?} is neither a file nor a preset; pass a *.toml or *.json file, or one of the presets: {presets}")]
    UnknownSpace {
        /// What was passed.
        arg: String,
        /// The preset names, comma-separated.
        presets: String,
    },

    /// A search space names a parameter that is not a train option.
    #[error("search space {origin}: unknown parameter {name:?}; the parameters a sweep can vary are: {known}")]
    UnknownParam {
        /// The file (or preset name).
        origin: String,
        /// The unknown name.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },

    /// A parameter's value (or range) has the wrong type or lies outside what the train option accepts.
    #[error("search space {origin}: parameter {name}: {message}")]
    InvalidParam {
        /// The file (or preset name).
        origin: String,
        /// The parameter.
        name: String,
        /// What is wrong and what to write instead.
        message: String,
    },

    /// A grid search was given a continuous or integer range, which has no finite list of points.
    #[error("search space {origin}: parameter {name} is a range, which a grid cannot enumerate; set method = \"random\" or list the values, e.g. {name} = [1, 2, 3]")]
    RangeInGrid {
        /// The file (or preset name).
        origin: String,
        /// The parameter.
        name: String,
    },

    /// A parameter was given an empty list of values, which would leave the sweep with no trials.
    #[error("search space {origin}: parameter {name} has an empty list of values; give at least one value, or remove the parameter to use the train default")]
    EmptyList {
        /// The file (or preset name).
        origin: String,
        /// The parameter.
        name: String,
    },

    /// The search space's top-level settings (method, seed, trials) are inconsistent.
    #[error("search space {origin}: {message}")]
    InvalidSpace {
        /// The file (or preset name).
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The `--storage` URL has a form lowrank does not know.
    #[error("unknown storage {url:?}; use sqlite://PATH (a file, shared by workers on one machine), postgres://USER@HOST:PORT/DB or postgresql://... (shared by workers on several machines), or omit --storage for SWEEP_DIR/sweep.sqlite")]
    StorageUrl {
        /// The URL as given.
        url: String,
    },

    /// An SQLite storage file could not be opened or queried.
    #[error("sqlite storage {}: {source}; check that the file is a lowrank sweep database on a local disk (not NFS) and that no other program holds a long lock on it", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        source: rusqlite::Error,
    },

    /// A PostgreSQL server could not be reached or a query failed.
    #[error("postgres storage {url}: {source}; check that the server is running, the URL is right (postgres://USER[:PASSWORD]@HOST[:PORT]/DB) and the user may create tables")]
    Postgres {
        /// The server URL, with any password removed.
        url: String,
        /// The driver's error.
        source: Box<::postgres::Error>,
    },

    /// A study already exists in storage with a different set of trials than the space gives now.
    #[error("study {study:?} in {storage} already holds {existing} trials, but the search space now gives {requested} ({added} new, {removed} no longer in the space); a study's trials cannot change: use a new --out folder (or study name), or restore the original space")]
    StudyMismatch {
        /// The study's name.
        study: String,
        /// Where the study is stored.
        storage: String,
        /// How many trials the stored study has.
        existing: usize,
        /// How many trials the space gives now.
        requested: usize,
        /// How many of the space's trials the stored study lacks.
        added: usize,
        /// How many stored trials the space no longer gives.
        removed: usize,
    },

    /// A row in storage could not be decoded (edited by hand, or written by another program).
    #[error(
        "corrupt record in {storage}: {message}; the sweep database was modified outside lowrank: restore it or start a new sweep folder"
    )]
    Corrupt {
        /// Where the record is stored.
        storage: String,
        /// What could not be decoded.
        message: String,
    },
}
