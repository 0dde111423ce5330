//! OCR through the `tesseract` command-line program: one run per image, its
//! word table (TSV) read back, the process killed if it overruns.
//!
//! We call the program directly instead of through a wrapper crate: the one
//! we used pulled in every `image` codec (AVIF encoding included) for the
//! two it needed, could not kill a run that timed out, and panicked on
//! output that was not UTF-8.

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{ExtractError, OcrOptions};

/// What tesseract read.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    /// Words joined by spaces, lines by newlines.
    pub text: String,
    /// Mean word confidence (0–100); `None` when no word was read.
    pub mean_confidence: Option<f64>,
    pub words: usize,
}

/// The most of tesseract's table we read; a page of text is a few hundred
/// KiB of TSV.
const MAX_TSV_BYTES: u64 = 32 * 1024 * 1024;

/// Runs tesseract on the image at `path`, assuming `dpi` when the image does
/// not say. A timeout is transient (the machine was busy); a failure of
/// tesseract itself is permanent.
pub fn recognize(path: &Path, options: &OcrOptions, dpi: u32) -> Result<Recognized, ExtractError> {
    let mut child = Command::new("tesseract")
        .arg(path)
        .arg("stdout")
        .args(["-l", &options.language])
        .args(["--dpi", &dpi.to_string()])
        // Automatic page segmentation with orientation and script detection:
        // rotated scans read as nothing otherwise.
        .args(["--psm", "1", "--oem", "3"])
        .arg("tsv")
        // Its OpenMP threads fight each other on small machines.
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExtractError::Transient(format!("cannot start tesseract: {e}")))?;
    // Read both pipes on threads of their own, so a large table cannot block
    // tesseract on a full pipe while we wait for it to exit.
    let stdout = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.take(MAX_TSV_BYTES).read_to_end(&mut buf);
            buf
        })
    });
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.take(64 * 1024).read_to_end(&mut buf);
            buf
        })
    });
    let status = wait_until(&mut child, options.timeout, "tesseract")?;
    let tsv = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        let detail = String::from_utf8_lossy(&err);
        let detail = detail.trim();
        let from = detail.ceil_char_boundary(detail.len().saturating_sub(300));
        return Err(ExtractError::Permanent(format!(
            "tesseract failed ({status}): {}",
            &detail[from..]
        )));
    }
    Ok(parse_tsv(&String::from_utf8_lossy(&tsv)))
}

/// Waits for `child` at most `timeout`, killing it past that. A timeout is
/// transient: the machine was busy.
pub(crate) fn wait_until(
    child: &mut Child,
    timeout: Duration,
    program: &str,
) -> Result<ExitStatus, ExtractError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExtractError::Transient(format!(
                    "{program} did not finish within {}s",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                return Err(ExtractError::Transient(format!(
                    "waiting for {program}: {e}"
                )));
            }
        }
    }
}

/// Rebuilds text from tesseract's TSV: level-5 rows are words, and their
/// page/block/paragraph/line numbers say where lines break.
fn parse_tsv(tsv: &str) -> Recognized {
    let mut text = String::new();
    let mut last_line = None;
    let mut confidence_sum = 0.0;
    let mut confident_words = 0usize;
    let mut words = 0usize;
    for row in tsv.lines().skip(1) {
        let columns: Vec<&str> = row.splitn(12, '\t').collect();
        let [
            level,
            page,
            block,
            paragraph,
            line,
            _,
            _,
            _,
            _,
            _,
            conf,
            word,
        ] = columns[..]
        else {
            continue;
        };
        let word = word.trim();
        if level != "5" || word.is_empty() {
            continue;
        }
        let at = (page, block, paragraph, line);
        match last_line {
            Some(previous) if previous == at => text.push(' '),
            Some(_) => text.push('\n'),
            None => {}
        }
        last_line = Some(at);
        text.push_str(word);
        words += 1;
        if let Ok(conf) = conf.trim().parse::<f64>()
            && conf >= 0.0
        {
            confidence_sum += conf;
            confident_words += 1;
        }
    }
    Recognized {
        text,
        mean_confidence: (confident_words > 0).then(|| confidence_sum / confident_words as f64),
        words,
    }
}

/// Whether tesseract runs and knows `language`: checked at start-up, so a
/// worker that cannot OCR refuses to start instead of failing every image.
pub fn check(language: &str) -> Result<String, String> {
    let version = Command::new("tesseract")
        .arg("--version")
        .output()
        .map_err(|e| format!("the `tesseract` binary is not usable ({e})"))?;
    let text = String::from_utf8_lossy(&version.stdout).into_owned()
        + &String::from_utf8_lossy(&version.stderr);
    let version = text
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("tesseract"))
        .ok_or_else(|| "unexpected `tesseract --version` output".to_owned())?;
    let langs = Command::new("tesseract")
        .arg("--list-langs")
        .output()
        .map_err(|e| format!("cannot list tesseract languages: {e}"))?;
    let listed = String::from_utf8_lossy(&langs.stdout);
    let missing: Vec<&str> = language
        .split('+')
        .filter(|wanted| !listed.lines().any(|l| l.trim() == *wanted))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{version} has no data for {} (installed: {})",
            missing.join(", "),
            listed
                .lines()
                .skip(1)
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(version)
}

/// Whether poppler's `pdftoppm`, which renders PDF pages for OCR, runs:
/// its version line.
pub fn check_renderer() -> Result<String, String> {
    let output = Command::new("pdftoppm")
        .arg("-v")
        .output()
        .map_err(|e| format!("the `pdftoppm` binary is not usable ({e})"))?;
    // It prints its version on stderr.
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("pdftoppm version"))
        .map(str::to_owned)
        .ok_or_else(|| "unexpected `pdftoppm -v` output".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_joined_into_lines() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t0\t0\t10\t10\t90\tHello\n\
                   5\t1\t1\t1\t1\t2\t0\t0\t10\t10\t80\tworld\n\
                   5\t1\t1\t1\t2\t1\t0\t0\t10\t10\t70\tagain\n\
                   5\t1\t1\t1\t2\t2\t0\t0\t10\t10\t-1\t \n";
        let read = parse_tsv(tsv);
        assert_eq!(read.text, "Hello world\nagain");
        assert_eq!(read.words, 3);
        assert_eq!(read.mean_confidence, Some(80.0));
    }

    #[test]
    fn an_empty_table_reads_as_no_text() {
        let read = parse_tsv("level\tpage_num\n");
        assert_eq!(read.text, "");
        assert_eq!(read.mean_confidence, None);
    }
}
