//! Email addresses, normalised so that one mailbox maps to one account.

use std::fmt;

use super::InvalidInput;

/// RFC 5321 caps a forward path at 254 octets and a local part at 64.
const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A syntactically plausible, normalised (trimmed, lower-cased) address.
///
/// Lower-casing the local part is stricter than RFC 5321 allows, but no mail
/// provider in use treats `Alice@` and `alice@` as different people, while
/// users routinely type either.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let invalid = |reason: &str| InvalidInput::new("email", reason);
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err(invalid("is required"));
        }
        if normalised.len() > MAX_LEN {
            return Err(invalid("is too long"));
        }
        let Some((local, domain)) = normalised.rsplit_once('@') else {
            return Err(invalid("must contain '@'"));
        };
        let local_ok = !local.is_empty()
            && local.len() <= MAX_LOCAL_LEN
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
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
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(invalid("has an invalid domain"));
        }
        Ok(Self(normalised))
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
    fn normalises_case_and_whitespace() {
        let email = Email::parse("  Alice@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "alice@example.com");
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
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }
}
