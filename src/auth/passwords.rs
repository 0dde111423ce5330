//! Argon2id password hashing, always off the async executor, and never
//! more at once than there are cores. Each hash holds ~19 MiB: on an
//! unbounded blocking pool, 96 concurrent logins for unknown emails took a
//! process from 247 MB to 1.94 GB (issue #13). Waiters queue for a bounded
//! time, then are told to come back (503 with Retry-After), so memory stays
//! bounded whatever the load, also while Redis (and with it the per-IP
//! login limit) is down.

use std::{sync::LazyLock, time::Duration};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

/// A hash of a random password with the same parameters as real ones: login
/// for an unknown email verifies against it, so it takes as long as a wrong
/// password for a known one and timing does not reveal which emails exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    let mut memory = vec![Block::default(); Params::DEFAULT.block_count()];
    hash_blocking(&random, &mut memory).unwrap_or_default()
});

/// Hashes running at once: one per core (more would only queue on the CPU
/// while holding their memory).
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(slots()));

/// Argon2's working memory, one buffer per slot, allocated once and reused.
/// Allocating 19 MiB per hash instead let glibc keep freed buffers in every
/// blocking thread's arena: 96 logins grew the process by 600 MB even with
/// two running at a time.
static MEMORY: LazyLock<std::sync::Mutex<Vec<Vec<Block>>>> =
    LazyLock::new(|| std::sync::Mutex::new(Vec::with_capacity(slots())));

fn slots() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// How long a login or registration waits for a hashing slot.
const HASHING_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every slot stayed busy for `HASHING_WAIT`.
    #[error("password hashing is saturated")]
    Busy,
    #[error("hashing password: {0}")]
    Failed(String),
}

/// Runs `work` on the blocking pool, with a slot's memory, once a hashing
/// slot is free.
async fn with_slot<T: Send + 'static>(
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, HashingError> {
    with_slot_of(&HASHING, HASHING_WAIT, work).await
}

/// `with_slot` over any set of slots and wait (tests use small ones).
async fn with_slot_of<T: Send + 'static>(
    slots: &Semaphore,
    wait: Duration,
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, HashingError> {
    let _slot = tokio::time::timeout(wait, slots.acquire())
        .await
        .map_err(|_| HashingError::Busy)?
        .map_err(|_| HashingError::Busy)?;
    tokio::task::spawn_blocking(move || {
        let taken = MEMORY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut memory =
            taken.unwrap_or_else(|| vec![Block::default(); Params::DEFAULT.block_count()]);
        let result = work(&mut memory);
        MEMORY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(memory);
        result
    })
    .await
    .map_err(|err| HashingError::Failed(err.to_string()))
}

/// Argon2 over `params`, into `memory` (grown if a stored hash asks for
/// more than the default).
fn argon2_output(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    memory: &mut Vec<Block>,
) -> Result<Output, argon2::password_hash::Error> {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(output_len, |out| {
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
            .map_err(Into::into)
    })
}

fn hash_blocking(
    password: &str,
    memory: &mut Vec<Block>,
) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let params = Params::DEFAULT;
    let output = argon2_output(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        raw_salt,
        memory,
    )?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string())
}

/// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`), as the original DocFlow and most
/// Python stacks (passlib) store them. Accounts imported from it keep their
/// passwords: such a hash is verified once and replaced by an Argon2id one
/// at the next successful login (`needs_rehash`).
fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
}

/// Whether a stored hash should be replaced by one of ours once the
/// password is known to be right.
pub fn needs_rehash(hash: &str) -> bool {
    is_bcrypt(hash)
}

fn verify_blocking(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    if is_bcrypt(hash) {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let computed = (|| {
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let raw_salt = salt.decode_b64(&mut salt_bytes)?;
        argon2_output(
            algorithm,
            version,
            params,
            password.as_bytes(),
            raw_salt,
            memory,
        )
    })();
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|computed| computed == expected)
}

pub async fn hash(password: String) -> Result<String, HashingError> {
    with_slot(move |memory| hash_blocking(&password, memory))
        .await?
        .map_err(|err| HashingError::Failed(err.to_string()))
}

/// `hash = None` means "no such user": verify against the dummy hash anyway.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, HashingError> {
    with_slot(move |memory| match hash {
        Some(hash) => verify_blocking(&password, &hash, memory),
        None => {
            verify_blocking(&password, &DUMMY_HASH, memory);
            false
        }
    })
    .await
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

    /// A bcrypt hash from the original (Python) DocFlow verifies, and asks
    /// to be replaced; ours do not.
    #[tokio::test]
    async fn bcrypt_hashes_of_imported_accounts_verify() {
        // A $2b$ hash of "original-password" at cost 4 (made by glibc's crypt).
        let legacy = "$2b$04$ZH5KIfxQjs429KoOy9DrVeXRP7C8vkZozvBxErn8eI9TD3983w.te";
        assert!(needs_rehash(legacy));
        assert!(
            verify("original-password".into(), Some(legacy.into()))
                .await
                .expect("verify")
        );
        assert!(
            !verify("original-passw0rd".into(), Some(legacy.into()))
                .await
                .expect("verify")
        );
        let ours = hash("original-password".into()).await.expect("hash");
        assert!(!needs_rehash(&ours));
    }

    /// Hashes written before this module reused its memory (by
    /// `Argon2::default().hash_password`) still verify, and ours verify
    /// with the crate's own verifier: the format is the same PHC string.
    #[tokio::test]
    async fn hashes_match_the_argon2_crates_own() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"supersecret1", &salt)
            .expect("hash")
            .to_string();
        assert!(
            verify("supersecret1".into(), Some(theirs))
                .await
                .expect("verify")
        );
        let ours = hash("supersecret1".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"supersecret1", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"supersecret2", &parsed)
                .is_err()
        );
    }

    /// Past the wait for a slot the caller is told to come back (503
    /// `overloaded` with Retry-After at the API), and nothing runs.
    #[tokio::test]
    async fn a_caller_that_waits_too_long_for_a_slot_is_refused() {
        let slots = Semaphore::new(1);
        let held = slots.acquire().await.expect("the only slot");
        let started = std::time::Instant::now();
        let refused = with_slot_of(&slots, Duration::from_millis(100), |_| {
            panic!("ran without a slot")
        })
        .await;
        assert!(matches!(refused, Err(HashingError::Busy)), "{refused:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(held);
        let ran = with_slot_of(&slots, Duration::from_millis(100), |_| 7).await;
        assert_eq!(ran.expect("a free slot"), 7);
    }

    #[tokio::test]
    async fn hashes_never_run_on_more_slots_than_cores() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..cores * 4)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(with_slot(move |_| {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("a slot within the wait");
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            most >= 1 && most <= cores,
            "{most} at once on {cores} cores"
        );
    }
}
