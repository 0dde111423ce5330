//! Domain types that parse instead of validate: once a value of one of these
//! types exists, it is known to be well-formed.

mod document;
mod email;
mod job;
mod password;
mod text_enum;
mod user;

pub use document::{DocumentId, Filename};
pub use email::{Email, PATTERN as EMAIL_PATTERN};
pub use job::{
    FailureReason, IdempotencyKey, JobEventKind, JobId, JobStatus, OcrLanguages, OcrMode, Priority,
    RunId,
};
pub use password::Password;
pub use user::{Role, UserId};

/// Why a client-supplied value was refused; rendered as 422.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
