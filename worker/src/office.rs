//! Office documents: OOXML (DOCX, XLSX, PPTX) and OpenDocument (ODT, ODS,
//! ODP), both ZIP archives of XML parts.
//!
//! Bounded by construction: the archive may list at most [`MAX_ENTRIES`]
//! entries; a part is read only up to the per-stream inflation limit
//! (`Limits::max_decompressed_bytes`), all parts together up to
//! [`PARTS_PER_ARCHIVE`] times that (256 MiB by default), and a part that inflates more than
//! [`MAX_RATIO`] times its stored size (past 1 MiB) is a zip bomb, refused
//! with `too_complex`. XML is read as a stream of events by quick-xml,
//! which expands no entities beyond the five predefined ones and character
//! references (no DTDs, so no billion laughs), with nesting bounded by
//! [`MAX_DEPTH`]. Text past `Limits::max_text_bytes` is not read
//! (`truncated`).

use std::{
    collections::HashMap,
    io::{Read, Seek},
    path::Path,
};

use quick_xml::{
    Reader, XmlVersion,
    events::{BytesStart, Event},
};

use crate::{
    ContentKind, ExtractError, Limits,
    result::{DocumentProperties, OfficeExtraction, OfficePart, TextCounts},
    text::Bounded as Output,
};

/// Entries an archive may list.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes all the parts read may inflate to together.
/// All parts read from one archive inflate to at most this many times the
/// per-part limit together.
pub const PARTS_PER_ARCHIVE: u64 = 4;
/// Inflated size over stored size past which a large part is a bomb.
pub const MAX_RATIO: u64 = 200;
/// XML elements open at once.
pub const MAX_DEPTH: usize = 256;
/// Repeated cells of an OpenDocument spreadsheet written out, at most.
const MAX_REPEAT: usize = 100;
/// Slides, sheets or tables listed per document, at most: one part
/// listed a million times would make the answer larger than the worker
/// takes, and fail the job without a reason.
pub const MAX_PARTS: usize = 10_000;
/// A part's name (a sheet's or table's) is cut to this many characters.
const MAX_PART_NAME_CHARS: usize = 1_000;

pub fn extract(
    path: &Path,
    kind: ContentKind,
    limits: &Limits,
) -> Result<OfficeExtraction, ExtractError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ExtractError::Transient(format!("cannot read the downloaded file: {e}")))?;
    let format = kind.extension();
    let mut archive = Archive::open(file, format, limits)?;
    let mut out = Output::new(limits.max_text_bytes);
    let mut parts = Vec::new();
    let properties = match kind {
        ContentKind::Docx => {
            let document = archive.part("word/document.xml")?;
            read_text(&document, &Dialect::WORD, &mut out, &mut |_, _| {})?;
            archive.ooxml_properties()?
        }
        ContentKind::Pptx => {
            for (n, slide) in archive
                .ooxml_ordered("ppt/presentation.xml", "sldId", "ppt/")?
                .into_iter()
                .enumerate()
            {
                let xml = archive.part(&slide)?;
                let start = out.text.len();
                read_text(&xml, &Dialect::DRAWING, &mut out, &mut |_, _| {})?;
                push_part(
                    &mut parts,
                    format!("Slide {}", n + 1),
                    &out.text,
                    start,
                    usize::MAX,
                )?;
                end_part(&mut out);
            }
            archive.ooxml_properties()?
        }
        ContentKind::Xlsx => {
            let shared = match archive.optional_part("xl/sharedStrings.xml")? {
                Some(xml) => shared_strings(&xml)?,
                None => Vec::new(),
            };
            let names = archive.sheet_names()?;
            let sheets = archive.ooxml_ordered("xl/workbook.xml", "sheet", "xl/")?;
            for (n, sheet) in sheets.into_iter().enumerate() {
                let xml = archive.part(&sheet)?;
                let start = out.text.len();
                read_sheet(&xml, &shared, &mut out)?;
                let name = names
                    .get(n)
                    .cloned()
                    .unwrap_or_else(|| format!("Sheet {}", n + 1));
                push_part(&mut parts, name, &out.text, start, usize::MAX)?;
                end_part(&mut out);
            }
            archive.ooxml_properties()?
        }
        ContentKind::Odt | ContentKind::Ods | ContentKind::Odp => {
            let content = archive.part("content.xml")?;
            let dialect = match kind {
                ContentKind::Odt => &Dialect::OPEN_TEXT,
                ContentKind::Ods => &Dialect::OPEN_SHEET,
                _ => &Dialect::OPEN_PRESENTATION,
            };
            let mut names = Vec::new();
            let mut starts = Vec::new();
            read_text(&content, dialect, &mut out, &mut |name, at| {
                names.push(name);
                starts.push(at);
            })?;
            if dialect.part.is_some() {
                for (i, name) in names.into_iter().enumerate() {
                    let end = starts.get(i + 1).copied().unwrap_or(usize::MAX);
                    push_part(&mut parts, name, &out.text, starts[i], end)?;
                }
            }
            archive.open_document_properties()?
        }
        other => {
            return Err(ExtractError::Permanent(format!(
                "{other} is not an office document"
            )));
        }
    };
    let text = out.text.trim_end().to_owned();
    Ok(OfficeExtraction {
        format: format.to_owned(),
        counts: TextCounts::of(&text),
        text,
        properties,
        parts,
        truncated: out.truncated,
    })
}

/// Lists the part `name` whose text is `text[start..end]`. Trims after a
/// part began can leave its recorded start past the text or inside a
/// character: both ends are clamped.
fn push_part(
    parts: &mut Vec<OfficePart>,
    name: String,
    text: &str,
    start: usize,
    end: usize,
) -> Result<(), ExtractError> {
    if parts.len() == MAX_PARTS {
        return Err(ExtractError::too_complex(format!(
            "the document lists more than {MAX_PARTS} slides, sheets or tables"
        )));
    }
    let (start, end) = (char_floor(text, start), char_floor(text, end));
    let text = text.get(start..end).unwrap_or_default().trim().to_owned();
    parts.push(OfficePart {
        name: name.chars().take(MAX_PART_NAME_CHARS).collect(),
        counts: TextCounts::of(&text),
        text,
    });
    Ok(())
}

struct Archive<R> {
    zip: zip::ZipArchive<R>,
    format: &'static str,
    max_part: u64,
    max_total: u64,
    inflated: u64,
}

impl<R: Read + Seek> Archive<R> {
    fn open(reader: R, format: &'static str, limits: &Limits) -> Result<Self, ExtractError> {
        let zip = zip::ZipArchive::new(reader).map_err(|e| {
            ExtractError::Permanent(format!(
                "the file is not a valid {format} document (not a readable ZIP archive: {e})"
            ))
        })?;
        if zip.len() > MAX_ENTRIES {
            return Err(ExtractError::too_complex(format!(
                "the archive lists {} entries (at most {MAX_ENTRIES})",
                zip.len()
            )));
        }
        Ok(Self {
            zip,
            format,
            max_part: limits.max_decompressed_bytes as u64,
            max_total: (limits.max_decompressed_bytes as u64).saturating_mul(PARTS_PER_ARCHIVE),
            inflated: 0,
        })
    }

    fn part(&mut self, name: &str) -> Result<Vec<u8>, ExtractError> {
        self.optional_part(name)?.ok_or_else(|| {
            ExtractError::Permanent(format!(
                "the file is not a valid {} document ({name} is missing)",
                self.format
            ))
        })
    }

    /// A part, inflated under the limits; `None` when the archive has none.
    fn optional_part(&mut self, name: &str) -> Result<Option<Vec<u8>>, ExtractError> {
        let mut entry = match self.zip.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => {
                return Err(ExtractError::Permanent(format!(
                    "cannot read {name} in the {} archive: {e}",
                    self.format
                )));
            }
        };
        let stored = entry.compressed_size();
        let total_left = self.max_total.saturating_sub(self.inflated);
        let room = self.max_part.min(total_left);
        let mut bytes = Vec::new();
        (&mut entry)
            .take(room + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                ExtractError::Permanent(format!(
                    "cannot inflate {name} in the {} archive: {e}",
                    self.format
                ))
            })?;
        let inflated = bytes.len() as u64;
        if inflated > room {
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            return Err(ExtractError::too_complex(if room == self.max_part {
                format!("{name} inflates past {:.1} MiB", mib(room))
            } else {
                format!(
                    "the archive's parts inflate past {:.1} MiB together",
                    mib(self.max_total)
                )
            }));
        }
        if inflated > 1024 * 1024 && inflated > stored.saturating_mul(MAX_RATIO) {
            return Err(ExtractError::too_complex(format!(
                "{name} inflates {}-fold (a zip bomb; at most {MAX_RATIO}-fold)",
                inflated / stored.max(1)
            )));
        }
        self.inflated += inflated;
        Ok(Some(bytes))
    }

    /// The parts a main OOXML part lists (slides in presentation.xml's
    /// `sldIdLst`, sheets in workbook.xml's `sheets`), in its order,
    /// resolved through its relationships.
    fn ooxml_ordered(
        &mut self,
        main: &str,
        element: &str,
        dir: &str,
    ) -> Result<Vec<String>, ExtractError> {
        let (folder, file) = main.rsplit_once('/').unwrap_or(("", main));
        let rels_name = format!("{folder}/_rels/{file}.rels");
        let rels = self.part(&rels_name)?;
        let mut targets = HashMap::new();
        each_element(&rels, |e| {
            if e.local_name().as_ref() == b"Relationship"
                && let (Some(id), Some(target)) = (attribute(e, b"Id"), attribute(e, b"Target"))
            {
                targets.insert(id, target);
            }
        })?;
        let xml = self.part(main)?;
        let mut ordered = Vec::new();
        each_element(&xml, |e| {
            if e.local_name().as_ref() == element.as_bytes()
                && let Some(id) = attribute_local(e, b"id")
                && let Some(target) = targets.get(&id)
            {
                let target = target.trim_start_matches('/');
                ordered.push(if target.starts_with(dir) {
                    target.to_owned()
                } else {
                    format!("{dir}{target}")
                });
            }
        })?;
        Ok(ordered)
    }

    fn sheet_names(&mut self) -> Result<Vec<String>, ExtractError> {
        let xml = self.part("xl/workbook.xml")?;
        let mut names = Vec::new();
        each_element(&xml, |e| {
            if e.local_name().as_ref() == b"sheet" {
                names.push(attribute(e, b"name").unwrap_or_default());
            }
        })?;
        Ok(names)
    }

    fn ooxml_properties(&mut self) -> Result<DocumentProperties, ExtractError> {
        self.properties(
            "docProps/core.xml",
            [b"title", b"creator", b"subject", b"created", b"modified"],
        )
    }

    fn open_document_properties(&mut self) -> Result<DocumentProperties, ExtractError> {
        self.properties(
            "meta.xml",
            [
                b"title",
                b"initial-creator",
                b"subject",
                b"creation-date",
                b"date",
            ],
        )
    }

    /// The part's title, author, subject, creation and modification dates,
    /// under these element names (local), in that order.
    fn properties(
        &mut self,
        part: &str,
        names: [&'static [u8]; 5],
    ) -> Result<DocumentProperties, ExtractError> {
        let Some(xml) = self.optional_part(part)? else {
            return Ok(DocumentProperties::default());
        };
        let fields = [
            Field::Title,
            Field::Author,
            Field::Subject,
            Field::Created,
            Field::Modified,
        ];
        let named: Vec<(&[u8], Field)> = names.into_iter().zip(fields).collect();
        properties(&xml, &named)
    }
}

#[derive(Clone, Copy)]
enum Field {
    Title,
    Author,
    Subject,
    Created,
    Modified,
}

fn properties(xml: &[u8], fields: &[(&[u8], Field)]) -> Result<DocumentProperties, ExtractError> {
    let mut found = DocumentProperties::default();
    let mut reader = Reader::from_reader(xml);
    let mut current: Option<Field> = None;
    let mut value = String::new();
    let mut depth = Depth::default();
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth.open()?;
                current = fields
                    .iter()
                    .find(|(name, _)| e.local_name().as_ref() == *name)
                    .map(|(_, f)| *f);
                value.clear();
            }
            Event::End(_) => {
                depth.close();
                if let Some(field) = current.take() {
                    let value: String = value.trim().chars().take(1000).collect();
                    if !value.is_empty() {
                        let slot = match field {
                            Field::Title => &mut found.title,
                            Field::Author => &mut found.author,
                            Field::Subject => &mut found.subject,
                            Field::Created => &mut found.created,
                            Field::Modified => &mut found.modified,
                        };
                        slot.get_or_insert(value);
                    }
                }
            }
            Event::Text(t) if current.is_some() && value.len() < 4096 => {
                value.push_str(&t.decode().map_err(|e| xml_error(e.into()))?);
            }
            Event::GeneralRef(r) if current.is_some() => value.push_str(&entity(&r)?),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(found)
}

fn xml_error(e: quick_xml::Error) -> ExtractError {
    ExtractError::Permanent(format!("the document's XML is malformed: {e}"))
}

fn attribute(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// An attribute by local name (`r:id` as `id`), for namespaced ones.
fn attribute_local(e: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local && a.key.prefix().is_some())
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Elements open at once while reading XML, at most [`MAX_DEPTH`].
#[derive(Default)]
struct Depth(usize);

impl Depth {
    fn open(&mut self) -> Result<(), ExtractError> {
        self.0 += 1;
        if self.0 > MAX_DEPTH {
            return Err(ExtractError::too_complex(format!(
                "XML nested deeper than {MAX_DEPTH}"
            )));
        }
        Ok(())
    }

    fn close(&mut self) {
        self.0 = self.0.saturating_sub(1);
    }
}

/// Calls `f` on every start (or empty) element, bounded in depth.
fn each_element(xml: &[u8], mut f: impl FnMut(&BytesStart<'_>)) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut depth = Depth::default();
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth.open()?;
                f(&e);
            }
            Event::Empty(e) => f(&e),
            Event::End(_) => depth.close(),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// `at`, or the text's end if past it, moved back to a character boundary.
fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Parts (slides, sheets) are separated by a form feed, as PDF pages.
fn end_part(out: &mut Output) {
    let trimmed = out.text.trim_end().len();
    out.text.truncate(trimmed);
    out.push("\u{c}");
}

/// Which elements of an XML vocabulary hold text and what the others mean.
struct Dialect {
    /// Text is kept only inside these (OOXML's `w:t`, `a:t`); `None`: all
    /// text inside paragraphs (OpenDocument).
    text: Option<&'static [u8]>,
    /// Ends a paragraph (a line break in the text).
    paragraph: &'static [&'static [u8]],
    tab: &'static [&'static [u8]],
    line_break: &'static [&'static [u8]],
    /// Text under these is not the document's (deleted revisions, field
    /// codes, annotations).
    skip: &'static [&'static [u8]],
    /// A new part starts here, named by this attribute (ODP pages, ODS
    /// tables).
    part: Option<(&'static [u8], &'static [u8])>,
    /// Table cells end with a tab, rows with a line break (ODS).
    cell: Option<&'static [u8]>,
    row: Option<&'static [u8]>,
}

impl Dialect {
    const WORD: Self = Self {
        text: Some(b"t"),
        paragraph: &[b"p"],
        tab: &[b"tab"],
        line_break: &[b"br", b"cr"],
        // Properties hold tab stops (`w:tabs/w:tab`), not text.
        skip: &[b"delText", b"instrText", b"pPr", b"rPr"],
        part: None,
        cell: None,
        row: None,
    };
    const DRAWING: Self = Self {
        text: Some(b"t"),
        paragraph: &[b"p"],
        tab: &[],
        line_break: &[b"br"],
        skip: &[],
        part: None,
        cell: None,
        row: None,
    };
    const OPEN_TEXT: Self = Self {
        text: None,
        paragraph: &[b"p", b"h"],
        tab: &[b"tab"],
        line_break: &[b"line-break"],
        skip: &[b"annotation", b"tracked-changes"],
        part: None,
        cell: None,
        row: None,
    };
    const OPEN_PRESENTATION: Self = Self {
        part: Some((b"page", b"name")),
        skip: &[b"annotation", b"notes"],
        ..Self::OPEN_TEXT
    };
    const OPEN_SHEET: Self = Self {
        part: Some((b"table", b"name")),
        cell: Some(b"table-cell"),
        row: Some(b"table-row"),
        ..Self::OPEN_TEXT
    };
}

/// Reads a document part's text as `dialect` says; `on_part` gets each
/// part's name and where its text starts.
fn read_text(
    xml: &[u8],
    dialect: &Dialect,
    out: &mut Output,
    on_part: &mut dyn FnMut(String, usize),
) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut depth = Depth::default();
    let mut in_text = 0_usize;
    let mut in_paragraph = 0_usize;
    let mut skipping: Option<usize> = None;
    let mut parts = 0;
    let mut repeat = 1;
    let mut cell_start = 0;
    loop {
        let event = reader.read_event().map_err(xml_error)?;
        if out.truncated {
            return Ok(());
        }
        match event {
            Event::Start(e) => {
                depth.open()?;
                let name = e.local_name();
                let name = name.as_ref();
                if skipping.is_none() && dialect.skip.contains(&name) {
                    skipping = Some(depth.0);
                }
                if dialect.text == Some(name) {
                    in_text += 1;
                }
                if dialect.paragraph.contains(&name) {
                    in_paragraph += 1;
                }
                if let Some((part, attr)) = dialect.part
                    && name == part
                {
                    if parts > 0 {
                        end_part(out);
                    }
                    parts += 1;
                    let label = attribute_local(&e, attr).unwrap_or_else(|| format!("{}", parts));
                    on_part(label, out.text.len());
                }
                if dialect.cell == Some(name) {
                    repeat = attribute_local(&e, b"number-columns-repeated")
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(1)
                        .clamp(1, MAX_REPEAT);
                    cell_start = out.text.len();
                }
            }
            Event::Empty(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if skipping.is_some() {
                    continue;
                }
                if dialect.tab.contains(&name) {
                    out.push("\t");
                } else if dialect.line_break.contains(&name) {
                    out.push("\n");
                } else if name == b"s" && dialect.text.is_none() {
                    // OpenDocument's run of spaces.
                    let n = attribute_local(&e, b"c")
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(1)
                        .clamp(1, MAX_REPEAT);
                    out.push(&" ".repeat(n));
                } else if dialect.cell == Some(name) {
                    // An empty cell: a column, nothing to repeat.
                    out.push("\t");
                }
            }
            Event::End(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if dialect.text == Some(name) {
                    in_text = in_text.saturating_sub(1);
                }
                if dialect.paragraph.contains(&name) {
                    in_paragraph = in_paragraph.saturating_sub(1);
                    if skipping.is_none() && dialect.cell.is_none() {
                        out.newline();
                    } else if skipping.is_none() {
                        out.push(" ");
                    }
                }
                if dialect.cell == Some(name) && skipping.is_none() {
                    // A row ended inside the cell (hostile nesting) may have
                    // trimmed the text below where the cell began.
                    let start = char_floor(&out.text, cell_start);
                    let cell = out.text[start..].trim_end().to_owned();
                    out.text.truncate(start);
                    for i in 0..repeat {
                        if i > 0 && cell.is_empty() {
                            break;
                        }
                        out.push(&cell);
                        out.push("\t");
                    }
                    repeat = 1;
                }
                if dialect.row == Some(name) && skipping.is_none() {
                    let trimmed = out.text.trim_end_matches(['\t', ' ']).len();
                    out.text.truncate(trimmed);
                    out.push("\n");
                }
                if skipping == Some(depth.0) {
                    skipping = None;
                }
                depth.close();
            }
            Event::Text(t) => {
                let wanted = match dialect.text {
                    Some(_) => in_text > 0,
                    None => in_paragraph > 0,
                };
                if wanted && skipping.is_none() {
                    out.push(&t.decode().map_err(|e| xml_error(e.into()))?);
                }
            }
            Event::GeneralRef(r) => {
                let wanted = match dialect.text {
                    Some(_) => in_text > 0,
                    None => in_paragraph > 0,
                };
                if wanted && skipping.is_none() {
                    out.push(&entity(&r)?);
                }
            }
            Event::CData(c) if in_text > 0 && skipping.is_none() => {
                out.push(&String::from_utf8_lossy(&c));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// One of XML's five predefined entities or a character reference; any
/// other name is not expanded (there is no DTD to define it).
fn entity(r: &quick_xml::events::BytesRef<'_>) -> Result<String, ExtractError> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Ok(c.to_string());
    }
    let name: &[u8] = r;
    Ok(match name {
        b"amp" => "&",
        b"lt" => "<",
        b"gt" => ">",
        b"quot" => "\"",
        b"apos" => "'",
        _ => "",
    }
    .to_owned())
}

/// xl/sharedStrings.xml: the text of each `si`, in order.
fn shared_strings(xml: &[u8]) -> Result<Vec<String>, ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut strings = Vec::new();
    let mut current = String::new();
    let mut in_t = false;
    let mut in_phonetic = false;
    let mut depth = Depth::default();
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth.open()?;
                match e.local_name().as_ref() {
                    b"t" => in_t = true,
                    b"rPh" => in_phonetic = true,
                    b"si" => current.clear(),
                    _ => {}
                }
            }
            Event::Empty(e) if e.local_name().as_ref() == b"si" => strings.push(String::new()),
            Event::End(e) => {
                depth.close();
                match e.local_name().as_ref() {
                    b"t" => in_t = false,
                    b"rPh" => in_phonetic = false,
                    b"si" => strings.push(std::mem::take(&mut current)),
                    _ => {}
                }
            }
            Event::Text(t) if in_t && !in_phonetic => {
                current.push_str(&t.decode().map_err(|e| xml_error(e.into()))?)
            }
            Event::GeneralRef(r) if in_t && !in_phonetic => current.push_str(&entity(&r)?),
            Event::Eof => return Ok(strings),
            _ => {}
        }
    }
}

/// A worksheet's cells: tab between cells, a line per row.
fn read_sheet(xml: &[u8], shared: &[String], out: &mut Output) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut cell_type: Option<String> = None;
    let mut value = String::new();
    let mut in_value = false;
    let mut cells: Vec<String> = Vec::new();
    let mut depth = Depth::default();
    loop {
        if out.truncated {
            return Ok(());
        }
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth.open()?;
                match e.local_name().as_ref() {
                    b"c" => {
                        cell_type = attribute(&e, b"t");
                        value.clear();
                    }
                    b"v" | b"t" => in_value = true,
                    b"row" => cells.clear(),
                    _ => {}
                }
            }
            Event::End(e) => {
                depth.close();
                match e.local_name().as_ref() {
                    b"v" | b"t" => in_value = false,
                    b"c" => {
                        let shown = match cell_type.as_deref() {
                            Some("s") => value
                                .trim()
                                .parse::<usize>()
                                .ok()
                                .and_then(|i| shared.get(i))
                                .cloned()
                                .unwrap_or_default(),
                            Some("b") => {
                                if value.trim() == "1" { "TRUE" } else { "FALSE" }.to_owned()
                            }
                            _ => value.clone(),
                        };
                        cells.push(shown);
                    }
                    b"row" => {
                        while cells.last().is_some_and(String::is_empty) {
                            cells.pop();
                        }
                        if !cells.is_empty() {
                            out.push(&cells.join("\t"));
                            out.push("\n");
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_value => {
                value.push_str(&t.decode().map_err(|e| xml_error(e.into()))?)
            }
            Event::GeneralRef(r) if in_value => value.push_str(&entity(&r)?),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;

    /// An archive of `(name, content)` parts, deflated, written to a file.
    fn archive(parts: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp");
        let mut zip = zip::ZipWriter::new(file.reopen().expect("reopen"));
        for (name, content) in parts {
            zip.start_file(*name, SimpleFileOptions::default())
                .expect("entry");
            zip.write_all(content).expect("write");
        }
        zip.finish().expect("finish");
        file
    }

    fn read(kind: ContentKind, parts: &[(&str, &[u8])]) -> Result<OfficeExtraction, ExtractError> {
        let file = archive(parts);
        extract(file.path(), kind, &Limits::default())
    }

    const CORE: &[u8] = br#"<cp:coreProperties xmlns:cp="c" xmlns:dc="d" xmlns:dcterms="t"><dc:title>Quarterly &amp; more</dc:title><dc:creator>Ada</dc:creator><dcterms:created>2026-12-01T10:00:00Z</dcterms:created></cp:coreProperties>"#;

    #[test]
    fn docx_paragraphs_runs_tabs_and_breaks() {
        let document = br#"<w:document xmlns:w="w"><w:body>
            <w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>
              <w:r><w:t>Hello</w:t></w:r><w:r><w:t xml:space="preserve"> world</w:t></w:r><w:r><w:tab/><w:t>x &lt; y</w:t></w:r></w:p>
            <w:p><w:r><w:t>Line</w:t><w:br/><w:t>two</w:t><w:delText>deleted</w:delText></w:r></w:p>
            </w:body></w:document>"#;
        let docx = read(
            ContentKind::Docx,
            &[("word/document.xml", document), ("docProps/core.xml", CORE)],
        )
        .expect("docx");
        assert_eq!(docx.text, "Hello world\tx < y\nLine\ntwo");
        assert_eq!(docx.format, "docx");
        assert_eq!(docx.properties.title.as_deref(), Some("Quarterly & more"));
        assert_eq!(docx.properties.author.as_deref(), Some("Ada"));
        assert!(docx.parts.is_empty());
    }

    /// One slide listed past the limit fails the document with a reason.
    #[test]
    fn a_presentation_listing_too_many_slides_is_too_complex() {
        let ids: String = (0..=MAX_PARTS)
            .map(|i| format!(r#"<p:sldId id="{}" r:id="rId2"/>"#, 256 + i))
            .collect();
        let presentation = format!(
            r#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>"#
        );
        let rels = br#"<Relationships><Relationship Id="rId2" Target="slides/slide1.xml"/></Relationships>"#;
        let slide = br#"<p:sld xmlns:p="p" xmlns:a="a"><a:p><a:r><a:t>x</a:t></a:r></a:p></p:sld>"#;
        let many = read(
            ContentKind::Pptx,
            &[
                ("ppt/presentation.xml", presentation.as_bytes()),
                ("ppt/_rels/presentation.xml.rels", rels),
                ("ppt/slides/slide1.xml", slide),
            ],
        )
        .expect_err("too many");
        assert!(
            matches!(&many, ExtractError::Permanent(m) if m.starts_with("too_complex:") && m.contains("10000 slides")),
            "{many:?}"
        );
    }

    /// A sheet's name is cut to MAX_PART_NAME_CHARS characters.
    #[test]
    fn part_names_are_bounded() {
        let long = "é".repeat(MAX_PART_NAME_CHARS + 1);
        let ods = format!(
            r#"<office:document-content xmlns:office="o" xmlns:table="t" xmlns:text="x"><office:body><office:spreadsheet><table:table table:name="{long}"><table:table-row><table:table-cell><text:p>tea</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet></office:body></office:document-content>"#
        );
        let sheet = read(ContentKind::Ods, &[("content.xml", ods.as_bytes())]).expect("ods");
        assert_eq!(sheet.parts[0].name.chars().count(), MAX_PART_NAME_CHARS);
        assert!(long.starts_with(&sheet.parts[0].name));
        assert_eq!(sheet.text, "tea");
    }

    #[test]
    fn pptx_slides_in_the_presentations_order() {
        let presentation = br#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst><p:sldId id="257" r:id="rId3"/><p:sldId id="256" r:id="rId2"/></p:sldIdLst></p:presentation>"#;
        let rels = br#"<Relationships><Relationship Id="rId2" Target="slides/slide1.xml"/><Relationship Id="rId3" Target="slides/slide2.xml"/></Relationships>"#;
        let slide = |text: &str| {
            format!(
                r#"<p:sld xmlns:p="p" xmlns:a="a"><a:p><a:r><a:t>{text}</a:t></a:r></a:p><a:p><a:r><a:t>more</a:t></a:r></a:p></p:sld>"#
            )
        };
        let (one, two) = (slide("First file"), slide("Shown first"));
        let pptx = read(
            ContentKind::Pptx,
            &[
                ("ppt/presentation.xml", presentation),
                ("ppt/_rels/presentation.xml.rels", rels),
                ("ppt/slides/slide1.xml", one.as_bytes()),
                ("ppt/slides/slide2.xml", two.as_bytes()),
            ],
        )
        .expect("pptx");
        let names: Vec<_> = pptx
            .parts
            .iter()
            .map(|p| (p.name.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Slide 1", "Shown first\nmore"),
                ("Slide 2", "First file\nmore")
            ]
        );
        assert_eq!(pptx.text, "Shown first\nmore\u{c}First file\nmore");
    }

    #[test]
    fn xlsx_sheets_with_shared_strings_numbers_and_booleans() {
        let workbook = br#"<workbook xmlns:r="r"><sheets><sheet name="Budget" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
        let rels = br#"<Relationships><Relationship Id="rId1" Target="/xl/worksheets/sheet1.xml"/></Relationships>"#;
        let shared = br#"<sst><si><t>Item</t></si><si><r><t>Co</t></r><r><t>st</t></r><rPh><t>phonetic</t></rPh></si></sst>"#;
        let sheet = br#"<worksheet><sheetData>
            <row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>
            <row r="2"><c r="A2" t="inlineStr"><is><t>Tea</t></is></c><c r="B2"><v>2.5</v></c><c r="C2" t="b"><v>1</v></c></row>
            </sheetData></worksheet>"#;
        let xlsx = read(
            ContentKind::Xlsx,
            &[
                ("xl/workbook.xml", workbook),
                ("xl/_rels/workbook.xml.rels", rels),
                ("xl/sharedStrings.xml", shared),
                ("xl/worksheets/sheet1.xml", sheet),
            ],
        )
        .expect("xlsx");
        assert_eq!(xlsx.parts[0].name, "Budget");
        assert_eq!(xlsx.text, "Item\tCost\nTea\t2.5\tTRUE");
    }

    #[test]
    fn opendocument_text_sheets_and_slides() {
        let odt = br#"<office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text>
            <text:h>Title</text:h><text:p>a<text:s text:c="3"/>b<text:tab/>c<text:span> d</text:span></text:p>
            <text:p>x<office:annotation><text:p>note</text:p></office:annotation>y</text:p>
            </office:text></office:body></office:document-content>"#;
        let text = read(
            ContentKind::Odt,
            &[
                ("mimetype", b"application/vnd.oasis.opendocument.text"),
                ("content.xml", odt),
            ],
        )
        .expect("odt");
        assert_eq!(text.text, "Title\na   b\tc d\nxy");

        let ods = br#"<office:document-content xmlns:office="o" xmlns:table="t" xmlns:text="x"><office:body><office:spreadsheet>
            <table:table table:name="Prices"><table:table-row>
              <table:table-cell><text:p>tea</text:p></table:table-cell>
              <table:table-cell table:number-columns-repeated="2"><text:p>1</text:p></table:table-cell>
              <table:table-cell table:number-columns-repeated="16000"/>
            </table:table-row></table:table></office:spreadsheet></office:body></office:document-content>"#;
        let sheet = read(ContentKind::Ods, &[("content.xml", ods)]).expect("ods");
        assert_eq!(sheet.parts[0].name, "Prices");
        assert_eq!(sheet.text, "tea\t1\t1");

        let odp = br#"<office:document-content xmlns:office="o" xmlns:draw="d" xmlns:text="x"><office:body><office:presentation>
            <draw:page draw:name="Intro"><draw:frame><draw:text-box><text:p>Hello</text:p></draw:text-box></draw:frame></draw:page>
            <draw:page draw:name="End"><draw:frame><draw:text-box><text:p>Bye</text:p></draw:text-box></draw:frame></draw:page>
            </office:presentation></office:body></office:document-content>"#;
        let slides = read(ContentKind::Odp, &[("content.xml", odp)]).expect("odp");
        let names: Vec<_> = slides
            .parts
            .iter()
            .map(|p| (p.name.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(names, [("Intro", "Hello"), ("End", "Bye")]);
    }

    #[test]
    fn bombs_and_broken_archives_fail_with_a_reason() {
        let zeros = vec![b'a'; 8 * 1024 * 1024];
        let document = [
            b"<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>".as_slice(),
            &zeros,
            b"</w:t></w:r></w:p></w:body></w:document>",
        ]
        .concat();
        let bomb = read(ContentKind::Docx, &[("word/document.xml", &document)]).expect_err("bomb");
        assert!(
            matches!(&bomb, ExtractError::Permanent(m) if m.starts_with("too_complex:") && m.contains("zip bomb")),
            "{bomb:?}"
        );

        let missing = read(ContentKind::Docx, &[("other.xml", b"<a/>")]).expect_err("missing");
        assert!(
            matches!(&missing, ExtractError::Permanent(m) if m.contains("word/document.xml is missing")),
            "{missing:?}"
        );

        let file = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(file.path(), b"PK\x03\x04 not really").expect("write");
        let broken =
            extract(file.path(), ContentKind::Xlsx, &Limits::default()).expect_err("broken");
        assert!(
            matches!(&broken, ExtractError::Permanent(m) if m.contains("not a valid xlsx document")),
            "{broken:?}"
        );

        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("e{i}")).collect();
        let crowd: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let crowded = read(ContentKind::Docx, &crowd).expect_err("crowded");
        assert!(
            matches!(&crowded, ExtractError::Permanent(m) if m.contains("10001 entries")),
            "{crowded:?}"
        );

        let deep = format!(
            "<w:document xmlns:w=\"w\">{}</w:document>",
            "<w:p>".repeat(300)
        );
        let nested =
            read(ContentKind::Docx, &[("word/document.xml", deep.as_bytes())]).expect_err("deep");
        assert!(
            matches!(&nested, ExtractError::Permanent(m) if m.contains("nested deeper")),
            "{nested:?}"
        );
    }

    /// Rows and tables nested inside cells, which trim the text below where
    /// the cell or sheet began, read without a panic.
    #[test]
    fn cells_holding_rows_and_tables_do_not_break_the_reader() {
        let sheet = |cells: &str| {
            format!(
                "<office:document-content xmlns:office=\"o\" xmlns:table=\"t\" xmlns:text=\"x\">\
                 <office:body><office:spreadsheet><table:table table:name=\"S\">\
                 <table:table-row>{cells}</table:table-row></table:table>\
                 </office:spreadsheet></office:body></office:document-content>"
            )
        };
        let nested_row = "<table:table-cell><table:table-row></table:table-row>";
        // The row's end trims the text below where the cell began...
        let past = sheet(&format!(
            "{}{nested_row}</table:table-cell>",
            "<table:table-cell/>".repeat(3)
        ));
        // ...or to a place that new text then puts inside a character.
        let inside = sheet(&format!(
            "{}{nested_row}<text:p>\u{e9}</text:p></table:table-cell>\
             <table:table-cell><table:table table:name=\"inner\"><table:table-row>\
             <table:table-cell/></table:table-row></table:table></table:table-cell>",
            "<table:table-cell/>".repeat(2)
        ));
        for content in [past, inside] {
            let ods = read(ContentKind::Ods, &[("content.xml", content.as_bytes())]).expect("ods");
            assert!(!ods.parts.is_empty(), "{content}");
        }
    }

    /// Parts under the per-part limit still may not add up past the
    /// archive's; a cell repeated thousands of times is written 100 times.
    #[test]
    fn parts_add_up_to_a_limit_and_repeats_are_capped() {
        let workbook = br#"<workbook xmlns:r="r"><sheets><sheet name="A" r:id="r1"/><sheet name="B" r:id="r2"/><sheet name="C" r:id="r3"/><sheet name="D" r:id="r4"/><sheet name="E" r:id="r5"/></sheets></workbook>"#;
        let rels: String = (1..=5)
            .map(|i| format!(r#"<Relationship Id="r{i}" Target="worksheets/s{i}.xml"/>"#))
            .collect();
        let rels = format!("<Relationships>{rels}</Relationships>");
        let sheet = format!(
            "<worksheet><sheetData><row><c><v>{}</v></c></row></sheetData></worksheet>",
            "7".repeat(250 * 1024)
        );
        let names: Vec<String> = (1..=5).map(|i| format!("xl/worksheets/s{i}.xml")).collect();
        let mut parts: Vec<(&str, &[u8])> = vec![
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", rels.as_bytes()),
        ];
        parts.extend(names.iter().map(|n| (n.as_str(), sheet.as_bytes())));
        let file = archive(&parts);
        let limits = Limits {
            max_decompressed_bytes: 256 * 1024,
            ..Limits::default()
        };
        let err = extract(file.path(), ContentKind::Xlsx, &limits).expect_err("total");
        assert!(
            matches!(&err, ExtractError::Permanent(m) if m == "too_complex: the archive's parts inflate past 1.0 MiB together"),
            "{err:?}"
        );

        let ods = br#"<office:document-content xmlns:office="o" xmlns:table="t" xmlns:text="x"><office:body><office:spreadsheet>
            <table:table table:name="R"><table:table-row>
              <table:table-cell table:number-columns-repeated="5000"><text:p>x</text:p></table:table-cell>
            </table:table-row></table:table></office:spreadsheet></office:body></office:document-content>"#;
        let sheet = read(ContentKind::Ods, &[("content.xml", ods)]).expect("ods");
        assert_eq!(sheet.text.matches('x').count(), MAX_REPEAT);
    }

    #[test]
    fn text_past_the_limit_is_not_read() {
        let body = "<w:p><w:r><w:t>0123456789</w:t></w:r></w:p>".repeat(100);
        let document = format!("<w:document xmlns:w=\"w\"><w:body>{body}</w:body></w:document>");
        let file = archive(&[("word/document.xml", document.as_bytes())]);
        let limits = Limits {
            max_text_bytes: 50,
            ..Limits::default()
        };
        let docx = extract(file.path(), ContentKind::Docx, &limits).expect("docx");
        assert!(docx.truncated);
        assert!(docx.text.len() <= 50);
    }
}
