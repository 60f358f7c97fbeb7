//! Sealing stored responses: some carry a secret shown once (a new API key, the tokens of a
//! login or refresh), and the table must not hold it in clear.

use aes_gcm::aead::{Aead as _, AeadCore as _, KeyInit as _, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Encrypts stored response bodies with AES-256-GCM under a key derived from the server's
/// JWT secret, bound to the record's scope and key (a row copied to another key does not
/// open). A body sealed under another secret (a development server restarted with a new
/// random one) does not open either; the retry is then told so instead of replayed.
#[derive(Clone)]
pub struct ResponseSeal {
    cipher: Aes256Gcm,
}

const NONCE_LEN: usize = 12;

impl ResponseSeal {
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(b"framegate idempotency response seal v1");
        let key = mac.finalize().into_bytes();
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, body: &[u8], scope: &str, key: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = Self::aad(scope, key);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any body under 64 GiB");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, sealed: &[u8], scope: &str, key: &str) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = Self::aad(scope, key);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }

    fn aad(scope: &str, key: &str) -> Vec<u8> {
        // Both are visible ASCII without NUL (keys are checked, scopes are ours).
        [scope.as_bytes(), b"\0", key.as_bytes()].concat()
    }
}
