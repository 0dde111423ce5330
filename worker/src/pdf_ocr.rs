//! OCR for PDF pages without a text layer (scans, photographed pages): each
//! page is rendered in grey by poppler's `pdftoppm`, then read by
//! tesseract, several pages at once.
//!
//! Why `pdftoppm`: it is Debian's, maintained with poppler, renders every
//! page kind (JBIG2, CCITT, JPX, masks, rotation) the way pdftotext reads
//! it, and runs as a process of its own, so a hostile page is bounded by a
//! timeout and the extractor's own rlimits. Decoding a page's single image
//! ourselves would miss rotation, masks and those codecs; pdfium would add
//! a binary outside Debian. Measured in docs/benchmarks.md.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use crate::{
    ExtractError, OcrOptions,
    ocr::{Recognized, recognize, wait_until},
};

/// The resolution pages are rendered at, unless the pixel limit asks for
/// less: tesseract reads best at 300 dpi.
pub const RENDER_DPI: u32 = 300;
/// Pages read at the same time, at most.
const MAX_PARALLEL_PAGES: usize = 4;

/// A page to read, with its size in points.
pub struct PageToRead {
    pub number: u32,
    pub width_pt: Option<f64>,
    pub height_pt: Option<f64>,
}

/// What OCR made of one page; a page that could not be rendered or read
/// has the reason instead.
pub struct PageRead {
    pub number: u32,
    pub result: Result<Recognized, String>,
}

/// Renders and reads `pages` of the PDF at `path`. A tool that cannot be
/// started fails the document (transiently: the machine is at fault);
/// a page that fails to render or read keeps its reason, and the rest go
/// on.
pub fn read_pages(
    path: &Path,
    pages: &[PageToRead],
    options: &OcrOptions,
    max_pixels: u64,
) -> Result<Vec<PageRead>, ExtractError> {
    let scratch = tempfile::Builder::new()
        .prefix("docflow-ocr-")
        .tempdir()
        .map_err(|e| ExtractError::Transient(format!("OCR scratch space: {e}")))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_PARALLEL_PAGES)
        .min(pages.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let reads = Mutex::new(Vec::with_capacity(pages.len()));
    let fatal = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(page) = pages.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    match read_page(path, page, options, max_pixels, scratch.path()) {
                        Ok(read) => lock(&reads).push(read),
                        Err(err) => {
                            stop.store(true, Ordering::Relaxed);
                            lock(&fatal).get_or_insert(err);
                        }
                    }
                }
            });
        }
    });
    if let Some(err) = lock(&fatal).take() {
        return Err(err);
    }
    let mut reads = std::mem::take(&mut *lock(&reads));
    reads.sort_by_key(|read| read.number);
    Ok(reads)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_page(
    path: &Path,
    page: &PageToRead,
    options: &OcrOptions,
    max_pixels: u64,
    scratch: &Path,
) -> Result<PageRead, ExtractError> {
    let dpi = render_dpi(page, max_pixels);
    let prefix = scratch.join(format!("page-{}", page.number));
    let number = page.number.to_string();
    let mut child = Command::new("pdftoppm")
        .args(["-r", &dpi.to_string(), "-gray", "-png", "-singlefile"])
        .args(["-f", &number, "-l", &number])
        .arg(path)
        .arg(&prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ExtractError::Transient(format!("cannot start pdftoppm: {e}")))?;
    let image = prefix.with_extension("png");
    let result = match wait_until(&mut child, options.timeout, "pdftoppm") {
        Ok(status) if status.success() => match recognize(&image, options, dpi) {
            Ok(read) => Ok(read),
            Err(ExtractError::Transient(why) | ExtractError::Permanent(why)) => Err(why),
        },
        Ok(status) => Err(format!("pdftoppm could not render the page ({status})")),
        Err(ExtractError::Transient(why) | ExtractError::Permanent(why)) => Err(why),
    };
    let _ = std::fs::remove_file(&image);
    Ok(PageRead {
        number: page.number,
        result,
    })
}

/// `RENDER_DPI`, or less for a page that would exceed `max_pixels` at it.
fn render_dpi(page: &PageToRead, max_pixels: u64) -> u32 {
    let width = page.width_pt.unwrap_or(612.0).abs().max(1.0);
    let height = page.height_pt.unwrap_or(792.0).abs().max(1.0);
    let dpi = f64::from(RENDER_DPI);
    let pixels = (width / 72.0 * dpi) * (height / 72.0 * dpi);
    if pixels <= max_pixels as f64 {
        return RENDER_DPI;
    }
    (dpi * (max_pixels as f64 / pixels).sqrt()).floor().max(1.0) as u32
}

/// Whether a page's text layer is too thin to stand for the page: fewer
/// than ten characters, or mostly glyphs that map to nothing readable
/// (U+FFFD, private use, control characters).
pub fn needs_ocr(text: &str) -> bool {
    let (mut visible, mut unmapped) = (0_usize, 0_usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        visible += 1;
        if c == '\u{fffd}' || c.is_control() || ('\u{e000}'..='\u{f8ff}').contains(&c) {
            unmapped += 1;
        }
    }
    visible < 10 || unmapped * 2 >= visible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_or_unmapped_text_layers_need_ocr() {
        assert!(needs_ocr(""));
        assert!(needs_ocr("  p. 12  "));
        assert!(needs_ocr(
            "\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}ab cd ef"
        ));
        assert!(!needs_ocr("A page of ordinary text."));
    }

    #[test]
    fn large_pages_render_below_the_pixel_limit() {
        let letter = PageToRead {
            number: 1,
            width_pt: Some(612.0),
            height_pt: Some(792.0),
        };
        assert_eq!(render_dpi(&letter, 50_000_000), RENDER_DPI);
        let poster = PageToRead {
            number: 1,
            width_pt: Some(14_400.0),
            height_pt: Some(14_400.0),
        };
        let dpi = render_dpi(&poster, 50_000_000);
        let pixels = (200.0 * f64::from(dpi)).powi(2);
        assert!(pixels <= 50_000_000.0 && dpi >= 30, "{dpi}");
    }
}
