//! Mutation fuzzing of the extractors, for a bounded time: well-formed
//! seeds (PDFs with text, forms, fonts and compressed streams; a PNG; a
//! JPEG) are damaged the ways files get damaged (bytes flipped, ranges cut,
//! duplicated or spliced from another seed, the file cut short) and each
//! result goes through `docflow_extract::extract` in this process, with OCR
//! off. Any panic or abort fails the test; every outcome must be a result
//! or a clear error. The run is reproducible: a fixed seed for the random
//! numbers, printed with the iteration that failed.
//!
//! `FUZZ_SECS` (default 20) bounds the time; CI runs the default.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use docflow_extract::{ContentKind, ExtractError, Limits};
use image::ImageEncoder;

/// xorshift64*: small, fast and reproducible; quality is beside the point.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn pdf_of(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 2 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    // A stored (uncompressed) zlib stream: valid FlateDecode without a
    // compressor among our dependencies.
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = u16::try_from(chunk.len()).expect("chunk");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&(b << 16 | a).to_be_bytes());
    out
}

/// Seeds: a PDF exercising what the text reader follows (fonts with
/// widths and a ToUnicode map, a form XObject, TJ arrays, an inline image,
/// two pages, a compressed stream), and the image kinds.
fn seeds() -> Vec<(ContentKind, Vec<u8>)> {
    let page = b"BT /F1 12 Tf 72 720 Td [(Hel) -20 (lo) -300 (world)] TJ T* (next line) Tj ET \
q 1 0 0 1 10 10 cm /Fm1 Do Q BI /W 2 /H 2 /BPC 8 /CS /G ID \x00\x10\x20\x30 EI \
BT /F2 10 Tf 1 0 0 1 72 600 Tm <0001 0002> Tj ET";
    let form = b"BT /F1 9 Tf 0 0 Td (inside a form) Tj ET";
    let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap \
1 begincodespacerange <0000> <FFFF> endcodespacerange \
2 beginbfchar <0001> <0041> <0002> <00DF> endbfchar endcmap end end";
    let pdf = pdf_of(&[
        b"<< /Type /Catalog /Pages 3 0 R >>".to_vec(),
        b"<< /Title (Fuzz seed) /Author <FEFF00410042> /CreationDate (D:20240102030405+01'00') >>"
            .to_vec(),
        b"<< /Type /Pages /Kids [4 0 R 5 0 R] /Count 2 /MediaBox [0 0 612 792] >>".to_vec(),
        b"<< /Type /Page /Parent 3 0 R /Contents 6 0 R /Resources 7 0 R >>".to_vec(),
        b"<< /Type /Page /Parent 3 0 R /Contents [6 0 R 8 0 R] /Resources 7 0 R /Rotate 90 >>"
            .to_vec(),
        stream("/Filter /FlateDecode", &deflate(page)),
        b"<< /Font << /F1 9 0 R /F2 10 0 R /F3 14 0 R >> /XObject << /Fm1 11 0 R >> >>".to_vec(),
        stream(
            "",
            b"BT /F1 8 Tf 72 72 Td (footer) Tj /F3 8 Tf (\x93\xfa\x96\x7b abc) Tj ET",
        ),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 32 /LastChar 126 \
/Widths [278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278] \
/Encoding << /Differences [32 /space /uniFB01 /g123 /.notdef] >> >>"
            .to_vec(),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Fuzz /Encoding /Identity-H \
/DescendantFonts [12 0 R] /ToUnicode 13 0 R >>"
            .to_vec(),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Matrix [1 0 0 1 5 5]",
            form,
        ),
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /Fuzz /DW 1000 /W [1 [500 600] 3 9 700] >>"
            .to_vec(),
        stream("", cmap),
        // A CJK font read through its predefined CMap (no ToUnicode).
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Mincho /Encoding /90ms-RKSJ-H \
/DescendantFonts [12 0 R] >>"
            .to_vec(),
    ]);
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            &[0_u8, 64, 128, 255].repeat(16),
            8,
            8,
            image::ExtendedColorType::L8,
        )
        .expect("png");
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .encode(&[200_u8; 16 * 16], 16, 16, image::ExtendedColorType::L8)
        .expect("jpeg");
    vec![
        (ContentKind::Pdf, pdf),
        (ContentKind::Png, png),
        (ContentKind::Jpeg, jpeg),
        (ContentKind::Docx, office_seed()),
        (
            ContentKind::Html,
            b"<!doctype html><html><head><meta charset=\"utf-8\"><title>T</title>\
<style>p{}</style></head><body><h1>H &amp; &#x263A;</h1><p title='a>b'>x<br>y</p>\
<table><tr><td>1</td></tr></table><pre> p </pre><!-- c --><script>s</script></body></html>"
                .to_vec(),
        ),
        (
            ContentKind::Eml,
            b"From: A <a@example.com>\r\nTo: b@example.com\r\nSubject: =?UTF-8?B?w6k=?=\r\n\
Date: Thu, 3 Dec 2026 09:00:00 +0000\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: text/html\r\n\r\n\
<p>x</p>\r\n--b\r\nContent-Disposition: attachment; filename=a.bin\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
                .to_vec(),
        ),
        (
            ContentKind::Markdown,
            b"# T\n\n*a* `b` [c](d)\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n> q\n\n```\ncode\n```\n"
                .to_vec(),
        ),
    ]
}

/// A DOCX whose parts are stored, not deflated, so that mutations reach
/// the XML and the archive's structure rather than only breaking the
/// compressed stream.
fn office_seed() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in [
        ("[Content_Types].xml", &b"<Types/>"[..]),
        (
            "word/document.xml",
            b"<w:document xmlns:w=\"w\"><w:body><w:p><w:pPr><w:tabs><w:tab/></w:tabs></w:pPr>\
<w:r><w:t>Hello &amp; world</w:t><w:tab/><w:br/><w:t>again</w:t></w:r></w:p></w:body></w:document>",
        ),
        (
            "docProps/core.xml",
            b"<cp:coreProperties xmlns:cp=\"c\" xmlns:dc=\"d\"><dc:title>T</dc:title></cp:coreProperties>",
        ),
    ] {
        zip.start_file(name, stored).expect("entry");
        zip.write_all(content).expect("write");
    }
    zip.finish().expect("zip").into_inner()
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(7) {
            // Flip a byte.
            0 => out[at] ^= 1 << rng.below(8),
            // A byte PDF syntax cares about.
            1 => {
                let syntax = b"()<>[]{}/%\\ \n0123456789";
                out[at] = syntax[rng.below(syntax.len())];
            }
            // Cut a range.
            2 => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            // Repeat a range.
            3 => {
                let end = (at + rng.below(256)).min(out.len());
                let copy = out[at..end].repeat(1 + rng.below(64));
                out.splice(at..at, copy);
            }
            // Splice a piece of another seed.
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + rng.below(512)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            // Cut the file short.
            5 => out.truncate(at),
            // A large number where one was.
            _ => out
                .splice(at..at, b"99999999999 ".iter().copied())
                .for_each(drop),
        }
    }
    out
}

#[test]
fn extractors_survive_damaged_files() {
    let budget = Duration::from_secs(
        std::env::var("FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let limits = Limits {
        max_decompressed_bytes: 8 << 20,
        pdf_cpu_budget: Duration::from_secs(2),
        ocr: None,
        ..Limits::default()
    };
    let seeds = seeds();
    // Each seed as it is extracts cleanly: the damage is what is tested.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("input");
    for (kind, bytes) in &seeds {
        std::fs::write(&path, bytes).expect("write");
        docflow_extract::extract(&path, *kind, &limits)
            .unwrap_or_else(|e| panic!("seed {kind} does not extract: {e}"));
    }
    let mut rng = Rng(0x00d0_cf10_5eed);
    let started = Instant::now();
    let (mut runs, mut ok, mut failed) = (0_u64, 0_u64, 0_u64);
    while started.elapsed() < budget {
        let (kind, seed) = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&mut rng, seed, other);
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(&input).expect("write");
        drop(file);
        let state = rng.0;
        let outcome = std::panic::catch_unwind(|| docflow_extract::extract(&path, *kind, &limits));
        match outcome {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(ExtractError::Permanent(why) | ExtractError::Transient(why))) => {
                assert!(!why.trim().is_empty(), "an error without a reason");
                failed += 1;
            }
            Err(_) => {
                let kept = std::env::temp_dir().join(format!("docflow-fuzz-{state:x}"));
                let _ = std::fs::write(&kept, &input);
                panic!(
                    "run {runs} ({kind}) panicked; the input is kept at {}",
                    kept.display()
                );
            }
        }
        runs += 1;
    }
    println!("{runs} damaged files in {budget:?}: {ok} read, {failed} refused with a reason");
    assert!(runs > 100, "too few runs to mean anything: {runs}");
}
