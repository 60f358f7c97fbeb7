//! The cryptography of crypto-shredding: AES-256-GCM for personal fields under a user's data
//! key, and for data keys under a master key; HMAC-SHA256 for the email lookup hash.

use aes_gcm::aead::{Aead as _, AeadCore as _, AeadInPlace as _, KeyInit as _, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// A 256-bit key (a user's data key or a master key). Its AES-256-GCM key schedule is
/// expanded at each use, not kept: with the portable fallback compiled in, a schedule takes
/// about 1 KB, and the data key cache holds up to 100,000 keys (100 MB against 3 MB); keeping
/// it did not move the sealed replay's ratio measurably (ADR 0043, 15.4 addendum).
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; 32],
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(framegate_domain::REDACTED)
    }
}

impl SecretKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self::new(key)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self::new)
    }

    fn new(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.bytes))
    }

    /// `nonce || ciphertext+tag` of `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher()
            .encrypt(&nonce, Payload { msg: plain, aad })
            .expect("AES-GCM encrypts anything under 64 GiB");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The plaintext of [`SecretKey::seal`]'s output, if it was sealed under this key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }

    /// [`SecretKey::seal`] as base64url text (for JSON).
    pub fn seal_text(&self, plain: &[u8], aad: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.seal(plain, aad))
    }

    pub fn open_text(&self, sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
        self.open(&URL_SAFE_NO_PAD.decode(sealed).ok()?, aad)
    }

    /// [`SecretKey::open_text`] into `buffer` (cleared first), decrypted in place: a reader
    /// opening a batch reuses one buffer for all its fields. False (and `buffer` holding
    /// nothing of use) when `sealed` was not sealed under this key and `aad`.
    pub fn open_text_into(&self, sealed: &str, aad: &[u8], buffer: &mut Vec<u8>) -> bool {
        buffer.clear();
        if URL_SAFE_NO_PAD.decode_vec(sealed, buffer).is_err() || buffer.len() < NONCE_LEN {
            return false;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buffer[..NONCE_LEN]);
        buffer.drain(..NONCE_LEN);
        self.cipher()
            .decrypt_in_place(Nonce::from_slice(&nonce), aad, buffer)
            .is_ok()
    }

    /// This data key wrapped by `master` for `user` (a wrapped key moved to another user's
    /// row does not unwrap).
    pub fn wrap(&self, master: &SecretKey, user: &str) -> Vec<u8> {
        master.seal(&self.bytes, wrap_aad(user).as_bytes())
    }

    pub fn unwrap(wrapped: &[u8], master: &SecretKey, user: &str) -> Option<Self> {
        Self::from_bytes(&master.open(wrapped, wrap_aad(user).as_bytes())?)
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn mac(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC accepts keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
}

fn wrap_aad(user: &str) -> String {
    format!("framegate data key v1:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_with_its_key_and_aad() {
        let key = SecretKey::generate();
        let sealed = key.seal_text(b"someone@example.com", b"User/1/1");
        assert_eq!(
            key.open_text(&sealed, b"User/1/1").as_deref(),
            Some(&b"someone@example.com"[..])
        );
        assert_eq!(key.open_text(&sealed, b"User/2/1"), None);
        assert_eq!(SecretKey::generate().open_text(&sealed, b"User/1/1"), None);
    }

    #[test]
    fn opening_into_a_buffer_matches_open_text_and_reuses_it() {
        let key = SecretKey::generate();
        let mut buffer = Vec::new();
        for plain in [&b"a much longer plaintext than the next one"[..], b"short"] {
            let sealed = key.seal_text(plain, b"aad");
            assert!(key.open_text_into(&sealed, b"aad", &mut buffer));
            assert_eq!(buffer, plain);
            assert!(!key.open_text_into(&sealed, b"other", &mut buffer));
            assert!(!SecretKey::generate().open_text_into(&sealed, b"aad", &mut buffer));
        }
        assert!(!key.open_text_into("not base64!", b"aad", &mut buffer));
        assert!(!key.open_text_into("AAAA", b"aad", &mut buffer));
    }

    #[test]
    fn a_wrapped_key_unwraps_only_for_its_user_and_master() {
        let master = SecretKey::generate();
        let key = SecretKey::generate();
        let wrapped = key.wrap(&master, "u1");
        assert_eq!(SecretKey::unwrap(&wrapped, &master, "u1"), Some(key));
        assert_eq!(SecretKey::unwrap(&wrapped, &master, "u2"), None);
        assert_eq!(
            SecretKey::unwrap(&wrapped, &SecretKey::generate(), "u1"),
            None
        );
    }
}
