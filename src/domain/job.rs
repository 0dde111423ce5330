//! Job identity and lifecycle.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InvalidInput, text_enum::text_enum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One run of a job: a claim creates it, and every write the run makes is
/// guarded by it, so a run that was rescued, cancelled or requeued (and so
/// replaced) can never record anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
pub struct RunId(pub Uuid);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_enum! {
    /// Where a job is in its life. `succeeded`, `failed` and `cancelled`
    /// are final (an admin may requeue a failed or cancelled job).
    pub enum JobStatus {
        Queued = "queued",
        Processing = "processing",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// What a `job_events` row records: a status change, including the ones
    /// that do not change `jobs.status` for long (a scheduled retry).
    pub enum JobEventKind {
        Queued = "queued",
        Processing = "processing",
        RetryScheduled = "retry_scheduled",
        Succeeded = "succeeded",
        Failed = "failed",
        Requeued = "requeued",
        Cancelled = "cancelled",
    }
}

impl JobEventKind {
    /// After these nothing more happens to the job (unless an admin
    /// requeues it, which starts a new stretch of events).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// Which PDF pages a job reads by OCR.
    #[derive(Default)]
    pub enum OcrMode {
        /// Pages without a usable text layer (scans): fewer than ten
        /// characters, or mostly glyphs that map to no character.
        #[default]
        Auto = "auto",
        /// None: the text layer only, and images without OCR text.
        Off = "off",
        /// Every page, whatever its text layer says.
        Force = "force",
    }
}

/// Tesseract language codes joined by `+` (`eng`, `eng+deu`, `chi_sim`):
/// lower-case letters, digits and `_`, at most 32 a code and 16 codes.
/// Anything else would reach tesseract's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcrLanguages(String);

impl OcrLanguages {
    pub const MAX_CODES: usize = 16;
    /// The syntax [`Self::parse`] accepts, for the OpenAPI schema.
    pub const PATTERN: &'static str = r"^[a-z0-9_]{1,32}(\+[a-z0-9_]{1,32}){0,15}$";

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let valid_code = |code: &str| {
            !code.is_empty()
                && code.len() <= 32
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if raw.split('+').count() > Self::MAX_CODES || !raw.split('+').all(valid_code) {
            return Err(InvalidInput::new(
                "ocr_languages",
                format!("{raw:?}: expected tesseract codes joined by '+', e.g. eng+deu"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// These languages, if every one is among `installed`.
    pub fn within(self, installed: &Self) -> Result<Self, InvalidInput> {
        let missing: Vec<&str> = self
            .0
            .split('+')
            .filter(|code| !installed.0.split('+').any(|have| have == *code))
            .collect();
        if missing.is_empty() {
            return Ok(self);
        }
        Err(InvalidInput::new(
            "ocr_languages",
            format!(
                "{} not available here (this server reads {})",
                missing.join(", "),
                installed.0
            ),
        ))
    }
}

text_enum! {
    /// Why a job ended up in the dead-letter queue.
    pub enum FailureReason {
        /// The document cannot be processed (corrupt, encrypted, unsupported).
        Permanent = "permanent",
        /// Retryable failures used up every attempt.
        TransientExhausted = "transient_exhausted",
        /// The extractor ran past its time limit.
        Timeout = "timeout",
        /// A crash or bug: the extractor died or the worker panicked.
        Unhandled = "unhandled",
    }
}

/// Order among one owner's queued jobs: higher runs first. `0` is normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Priority(i16);

impl Priority {
    pub const MIN: i16 = -10;
    pub const MAX: i16 = 10;

    pub fn parse(value: i64) -> Result<Self, InvalidInput> {
        i16::try_from(value)
            .ok()
            .filter(|v| (Self::MIN..=Self::MAX).contains(v))
            .map(Self)
            .ok_or_else(|| {
                InvalidInput::new(
                    "priority",
                    format!("must be between {} and {}", Self::MIN, Self::MAX),
                )
            })
    }

    pub fn get(self) -> i16 {
        self.0
    }
}

/// A client's Idempotency-Key: 1–255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "Idempotency-Key",
                "must be 1–255 visible ASCII characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocr_languages_are_codes_and_only_the_installed_ones() {
        let installed = OcrLanguages::parse("eng+deu+chi_sim").expect("valid");
        for asked in ["eng", "deu+eng", "chi_sim"] {
            let parsed = OcrLanguages::parse(asked).expect(asked);
            assert!(parsed.within(&installed).is_ok(), "{asked}");
        }
        let missing = OcrLanguages::parse("eng+fra")
            .expect("valid")
            .within(&installed)
            .expect_err("fra is not installed");
        assert!(
            missing.reason.contains("fra not available"),
            "{}",
            missing.reason
        );
        let too_many = vec!["eng"; OcrLanguages::MAX_CODES + 1].join("+");
        for bad in [
            "",
            "eng+",
            "ENG",
            "eng deu",
            "eng;rm",
            "../x",
            too_many.as_str(),
        ] {
            assert!(OcrLanguages::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
