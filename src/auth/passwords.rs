//! Argon2id password hashing, always off the async executor.

use std::sync::LazyLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

/// A hash of a random password with the same parameters as real ones: login
/// for an unknown email verifies against it, so it takes as long as a wrong
/// password for a known one and timing does not reveal which emails exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    hash_blocking(&random).unwrap_or_default()
});

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// `hash = None` means "no such user": verify against the dummy hash anyway.
pub async fn verify(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_blocking(&password, &hash),
        None => {
            verify_blocking(&password, &DUMMY_HASH);
            false
        }
    })
    .await?)
}

/// Computes the dummy hash now rather than on the first unknown-email login,
/// whose response would otherwise be measurably slower.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hashed = hash("supersecret1".into()).await.expect("hash");
        assert!(hashed.starts_with("$argon2id$"));
        assert!(
            verify("supersecret1".into(), Some(hashed.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !verify("supersecret2".into(), Some(hashed))
                .await
                .expect("verify")
        );
        assert!(!verify("supersecret1".into(), None).await.expect("verify"));
    }
}
