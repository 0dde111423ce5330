//! The extractor process (`docflow extract --serve`): reads requests from
//! stdin, extracts each document under its own CPU budget, answers on
//! stdout, until stdin closes. It is the isolation boundary for hostile
//! files: an address-space limit set before the first byte is read, a CPU
//! limit per document, and a watchdog thread that ends the whole process
//! group (tesseract included) when a document overruns its wall clock or
//! the worker that started the process is gone.

use std::{
    io::{BufRead, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    sys::{
        resource::{UsageWho, getrusage},
        signal::{Signal, killpg},
    },
    unistd::{Pid, getppid, setpgid},
};

use crate::{
    ContentKind, ExtractError, ExtractionResult, Limits,
    protocol::{ERR_PREFIX, OK_PREFIX, Request},
};

/// How often the watchdog looks at the clock and at its parent.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Exit status when stdin closes (the worker is done with us).
pub const EXIT_DONE: i32 = 0;
/// Exit status when the limits could not be set: refuse to read anything.
pub const EXIT_NO_LIMITS: i32 = 70;

/// Runs the request loop. `parent` is the worker's pid: if it changes (the
/// worker died and we were re-parented), the process group ends itself.
pub fn serve(parent: u32, address_space_bytes: u64) -> i32 {
    // Lead a process group of our own, so the watchdog's kill reaches our
    // tesseract runs and nothing else, however we were started.
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    if let Err(err) = rlimit::setrlimit(
        rlimit::Resource::AS,
        address_space_bytes,
        address_space_bytes,
    ) {
        eprintln!("cannot set the address-space limit: {err}");
        return EXIT_NO_LIMITS;
    }
    let started = Instant::now();
    // Milliseconds since `started` at which the current document must be
    // done; 0 while idle.
    let deadline = Arc::new(AtomicU64::new(0));
    spawn_watchdog(parent, started, Arc::clone(&deadline));

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let until = started.elapsed() + Duration::from_secs(request.wall_clock_secs);
                deadline.store(
                    u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
                    Ordering::SeqCst,
                );
                let answer = handle(&request);
                deadline.store(0, Ordering::SeqCst);
                answer
            }
            Err(err) => Err(ExtractError::Permanent(format!(
                "the worker sent a request the extractor cannot read: {err}"
            ))),
        };
        if write_answer(&mut stdout, &answer).is_err() {
            break;
        }
    }
    EXIT_DONE
}

/// Extracts one document under its CPU budget.
fn handle(request: &Request) -> Result<ExtractionResult, ExtractError> {
    limit_cpu(request.cpu_seconds)
        .map_err(|err| ExtractError::Transient(format!("cannot set the CPU limit: {err}")))?;
    let kind = request
        .content_type
        .parse::<ContentKind>()
        .map_err(|err| ExtractError::Permanent(err.to_string()))?;
    let limits = Limits {
        ocr: request.ocr.as_ref().map(Into::into),
        ..Limits::default()
    }
    .within_cpu_seconds(request.cpu_seconds);
    crate::extract(&request.path, kind, &limits)
}

/// Writes one answer line. The result is encoded straight into the pipe:
/// a result of 16 MiB of text would otherwise be held twice more, as a
/// string growing by doubling, which a 256 MiB sandbox cannot spare.
/// Our result and error types always encode, so only the pipe can fail.
fn write_answer(
    out: &mut impl Write,
    answer: &Result<ExtractionResult, ExtractError>,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    match answer {
        Ok(result) => {
            out.write_all(OK_PREFIX.as_bytes())?;
            serde_json::to_writer(&mut out, result)?;
        }
        Err(error) => {
            out.write_all(ERR_PREFIX.as_bytes())?;
            serde_json::to_writer(&mut out, error)?;
        }
    }
    out.write_all(b"\n")?;
    out.flush()
}

/// Lets this document use `seconds` more of CPU: the soft limit moves to
/// what the process has used so far plus the budget (the kernel sends
/// SIGXCPU past it, which the worker reports as an overrun). The hard limit
/// is left alone, so the next document can move the soft one again.
fn limit_cpu(seconds: u64) -> std::io::Result<()> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).map_err(std::io::Error::from)?;
    let used = usage.user_time().tv_sec() + usage.system_time().tv_sec();
    let used = u64::try_from(used).unwrap_or(0);
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::CPU)?;
    let soft = (used + 1 + seconds).min(hard);
    rlimit::setrlimit(rlimit::Resource::CPU, soft, hard)
}

fn spawn_watchdog(parent: u32, started: Instant, deadline: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(WATCH_EVERY);
            let orphaned = u32::try_from(getppid().as_raw()).ok() != Some(parent);
            let due = deadline.load(Ordering::SeqCst);
            let overrun =
                due != 0 && u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) > due;
            if orphaned || overrun {
                // Our group: this process and any tesseract it started.
                let _ = killpg(Pid::from_raw(0), Signal::SIGKILL);
                std::process::exit(if orphaned { 71 } else { 72 });
            }
        }
    });
}

/// Exit status of `extract_once` when extraction failed (the error is the
/// JSON on stdout).
pub const EXIT_EXTRACT_ERROR: i32 = 3;

/// `docflow extract FILE`: limits itself, extracts one file, prints the
/// result (or `{"error": …}`) as one JSON line.
pub fn extract_once(
    path: &std::path::Path,
    kind: ContentKind,
    address_space_bytes: u64,
    cpu_seconds: u64,
    limits: &Limits,
) -> i32 {
    let limited = rlimit::setrlimit(
        rlimit::Resource::AS,
        address_space_bytes,
        address_space_bytes,
    )
    .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu_seconds, cpu_seconds + 5));
    if let Err(err) = limited {
        eprintln!("cannot set resource limits: {err}");
        return EXIT_NO_LIMITS;
    }
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout);
    // Encoded straight into stdout, as `write_answer` does.
    let (written, code) = match crate::extract(path, kind, limits) {
        Ok(result) => (serde_json::to_writer(&mut out, &result), 0),
        Err(error) => (
            serde_json::to_writer(&mut out, &serde_json::json!({ "error": error })),
            EXIT_EXTRACT_ERROR,
        ),
    };
    if let Err(err) = written
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        eprintln!("cannot write the result: {err}");
        return 1;
    }
    code
}
