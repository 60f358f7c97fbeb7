//! Password hashing with argon2id, kept off the async runtime.
//!
//! Hashing is deliberately expensive (tens of milliseconds of CPU and ~19 MiB of memory), so
//! it runs on the blocking pool behind a semaphore: a login storm queues here instead of
//! stalling every other request or exhausting memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash as ParsedHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier as _, Version};
use framegate_domain::PasswordHash;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the password hashing task was cancelled")]
    Cancelled,
}

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist, so an unknown email costs the same
    /// time as a wrong password.
    decoy: Arc<String>,
    running: Arc<Running>,
}

/// How many hashes run now, the most that ever ran at once, and how many ran in all.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

impl Running {
    fn enter(self: Arc<Self>) -> RunningGuard {
        self.total.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        RunningGuard(self)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordHasher {
    /// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    pub fn owasp(max_concurrent: usize) -> Result<Self, PasswordError> {
        let params = Params::new(19 * 1024, 2, 1, None).map_err(hashing)?;
        Self::with_params(params, max_concurrent)
    }

    /// Explicit parameters (tests use cheap ones).
    pub fn with_params(params: Params, max_concurrent: usize) -> Result<Self, PasswordError> {
        let decoy = hash_blocking(&params, "framegate-decoy-password")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            decoy: Arc::new(decoy),
            running: Arc::default(),
        })
    }

    pub async fn hash(&self, password: &str) -> Result<PasswordHash, PasswordError> {
        let params = self.params.clone();
        let password = password.to_owned();
        let hash = self
            .run(move || hash_blocking(&params, &password))
            .await??;
        Ok(PasswordHash::new(hash))
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown account) a decoy is
    /// verified instead and the answer is always `false`.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&PasswordHash>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let phc = stored.map_or_else(|| self.decoy.as_str().to_owned(), |h| h.as_str().to_owned());
        let password = password.to_owned();
        let matches = self
            .run(move || {
                let parsed = ParsedHash::new(&phc).map_err(hashing)?;
                // argon2's verifier compares in constant time.
                Ok::<_, PasswordError>(
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Cancelled)?;
        let running = self.running.clone();
        // The permit goes with the work: a caller that gives up (a client that hung up drops
        // its request) stops waiting, but the hash it started holds its place until done.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = running.enter();
            work()
        })
        .await
        .map_err(|_| PasswordError::Cancelled)
    }

    /// The most hashes or verifications that ever ran at once in this hasher.
    pub fn peak_concurrency(&self) -> usize {
        self.running.peak()
    }

    /// How many hashes and verifications this hasher has started.
    pub fn runs(&self) -> usize {
        self.running.total.load(Ordering::SeqCst)
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    Ok(argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(hashing)?
        .to_string())
}

fn hashing(error: impl std::fmt::Display) -> PasswordError {
    PasswordError::Hashing(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        let params = Params::new(1024, 1, 1, None).unwrap_or_default();
        PasswordHasher::with_params(params, 2).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let hasher = cheap();
        let hash = hasher
            .hash("correct horse")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(!hash.as_str().contains("correct horse"));
        assert!(matches!(
            hasher.verify("correct horse", Some(&hash)).await,
            Ok(true)
        ));
        assert!(matches!(
            hasher.verify("wrong horse", Some(&hash)).await,
            Ok(false)
        ));
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_even_with_the_decoy_password() {
        let hasher = cheap();
        let verified = hasher.verify("framegate-decoy-password", None).await;
        assert!(matches!(verified, Ok(false)));
    }

    #[tokio::test]
    async fn the_owasp_parameters_are_argon2id_19mib_two_passes() {
        let hasher = PasswordHasher::owasp(1).unwrap_or_else(|e| panic!("{e}"));
        let hash = hasher.hash("pw").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
    }

    #[tokio::test]
    async fn callers_that_give_up_never_let_more_hashes_run_than_the_limit() {
        // Slow enough that abandoned hashes are still running when new callers arrive.
        let params = Params::new(8 * 1024, 2, 1, None).unwrap_or_default();
        let hasher = PasswordHasher::with_params(params, 2).unwrap_or_else(|e| panic!("{e}"));
        let callers: Vec<_> = (0..40)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("a password").await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Every caller gives up, as a request future does when its client hangs up.
        for caller in &callers {
            caller.abort();
        }
        // New callers keep coming while the abandoned work drains.
        for _ in 0..10 {
            hasher
                .hash("another")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            hasher.peak_concurrency() <= 2,
            "{} hashes ran at once",
            hasher.peak_concurrency()
        );
        assert!(hasher.peak_concurrency() >= 1);
    }
}
