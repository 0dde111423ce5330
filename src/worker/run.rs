//! One run of one claimed job: download the document into the scratch
//! directory, extract it in the sandbox pool, and classify what happened.
//! A run reads nothing from Postgres (the claim brought what it needs) and
//! writes nothing itself: its outcome goes to the completer.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use chrono::{DateTime, Utc};
use docflow_extract::{
    ContentKind, ExtractError, OcrStrategy,
    pool::{ExtractorPool, Job as ExtractJob, SandboxError},
    protocol::OcrRequest,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    db::jobs::queue::Claimed,
    domain::{JobId, OcrMode},
    jobs::state::Failure,
    storage::Storage,
};

/// What a run came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The result, as JSON text ready for `jsonb`.
    Succeeded(String),
    Failed(Failure),
    /// The owner cancelled the job while it ran; the cancel already
    /// recorded everything there is to record.
    Cancelled,
}

/// A finished run, as the completer takes it.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub started_at: DateTime<Utc>,
    pub elapsed: std::time::Duration,
}

/// OCR as this worker does it.
#[derive(Debug, Clone)]
pub struct OcrSettings {
    pub enabled: bool,
    /// Tesseract languages, joined by `+`.
    pub languages: String,
    pub timeout: std::time::Duration,
    /// PDF pages read by OCR per document, at most.
    pub max_pages: usize,
}

/// Runs jobs; shared by every run of one worker process.
pub struct Runner {
    storage: Storage,
    pool: ExtractorPool,
    scratch: PathBuf,
    ocr: OcrSettings,
    /// Runs in progress, so a cancel can stop one.
    running: Mutex<HashMap<JobId, CancellationToken>>,
}

impl Runner {
    pub fn new(storage: Storage, pool: ExtractorPool, scratch: PathBuf, ocr: OcrSettings) -> Self {
        Self {
            storage,
            pool,
            scratch,
            ocr,
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &ExtractorPool {
        &self.pool
    }

    /// The jobs whose runs are in progress here.
    pub fn running_jobs(&self) -> Vec<uuid::Uuid> {
        self.lock_running().keys().map(|job| job.0).collect()
    }

    /// Stops the run of `job` if this process has it (a cancel arrived).
    pub fn cancel(&self, job: JobId) -> bool {
        let running = self.lock_running();
        match running.get(&job) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs `claimed` to its outcome. A panic anywhere in the run is caught
    /// here and becomes an `unhandled` failure of this job only.
    pub async fn run(self: &Arc<Self>, claimed: Claimed) -> RunReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let cancel = CancellationToken::new();
        self.lock_running().insert(claimed.id, cancel.clone());
        let job_id = claimed.id;
        // The creating request's id goes on top of every log line of the
        // run, as it does on the API's lines for that request.
        let span = tracing::info_span!(
            "job.process",
            %job_id,
            attempts = claimed.attempts,
            request_id = tracing::field::Empty
        );
        if let Some(request_id) = &claimed.request_id {
            span.record("request_id", request_id.as_str());
        }
        crate::telemetry::set_parent_from(&span, claimed.traceparent.as_deref());
        let runner = Arc::clone(self);
        let outcome = guarded(
            job_id,
            async move {
                tracing::info!(%job_id, attempts = claimed.attempts, "job started");
                tokio::select! {
                    outcome = runner.extract(&claimed) => outcome,
                    () = cancel.cancelled() => RunOutcome::Cancelled,
                }
            }
            .instrument(span),
        )
        .await;
        self.lock_running().remove(&job_id);
        RunReport {
            outcome,
            started_at,
            elapsed: clock.elapsed(),
        }
    }

    async fn extract(&self, claimed: &Claimed) -> RunOutcome {
        match self.try_extract(claimed).await {
            Ok(json) => RunOutcome::Succeeded(json),
            Err(failure) => RunOutcome::Failed(failure),
        }
    }

    async fn try_extract(&self, claimed: &Claimed) -> Result<String, Failure> {
        let kind: ContentKind = claimed.content_type.parse().map_err(
            |e: docflow_extract::UnsupportedContentType| Failure::Permanent(e.to_string()),
        )?;
        // On the local store the extractor reads the object where it lies;
        // from S3 it is downloaded into the scratch directory first.
        let mut _download = None;
        let path = match self.storage.local_file(&claimed.storage_key) {
            Some(path) => {
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    return Err(Failure::Permanent("the stored file is missing".into()));
                }
                path
            }
            None => {
                let file = tempfile::Builder::new()
                    .prefix("job-")
                    .tempfile_in(&self.scratch)
                    .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
                self.download(&claimed.storage_key, file.path())
                    .instrument(tracing::info_span!("storage.download"))
                    .await?;
                // Removed when the run is over.
                _download.insert(file).path().to_path_buf()
            }
        };
        let strategy = match claimed.ocr {
            OcrMode::Auto => Some(OcrStrategy::Auto),
            OcrMode::Force => Some(OcrStrategy::Force),
            OcrMode::Off => None,
        };
        let ocr = strategy
            .filter(|_| self.ocr.enabled)
            .map(|strategy| OcrRequest {
                language: claimed
                    .ocr_languages
                    .clone()
                    .unwrap_or_else(|| self.ocr.languages.clone()),
                timeout_secs: self.ocr.timeout.as_secs(),
                strategy,
                max_pages: self.ocr.max_pages,
            });
        let extracted = self
            .pool
            .extract(ExtractJob {
                path: &path,
                kind,
                ocr,
            })
            .instrument(tracing::info_span!("extract", kind = %kind))
            .await;
        match extracted {
            Ok(json) => check_result(json),
            Err(SandboxError::Extract(ExtractError::Permanent(error))) => {
                Err(Failure::Permanent(error))
            }
            Err(SandboxError::Extract(ExtractError::Transient(error))) => {
                Err(Failure::Transient(error))
            }
            Err(err @ (SandboxError::TimedOut(_) | SandboxError::CpuTimeExceeded(_))) => {
                Err(Failure::Timeout(err.to_string()))
            }
            Err(err @ SandboxError::Crashed(_)) => Err(Failure::Crashed(err.to_string())),
            Err(err @ SandboxError::Spawn(_)) => Err(Failure::Transient(err.to_string())),
        }
    }

    async fn download(&self, key: &str, to: &std::path::Path) -> Result<(), Failure> {
        let object = match self.storage.get(key).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Failure::Permanent("the stored file is missing".into()));
            }
            Err(err) => return Err(Failure::Transient(format!("storage: {err}"))),
        };
        let mut out = tokio::fs::File::create(to)
            .await
            .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        let mut stream = object.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Failure::Transient(format!("storage: {e}")))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| Failure::Transient(format!("scratch space: {e}")))?;
        Ok(())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `work` in a task of its own, so that a panic anywhere in it (a bug
/// of ours or of a dependency) fails this job as `unhandled` and the worker
/// goes on.
pub async fn guarded(
    job_id: JobId,
    work: impl std::future::Future<Output = RunOutcome> + Send + 'static,
) -> RunOutcome {
    match tokio::spawn(work).await {
        Ok(outcome) => outcome,
        Err(join_error) => {
            let detail = panic_message(join_error);
            tracing::error!(%job_id, panic = %detail, "job run panicked");
            RunOutcome::Failed(Failure::Unhandled(format!("the worker panicked: {detail}")))
        }
    }
}

/// The extractor's JSON goes to Postgres as text: it must be JSON, and
/// jsonb cannot hold U+0000 (which PDF strings may contain). Checked here,
/// per job, so one bad result cannot fail a whole batch of writes.
fn check_result(json: String) -> Result<String, Failure> {
    let json = if json.contains("\\u0000") {
        // The rare slow path: rebuild without the NULs.
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| Failure::Crashed(format!("the extractor's result is not JSON: {e}")))?;
        serde_json::to_string(&strip_nul(value))
            .map_err(|e| Failure::Unhandled(format!("re-encoding the result: {e}")))?
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(&json)
            .map_err(|e| Failure::Crashed(format!("the extractor's result is not JSON: {e}")))?;
        json
    };
    Ok(json)
}

fn strip_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, strip_nul(v))).collect())
        }
        other => other,
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic payload".to_owned()),
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_checked_and_nul_free() {
        assert_eq!(
            check_result(r#"{"text":"A\u0000B","n":[1]}"#.into()),
            Ok(r#"{"n":[1],"text":"AB"}"#.into())
        );
        assert_eq!(
            check_result(r#"{"text":"ok"}"#.into()),
            Ok(r#"{"text":"ok"}"#.into())
        );
        assert!(matches!(
            check_result(r#"{"text":"#.into()),
            Err(Failure::Crashed(_))
        ));
    }
}
