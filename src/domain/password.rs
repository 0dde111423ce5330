//! Password policy for new passwords: length only, as NIST SP 800-63B
//! advises (composition rules make passwords harder to remember, not to
//! guess). Being length only, the policy is exactly what the OpenAPI schema
//! says (`minLength`/`maxLength`), which schemathesis checks.

use secrecy::{ExposeSecret, SecretString};

use super::InvalidInput;

pub const MIN_CHARS: usize = 10;
/// Argon2 accepts more, but nobody types this much and it bounds hashing
/// cost (at most 512 bytes of UTF-8).
pub const MAX_CHARS: usize = 128;

/// A password that meets the policy for new accounts. Existing passwords are
/// checked against their hash as typed, whatever the policy was then.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    pub fn parse_new(raw: String) -> Result<Self, InvalidInput> {
        let invalid = |reason: String| InvalidInput::new("password", reason);
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(invalid(format!("must be at least {MIN_CHARS} characters")));
        }
        if chars > MAX_CHARS {
            return Err(invalid(format!("must be at most {MAX_CHARS} characters")));
        }
        Ok(Self(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(Password::parse_new("supersecret1".into()).is_ok());
        assert!(Password::parse_new("correct horse battery".into()).is_ok());
        // Ten characters of any kind: the length is what makes it strong.
        assert!(Password::parse_new("ünïcödé pw".into()).is_ok());
        assert!(Password::parse_new("x".repeat(MAX_CHARS)).is_ok());
        for weak in ["", "short1", "nine char"] {
            assert!(Password::parse_new(weak.into()).is_err(), "{weak} accepted");
        }
        assert!(Password::parse_new("x".repeat(MAX_CHARS + 1)).is_err());
    }
}
