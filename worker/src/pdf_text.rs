//! A page's text, read from its content stream by position.
//!
//! lopdf's `extract_text` concatenates the strings a page shows. Many PDF
//! writers (Ghostscript, Distiller, Skia, tesseract's text layer) never write
//! a space character between words: they move the pen instead, with a `TJ`
//! offset or a `Td`, and the words come out glued ("ThisessaydescribeswhyLily
//! Pondwascreated"). It also ignores text inside form XObjects and prefers a
//! simple font's base encoding over its `/ToUnicode` map.
//!
//! Here the text state is followed as the PDF specification defines it (text
//! and line matrices, the CTM, font size, character and word spacing,
//! horizontal scaling, glyph widths), so each piece of text has a start and
//! an end on the page. A gap along the line wider than `WORD_GAP` of the font
//! size is a word break; a move across the line of more than `LINE_SHIFT` is
//! a line break. Form XObjects are followed (to `MAX_FORM_DEPTH`), and a
//! font's `/ToUnicode` map wins over its `/Encoding`, as in poppler.
//!
//! One [`TextReader`] reads all pages of a document, so what pages share is
//! done once: fonts are loaded once, decoded streams are kept (up to
//! `MAX_CACHED_BYTES`), and pages with the same content and resources are
//! read once. Its bounds hold per document: operations, text and CPU time.

use std::{
    collections::{BTreeMap, HashMap},
    rc::Rc,
    time::Duration,
};

use lopdf::{Dictionary, Document, Encoding, Object, ObjectId, Stream, content::Operation};

use crate::{
    pdf_cjk::CjkCodes,
    pdf_content::{Operations, TooComplex},
    standard_fonts::StandardWidths,
};

/// A gap along the line wider than this share of the font size is a space.
const WORD_GAP: f64 = 0.15;
/// A move across the line of more than this share of the font size starts a
/// new line.
const LINE_SHIFT: f64 = 0.5;
/// Character spacing (`Tc`) wider than this share of the font size sets
/// each glyph apart, as in a table of glyphs; narrower is letter-spacing,
/// and the word stays one.
const SPACED_GLYPHS: f64 = 0.5;
/// The longest string read glyph by glyph for its character spacing.
const MAX_SPACED_GLYPHS: usize = 1024;
/// Form XObjects inside form XObjects, at most this deep.
const MAX_FORM_DEPTH: usize = 8;
/// Form XObjects run per page, at most: a form that calls itself (or others)
/// many times would otherwise multiply the work exponentially with depth.
const MAX_FORM_RUNS: usize = 1_000;
/// Content-stream operations per page, at most. A dense page of text has
/// tens of thousands; a detailed map a few hundred thousand.
pub const MAX_PAGE_OPERATIONS: usize = 2_000_000;
/// Content-stream operations per document, at most.
pub const MAX_DOCUMENT_OPERATIONS: usize = 20_000_000;
/// Nested `q` (saved graphics states) kept, at most; deeper saves are
/// ignored (hostile streams push without popping).
const MAX_SAVED_STATES: usize = 256;
/// Marked-content sequences open at once that are tracked; deeper ones are
/// counted only, so their `EMC`s still pair up.
const MAX_MARKED: usize = 256;
/// Text kept per page, at most (bytes).
const MAX_PAGE_TEXT: usize = 8 << 20;
/// Decoded streams kept for reuse across pages, at most (bytes).
const MAX_CACHED_BYTES: usize = 32 << 20;
/// Operations between two looks at the CPU clock.
const CLOCK_EVERY: usize = 4_096;
/// The largest two-byte character code.
const MAX_CODE: u32 = 0xFFFF;
/// Glyph width (thousandths of an em) when a font declares none.
const DEFAULT_WIDTH: f64 = 500.0;

/// Why a page's text could not be read.
#[derive(Debug)]
pub enum PageError {
    /// Its content cannot be read at all: the page counts as one without
    /// text, and the document goes on.
    Unreadable,
    /// A bound of the document was reached: the document fails, naming it.
    TooComplex(String),
}

/// A page's text; `cut` when the text bound stopped it early.
#[derive(Debug)]
pub struct PageText {
    pub text: String,
    pub cut: bool,
}

/// Why a run of operations stopped early.
enum Stop {
    /// The text bound was reached: keep what was read.
    TextFull,
    TooComplex(String),
}

impl From<TooComplex> for Stop {
    fn from(TooComplex(why): TooComplex) -> Self {
        Self::TooComplex(why)
    }
}

/// CPU time of the calling thread, against a budget. Reading text runs on
/// one thread, so this is the document's cost whatever else the process
/// does.
struct CpuBudget {
    started: Duration,
    budget: Duration,
}

impl CpuBudget {
    fn start(budget: Duration) -> Self {
        Self {
            started: thread_cpu_time(),
            budget,
        }
    }

    fn exceeded(&self) -> bool {
        thread_cpu_time().saturating_sub(self.started) > self.budget
    }
}

fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Annotations whose appearance is read, per page, at most.
const MAX_ANNOTATIONS: usize = 1_000;

/// An annotation's appearance stream and where it is drawn.
struct Appearance {
    form: ObjectId,
    placement: Matrix,
}

/// What identifies a page's text: its content streams, what their names
/// resolve to (fonts by their loaded copy, forms by object), so pages with
/// equal resources written out again each are still equal, and the
/// appearances drawn over it.
#[derive(Hash, PartialEq, Eq)]
struct PageKey {
    contents: Vec<ObjectId>,
    fonts: Vec<(Vec<u8>, usize)>,
    forms: Vec<(Vec<u8>, ObjectId)>,
    appearances: Vec<(ObjectId, [u64; 6])>,
}

impl PageKey {
    fn new(contents: Vec<ObjectId>, resources: &Resources<'_>, appearances: &[Appearance]) -> Self {
        Self {
            appearances: appearances
                .iter()
                .map(|a| (a.form, a.placement.0.map(f64::to_bits)))
                .collect(),
            contents,
            fonts: resources
                .fonts
                .iter()
                .map(|(name, font)| (name.clone(), Rc::as_ptr(font) as usize))
                .collect(),
            forms: resources
                .forms
                .iter()
                .map(|(name, id)| (name.clone(), *id))
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Matrix([f64; 6]);

impl Matrix {
    const IDENTITY: Self = Self([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);

    fn from_operands(operands: &[Object]) -> Option<Self> {
        let values: Vec<f64> = operands.iter().filter_map(number).collect();
        <[f64; 6]>::try_from(values).ok().map(Self)
    }

    /// `self × other`: apply `self`, then `other`.
    fn then(self, other: Self) -> Self {
        let [a, b, c, d, e, f] = self.0;
        let [a2, b2, c2, d2, e2, f2] = other.0;
        Self([
            a * a2 + b * c2,
            a * b2 + b * d2,
            c * a2 + d * c2,
            c * b2 + d * d2,
            e * a2 + f * c2 + e2,
            e * b2 + f * d2 + f2,
        ])
    }

    fn translate(tx: f64, ty: f64) -> Self {
        Self([1.0, 0.0, 0.0, 1.0, tx, ty])
    }

    fn apply(self, (x, y): (f64, f64)) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + c * y + e, b * x + d * y + f)
    }

    /// The bounding box of `rect` (`[x0 y0 x1 y1]`) after this matrix.
    fn bounds(self, rect: [f64; 4]) -> [f64; 4] {
        let corners = [
            self.apply((rect[0], rect[1])),
            self.apply((rect[2], rect[1])),
            self.apply((rect[0], rect[3])),
            self.apply((rect[2], rect[3])),
        ];
        let xs = corners.map(|c| c.0);
        let ys = corners.map(|c| c.1);
        [
            xs.iter().copied().fold(f64::INFINITY, f64::min),
            ys.iter().copied().fold(f64::INFINITY, f64::min),
            xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ]
    }

    fn origin(self) -> (f64, f64) {
        (self.0[4], self.0[5])
    }
}

/// Glyph widths, in thousandths of an em, by character code.
enum Widths {
    Simple {
        first: u32,
        widths: Vec<f64>,
        missing: f64,
    },
    Cid {
        widths: HashMap<u32, f64>,
        default: f64,
    },
    /// A standard 14 font named without `/Widths`: its AFM widths, by the
    /// character each code shows; [`load_font`] turns them into widths by
    /// code once it can decode the codes.
    Standard(StandardWidths),
}

impl Font<'_> {
    /// The `/ToUnicode` map's reading when it understands every code (some
    /// maps in the wild are malformed and decode to U+FFFD), else the
    /// encoding's.
    fn decode(&self, bytes: &[u8]) -> String {
        let Some(map) = &self.unicode else {
            return self.decode_without_map(bytes);
        };
        match map.bytes_to_string(bytes) {
            Ok(text) if !text.contains('\u{fffd}') => text,
            // Some codes the map does not know (or all, when it is broken):
            // those alone read through the font's encoding, one by one.
            _ if self.cjk.is_none() && self.by_code.is_some() => bytes
                .chunks(self.code_len)
                .map(|code| match map.bytes_to_string(code) {
                    Ok(text) if !text.contains('\u{fffd}') => text,
                    _ => self.decode_without_map(code),
                })
                .collect(),
            _ => self.decode_without_map(bytes),
        }
    }

    /// The codes read without the `/ToUnicode` map.
    fn decode_without_map(&self, bytes: &[u8]) -> String {
        if let Some(cjk) = self.cjk {
            return cjk.decode(bytes);
        }
        if let Some(table) = &self.by_code {
            return bytes
                .iter()
                .map(|&b| table[usize::from(b)].as_str())
                .collect();
        }
        self.encoding
            .as_ref()
            .and_then(|encoding| encoding.bytes_to_string(bytes).ok())
            .unwrap_or_default()
    }
}

impl Font<'_> {
    /// Calls `f` with each code's width (thousandths of an em) and whether
    /// it is the one-byte space that word spacing applies to.
    fn each_advance(&self, bytes: &[u8], mut f: impl FnMut(f64, bool)) {
        match self.cjk {
            // Codes are not CIDs here, and the CIDs' widths are unknown
            // without the CMap: full width for a two-byte code or a
            // non-ASCII character, half for the rest (what CJK fonts draw).
            Some(cjk @ (CjkCodes::Utf16 | CjkCodes::Legacy(_))) => {
                cjk.each_code(bytes, |code| {
                    let narrow = match cjk {
                        CjkCodes::Utf16 => code.first() == Some(&0) && code.len() == 2,
                        _ => code.len() == 1,
                    };
                    let space = narrow && code.last() == Some(&b' ');
                    f(if narrow { 500.0 } else { 1000.0 }, space);
                });
            }
            _ => {
                for code in codes(bytes, self.code_len) {
                    f(self.widths.of(code), self.code_len == 1 && code == 32);
                }
            }
        }
    }
}

impl Widths {
    /// The width of `code` in a font whose widths are by code (not
    /// `Standard`, which [`Font::width`] measures by character).
    fn of(&self, code: u32) -> f64 {
        match self {
            Self::Simple {
                first,
                widths,
                missing,
            } => code
                .checked_sub(*first)
                .and_then(|i| widths.get(i as usize))
                .copied()
                .unwrap_or(*missing),
            Self::Cid { widths, default } => widths.get(&code).copied().unwrap_or(*default),
            Self::Standard(_) => DEFAULT_WIDTH,
        }
    }
}

struct Font<'a> {
    /// The font's `/ToUnicode` map, when it has one beside an encoding.
    unicode: Option<Encoding<'a>>,
    /// A simple font's text by code (empty: a glyph that means no text),
    /// where lopdf would misread it (see [`code_table`]).
    by_code: Option<Vec<String>>,
    /// What lopdf reads the font's codes with otherwise.
    encoding: Option<Encoding<'a>>,
    widths: Widths,
    /// Bytes per character code: 2 for composite (Type0) fonts.
    code_len: usize,
    /// A composite font's predefined CMap, when it has no `/ToUnicode`.
    cjk: Option<CjkCodes>,
}

/// What a content stream can refer to by name.
struct Resources<'a> {
    fonts: BTreeMap<Vec<u8>, Rc<Font<'a>>>,
    forms: BTreeMap<Vec<u8>, ObjectId>,
}

/// The parts of the graphics and text state that place text.
#[derive(Clone)]
struct State<'a> {
    ctm: Matrix,
    text: Matrix,
    line: Matrix,
    font: Option<Rc<Font<'a>>>,
    size: f64,
    char_spacing: f64,
    word_spacing: f64,
    scale: f64,
    leading: f64,
}

impl Default for State<'_> {
    fn default() -> Self {
        Self {
            ctm: Matrix::IDENTITY,
            text: Matrix::IDENTITY,
            line: Matrix::IDENTITY,
            font: None,
            size: 0.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            scale: 1.0,
            leading: 0.0,
        }
    }
}

/// Where the last piece of text ended, in device space, and the direction
/// and size of its line.
#[derive(Clone, Copy)]
struct Pen {
    end: (f64, f64),
    direction: (f64, f64),
    size: f64,
}

pub struct TextReader<'a> {
    document: &'a Document,
    max_decompressed: usize,
    cpu: CpuBudget,
    fonts: HashMap<ObjectId, Rc<Font<'a>>>,
    /// Decoded streams (page contents and forms) by object.
    streams: HashMap<ObjectId, Rc<Vec<u8>>>,
    cached_bytes: usize,
    /// Text of pages read so far, for pages that repeat them.
    pages: HashMap<PageKey, Rc<String>>,
    document_operations: usize,
    // The page being read:
    page_operations: usize,
    /// The forms being run right now (a form never runs inside itself).
    running_forms: Vec<ObjectId>,
    form_runs: usize,
    /// The most text this page may hold.
    room: usize,
    /// The page reached `room`.
    full: bool,
    out: String,
    last_end: Option<Pen>,
    /// The marked-content sequences open on this page, innermost last.
    marked: Vec<Marked>,
    /// Sequences opened past `MAX_MARKED`, closed first.
    marked_untracked: usize,
    /// A spacing accent shown alone, held back to see whether the next
    /// glyph is drawn under it (see [`TextReader::show`]).
    accent: Option<HeldAccent>,
}

/// An open marked-content sequence (`BMC`/`BDC` … `EMC`).
enum Marked {
    Plain,
    /// A span whose `/ActualText` stands for the glyphs it shows (PDF
    /// 32000-1, 14.9.4): ligatures, hyphens, decimal points a ToUnicode map
    /// reads differently. The text is written once, where its first glyph
    /// is; `None` once written.
    ActualText(Option<String>),
}

/// A spacing accent (`¨`, `´`, `ˆ`…) waiting for the glyph it may sit on.
struct HeldAccent {
    /// The combining mark it becomes over a letter.
    mark: char,
    /// The accent as shown, if it turns out to stand alone.
    spacing: String,
}

impl<'a> TextReader<'a> {
    /// `cpu_budget` is the CPU time the whole document may take.
    pub fn new(document: &'a Document, max_decompressed: usize, cpu_budget: Duration) -> Self {
        Self {
            document,
            max_decompressed,
            cpu: CpuBudget::start(cpu_budget),
            fonts: HashMap::new(),
            streams: HashMap::new(),
            cached_bytes: 0,
            pages: HashMap::new(),
            document_operations: 0,
            page_operations: 0,
            running_forms: Vec::new(),
            form_runs: 0,
            room: 0,
            full: false,
            out: String::new(),
            last_end: None,
            marked: Vec::new(),
            marked_untracked: 0,
            accent: None,
        }
    }

    /// The page's text, at most `room` bytes of it.
    pub fn page_text(&mut self, page_id: ObjectId, room: usize) -> Result<PageText, PageError> {
        let (inline, referenced) = self
            .document
            .get_page_resources(page_id)
            .map_err(|_| PageError::Unreadable)?;
        let mut dictionaries: Vec<&'a Dictionary> = inline.into_iter().collect();
        dictionaries.extend(
            referenced
                .into_iter()
                .filter_map(|id| self.document.get_dictionary(id).ok()),
        );
        let resources = self.resources(&dictionaries);
        let appearances = self.appearances(page_id);
        let key = PageKey::new(
            self.document.get_page_contents(page_id),
            &resources,
            &appearances,
        );
        if let Some(text) = self.pages.get(&key) {
            return Ok(cut_to(text.as_str(), room));
        }
        let mut contents = Vec::with_capacity(key.contents.len());
        for &id in &key.contents {
            let stream = self
                .document
                .get_object(id)
                .and_then(Object::as_stream)
                .map_err(|_| PageError::Unreadable)?;
            contents.push(
                self.decoded(id, stream)
                    .map_err(|_| PageError::Unreadable)?,
            );
        }

        self.page_operations = 0;
        self.form_runs = 0;
        self.running_forms.clear();
        self.room = room.min(MAX_PAGE_TEXT);
        self.full = false;
        self.out = String::new();
        self.last_end = None;
        self.marked.clear();
        self.marked_untracked = 0;
        self.accent = None;
        let mut state = State::default();
        // A page's streams are one content stream cut in pieces.
        let operations = contents.iter().flat_map(|bytes| Operations::new(bytes));
        let read = self
            .run(operations, &resources, &mut state, 0)
            .and_then(|()| {
                // Then what annotations show (form fields' values, free
                // text), as a viewer draws them over the page.
                for appearance in &appearances {
                    let mut placed = State {
                        ctm: appearance.placement,
                        ..State::default()
                    };
                    self.release_accent();
                    self.last_end = None;
                    if !self.out.is_empty() && !self.out.ends_with('\n') {
                        self.push_text("\n");
                    }
                    self.run_form(appearance.form, &resources, &mut placed, 0)?;
                }
                Ok(())
            });
        self.release_accent();
        if self.out.chars().any(is_rtl) {
            self.out = logical_order(&self.out);
        }
        let cut = match read {
            Ok(()) => false,
            Err(Stop::TextFull) => true,
            Err(Stop::TooComplex(why)) => return Err(PageError::TooComplex(why)),
        };
        let text = std::mem::take(&mut self.out);
        if !cut {
            self.pages.insert(key, Rc::new(text.clone()));
        }
        Ok(PageText { text, cut })
    }

    /// The appearance streams of the page's visible annotations (at most
    /// `MAX_ANNOTATIONS`), each with where it goes on the page: its
    /// bounding box, after its matrix, mapped onto the annotation's
    /// rectangle (PDF 32000-1, 12.5.5).
    fn appearances(&self, page_id: ObjectId) -> Vec<Appearance> {
        let document = self.document;
        let Some(annotations) = document
            .get_dictionary(page_id)
            .and_then(|page| page.get_deref(b"Annots", document))
            .and_then(Object::as_array)
            .ok()
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for annotation in annotations.iter().take(MAX_ANNOTATIONS) {
            let Some(annotation) = self.deref_dict(Some(annotation)) else {
                continue;
            };
            // Hidden (bit 2) and no-view (bit 6) annotations are not shown.
            let flags = annotation.get(b"F").ok().and_then(number).unwrap_or(0.0) as i64;
            if flags & (2 | 32) != 0 {
                continue;
            }
            let Some(normal) = self
                .deref_dict(annotation.get(b"AP").ok())
                .and_then(|ap| ap.get(b"N").ok())
            else {
                continue;
            };
            // One stream, or one per state (check boxes): the current one.
            let form = match normal {
                Object::Reference(id) => match document.get_object(*id) {
                    Ok(Object::Stream(_)) => Some(*id),
                    Ok(Object::Dictionary(states)) => annotation
                        .get(b"AS")
                        .and_then(Object::as_name)
                        .ok()
                        .and_then(|state| states.get(state).ok())
                        .and_then(|o| o.as_reference().ok()),
                    _ => None,
                },
                _ => None,
            };
            let (Some(form), Some(rect)) = (
                form,
                annotation
                    .get_deref(b"Rect", document)
                    .and_then(Object::as_array)
                    .ok()
                    .and_then(|r| rectangle(r)),
            ) else {
                continue;
            };
            let Ok(stream) = document.get_object(form).and_then(Object::as_stream) else {
                continue;
            };
            let matrix = stream
                .dict
                .get(b"Matrix")
                .and_then(Object::as_array)
                .ok()
                .and_then(|m| Matrix::from_operands(m))
                .unwrap_or(Matrix::IDENTITY);
            let Some(bbox) = stream
                .dict
                .get(b"BBox")
                .and_then(Object::as_array)
                .ok()
                .and_then(|b| rectangle(b))
            else {
                continue;
            };
            let bbox = matrix.bounds(bbox);
            let scale = |to: f64, from: f64| {
                if from.abs() > f64::EPSILON {
                    to / from
                } else {
                    1.0
                }
            };
            let placement = Matrix::translate(-bbox[0], -bbox[1])
                .then(Matrix([
                    scale(rect[2] - rect[0], bbox[2] - bbox[0]),
                    0.0,
                    0.0,
                    scale(rect[3] - rect[1], bbox[3] - bbox[1]),
                    0.0,
                    0.0,
                ]))
                .then(Matrix::translate(rect[0], rect[1]));
            out.push(Appearance { form, placement });
        }
        out
    }

    /// A stream's decoded bytes, kept for the next page that uses it while
    /// the cache has room.
    fn decoded(&mut self, id: ObjectId, stream: &Stream) -> Result<Rc<Vec<u8>>, lopdf::Error> {
        if let Some(bytes) = self.streams.get(&id) {
            return Ok(Rc::clone(bytes));
        }
        let bytes = Rc::new(stream_content(stream, self.max_decompressed)?);
        if self.cached_bytes + bytes.len() <= MAX_CACHED_BYTES {
            self.cached_bytes += bytes.len();
            self.streams.insert(id, Rc::clone(&bytes));
        }
        Ok(bytes)
    }

    fn resources(&mut self, dictionaries: &[&'a Dictionary]) -> Resources<'a> {
        let mut resources = Resources {
            fonts: BTreeMap::new(),
            forms: BTreeMap::new(),
        };
        for dictionary in dictionaries {
            if let Some(fonts) = self.deref_dict(dictionary.get(b"Font").ok()) {
                for (name, value) in fonts.iter() {
                    if resources.fonts.contains_key(name) {
                        continue;
                    }
                    if let Some(font) = self.font(value) {
                        resources.fonts.insert(name.clone(), font);
                    }
                }
            }
            if let Some(xobjects) = self.deref_dict(dictionary.get(b"XObject").ok()) {
                for (name, value) in xobjects.iter() {
                    if let Ok(id) = value.as_reference() {
                        resources.forms.entry(name.clone()).or_insert(id);
                    }
                }
            }
        }
        resources
    }

    fn deref_dict(&self, object: Option<&'a Object>) -> Option<&'a Dictionary> {
        match object? {
            Object::Dictionary(dict) => Some(dict),
            Object::Reference(id) => self.document.get_dictionary(*id).ok(),
            _ => None,
        }
    }

    fn font(&mut self, value: &'a Object) -> Option<Rc<Font<'a>>> {
        let id = value.as_reference().ok();
        if let Some(font) = id.and_then(|id| self.fonts.get(&id)) {
            return Some(Rc::clone(font));
        }
        let dict = self.deref_dict(Some(value))?;
        let font = Rc::new(load_font(self.document, dict, self.max_decompressed)?);
        if let Some(id) = id {
            self.fonts.insert(id, Rc::clone(&font));
        }
        Some(font)
    }

    /// Counts one operation against the page's and the document's bounds.
    fn count_operation(&mut self) -> Result<(), Stop> {
        self.page_operations += 1;
        self.document_operations += 1;
        if self.page_operations > MAX_PAGE_OPERATIONS {
            return Err(Stop::TooComplex(format!(
                "a page has more than {MAX_PAGE_OPERATIONS} content-stream operations"
            )));
        }
        if self.document_operations > MAX_DOCUMENT_OPERATIONS {
            return Err(Stop::TooComplex(format!(
                "the document has more than {MAX_DOCUMENT_OPERATIONS} content-stream operations"
            )));
        }
        if self.document_operations.is_multiple_of(CLOCK_EVERY) && self.cpu.exceeded() {
            return Err(Stop::TooComplex(format!(
                "reading the text took more than its CPU budget of {} s",
                self.cpu.budget.as_secs_f64()
            )));
        }
        if self.full {
            return Err(Stop::TextFull);
        }
        Ok(())
    }

    fn run(
        &mut self,
        operations: impl Iterator<Item = Result<Operation, TooComplex>>,
        resources: &Resources<'a>,
        state: &mut State<'a>,
        depth: usize,
    ) -> Result<(), Stop> {
        let mut saved: Vec<State<'a>> = Vec::new();
        for operation in operations {
            let operation = operation?;
            self.count_operation()?;
            let operands = &operation.operands;
            let arg = |i: usize| operands.get(i).and_then(number).unwrap_or(0.0);
            match operation.operator.as_str() {
                "q" if saved.len() < MAX_SAVED_STATES => saved.push(state.clone()),
                "Q" => {
                    if let Some(previous) = saved.pop() {
                        *state = previous;
                    }
                }
                "cm" => {
                    if let Some(m) = Matrix::from_operands(operands) {
                        state.ctm = m.then(state.ctm);
                    }
                }
                "BT" => {
                    state.text = Matrix::IDENTITY;
                    state.line = Matrix::IDENTITY;
                }
                "Tf" => {
                    state.font = operands
                        .first()
                        .and_then(|o| o.as_name().ok())
                        .and_then(|name| resources.fonts.get(name))
                        .cloned();
                    state.size = arg(1);
                }
                "Tc" => state.char_spacing = arg(0),
                "Tw" => state.word_spacing = arg(0),
                "Tz" => state.scale = arg(0) / 100.0,
                "TL" => state.leading = arg(0),
                "Td" => move_line(state, arg(0), arg(1)),
                "TD" => {
                    state.leading = -arg(1);
                    move_line(state, arg(0), arg(1));
                }
                "Tm" => {
                    if let Some(m) = Matrix::from_operands(operands) {
                        state.text = m;
                        state.line = m;
                    }
                }
                "T*" => move_line(state, 0.0, -state.leading),
                "BMC" | "BDC" => {
                    if self.marked.len() >= MAX_MARKED {
                        self.marked_untracked += 1;
                        continue;
                    }
                    let actual = operands
                        .get(1)
                        .and_then(|o| o.as_dict().ok())
                        .and_then(|properties| properties.get(b"ActualText").ok())
                        .and_then(|text| text.as_str().ok())
                        .map(crate::pdf::decode_pdf_string);
                    self.marked.push(match actual {
                        Some(text) => Marked::ActualText(Some(text)),
                        None => Marked::Plain,
                    });
                }
                "EMC" => {
                    if self.marked_untracked > 0 {
                        self.marked_untracked -= 1;
                    } else {
                        self.marked.pop();
                    }
                }
                "Tj" => {
                    if let Some(bytes) = operands.first().and_then(|o| o.as_str().ok()) {
                        self.show(state, bytes);
                    }
                }
                "'" => {
                    move_line(state, 0.0, -state.leading);
                    if let Some(bytes) = operands.first().and_then(|o| o.as_str().ok()) {
                        self.show(state, bytes);
                    }
                }
                "\"" => {
                    state.word_spacing = arg(0);
                    state.char_spacing = arg(1);
                    move_line(state, 0.0, -state.leading);
                    if let Some(bytes) = operands.get(2).and_then(|o| o.as_str().ok()) {
                        self.show(state, bytes);
                    }
                }
                "TJ" => {
                    let Some(items) = operands.first().and_then(|o| o.as_array().ok()) else {
                        continue;
                    };
                    for item in items {
                        match item {
                            Object::String(bytes, _) => self.show(state, bytes),
                            other => {
                                if let Some(offset) = number(other) {
                                    // Thousandths of an em, against the
                                    // writing direction.
                                    let tx = -offset / 1000.0 * state.size * state.scale;
                                    state.text = Matrix::translate(tx, 0.0).then(state.text);
                                }
                            }
                        }
                    }
                }
                "Do" if depth < MAX_FORM_DEPTH && self.form_runs < MAX_FORM_RUNS => {
                    let Some(&id) = operands
                        .first()
                        .and_then(|o| o.as_name().ok())
                        .and_then(|name| resources.forms.get(name))
                    else {
                        continue;
                    };
                    if self.running_forms.contains(&id) {
                        continue;
                    }
                    self.form_runs += 1;
                    self.running_forms.push(id);
                    let ran = self.run_form(id, resources, state, depth);
                    self.running_forms.pop();
                    ran?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs a form XObject as `q cm <content> Q`, with its own resources.
    /// A form that cannot be read loses its own text only.
    fn run_form(
        &mut self,
        id: ObjectId,
        outer: &Resources<'a>,
        state: &mut State<'a>,
        depth: usize,
    ) -> Result<(), Stop> {
        let Ok(stream) = self.document.get_object(id).and_then(Object::as_stream) else {
            return Ok(());
        };
        if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
            return Ok(());
        }
        let Ok(content) = self.decoded(id, stream) else {
            return Ok(());
        };
        let matrix = stream
            .dict
            .get(b"Matrix")
            .and_then(Object::as_array)
            .ok()
            .and_then(|m| Matrix::from_operands(m))
            .unwrap_or(Matrix::IDENTITY);
        let own = self.deref_dict(stream.dict.get(b"Resources").ok());
        let resources = match own {
            Some(dict) => self.resources(&[dict]),
            None => Resources {
                fonts: outer.fonts.clone(),
                forms: outer.forms.clone(),
            },
        };
        let mut inner = state.clone();
        inner.ctm = matrix.then(state.ctm);
        self.run(Operations::new(&content), &resources, &mut inner, depth + 1)
    }

    /// Shows a string: decides whether it starts a word or a line, appends
    /// its text, and advances the text matrix by its width.
    fn show(&mut self, state: &mut State<'a>, bytes: &[u8]) {
        let Some(font) = state.font.clone() else {
            return;
        };
        // Glyphs set far apart by character spacing are read one by one,
        // so the gaps between them are seen (in strings of a table row's
        // length: a longer one is read whole, one step as ever).
        if font.cjk.is_none()
            && bytes.len() > font.code_len
            && bytes.len() <= MAX_SPACED_GLYPHS
            && state.char_spacing > SPACED_GLYPHS * state.size.abs()
        {
            for code in bytes.chunks(font.code_len) {
                self.show(state, code);
            }
            return;
        }
        let rendering = state.text.then(state.ctm);
        let start = rendering.origin();
        let direction = unit(rendering.0[0], rendering.0[1]);
        let size = (state.size * rendering.0[2].hypot(rendering.0[3])).abs();
        // Inside a span with an ActualText (the outermost one wins), the
        // span's text replaces what its glyphs decode to.
        let replaced = self.marked.iter_mut().find_map(|marked| match marked {
            Marked::ActualText(text) => Some(text.take()),
            Marked::Plain => None,
        });
        match replaced {
            Some(Some(actual)) => {
                self.release_accent();
                self.separate(start, direction, size, &actual);
                self.push_text(&actual);
            }
            Some(None) => {}
            None => self.place(&font.decode(bytes), start, direction, size),
        }

        let mut advance = 0.0;
        font.each_advance(bytes, |units, space| {
            let mut width = units / 1000.0 * state.size + state.char_spacing;
            if space {
                width += state.word_spacing;
            }
            advance += width * state.scale;
        });
        state.text = Matrix::translate(advance, 0.0).then(state.text);
        // Where the glyphs end: with glyphs set far apart, before the
        // spacing after the last one, so the next glyph's gap is seen (a
        // letter-spacing's small remainder is left to the pen).
        let trailing = if state.char_spacing > SPACED_GLYPHS * state.size.abs() {
            state.char_spacing * state.scale
        } else {
            0.0
        };
        let end = Matrix::translate(-trailing, 0.0)
            .then(state.text)
            .then(state.ctm)
            .origin();
        self.last_end = Some(Pen {
            end,
            direction,
            size,
        });
    }

    /// Writes the text of one shown string that starts at `start`, joining a
    /// lone spacing accent to the letter it is drawn over. TeX and other
    /// typesetters build accented letters from two glyphs (`\"a`: the
    /// accent, a step back, the `a`; or the letter, then the accent moved
    /// back over it); pdftotext and pdfium read them as one letter, and a
    /// reader sees one word.
    fn place(&mut self, text: &str, start: (f64, f64), direction: (f64, f64), size: f64) {
        let back = self.last_end.map(|pen| {
            let along =
                (start.0 - pen.end.0) * pen.direction.0 + (start.1 - pen.end.1) * pen.direction.1;
            along < -ACCENT_OVERLAP * size.max(pen.size) && along > -2.0 * size.max(pen.size)
        });
        if let Some(mark) = combining_accent(text) {
            self.release_accent();
            // Drawn back over the letter just written: it accents that one.
            if back == Some(true)
                && let Some(letter) = self.out.chars().next_back().filter(|c| c.is_alphabetic())
            {
                self.out.pop();
                self.push_text(&compose(letter, mark, ""));
                return;
            }
            // Else it may accent the next glyph: hold it until then.
            self.separate(start, direction, size, text);
            self.accent = Some(HeldAccent {
                mark,
                spacing: text.to_owned(),
            });
            return;
        }
        if let Some(held) = self.accent.take() {
            let mut chars = text.chars();
            if back == Some(true)
                && let Some(first) = chars.next()
                && first.is_alphabetic()
            {
                self.push_text(&compose(first, held.mark, chars.as_str()));
                return;
            }
            self.push_text(&held.spacing);
        }
        self.separate(start, direction, size, text);
        self.push_text(text);
    }

    /// Writes a held accent as shown: nothing came to sit under it.
    fn release_accent(&mut self) {
        if let Some(held) = self.accent.take() {
            self.push_text(&held.spacing);
        }
    }

    /// Appends text up to the page's room; what does not fit is dropped and
    /// the page is full.
    fn push_text(&mut self, text: &str) {
        let kept = crate::text::prefix_within(text, self.room.saturating_sub(self.out.len()));
        self.out.push_str(kept);
        if kept.len() < text.len() {
            self.full = true;
        }
    }

    /// Inserts the space or line break between the last text and text that
    /// starts at `start`.
    fn separate(&mut self, start: (f64, f64), direction: (f64, f64), size: f64, text: &str) {
        let Some(pen) = self.last_end else {
            return;
        };
        if text.is_empty() || self.out.is_empty() {
            return;
        }
        let (dx, dy) = (start.0 - pen.end.0, start.1 - pen.end.1);
        let along = dx * pen.direction.0 + dy * pen.direction.1;
        let across = dy * pen.direction.0 - dx * pen.direction.1;
        let size = pen.size.max(size).max(f64::EPSILON);
        let separator = if across.abs() > LINE_SHIFT * size || direction != pen.direction {
            Some('\n')
        } else if along > WORD_GAP * size || along < -size {
            Some(' ')
        } else {
            None
        };
        if separator == Some('\n') && self.rejoin_hyphenated(text) {
            return;
        }
        if let Some(separator) = separator
            && !self.out.ends_with(char::is_whitespace)
            && !text.starts_with(char::is_whitespace)
        {
            self.push_text(separator.encode_utf8(&mut [0; 4]));
        }
    }

    /// A word hyphenated at the end of a line ("mem-" then "ber") is one
    /// word again: the hyphen goes and the next line follows on, as
    /// pdftotext and pdfium read it, so the word can be found. Only a hyphen
    /// after a letter, before a lower-case letter (not "A-" then "B").
    fn rejoin_hyphenated(&mut self, next: &str) -> bool {
        let mut tail = self.out.chars().rev();
        let (Some(hyphen), Some(before)) = (tail.next(), tail.next()) else {
            return false;
        };
        let continues = next.chars().next().is_some_and(char::is_lowercase);
        if !matches!(hyphen, '-' | '\u{ad}' | '\u{2010}') || !before.is_alphabetic() || !continues {
            return false;
        }
        self.out.truncate(self.out.len() - hyphen.len_utf8());
        true
    }
}

/// Letters of right-to-left scripts (Hebrew, Arabic, Syriac, Thaana, N'Ko,
/// and their presentation forms).
fn is_rtl(c: char) -> bool {
    matches!(c, '\u{590}'..='\u{7ff}' | '\u{fb1d}'..='\u{fdff}' | '\u{fe70}'..='\u{feff}')
        && c.is_alphabetic()
}

/// A page's text with right-to-left words in reading order. Glyphs are read
/// as drawn, left to right, which for Arabic or Hebrew is the reverse of
/// the order they are read in ("ملاعلاب ابحرم" for "مرحبا بالعالم"): on each
/// line, every run of right-to-left letters (with the spaces, marks and
/// punctuation between them) is reversed, a letter keeping its combining
/// marks after it. Digits and Latin text keep their order, as in the
/// Unicode bidirectional algorithm's simplest case.
fn logical_order(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let chars: Vec<char> = line.chars().collect();
        let mut at = 0;
        while at < chars.len() {
            if !is_rtl(chars[at]) {
                out.push(chars[at]);
                at += 1;
                continue;
            }
            // The run: up to the last RTL letter before a character that is
            // neither RTL, a mark, a space nor punctuation.
            let mut end = at;
            let mut last_letter = at;
            while end < chars.len() {
                let c = chars[end];
                if is_rtl(c) {
                    last_letter = end;
                } else if !(c.is_whitespace()
                    || is_mark(c)
                    || (c.is_ascii_punctuation() && c != '(' && c != ')'))
                {
                    break;
                }
                end += 1;
            }
            // Trailing marks stay with the last letter.
            let mut run_end = last_letter + 1;
            while run_end < chars.len() && is_mark(chars[run_end]) {
                run_end += 1;
            }
            // Clusters (a character and the marks after it), reversed.
            let mut clusters: Vec<&[char]> = Vec::new();
            let mut start = at;
            for j in at + 1..=run_end {
                if j == run_end || !is_mark(chars[j]) {
                    clusters.push(&chars[start..j]);
                    start = j;
                }
            }
            for cluster in clusters.iter().rev() {
                out.extend(cluster.iter());
            }
            at = run_end;
        }
    }
    out
}

/// Combining marks (Arabic harakat, Hebrew points, accents).
fn is_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36f}' | '\u{591}'..='\u{5c7}' | '\u{610}'..='\u{61a}' | '\u{64b}'..='\u{65f}' | '\u{670}' | '\u{6d6}'..='\u{6ed}')
}

/// How far back (in ems) a glyph must be drawn over the previous one to
/// sit on it rather than follow it: a kerning pair moves back less.
const ACCENT_OVERLAP: f64 = 0.15;

/// A letter with a combining mark, as one character where Unicode has one
/// (`a` + U+0308 is `ä`), then `rest`.
fn compose(letter: char, mark: char, rest: &str) -> String {
    use unicode_normalization::UnicodeNormalization;

    let mut out: String = [letter, mark].into_iter().nfc().collect();
    out.push_str(rest);
    out
}

/// The combining mark of a spacing accent shown on its own.
fn combining_accent(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let accent = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    Some(match accent {
        '`' => '\u{300}',
        '\u{b4}' => '\u{301}',
        '\u{2c6}' => '\u{302}',
        '\u{2dc}' => '\u{303}',
        '\u{af}' | '\u{2c9}' => '\u{304}',
        '\u{2d8}' => '\u{306}',
        '\u{2d9}' => '\u{307}',
        '\u{a8}' => '\u{308}',
        '\u{2da}' => '\u{30a}',
        '\u{2dd}' => '\u{30b}',
        '\u{2c7}' => '\u{30c}',
        '\u{b8}' => '\u{327}',
        '\u{2db}' => '\u{328}',
        _ => return None,
    })
}

fn move_line(state: &mut State<'_>, tx: f64, ty: f64) {
    state.line = Matrix::translate(tx, ty).then(state.line);
    state.text = state.line;
}

fn unit(x: f64, y: f64) -> (f64, f64) {
    let length = x.hypot(y);
    if length > 0.0 {
        // Rounded so that the same direction compares equal after floating
        // point noise.
        (
            (x / length * 1e6).round() / 1e6,
            (y / length * 1e6).round() / 1e6,
        )
    } else {
        (1.0, 0.0)
    }
}

fn codes(bytes: &[u8], code_len: usize) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks(code_len.max(1)).map(|chunk| {
        chunk
            .iter()
            .fold(0_u32, |code, b| code << 8 | u32::from(*b))
    })
}

/// `[x0 y0 x1 y1]` of four numbers, normalised so x0 ≤ x1 and y0 ≤ y1.
fn rectangle(values: &[Object]) -> Option<[f64; 4]> {
    let numbers: Vec<f64> = values.iter().filter_map(number).collect();
    let [x0, y0, x1, y1] = numbers[..] else {
        return None;
    };
    Some([x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)])
}

fn number(object: &Object) -> Option<f64> {
    match object {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

/// `text` cut to at most `room` bytes, on a character boundary.
fn cut_to(text: &str, room: usize) -> PageText {
    let kept = crate::text::prefix_within(text, room);
    PageText {
        text: kept.to_owned(),
        cut: kept.len() < text.len(),
    }
}

fn stream_content(stream: &Stream, max_decompressed: usize) -> Result<Vec<u8>, lopdf::Error> {
    if stream.dict.get(b"Filter").is_ok() {
        stream.decompressed_content_with_limit(max_decompressed)
    } else {
        Ok(stream.content.clone())
    }
}

fn load_font<'a>(
    document: &'a Document,
    dict: &'a Dictionary,
    max_decompressed: usize,
) -> Option<Font<'a>> {
    let composite =
        dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Type0".as_slice());
    let encoding = dict
        .get_font_encoding_with_limit(document, max_decompressed)
        .ok();
    let by_code = if composite {
        None
    } else {
        code_table(document, dict, max_decompressed)
    };
    let cjk = if composite && dict.get(b"ToUnicode").is_err() {
        predefined_cmap(document, dict)
    } else {
        None
    };
    if encoding.is_none() && by_code.is_none() && cjk.is_none() {
        return None;
    }
    let mut font = Font {
        unicode: unicode_map(document, dict, max_decompressed),
        by_code,
        encoding,
        widths: if composite {
            cid_widths(document, dict)
        } else {
            simple_widths(document, dict)
        },
        code_len: if composite { 2 } else { 1 },
        cjk,
    };
    // Standard widths are by character: measure each of the 256 codes
    // once, not every glyph shown.
    if let Widths::Standard(standard) = font.widths {
        let widths = (0..=255_u8)
            .map(|code| {
                font.decode(&[code])
                    .chars()
                    .next()
                    .and_then(|c| standard.width(c))
                    .unwrap_or(DEFAULT_WIDTH)
            })
            .collect();
        font.widths = Widths::Simple {
            first: 0,
            widths,
            missing: DEFAULT_WIDTH,
        };
    }
    Some(font)
}

/// A simple font's text by code, where we must read it ourselves rather
/// than leave it to lopdf: when the font's own program declares the base
/// encoding (an embedded Type 1 font without `/Encoding`, or with
/// `/Differences` and no `/BaseEncoding`), which lopdf ignores, reading
/// StandardEncoding instead; and when `/Differences` name a glyph outside
/// the Adobe Glyph List, which makes lopdf drop the table whole. The base
/// encoding's reading of each code, then each named glyph's text.
fn code_table(
    document: &Document,
    font: &Dictionary,
    max_decompressed: usize,
) -> Option<Vec<String>> {
    let (base_name, changes) = match font.get_deref(b"Encoding", document) {
        Err(_) => (None, None),
        Ok(Object::Dictionary(encoding)) => (
            encoding.get(b"BaseEncoding").and_then(Object::as_name).ok(),
            encoding
                .get_deref(b"Differences", document)
                .and_then(Object::as_array)
                .ok(),
        ),
        // A named encoding (WinAnsi, MacRoman…) is lopdf's to read.
        Ok(_) => return None,
    };
    let builtin = base_name
        .is_none()
        .then(|| builtin_text(document, font, max_decompressed))
        .flatten();
    let lopdf_drops_it = changes.is_some_and(|changes| {
        changes.iter().any(|change| {
            change
                .as_name()
                .is_ok_and(|name| !crate::glyph_names::is_listed(name))
        })
    });
    if builtin.is_none() && !lopdf_drops_it {
        return None;
    }
    let mut table: Vec<String> = match builtin {
        Some(table) => table,
        None => {
            // The same font with the encoding's base (or none, which lopdf
            // reads as StandardEncoding), each code decoded alone.
            let mut base_font = font.clone();
            base_font.set(
                "Encoding",
                Object::Name(base_name.unwrap_or(b"StandardEncoding").to_vec()),
            );
            base_font.remove(b"ToUnicode");
            let base = base_font
                .get_font_encoding_with_limit(document, max_decompressed)
                .ok();
            (0..=255_u8)
                .map(|code| {
                    base.as_ref()
                        .and_then(|base| base.bytes_to_string(&[code]).ok())
                        .unwrap_or_default()
                })
                .collect()
        }
    };
    // Type 3 fonts (TeX's bitmap fonts among them) often name each glyph
    // after its code (`/a232` at 232): nothing but the code is known, and
    // pdftotext and pdfium read it as that character.
    let type3 = font.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Type3".as_slice());
    let mut code: Option<usize> = None;
    for change in changes.into_iter().flatten() {
        match change {
            Object::Integer(start) => code = usize::try_from(*start).ok().filter(|c| *c < 256),
            Object::Name(name) => {
                if let Some(at) = code {
                    // A name that says nothing keeps the base reading, as
                    // poppler falls back to the font's own encoding;
                    // `.notdef` draws nothing.
                    match crate::glyph_names::to_text(name) {
                        Some(text) => table[at] = text,
                        None if name == b".notdef" => table[at].clear(),
                        None if type3 && named_after_code(name) == Some(at) => {
                            table[at] = char::from(at as u8).to_string();
                        }
                        None => {}
                    }
                    code = Some(at + 1).filter(|c| *c < 256);
                }
            }
            _ => {}
        }
    }
    Some(table)
}

/// The code a glyph name like `a232` or `g7` names: one or two letters and
/// the code in decimal.
fn named_after_code(name: &[u8]) -> Option<usize> {
    let digits = name.iter().position(u8::is_ascii_digit)?;
    let (letters, number) = name.split_at(digits);
    if !(1..=2).contains(&letters.len())
        || !letters.iter().all(u8::is_ascii_alphabetic)
        || !(1..=3).contains(&number.len())
    {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// The text of each code by the font's built-in encoding, where that is
/// not StandardEncoding: the one its embedded Type 1 program declares, or
/// Symbol's and ZapfDingbats' own when the PDF names them without
/// embedding them.
fn builtin_text(
    document: &Document,
    font: &Dictionary,
    max_decompressed: usize,
) -> Option<Vec<String>> {
    let descriptor = font
        .get_deref(b"FontDescriptor", document)
        .and_then(Object::as_dict)
        .ok();
    let program = descriptor.and_then(|d| {
        d.get_deref(b"FontFile", document)
            .and_then(Object::as_stream)
            .ok()
    });
    if let Some(program) = program {
        let clear_text_len = program
            .dict
            .get(b"Length1")
            .ok()
            .and_then(|len| deref_number(document, len))
            .and_then(|len| (len >= 0.0).then_some(len as usize));
        let bytes = stream_content(program, max_decompressed).ok()?;
        let names = crate::pdf_type1::builtin_encoding(&bytes, clear_text_len)?;
        return Some(
            names
                .iter()
                .map(|name| {
                    name.as_deref()
                        .and_then(crate::glyph_names::to_text)
                        .unwrap_or_default()
                })
                .collect(),
        );
    }
    let cff = descriptor.and_then(|d| {
        d.get_deref(b"FontFile3", document)
            .and_then(Object::as_stream)
            .ok()
    });
    if let Some(program) = cff {
        // Only a bare CFF program has a built-in encoding to read; anything
        // else (OpenType) is not inflated at all.
        let type1c = program.dict.get(b"Subtype").and_then(Object::as_name).ok()
            == Some(b"Type1C".as_slice());
        if !type1c {
            return None;
        }
        let bytes = stream_content(program, max_decompressed).ok()?;
        let names = crate::pdf_cff::builtin_encoding(&bytes)?;
        return Some(
            names
                .iter()
                .map(|name| {
                    name.as_deref()
                        .and_then(crate::glyph_names::to_text)
                        .unwrap_or_default()
                })
                .collect(),
        );
    }
    if descriptor.is_some_and(|d| d.has(b"FontFile2")) {
        return None;
    }
    let base_font = font.get(b"BaseFont").and_then(Object::as_name).ok()?;
    let table = crate::standard_fonts::symbolic_encoding(base_font)?;
    Some(
        table
            .iter()
            .map(|&c| {
                if c == '\0' {
                    String::new()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A Type0 font's predefined CMap that we can read (`pdf_cjk`), from its
/// `/Encoding` name and its descendant's `/CIDSystemInfo` ordering.
fn predefined_cmap(document: &Document, dict: &Dictionary) -> Option<CjkCodes> {
    let name = dict.get_deref(b"Encoding", document).ok()?.as_name().ok()?;
    let ordering = descendant_font(document, dict)
        .and_then(|d| d.get_deref(b"CIDSystemInfo", document).ok())
        .and_then(|info| info.as_dict().ok())
        .and_then(|info| info.get_deref(b"Ordering", document).ok())
        .and_then(|ordering| ordering.as_str().ok());
    CjkCodes::for_cmap(name, ordering)
}

fn descendant_font<'a>(document: &'a Document, dict: &'a Dictionary) -> Option<&'a Dictionary> {
    dict.get_deref(b"DescendantFonts", document)
        .and_then(Object::as_array)
        .ok()
        .and_then(|fonts| fonts.first())
        .and_then(|font| match font {
            Object::Reference(id) => document.get_dictionary(*id).ok(),
            Object::Dictionary(dict) => Some(dict),
            _ => None,
        })
}

/// The font's `/ToUnicode` map: the writer's statement of what each code
/// means, preferred over the encoding (lopdf would prefer an `/Encoding`)
/// and over the font program's built-in encoding, as poppler does.
fn unicode_map<'a>(
    document: &'a Document,
    dict: &'a Dictionary,
    max_decompressed: usize,
) -> Option<Encoding<'a>> {
    dict.get(b"ToUnicode").ok()?;
    let mut unicode_only = dict.clone();
    unicode_only.remove(b"Encoding");
    match unicode_only.get_font_encoding_with_limit(document, max_decompressed) {
        Ok(Encoding::UnicodeMapEncoding(map)) => Some(Encoding::UnicodeMapEncoding(map)),
        _ => None,
    }
}

fn simple_widths(document: &Document, dict: &Dictionary) -> Widths {
    let listed = dict
        .get_deref(b"Widths", document)
        .and_then(Object::as_array)
        .is_ok_and(|w| !w.is_empty());
    if !listed
        && let Some(standard) = dict
            .get(b"BaseFont")
            .and_then(Object::as_name)
            .ok()
            .and_then(StandardWidths::for_base_font)
    {
        return Widths::Standard(standard);
    }
    let first = dict
        .get(b"FirstChar")
        .ok()
        .and_then(number)
        .map_or(0, |f| f.max(0.0) as u32);
    let widths = dict
        .get_deref(b"Widths", document)
        .and_then(Object::as_array)
        .map(|w| {
            w.iter()
                .map(|o| deref_number(document, o).unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    let missing = dict
        .get_deref(b"FontDescriptor", document)
        .and_then(Object::as_dict)
        .ok()
        .and_then(|d| d.get(b"MissingWidth").ok().and_then(number))
        .filter(|w| *w > 0.0)
        .unwrap_or(DEFAULT_WIDTH);
    Widths::Simple {
        first,
        widths,
        missing,
    }
}

fn cid_widths(document: &Document, dict: &Dictionary) -> Widths {
    let descendant = descendant_font(document, dict);
    let default = descendant
        .and_then(|d| d.get(b"DW").ok().and_then(number))
        .unwrap_or(1000.0);
    let mut widths = HashMap::new();
    if let Some(array) = descendant
        .and_then(|d| d.get_deref(b"W", document).ok())
        .and_then(|w| w.as_array().ok())
    {
        // Entries are `c [w1 w2 ...]` or `c_first c_last w`.
        let mut i = 0;
        while i < array.len() {
            let Some(first) = deref_number(document, &array[i]) else {
                break;
            };
            let first = first.max(0.0).min(f64::from(u32::MAX)) as u32;
            match array.get(i + 1).map(|o| deref(document, o)) {
                Some(Object::Array(list)) => {
                    for (offset, w) in list.iter().enumerate() {
                        let code = first.saturating_add(u32::try_from(offset).unwrap_or(u32::MAX));
                        if code > MAX_CODE {
                            break;
                        }
                        if let Some(w) = deref_number(document, w) {
                            widths.insert(code, w);
                        }
                    }
                    i += 2;
                }
                Some(last) => {
                    let (Some(last), Some(w)) = (
                        number(last),
                        array.get(i + 2).and_then(|o| deref_number(document, o)),
                    ) else {
                        break;
                    };
                    // Codes are two bytes: at most 65,536 entries, however
                    // many ranges a hostile font lists.
                    let last = last.max(0.0).min(f64::from(MAX_CODE)) as u32;
                    for code in first..=last {
                        widths.insert(code, w);
                    }
                    i += 3;
                }
                None => break,
            }
        }
    }
    Widths::Cid { widths, default }
}

fn deref<'a>(document: &'a Document, object: &'a Object) -> &'a Object {
    match object {
        Object::Reference(id) => document.get_object(*id).unwrap_or(object),
        other => other,
    }
}

fn deref_number(document: &Document, object: &Object) -> Option<f64> {
    number(deref(document, object))
}

#[cfg(test)]
mod tests {
    use lopdf::{Stream, content::Content, dictionary};

    use super::*;

    /// A one-page PDF showing `operations` in Helvetica (widths 600 for
    /// every code, so positions are predictable).
    fn page_with(operations: Vec<Operation>) -> (Document, ObjectId) {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => "Helvetica",
            "Encoding" => "WinAnsiEncoding",
            "FirstChar" => 32,
            "Widths" => (32..=126).map(|_| Object::Integer(600)).collect::<Vec<_>>(),
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let content = Content { operations };
        let content_id = doc.add_object(Stream::new(
            dictionary! {},
            content.encode().expect("encode"),
        ));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => vec![page_id.into()],
                "Count" => 1,
            }),
        );
        let catalog_id = doc.add_object(dictionary! {
            "Type" => "Catalog",
            "Pages" => pages_id,
        });
        doc.trailer.set("Root", catalog_id);
        (doc, page_id)
    }

    /// `operations` inside one text object, in 10-point F1 from (72, 700).
    fn text_object(operations: Vec<Operation>) -> Vec<Operation> {
        let mut all = vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 10.into()]),
            op("Td", vec![72.into(), 700.into()]),
        ];
        all.extend(operations);
        all.push(op("ET", vec![]));
        all
    }

    /// The page's text, read with room to spare.
    fn text_of(doc: &Document, page: ObjectId) -> String {
        page_text(doc, page, 1 << 20).expect("text")
    }

    fn page_text(doc: &Document, page: ObjectId, max: usize) -> Result<String, PageError> {
        TextReader::new(doc, max, Duration::from_secs(10))
            .page_text(page, usize::MAX)
            .map(|page| page.text)
    }

    /// A page whose content stream is `raw` (not encoded by lopdf, so it
    /// can be any size).
    fn page_with_stream(raw: Vec<u8>) -> (Document, ObjectId) {
        let (mut doc, page) = page_with(vec![]);
        let content = doc.get_page_contents(page)[0];
        *doc.get_object_mut(content)
            .and_then(Object::as_stream_mut)
            .expect("stream") = Stream::new(dictionary! {}, raw);
        (doc, page)
    }

    /// Changes the font `page_with` shows its text in.
    fn edit_font(doc: &mut Document, edit: impl Fn(&mut Dictionary)) {
        for object in doc.objects.values_mut() {
            if let Object::Dictionary(dict) = object
                && dict.has_type(b"Font")
            {
                edit(dict);
            }
        }
    }

    fn op(operator: &str, operands: Vec<Object>) -> Operation {
        Operation::new(operator, operands)
    }

    fn text(s: &str) -> Object {
        Object::string_literal(s)
    }

    #[test]
    fn words_placed_by_kerning_offsets_or_moves_are_separated() {
        let (doc, page) = page_with(text_object(vec![
            // Kerning inside a word, a word gap as a fractional offset.
            op(
                "TJ",
                vec![Object::Array(vec![
                    text("Th"),
                    Object::Real(-0.6),
                    text("is"),
                    Object::Real(-422.416),
                    text("essay"),
                ])],
            ),
            // The next word placed by a move, no space character.
            op("Td", vec![Object::Real(110.0), 0.into()]),
            op("Tj", vec![text("describes")]),
            // A new line.
            op("Td", vec![Object::Real(-110.0), Object::Real(-14.0)]),
            op("Tj", vec![text("why")]),
        ]));
        assert_eq!(text_of(&doc, page), "This essay describes\nwhy");
    }

    fn bytes(b: &[u8]) -> Object {
        Object::String(b.to_vec(), lopdf::StringFormat::Literal)
    }

    #[test]
    fn actual_text_stands_for_the_glyphs_of_its_span() {
        let span = |actual: &[u8]| {
            op(
                "BDC",
                vec![
                    "Span".into(),
                    Object::Dictionary(dictionary! { "ActualText" => bytes(actual) }),
                ],
            )
        };
        let (doc, page) = page_with(text_object(vec![
            op("Tj", vec![text("11,062")]),
            // A decimal point whose glyph a ToUnicode map would read as
            // " .", in a UTF-16 ActualText.
            span(b"\xfe\xff\x00."),
            op("Tj", vec![text(" .")]),
            op("EMC", vec![]),
            op("Tj", vec![text("6 in")]),
            // A ligature: two strings, one text, written once.
            span(b"fi"),
            op("BMC", vec!["Span".into()]),
            op("Tj", vec![text("X")]),
            op("EMC", vec![]),
            op("Tj", vec![text("Y")]),
            op("EMC", vec![]),
            op("Tj", vec![text("ve")]),
            // A hyphen the writer says is no text.
            span(b""),
            op("Tj", vec![text("-")]),
            op("EMC", vec![]),
            // An EMC without its BMC closes nothing.
            op("EMC", vec![]),
            op("Tj", vec![text("s")]),
        ]));
        assert_eq!(text_of(&doc, page), "11,062.6 infives");
    }

    #[test]
    fn glyphs_set_far_apart_are_words_and_letter_spacing_is_not() {
        let (doc, page) = page_with(text_object(vec![
            // A table of glyphs: 1.4 em between each.
            op("Tc", vec![Object::Real(14.0)]),
            op("Tj", vec![text("0123")]),
            // A letter-spaced heading: 0.2 em.
            op("Tc", vec![Object::Real(2.0)]),
            op("Td", vec![0.into(), Object::Real(-14.0)]),
            op("Tj", vec![text("TITLE")]),
        ]));
        assert_eq!(text_of(&doc, page), "0 1 2 3\nTITLE");
    }

    #[test]
    fn a_string_longer_than_a_table_row_is_read_whole() {
        let long = "x".repeat(MAX_SPACED_GLYPHS + 1);
        let (doc, page) = page_with(text_object(vec![
            op("Tc", vec![Object::Real(14.0)]),
            op("Tj", vec![text(&long)]),
        ]));
        assert_eq!(text_of(&doc, page), long);
    }

    #[test]
    fn marked_content_nested_past_the_limit_still_pairs_up() {
        let actual = |s: &[u8]| {
            op(
                "BDC",
                vec![
                    "Span".into(),
                    Object::Dictionary(dictionary! { "ActualText" => bytes(s) }),
                ],
            )
        };
        let mut operations: Vec<Operation> = (0..MAX_MARKED)
            .map(|_| op("BMC", vec!["Span".into()]))
            .collect();
        // Past the limit: counted, not tracked, so its ActualText is not
        // used; its EMC still closes it, not one of the tracked ones.
        operations.extend([
            actual(b"ignored"),
            op("Tj", vec![text("a")]),
            op("EMC", vec![]),
        ]);
        operations.extend((0..MAX_MARKED).map(|_| op("EMC", vec![])));
        // Back at the top, an ActualText works again.
        operations.extend([actual(b"b"), op("Tj", vec![text("z")]), op("EMC", vec![])]);
        let (doc, page) = page_with(text_object(operations));
        assert_eq!(text_of(&doc, page), "ab");
    }

    #[test]
    fn a_word_hyphenated_at_a_line_end_is_one_word() {
        let line = |s: &str| {
            vec![
                op("Tj", vec![text(s)]),
                op("Td", vec![0.into(), Object::Real(-14.0)]),
            ]
        };
        let mut operations = vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 10.into()]),
            op("Td", vec![72.into(), 700.into()]),
        ];
        for s in [
            "class mem-",
            "ber function",
            "Figure A-",
            "B and re-",
            "Use",
        ] {
            operations.extend(line(s));
        }
        operations.push(op("ET", vec![]));
        let (doc, page) = page_with(operations);
        assert_eq!(
            text_of(&doc, page),
            "class member function\nFigure A-\nB and re-\nUse"
        );
    }

    #[test]
    fn an_accent_drawn_over_a_letter_joins_it() {
        let (doc, page) = page_with(text_object(vec![
            // TeX's \"a: the accent, a step back, the letter under it.
            op(
                "TJ",
                vec![Object::Array(vec![
                    text("Universit"),
                    bytes(b"\xa8"),
                    Object::Integer(500),
                    text("at"),
                ])],
            ),
            // The letter, then the accent moved back over it.
            op("Td", vec![100.into(), 0.into()]),
            op(
                "TJ",
                vec![Object::Array(vec![
                    text("caf"),
                    text("e"),
                    Object::Integer(600),
                    bytes(b"\xb4"),
                ])],
            ),
            // An accent on its own stays what it is.
            op("Td", vec![100.into(), 0.into()]),
            op("Tj", vec![bytes(b"\xa8")]),
            op("Td", vec![20.into(), 0.into()]),
            op("Tj", vec![text("x")]),
        ]));
        assert_eq!(text_of(&doc, page), "Universit\u{e4}t caf\u{e9} \u{a8} x");
    }

    #[test]
    fn text_inside_form_xobjects_is_read_in_place() {
        let (mut doc, page) = page_with(vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 10.into()]),
            op("Td", vec![72.into(), 700.into()]),
            op("Tj", vec![text("Before")]),
            op("ET", vec![]),
            op("Do", vec!["Fm1".into()]),
        ]);
        // A form that shows a line of its own, below, with the page's font.
        let form = Content {
            operations: vec![
                op("BT", vec![]),
                op("Tf", vec!["F1".into(), 10.into()]),
                op("Td", vec![72.into(), 680.into()]),
                op("Tj", vec![text("inside the form")]),
                op("ET", vec![]),
            ],
        };
        let form_id = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Form", "BBox" => vec![0.into(), 0.into(), 612.into(), 792.into()] },
            form.encode().expect("encode"),
        ));
        let resources_id = doc
            .get_dictionary(page)
            .and_then(|p| p.get(b"Resources"))
            .and_then(Object::as_reference)
            .expect("resources");
        let resources = doc
            .get_object_mut(resources_id)
            .and_then(Object::as_dict_mut)
            .expect("dict");
        resources.set("XObject", dictionary! { "Fm1" => form_id });
        assert_eq!(text_of(&doc, page), "Before\ninside the form");
    }

    #[test]
    fn a_form_that_calls_itself_ends_and_is_read_once() {
        let (mut doc, page) = page_with(vec![op("Do", vec!["Fm1".into()])]);
        // No resources of its own: it inherits the page's, itself included,
        // and calls itself a thousand times.
        let mut operations = vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 10.into()]),
            op("Td", vec![72.into(), 680.into()]),
            op("Tj", vec![text("loop")]),
            op("ET", vec![]),
        ];
        operations.extend((0..1000).map(|_| op("Do", vec!["Fm1".into()])));
        let form_id = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Form" },
            Content { operations }.encode().expect("encode"),
        ));
        let resources_id = doc
            .get_dictionary(page)
            .and_then(|p| p.get(b"Resources"))
            .and_then(Object::as_reference)
            .expect("resources");
        doc.get_object_mut(resources_id)
            .and_then(Object::as_dict_mut)
            .expect("dict")
            .set("XObject", dictionary! { "Fm1" => form_id });
        assert_eq!(text_of(&doc, page), "loop");
    }

    #[test]
    fn a_string_split_mid_word_stays_one_word() {
        let (doc, page) = page_with(text_object(vec![
            op("Tj", vec![text("sc")]),
            // Exactly where "sc" ends: 2 glyphs × 600/1000 × 10.
            op("Td", vec![Object::Real(12.0), 0.into()]),
            op("Tj", vec![text("ores")]),
        ]));
        assert_eq!(text_of(&doc, page), "scores");
    }

    #[test]
    fn an_operation_flood_fails_the_page_as_too_complex_without_holding_it() {
        let mut raw = b"BT /F1 10 Tf ".to_vec();
        raw.extend(b"(A) Tj ".repeat(MAX_PAGE_OPERATIONS + 10));
        let (doc, page) = page_with_stream(raw);
        let mut reader = TextReader::new(&doc, 64 << 20, Duration::from_secs(60));
        match reader.page_text(page, usize::MAX) {
            Err(PageError::TooComplex(why)) => assert!(why.contains("2000000"), "{why}"),
            other => panic!("expected too complex, got {other:?}"),
        }
    }

    #[test]
    fn the_text_bound_cuts_a_page_and_says_so() {
        let mut raw = b"BT /F1 10 Tf ".to_vec();
        raw.extend(b"(ABCDEFGHIJ) Tj ".repeat(1_000));
        let (doc, page) = page_with_stream(raw);
        let mut reader = TextReader::new(&doc, 64 << 20, Duration::from_secs(60));
        let read = reader.page_text(page, 100).expect("text");
        assert!(read.cut);
        assert_eq!(read.text.len(), 100);
    }

    #[test]
    fn the_cpu_budget_fails_the_document_as_too_complex() {
        let mut raw = b"BT /F1 10 Tf ".to_vec();
        raw.extend(b"(A) Tj ".repeat(200_000));
        let (doc, page) = page_with_stream(raw);
        let mut reader = TextReader::new(&doc, 64 << 20, Duration::ZERO);
        match reader.page_text(page, usize::MAX) {
            Err(PageError::TooComplex(why)) => assert!(why.contains("CPU budget"), "{why}"),
            other => panic!("expected too complex, got {other:?}"),
        }
    }

    #[test]
    fn pages_that_share_content_are_read_once() {
        let (doc, page) = page_with(vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 10.into()]),
            op("Tj", vec![text("shared")]),
            op("ET", vec![]),
        ]);
        let mut reader = TextReader::new(&doc, 1 << 20, Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(
                reader.page_text(page, usize::MAX).expect("text").text,
                "shared"
            );
        }
        // Four operations, counted once.
        assert_eq!(reader.document_operations, 4);
    }

    /// Type0 fonts naming a predefined CMap, without `/ToUnicode`, read
    /// as pdftotext reads them (lopdf printed the raw codes).
    #[test]
    fn cjk_fonts_with_predefined_cmaps_read_without_a_unicode_map() {
        let cases: [(&str, Option<&str>, Vec<u8>, &str); 5] = [
            (
                // Japanese set by CID through Adobe-Japan1's own table.
                "Identity-H",
                Some("Japan1"),
                vec![0x04, 0x65, 0x00, 0x24],
                "亜C",
            ),
            (
                "UniJIS-UCS2-H",
                Some("Japan1"),
                vec![0x65, 0xE5, 0x67, 0x2C, 0x8A, 0x9E],
                "日本語",
            ),
            (
                "90ms-RKSJ-H",
                Some("Japan1"),
                vec![0x93, 0xFA, 0x96, 0x7B],
                "日本",
            ),
            (
                "GBK-EUC-H",
                Some("GB1"),
                vec![0xD6, 0xD0, 0xCE, 0xC4],
                "中文",
            ),
            (
                // "Computer" as Adobe-Japan1 CIDs: the issue's example.
                "Identity-H",
                Some("Japan1"),
                b"Computer"
                    .iter()
                    .flat_map(|&c| (u16::from(c) - 31).to_be_bytes())
                    .collect(),
                "Computer",
            ),
        ];
        for (cmap, ordering, shown, expected) in cases {
            let (mut doc, page) = page_with(vec![
                op("BT", vec![]),
                op("Tf", vec!["F1".into(), 12.into()]),
                op("Td", vec![72.into(), 700.into()]),
                op("Tj", vec![Object::string_literal(shown)]),
                op("ET", vec![]),
            ]);
            let descendant = doc.add_object(dictionary! {
                "Type" => "Font",
                "Subtype" => "CIDFontType0",
                "BaseFont" => "KozMinPr6N-Regular",
                "CIDSystemInfo" => dictionary! {
                    "Registry" => Object::string_literal("Adobe"),
                    "Ordering" => Object::string_literal(ordering.unwrap_or("Identity")),
                    "Supplement" => 6,
                },
            });
            edit_font(&mut doc, |font| {
                if font.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Type1") {
                    font.set("Subtype", Object::Name(b"Type0".to_vec()));
                    font.set("Encoding", Object::Name(cmap.as_bytes().to_vec()));
                    font.set("DescendantFonts", vec![Object::Reference(descendant)]);
                    font.remove(b"Widths");
                    font.remove(b"FirstChar");
                }
            });
            let text = page_text(&doc, page, usize::MAX).expect("text");
            assert_eq!(text.trim(), expected, "{cmap}");
        }
    }

    #[test]
    fn standard_fonts_without_widths_are_measured_by_their_metrics() {
        // "fill" in Helvetica at 10 pt is 9.44 pt wide; the next word
        // starts one space (2.78 pt) after it. At a default 500 units a
        // glyph, "fill" would end past that start and the words would glue.
        let (mut doc, page) = page_with(text_object(vec![
            op("Tj", vec![text("fill")]),
            op("Td", vec![Object::Real(12.22), 0.into()]),
            op("Tj", vec![text("it")]),
        ]));
        edit_font(&mut doc, |font| {
            font.remove(b"Widths");
            font.remove(b"FirstChar");
        });
        assert_eq!(text_of(&doc, page), "fill it");
    }

    #[test]
    fn differences_with_names_lopdf_does_not_know_are_read() {
        let (mut doc, page) = page_with(text_object(vec![op(
            "Tj",
            vec![Object::string_literal(b"di\x01cult\x02 \x03".to_vec())],
        )]));
        edit_font(&mut doc, |font| {
            font.set(
                "Encoding",
                dictionary! {
                    "BaseEncoding" => "WinAnsiEncoding",
                    "Differences" => vec![
                        1.into(), "uniFB01".into(), "g123".into(), "Aacute".into(),
                    ],
                },
            );
        });
        assert_eq!(text_of(&doc, page), "di\u{fb01}cult \u{c1}");
    }

    #[test]
    fn right_to_left_runs_are_put_in_reading_order() {
        assert_eq!(
            logical_order("Arabic:\nملاعلاب ابحرم"),
            "Arabic:\nمرحبا بالعالم"
        );
        // Latin and digits around the run keep their places; a mark stays
        // after its letter.
        assert_eq!(logical_order("x 2 םולש y"), "x 2 שלום y");
        assert_eq!(
            logical_order("\u{628}\u{64e}\u{627}"),
            "\u{627}\u{628}\u{64e}"
        );
        assert_eq!(logical_order("no change"), "no change");
    }

    #[test]
    fn a_unicode_map_wins_over_the_programs_own_encoding() {
        let (mut doc, page) = page_with(text_object(vec![op("Tj", vec![bytes(b"\x01")])]));
        let map = doc.add_object(Stream::new(
            dictionary! {},
            b"/CIDInit/ProcSet findresource begin\n12 dict begin\nbegincmap\n\
              /CIDSystemInfo<</Registry (Adobe)/Ordering (UCS)/Supplement 0>> def\n\
              /CMapName/Adobe-Identity-UCS def\n/CMapType 2 def\n\
              1 begincodespacerange\n<00> <FF>\nendcodespacerange\n\
              1 beginbfchar\n<01> <4F60>\nendbfchar\nendcmap\n\
              CMapName currentdict /CMap defineresource pop\nend\nend\n"
                .to_vec(),
        ));
        let program = doc.add_object(Stream::new(
            dictionary! {},
            b"/Encoding 256 array dup 1 /A put readonly def currentfile eexec".to_vec(),
        ));
        let descriptor = doc.add_object(dictionary! { "FontFile" => program });
        edit_font(&mut doc, |font| {
            font.remove(b"Encoding");
            font.set("ToUnicode", map);
            font.set("FontDescriptor", descriptor);
        });
        assert_eq!(text_of(&doc, page), "\u{4f60}");
        // Without the map, the program's encoding says what code 1 is.
        edit_font(&mut doc, |font| {
            font.remove(b"ToUnicode");
        });
        assert_eq!(text_of(&doc, page), "A");
    }

    #[test]
    fn symbol_and_dingbats_read_their_own_glyphs() {
        let (mut doc, page) = page_with(text_object(vec![op("Tj", vec![text("p r")])]));
        edit_font(&mut doc, |font| {
            font.set("BaseFont", "Symbol");
            font.remove(b"Encoding");
        });
        assert_eq!(text_of(&doc, page), "\u{3c0} \u{3c1}");
    }

    #[test]
    fn type3_glyphs_named_after_their_codes_read_as_those_codes() {
        let (mut doc, page) = page_with(text_object(vec![op(
            "Tj",
            vec![Object::string_literal(b"Raz\xe8anai AB".to_vec())],
        )]));
        edit_font(&mut doc, |font| {
            font.set("Subtype", "Type3");
            font.set(
                "Encoding",
                dictionary! {
                    "Differences" => vec![
                        65.into(), "a65".into(), "g7".into(),
                        82.into(), "a82".into(), 97.into(), "a97".into(),
                        105.into(), "a105".into(), 110.into(), "a110".into(),
                        122.into(), "a122".into(), 232.into(), "a232".into(),
                    ],
                },
            );
        });
        // `g7` at 66 names another code: the base reading stays.
        assert_eq!(text_of(&doc, page), "Raz\u{e8}anai AB");
    }
}
