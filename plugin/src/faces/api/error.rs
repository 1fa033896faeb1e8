//! The one error type of the faces: an [`ErrorKind`] (which the C API turns into its status
//! code) and the message every face shows; and the guard that turns a panic into one.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// What kind of failure an [`ApiError`] is; the C API maps each to its own status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Null,
    InvalidArgument,
    Io,
    Checkpoint,
    BufferTooSmall,
    Cancelled,
    Config,
    Image,
    Compute,
    Unsupported,
    OutOfMemory,
    /// A caught panic: a bug in the library.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io { .. } => ErrorKind::Io,
            Error::Checkpoint { .. } => ErrorKind::Checkpoint,
            Error::Invalid { .. } => ErrorKind::InvalidArgument,
            Error::Image { .. } => ErrorKind::Image,
            Error::Config(_) => ErrorKind::Config,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::OutOfMemory(_) => ErrorKind::OutOfMemory,
            Error::Candle(_) => ErrorKind::Compute,
        };
        Self { kind, message: e.to_string() }
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// Runs `f`, turning a panic into an [`ErrorKind::Internal`] error so that no unwinding crosses
/// the plugin boundary.
pub fn guard<T>(f: impl FnOnce() -> ApiResult<T>) -> ApiResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panic_error(payload)))
}

/// The error a caught panic becomes.
pub fn panic_error(payload: Box<dyn Any + Send>) -> ApiError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    ApiError::new(ErrorKind::Internal, format!("internal error (please report this bug): {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let e = guard::<()>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("boom 42"), "{}", e.message);
        let e = guard::<()>(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
    }
}
