//! The library's one error type.
//!
//! Variants are named after the action that failed and carry the path, stage or item they concern, so the
//! CLI can print a message that says *what* and *where* without extra context. Item-level failures (one bad
//! image) are not errors of this type at the run level: they become failed manifest rows.

use std::path::PathBuf;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- pipeline definition ----
    /// The pipeline file is not valid: `at` is `file:line:column`.
    #[error("{at}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Pipeline { at: String, message: String, hint: Option<String> },

    /// A `--set stage.param=value` override could not be applied.
    #[error("--set {spec}: {message}")]
    Override { spec: String, message: String },

    // ---- workspace ----
    /// Another run holds the workspace lock.
    #[error("workspace {workspace} is locked by another run ({holder}); wait for it or stop it")]
    Locked { workspace: PathBuf, holder: String },

    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, #[source] source: std::io::Error },

    /// A manifest could not be read or written.
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },

    // ---- execution ----
    /// The dataflow runtime failed (cluster connection, worker panic).
    #[error("execution failed: {0}")]
    Execution(String),

    /// A stage id given on the command line does not exist.
    #[error("no stage named `{id}` in the pipeline{}", hint.as_ref().map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default())]
    UnknownStage { id: String, hint: Option<String> },

    /// Anything a stage reports for one item (becomes a failed manifest row).
    #[error("{0}")]
    Item(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an I/O error with the path and what was being done.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// Adds a path to `std::io::Result`s.
pub trait IoContext<T> {
    /// Maps an I/O error into [`Error::Io`] naming `action` and `path`.
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

/// Creates an [`Error::Item`] with a formatted message.
#[macro_export]
macro_rules! item_err {
    ($($arg:tt)*) => { $crate::error::Error::Item(format!($($arg)*)) };
}
