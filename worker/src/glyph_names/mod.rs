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

/// Names TeX's fonts (Computer Modern, AMS, EC) give glyphs that the Adobe
/// Glyph List lacks, with the characters pdfTeX's `glyphtounicode.tex` and
/// poppler read them as. Sorted by name (bytewise).
const TEX: &[(&str, &str)] = &[
    ("Ng", "\u{014a}"),
    ("angbracketleft", "\u{27e8}"),
    ("angbracketright", "\u{27e9}"),
    ("arrowbothv", "\u{2195}"),
    ("arrowdblbothv", "\u{21d5}"),
    ("arrowhookleft", "\u{21a9}"),
    ("arrowhookright", "\u{21aa}"),
    ("arrownortheast", "\u{2197}"),
    ("arrownorthwest", "\u{2196}"),
    ("arrowsoutheast", "\u{2198}"),
    ("arrowsouthwest", "\u{2199}"),
    ("bardbl", "\u{2016}"),
    ("bulletmath", "\u{2219}"),
    ("ceilingleft", "\u{2308}"),
    ("ceilingright", "\u{2309}"),
    ("circledivide", "\u{2298}"),
    ("circledot", "\u{2299}"),
    ("circleminus", "\u{2296}"),
    ("coproduct", "\u{2210}"),
    ("diamondmath", "\u{22c4}"),
    ("epsilon1", "\u{03f5}"),
    ("equivasymptotic", "\u{224d}"),
    ("floorleft", "\u{230a}"),
    ("floorright", "\u{230b}"),
    ("follows", "\u{227b}"),
    ("followsequal", "\u{2ab0}"),
    ("greatermuch", "\u{226b}"),
    ("intersectionsq", "\u{2293}"),
    ("latticetop", "\u{22a4}"),
    ("lessmuch", "\u{226a}"),
    ("mapsto", "\u{21a6}"),
    ("negationslash", "\u{0338}"),
    ("ng", "\u{014b}"),
    ("owner", "\u{220b}"),
    ("precedesequal", "\u{2aaf}"),
    ("rho1", "\u{03f1}"),
    ("similarequal", "\u{2243}"),
    ("star", "\u{22c6}"),
    ("subsetsqequal", "\u{2291}"),
    ("supersetsqequal", "\u{2292}"),
    ("tie", "\u{2040}"),
    ("triangleinv", "\u{25bd}"),
    ("triangleleft", "\u{25c1}"),
    ("triangleright", "\u{25b7}"),
    ("turnstileleft", "\u{22a2}"),
    ("turnstileright", "\u{22a3}"),
    ("unionmulti", "\u{228e}"),
    ("unionsq", "\u{2294}"),
    ("vector", "\u{20d7}"),
    ("visiblespace", "\u{2423}"),
    ("wreathproduct", "\u{2240}"),
];

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
    if let Ok(i) = TEX.binary_search_by(|(listed, _)| listed.as_bytes().cmp(component.as_bytes())) {
        return Some(TEX[i].1.to_owned());
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
        assert_eq!(to_text(b"angbracketright").as_deref(), Some("\u{27e9}"));
        assert_eq!(to_text(b"visiblespace").as_deref(), Some("\u{2423}"));
    }

    #[test]
    fn the_tex_names_are_sorted_and_not_in_the_glyph_list() {
        assert!(
            TEX.windows(2)
                .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        );
        for (name, _) in TEX {
            assert!(!is_listed(name.as_bytes()), "{name} is in the glyph list");
        }
    }
}
