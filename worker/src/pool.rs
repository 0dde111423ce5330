//! A pool of warm extractor processes (`docflow extract --serve`), the
//! worker's side of the sandbox. Starting a process per document cost more
//! than extracting a small one (exec, page faults, relocation); a warm
//! process serves many documents over a pipe instead, and the isolation
//! stays: each document runs in a child under rlimits, and a child that
//! crashes, overruns, talks nonsense or is cancelled mid-document is killed
//! with its process group and replaced, failing only that document.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{
    ContentKind, ExtractError,
    protocol::{Answer, OcrRequest, Request},
};

/// The most of one answer the worker reads: a PDF can inflate to far more
/// text than it weighs; past this the document fails instead of the worker
/// holding it (and Postgres refuses such jsonb anyway).
pub const MAX_ANSWER_BYTES: usize = 96 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `docflow` executable, resolved once at start-up: an in-place
    /// upgrade replaces the file, not this process's idea of it.
    pub program: PathBuf,
    /// Extractor processes at most (documents extracted at once).
    pub size: usize,
    /// Documents one process serves before it is replaced, so a slow leak
    /// or fragmentation in a parser cannot grow without bound.
    pub max_documents: u32,
    pub address_space_bytes: u64,
    /// CPU seconds one document may use.
    pub cpu_seconds: u64,
    /// Wall-clock limit of one document.
    pub wall_clock: Duration,
    /// Where the children keep temporary files (tesseract's): the worker's
    /// own scratch directory.
    pub scratch: PathBuf,
}

/// Why a sandboxed extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The extractor itself said why.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The child died (a signal, a memory limit, a crash) or talked nonsense.
    #[error("the extractor crashed: {0}")]
    Crashed(String),
    #[error("the extractor took longer than {0:?}")]
    TimedOut(Duration),
    /// The child hit its CPU limit (SIGXCPU): an overrun, not a crash.
    #[error("the extractor used more than {0} s of CPU time")]
    CpuTimeExceeded(u64),
    /// We could not start a child at all: this machine's fault, retryable.
    #[error("cannot start the extractor: {0}")]
    Spawn(std::io::Error),
}

/// What to extract and how.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub path: &'a Path,
    pub kind: ContentKind,
    pub ocr: Option<OcrRequest>,
}

pub struct ExtractorPool {
    config: PoolConfig,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Extractor>>,
    parent_pid: u32,
}

struct Extractor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    served: u32,
}

impl ExtractorPool {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.size.max(1))),
            idle: Mutex::new(Vec::new()),
            parent_pid: std::process::id(),
            config,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Starts every process now, so the first documents do not wait for
    /// them. A failure is left for the first `extract` to report.
    pub fn warm_up(&self) {
        let missing = self.config.size.saturating_sub(self.idle());
        for _ in 0..missing {
            match self.spawn() {
                Ok(extractor) => self.lock_idle().push(extractor),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start an extractor yet");
                    return;
                }
            }
        }
    }

    /// Warm processes right now (idle ones; busy ones are checked out).
    pub fn idle(&self) -> usize {
        self.lock_idle().len()
    }

    /// Extracts one document in a pooled child; the result as JSON text.
    /// Waits for a free process first. If this future is dropped mid-way (a
    /// cancelled job), the child working on it is killed.
    pub async fn extract(&self, job: Job<'_>) -> Result<String, SandboxError> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| SandboxError::Spawn(std::io::Error::other("the pool is closed")))?;
        let reused = self.lock_idle().pop();
        let extractor = match reused {
            Some(extractor) => extractor,
            None => self.spawn()?,
        };
        let mut checkout = Checkout {
            pool: self,
            extractor: Some(extractor),
            _permit: permit,
        };
        let request = Request {
            path: job.path.to_path_buf(),
            content_type: job.kind.mime().to_owned(),
            ocr: job.ocr,
            cpu_seconds: self.config.cpu_seconds,
            // A little past ours: while this worker lives, its own timeout
            // ends the document (and says so); the child's watchdog is for
            // when it does not.
            wall_clock_secs: self.config.wall_clock.as_secs() + 2,
        };
        let outcome = tokio::time::timeout(self.config.wall_clock, checkout.round_trip(&request))
            .await
            .unwrap_or(Err(SandboxError::TimedOut(self.config.wall_clock)));
        match outcome {
            Ok(answer) => {
                checkout.give_back();
                match answer {
                    Answer::Extracted(json) => Ok(json),
                    Answer::Failed(error) => Err(error.into()),
                }
            }
            Err(err) => {
                let err = match err {
                    // Say how it died, now that it is dead.
                    SandboxError::Crashed(detail) => checkout.kill_and_describe(detail).await,
                    other => {
                        checkout.kill();
                        other
                    }
                };
                Err(err)
            }
        }
    }

    fn spawn(&self) -> Result<Extractor, SandboxError> {
        let mut child = Command::new(&self.config.program)
            .arg("extract")
            .arg("--serve")
            .args(["--parent-pid", &self.parent_pid.to_string()])
            .args([
                "--address-space-bytes",
                &self.config.address_space_bytes.to_string(),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", &self.config.scratch)
            // tesseract's OpenMP threads fight each other on small machines.
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so its tesseract runs die with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(SandboxError::Spawn)?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| SandboxError::Spawn(std::io::Error::other("no stdin")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SandboxError::Spawn(std::io::Error::other("no stdout")))?;
        Ok(Extractor {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            served: 0,
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Extractor>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A process lent to one document. Dropped without `give_back` (an error,
/// a timeout, a cancelled job), it kills the process and its group.
struct Checkout<'a> {
    pool: &'a ExtractorPool,
    extractor: Option<Extractor>,
    _permit: OwnedSemaphorePermit,
}

impl Checkout<'_> {
    async fn round_trip(&mut self, request: &Request) -> Result<Answer, SandboxError> {
        let extractor = self
            .extractor
            .as_mut()
            .ok_or_else(|| SandboxError::Crashed("no process".into()))?;
        let mut line = serde_json::to_string(request)
            .map_err(|e| SandboxError::Crashed(format!("encoding the request: {e}")))?;
        line.push('\n');
        extractor
            .stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| SandboxError::Crashed(format!("it stopped reading: {e}")))?;
        extractor
            .stdin
            .flush()
            .await
            .map_err(|e| SandboxError::Crashed(format!("it stopped reading: {e}")))?;
        let mut answer = Vec::new();
        let read = (&mut extractor.stdout)
            .take(MAX_ANSWER_BYTES as u64 + 1)
            .read_until(b'\n', &mut answer)
            .await
            .map_err(|e| SandboxError::Crashed(format!("reading its answer: {e}")))?;
        if read == 0 {
            return Err(SandboxError::Crashed("it exited".into()));
        }
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(ExtractError::Permanent(format!(
                "the extracted result is larger than {} MiB",
                MAX_ANSWER_BYTES / (1024 * 1024)
            ))
            .into());
        }
        if answer.last() != Some(&b'\n') {
            return Err(SandboxError::Crashed("its answer broke off".into()));
        }
        answer.pop();
        let text = String::from_utf8(answer)
            .map_err(|_| SandboxError::Crashed("its answer is not UTF-8".into()))?;
        let parsed = Answer::parse(&text)
            .ok_or_else(|| SandboxError::Crashed("its answer is not in the protocol".into()))?;
        extractor.served += 1;
        Ok(parsed)
    }

    /// Returns a healthy process to the pool, or retires it after its quota.
    fn give_back(&mut self) {
        if let Some(extractor) = self.extractor.take() {
            if extractor.served < self.pool.config.max_documents {
                self.pool.lock_idle().push(extractor);
            } else {
                // Closing stdin ends it; kill_on_drop covers a stuck one.
                drop(extractor);
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut extractor) = self.extractor.take() {
            kill_group(&extractor.child);
            let _ = extractor.child.start_kill();
        }
    }

    /// Collects the process that broke off and says how it ended (the
    /// signal it died of says more than "it exited"); kills it if it lingers.
    async fn kill_and_describe(&mut self, detail: String) -> SandboxError {
        let Some(mut extractor) = self.extractor.take() else {
            return SandboxError::Crashed(detail);
        };
        let status = tokio::time::timeout(Duration::from_secs(1), extractor.child.wait()).await;
        kill_group(&extractor.child);
        match status {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(nix::sys::signal::Signal::SIGXCPU as i32) {
                    SandboxError::CpuTimeExceeded(self.pool.config.cpu_seconds)
                } else {
                    SandboxError::Crashed(format!("{detail}: {}", describe(status)))
                }
            }
            _ => {
                let _ = extractor.child.start_kill();
                SandboxError::Crashed(detail)
            }
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| signal.to_string());
            let hint = match name.as_str() {
                "SIGSEGV" => " (stack overflow or memory fault)",
                "SIGABRT" => " (aborted; often out of memory under the address-space limit)",
                "SIGKILL" => " (killed)",
                _ => "",
            };
            format!("killed by {name}{hint}")
        }
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended abnormally".to_owned(),
    }
}
