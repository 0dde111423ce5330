//! Email addresses, normalised so that one mailbox maps to one account.

use std::fmt;

use super::InvalidInput;

/// RFC 5321 caps a forward path at 254 octets.
pub const MAX_LEN: usize = 254;

/// Exactly what `Email::parse` accepts, as the OpenAPI document states it
/// (the length is `maxLength`): dot-separated atoms of RFC 5322's `atext`
/// before the `@`, and at least two DNS labels after it. ASCII only, and no
/// surrounding whitespace: the published schema and the server agree to the
/// character, which schemathesis checks in both directions.
pub const PATTERN: &str = concat!(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
);

/// Characters of an atom (RFC 5322 `atext`).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// A syntactically valid, normalised (lower-cased) address.
///
/// Lower-casing the local part is stricter than RFC 5321 allows, but no mail
/// provider in use treats `Alice@` and `alice@` as different people, while
/// users routinely type either.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let invalid = |reason: &str| InvalidInput::new("email", reason);
        if raw.is_empty() {
            return Err(invalid("is required"));
        }
        if raw.chars().count() > MAX_LEN {
            return Err(invalid("is too long"));
        }
        if raw.trim() != raw {
            return Err(invalid("must not start or end with whitespace"));
        }
        let normalised = raw.to_ascii_lowercase();
        let Some((local, domain)) = normalised.split_once('@') else {
            return Err(invalid("must contain '@'"));
        };
        let local_ok = local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
        if !local_ok {
            return Err(invalid("has an invalid part before '@'"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(invalid("has an invalid domain"));
        }
        Ok(Self(normalised))
    }

    /// How sign-in finds an account: the address trimmed and lower-cased,
    /// without the registration rules, so an account stored under earlier,
    /// looser rules (Unicode letters) can still sign in. `None` when it
    /// cannot be an address at all.
    pub fn for_lookup(raw: &str) -> Option<Self> {
        let normalised = raw.trim().to_lowercase();
        (normalised.contains('@') && normalised.len() <= MAX_LEN).then_some(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case() {
        let email = Email::parse("Alice@Example.COM").expect("valid");
        assert_eq!(email.as_str(), "alice@example.com");
        assert!(Email::parse("o'neil+tag@mail.example-1.org").is_ok());
    }

    #[test]
    fn sign_in_lookups_forgive_case_whitespace_and_unicode() {
        assert_eq!(
            Email::for_lookup("  José@Example.COM ").map(|e| e.0),
            Some("josé@example.com".to_owned())
        );
        assert!(Email::for_lookup("no-at-sign").is_none());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for raw in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@exa mple.com",
            "al ice@example.com",
            "alice@@example.com",
            ".alice@example.com",
            "alice@-example.com",
            "alice@example..com",
            " alice@example.com",
            "alice@example.com\n",
            "alïce@example.com",
            "alice@exämple.com",
            "alice@ex_ample.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
