//! Runs extraction in a child process (`docflow extract`), the isolation
//! boundary for hostile files: a parser that overflows its stack, exhausts
//! memory or spins can only kill or stall the child, which is bounded by an
//! address-space and CPU-time rlimit (set by the child on itself before it
//! reads a byte) and a wall-clock timeout here. The worker goes on.

use std::{path::Path, process::Stdio, time::Duration};

use docflow_worker::{ContentKind, ExtractError, ExtractionResult};
use serde::{Deserialize, Serialize};
use tokio::{io::AsyncReadExt, process::Command};

/// Exit code of a child that reports an [`ExtractError`] on stdout.
pub const EXIT_EXTRACT_ERROR: i32 = 3;

/// The most of a child's output the worker reads. A PDF can inflate to far
/// more text than it weighs; past this the job fails instead of the worker
/// running out of memory holding it (and Postgres refuses such jsonb anyway).
const MAX_RESULT_BYTES: u64 = 96 * 1024 * 1024;
const MAX_STDERR_BYTES: u64 = 64 * 1024;

/// What the child prints on stdout when extraction fails (exit status
/// [`EXIT_EXTRACT_ERROR`]); on success it prints the [`ExtractionResult`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildError {
    pub error: ExtractError,
}

#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// The `docflow` executable to run as the child; `None` = this process's
    /// own executable (tests point it at the built binary).
    pub program: Option<std::path::PathBuf>,
    pub address_space_bytes: u64,
    pub cpu_seconds: u64,
    pub wall_clock: Duration,
    pub ocr: bool,
    pub ocr_timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            program: None,
            address_space_bytes: 2 * 1024 * 1024 * 1024,
            cpu_seconds: 120,
            wall_clock: Duration::from_secs(180),
            ocr: true,
            ocr_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a sandboxed extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The extractor itself said why.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The child died (a signal, an rlimit, a crash) or printed nonsense.
    #[error("the extractor crashed: {0}")]
    Crashed(String),
    #[error("the extractor took longer than {0:?}")]
    TimedOut(Duration),
    /// The child hit its CPU-time rlimit (SIGXCPU): an overrun like
    /// `TimedOut`, not a crash.
    #[error("the extractor used more than {0} s of CPU time")]
    CpuTimeExceeded(u64),
    /// We could not start the child at all: this machine's fault, retryable.
    #[error("cannot start the extractor: {0}")]
    Spawn(std::io::Error),
}

/// Extracts `path` in a fresh child process of the current executable.
pub async fn extract_in_child(
    path: &Path,
    kind: ContentKind,
    limits: &SandboxLimits,
) -> Result<ExtractionResult, SandboxError> {
    let exe = match &limits.program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(SandboxError::Spawn)?,
    };
    let mut command = Command::new(exe);
    command
        .arg("extract")
        .arg(path)
        .args(["--content-type", kind.mime()])
        .args([
            "--address-space-bytes",
            &limits.address_space_bytes.to_string(),
        ])
        .args(["--cpu-seconds", &limits.cpu_seconds.to_string()])
        .args([
            "--ocr-timeout-secs",
            &limits.ocr_timeout.as_secs().to_string(),
        ])
        // tesseract's OpenMP threads fight each other on small machines.
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so tesseract grandchildren die with it.
        .process_group(0)
        .kill_on_drop(true);
    if !limits.ocr {
        command.arg("--no-ocr");
    }
    let mut child = command.spawn().map_err(SandboxError::Spawn)?;
    let pid = child.id();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| SandboxError::Crashed("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| SandboxError::Crashed("no stderr".into()))?;

    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut bounded_out = (&mut stdout).take(MAX_RESULT_BYTES + 1);
        let mut bounded_err = (&mut stderr).take(MAX_STDERR_BYTES);
        let (read_out, read_err) = tokio::join!(
            bounded_out.read_to_end(&mut out),
            bounded_err.read_to_end(&mut err)
        );
        read_out.map_err(|e| SandboxError::Crashed(format!("reading its output: {e}")))?;
        let _ = read_err;
        if out.len() as u64 > MAX_RESULT_BYTES {
            // Stop it now: it would block on a pipe nobody reads any more.
            kill_group(pid);
        }
        let status = child
            .wait()
            .await
            .map_err(|e| SandboxError::Crashed(format!("waiting for it: {e}")))?;
        Ok::<_, SandboxError>((status, out, err))
    };
    let outcome = tokio::time::timeout(limits.wall_clock, run).await;
    kill_group(pid);
    let (status, out, err) = outcome.map_err(|_| SandboxError::TimedOut(limits.wall_clock))??;
    if out.len() as u64 > MAX_RESULT_BYTES {
        return Err(ExtractError::Permanent(format!(
            "the extracted result is larger than {} MiB",
            MAX_RESULT_BYTES / (1024 * 1024)
        ))
        .into());
    }

    // Our JSON is the last line: rusty-tesseract prints its command line to
    // stdout before it.
    let last_line = out
        .split(|&b| b == b'\n')
        .rev()
        .find(|line| !line.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    if status.success()
        && let Ok(result) = serde_json::from_slice::<ExtractionResult>(last_line)
    {
        return Ok(result);
    }
    if status.code() == Some(EXIT_EXTRACT_ERROR)
        && let Ok(ChildError { error }) = serde_json::from_slice::<ChildError>(last_line)
    {
        return Err(error.into());
    }
    if std::os::unix::process::ExitStatusExt::signal(&status)
        == Some(nix::sys::signal::Signal::SIGXCPU as i32)
    {
        return Err(SandboxError::CpuTimeExceeded(limits.cpu_seconds));
    }
    {
        {
            let stderr_tail = String::from_utf8_lossy(&err);
            let stderr_tail = stderr_tail.trim();
            let from = stderr_tail.ceil_char_boundary(stderr_tail.len().saturating_sub(300));
            let stderr_tail = &stderr_tail[from..];
            Err(SandboxError::Crashed(format!(
                "{}; stderr: {stderr_tail:?}",
                describe(status)
            )))
        }
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
                "SIGXCPU" => " (CPU-time limit)",
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

/// Kills whatever is left in the child's process group (a tesseract run
/// that outlived its parent).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The child's side: limit ourselves, extract, print one JSON line, exit.
pub fn run_child(
    path: &Path,
    kind: ContentKind,
    address_space_bytes: u64,
    cpu_seconds: u64,
    limits: &docflow_worker::Limits,
) -> i32 {
    // Hard limits, set before the file is opened: past them the kernel
    // stops the allocation or signals the process; nothing here can undo it.
    let limited = rlimit::setrlimit(
        rlimit::Resource::AS,
        address_space_bytes,
        address_space_bytes,
    )
    .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu_seconds, cpu_seconds + 5));
    if let Err(err) = limited {
        eprintln!("cannot set resource limits: {err}");
        return 1;
    }
    let (encoded, code) = match docflow_worker::extract(path, kind, limits) {
        Ok(result) => (serde_json::to_string(&result), 0),
        Err(error) => (
            serde_json::to_string(&ChildError { error }),
            EXIT_EXTRACT_ERROR,
        ),
    };
    match encoded {
        Ok(json) => println!("{json}"),
        Err(err) => {
            eprintln!("cannot encode the result: {err}");
            return 1;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn a_child_stopped_by_its_cpu_limit_is_an_overrun_not_a_crash() {
        // The real `docflow extract` sets RLIMIT_CPU on itself (soft limit,
        // hard limit 5 s above); this child does the same and then spins, as
        // a hostile file would make it.
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("spin");
        std::fs::write(
            &program,
            "#!/bin/bash\nulimit -H -t 6\nulimit -S -t 1\nwhile :; do :; done\n",
        )
        .expect("write");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let input = dir.path().join("input.txt");
        std::fs::write(&input, "x").expect("write");
        let limits = SandboxLimits {
            program: Some(program),
            cpu_seconds: 1,
            wall_clock: Duration::from_secs(30),
            ..SandboxLimits::default()
        };
        let outcome = extract_in_child(&input, ContentKind::Text, &limits).await;
        assert!(
            matches!(outcome, Err(SandboxError::CpuTimeExceeded(1))),
            "{outcome:?}"
        );
    }
}
