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

    /// Over the memory budget, or memory the system refused: the message gives the estimate,
    /// the budget and how to change it.
    #[error("{0}")]
    OutOfMemory(String),

    #[error("cancelled")]
    Cancelled,

    #[error("{}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is
/// set: a message for the user is the message (a debugger has the backtrace).
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        e => e.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_errors_reach_the_user_without_their_backtrace() {
        use candle_core::Error as E;
        let bt = E::WithBacktrace {
            inner: Box::new(E::Msg("conv2d: input has 3 channels, kernel expects 1".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let e = Error::from(bt.context("step 1"));
        assert_eq!(e.to_string(), "step 1: conv2d: input has 3 channels, kernel expects 1");
    }
}
