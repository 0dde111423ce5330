//! The standard 14 fonts' glyph widths. A PDF may show text in Helvetica,
//! Times or Courier without embedding the font or listing its `/Widths`
//! (the reader is expected to know them); measured at a default width
//! instead, word gaps are misjudged ("fillitwithlittlemammoth",
//! "illicit ly"). Widths are by the character a glyph shows, so they hold
//! whatever the font's encoding.

mod symbolic;
mod widths;

/// The built-in encoding of Symbol or ZapfDingbats, which `base_font`
/// names (a subset prefix ignored): the text of each code, `'\0'` for
/// none.
pub fn symbolic_encoding(base_font: &[u8]) -> Option<&'static [char; 256]> {
    let name = match base_font.get(6) {
        Some(b'+') => &base_font[7..],
        _ => base_font,
    };
    match name {
        b"Symbol" => Some(&symbolic::SYMBOL),
        b"ZapfDingbats" => Some(&symbolic::ZAPF_DINGBATS),
        _ => None,
    }
}

/// One face's widths.
#[derive(Debug, Clone, Copy)]
pub struct StandardWidths(&'static [(char, u16)]);

impl StandardWidths {
    /// The face a `/BaseFont` names: a subset prefix (`ABCDEF+`) is
    /// ignored, and the names writers use for the same metrics (Arial,
    /// Times New Roman, Courier New) count as the standard faces.
    pub fn for_base_font(name: &[u8]) -> Option<Self> {
        let name = String::from_utf8_lossy(name);
        let name = match name.split_once('+') {
            Some((prefix, rest)) if prefix.len() == 6 => rest,
            _ => &name,
        };
        let name: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let bold = name.contains("bold");
        let italic = name.contains("italic") || name.contains("oblique");
        let table = if name.starts_with("helvetica") || name.starts_with("arial") {
            if bold {
                widths::HELVETICA_BOLD
            } else {
                widths::HELVETICA
            }
        } else if name.starts_with("times") {
            match (bold, italic) {
                (false, false) => widths::TIMES_ROMAN,
                (true, false) => widths::TIMES_BOLD,
                (false, true) => widths::TIMES_ITALIC,
                (true, true) => widths::TIMES_BOLD_ITALIC,
            }
        } else if name.starts_with("courier") {
            widths::COURIER
        } else {
            return None;
        };
        Some(Self(table))
    }

    /// The width of the glyph that shows `c`, in thousandths of an em.
    pub fn width(self, c: char) -> Option<f64> {
        self.0
            .binary_search_by_key(&c, |&(glyph, _)| glyph)
            .ok()
            .map(|i| f64::from(self.0[i].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faces_are_found_by_their_names_and_aliases() {
        let helvetica = StandardWidths::for_base_font(b"Helvetica").expect("helvetica");
        assert_eq!(helvetica.width('i'), Some(222.0));
        assert_eq!(helvetica.width('m'), Some(833.0));
        assert_eq!(helvetica.width('\u{fb01}'), Some(500.0));
        let bold = StandardWidths::for_base_font(b"ABCDEF+Arial,Bold").expect("arial bold");
        assert_eq!(bold.width('i'), Some(278.0));
        let times = StandardWidths::for_base_font(b"Times-Italic").expect("times italic");
        assert_eq!(times.width('m'), Some(722.0));
        let courier = StandardWidths::for_base_font(b"CourierNewPS-BoldMT").expect("courier");
        assert_eq!(courier.width('i'), Some(600.0));
        assert!(StandardWidths::for_base_font(b"Garamond").is_none());
        assert_eq!(helvetica.width('\u{4e00}'), None);
    }

    #[test]
    fn symbolic_fonts_read_their_own_glyphs() {
        let symbol = symbolic_encoding(b"Symbol").expect("symbol");
        assert_eq!(symbol[usize::from(b'p')], 'π');
        assert_eq!(symbol[usize::from(b' ')], ' ');
        let dingbats = symbolic_encoding(b"ABCDEF+ZapfDingbats").expect("dingbats");
        assert_eq!(dingbats[usize::from(b'n')], '■');
        assert_eq!(dingbats[255], '\0');
        assert!(symbolic_encoding(b"Helvetica").is_none());
    }
}
