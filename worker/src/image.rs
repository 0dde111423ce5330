//! Images: header facts read before anything is decoded (so a decompression
//! bomb is refused for the price of its header), EXIF orientation and DPI,
//! and OCR through tesseract.

use std::{fs::File, io::BufReader, path::Path};

use image::{ImageDecoder, ImageReader};

use crate::{
    ExtractError, Limits,
    result::{ImageExtraction, OcrSummary, TextCounts},
};

/// What tesseract assumes when an image records no resolution.
const DEFAULT_DPI: u32 = 300;

pub fn extract(path: &Path, limits: &Limits) -> Result<ImageExtraction, ExtractError> {
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| ExtractError::Permanent(format!("cannot read the image: {e}")))?;
    let format = reader
        .format()
        .ok_or_else(|| ExtractError::Permanent("unrecognised image format".into()))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ExtractError::Permanent(format!("not a readable image: {e}")))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_image_pixels {
        return Err(ExtractError::Permanent(format!(
            "the image is {width}x{height} ({} MP), above the {} MP limit",
            pixels / 1_000_000,
            limits.max_image_pixels / 1_000_000
        )));
    }
    let color_type = decoder.color_type();
    let channels = u16::from(color_type.channel_count());
    let bit_depth = color_type.bits_per_pixel() / channels.max(1);
    let exif_orientation = decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|raw| exif_orientation(&raw));
    let format_name = format
        .extensions_str()
        .first()
        .copied()
        .unwrap_or("image")
        .replace("jpg", "jpeg");
    let dpi = match format {
        image::ImageFormat::Png => png_dpi(path),
        image::ImageFormat::Jpeg => jpeg_dpi(path),
        _ => None,
    };

    let mut result = ImageExtraction {
        format: format_name,
        width,
        height,
        color_type: format!("{color_type:?}").to_lowercase(),
        bit_depth,
        exif_orientation,
        dpi,
        text: None,
        counts: None,
        ocr: None,
    };
    if let Some(ocr) = &limits.ocr {
        let ocr_dpi = dpi.map_or(DEFAULT_DPI, |[x, _]| x.round().clamp(70.0, 2400.0) as u32);
        let read = crate::ocr::recognize(path, ocr, ocr_dpi)?;
        result.counts = Some(TextCounts::of(&read.text));
        result.text = Some(read.text);
        result.ocr = Some(OcrSummary {
            engine: "tesseract".into(),
            language: ocr.language.clone(),
            mean_confidence: read.mean_confidence,
            dpi: ocr_dpi,
        });
    }
    Ok(result)
}

fn exif_orientation(raw: &[u8]) -> Option<u16> {
    let exif = exif::Reader::new().read_raw(raw.to_vec()).ok()?;
    let field = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)?;
    field.value.get_uint(0).and_then(|v| u16::try_from(v).ok())
}

/// The pHYs chunk, when its unit is metres.
fn png_dpi(path: &Path) -> Option<[f64; 2]> {
    let file = File::open(path).ok()?;
    let reader = png::Decoder::new(BufReader::new(file)).read_info().ok()?;
    let dims = reader.info().pixel_dims?;
    if dims.unit != png::Unit::Meter {
        return None;
    }
    let per_inch = |ppm: u32| f64::from(ppm) * 0.0254;
    Some([per_inch(dims.xppu), per_inch(dims.yppu)])
}

/// EXIF resolution, else the JFIF header's density.
fn jpeg_dpi(path: &Path) -> Option<[f64; 2]> {
    let file = File::open(path).ok()?;
    if let Ok(exif) = exif::Reader::new().read_from_container(&mut BufReader::new(file)) {
        let rational = |tag| {
            exif.get_field(tag, exif::In::PRIMARY)
                .and_then(|f| match &f.value {
                    exif::Value::Rational(v) if !v.is_empty() && v[0].denom != 0 => {
                        Some(v[0].to_f64())
                    }
                    _ => None,
                })
        };
        let unit = exif
            .get_field(exif::Tag::ResolutionUnit, exif::In::PRIMARY)
            .and_then(|f| f.value.get_uint(0))
            .unwrap_or(2);
        if let (Some(x), Some(y)) = (
            rational(exif::Tag::XResolution),
            rational(exif::Tag::YResolution),
        ) {
            let scale = if unit == 3 { 2.54 } else { 1.0 };
            return Some([x * scale, y * scale]);
        }
    }
    let head = std::fs::read(path).ok()?;
    // APP0 "JFIF\0": version(2) units(1) Xdensity(2) Ydensity(2).
    let at = head.windows(5).position(|w| w == b"JFIF\0")?;
    let fields = head.get(at + 7..at + 12)?;
    let (units, x, y) = (
        fields[0],
        u16::from_be_bytes([fields[1], fields[2]]),
        u16::from_be_bytes([fields[3], fields[4]]),
    );
    match units {
        1 => Some([f64::from(x), f64::from(y)]),
        2 => Some([f64::from(x) * 2.54, f64::from(y) * 2.54]),
        _ => None,
    }
}
