//! The plugin's error type: every failure names the file, tensor, key or argument it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A checkpoint that cannot be read or does not fit the network.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// A bad argument or option, named.
    #[error("invalid {what}: {msg}")]
    Invalid { what: String, msg: String },

    #[error("{path}: cannot decode image: {msg}")]
    Image { path: PathBuf, msg: String },

    /// TOML configuration errors carry the key and line.
    #[error("{0}")]
    Config(String),

    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid { what: what.into(), msg: msg.into() }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.into(), msg: msg.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
