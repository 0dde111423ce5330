//! Password strength policy for new passwords.

use super::InvalidInput;
use crate::config::Secret;

const MIN_CHARS: usize = 10;
/// Argon2 accepts more, but nobody types this much and it bounds hashing cost.
const MAX_BYTES: usize = 256;

/// A password that meets the policy for new accounts. Existing passwords are
/// checked against their hash as typed, whatever the policy was then.
#[derive(Debug)]
pub struct Password(Secret<String>);

impl Password {
    pub fn parse_new(raw: String) -> Result<Self, InvalidInput> {
        let invalid = |reason: String| InvalidInput::new("password", reason);
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(invalid(format!("must be at least {MIN_CHARS} characters")));
        }
        if raw.len() > MAX_BYTES {
            return Err(invalid(format!("must be at most {MAX_BYTES} bytes")));
        }
        let has_letter = raw.chars().any(char::is_alphabetic);
        let has_other = raw.chars().any(|c| !c.is_alphabetic());
        if !(has_letter && has_other) {
            return Err(invalid(
                "must mix letters with digits, spaces or symbols".to_owned(),
            ));
        }
        let distinct = {
            let mut seen: Vec<char> = raw.chars().collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        if distinct < 5 {
            return Err(invalid("is too repetitive".to_owned()));
        }
        Ok(Self(Secret::new(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(Password::parse_new("supersecret1".into()).is_ok());
        assert!(Password::parse_new("correct horse battery".into()).is_ok());
        for weak in ["short1", "onlyletterslong", "1234567890", "ab1ab1ab1ab1"] {
            assert!(Password::parse_new(weak.into()).is_err(), "{weak} accepted");
        }
        assert!(Password::parse_new(format!("a1{}", "x".repeat(300))).is_err());
    }
}
