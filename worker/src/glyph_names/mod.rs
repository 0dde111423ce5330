//! Glyph names to text, as the Adobe Glyph List specification maps them:
//! a simple font's `/Differences` names the glyph each code draws
//! (`/fi`, `/uniFB01`, `/f_f_i`, `/a.sc`), and that name is all there is
//! to say what the code means when the font has no `/ToUnicode` map.

mod list;

/// The text a glyph name stands for; `None` for names that say nothing
/// (`.notdef`, `g123`, `cid00042`).
pub fn to_text(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    // A suffix after the first period is a variant: `a.sc` is an `a`.
    let base = name.split('.').next().unwrap_or("");
    let mut out = String::new();
    for component in base.split('_') {
        if let Some(text) = component_text(component) {
            out.push_str(&text);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether `name` is in the Adobe Glyph List as it is.
pub fn is_listed(name: &[u8]) -> bool {
    listed(name).is_some()
}

fn listed(name: &[u8]) -> Option<&'static str> {
    list::GLYPHS
        .binary_search_by(|(listed, _)| listed.as_bytes().cmp(name))
        .ok()
        .map(|i| list::GLYPHS[i].1)
}

fn component_text(component: &str) -> Option<String> {
    if let Some(text) = listed(component.as_bytes()) {
        return Some(text.to_owned());
    }
    // `uniXXXX` with one or more groups of four hex digits (BMP, no
    // surrogates); `uXXXX` to `uXXXXXX` for one code point.
    if let Some(hex) = component.strip_prefix("uni")
        && !hex.is_empty()
        && hex.len() % 4 == 0
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        return hex
            .as_bytes()
            .chunks(4)
            .map(|group| {
                let code = u32::from_str_radix(std::str::from_utf8(group).ok()?, 16).ok()?;
                (!(0xD800..=0xDFFF).contains(&code))
                    .then(|| char::from_u32(code))
                    .flatten()
            })
            .collect();
    }
    if let Some(hex) = component.strip_prefix('u')
        && (4..=6).contains(&hex.len())
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        let code = u32::from_str_radix(hex, 16).ok()?;
        return char::from_u32(code).map(String::from);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_the_glyph_list_says() {
        assert_eq!(to_text(b"fi").as_deref(), Some("\u{fb01}"));
        assert_eq!(to_text(b"Aacute").as_deref(), Some("Á"));
        assert_eq!(to_text(b"uniFB01").as_deref(), Some("\u{fb01}"));
        assert_eq!(to_text(b"uni00660069").as_deref(), Some("fi"));
        assert_eq!(to_text(b"u1F600").as_deref(), Some("😀"));
        assert_eq!(to_text(b"f_f_i").as_deref(), Some("ffi"));
        assert_eq!(to_text(b"a.sc").as_deref(), Some("a"));
        assert_eq!(to_text(b".notdef"), None);
        assert_eq!(to_text(b"g123"), None);
        assert_eq!(to_text(b"uniD800"), None);
        assert_eq!(to_text(b"unifb01"), None);
    }
}
