//! At-rest encryption of job specs: XChaCha20-Poly1305 with a random
//! 24-byte nonce stored in front of the ciphertext, and the job id as
//! associated data (so a spec cannot be moved to another job's row).

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The data key, ready to use. Deliberately not `Debug`.
pub(crate) struct SpecCipher(XChaCha20Poly1305);

impl SpecCipher {
    pub(crate) fn new(data_key: [u8; 32]) -> Self {
        Self(XChaCha20Poly1305::new(&Key::from(data_key)))
    }

    /// `nonce || ciphertext` of `plaintext`, bound to `job_id`.
    pub(crate) fn seal(&self, job_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = XNonce::try_generate()
            .map_err(|_| Error::Crypto("no randomness for a nonce".to_owned()))?;
        let ciphertext = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: job_id.as_bytes(),
                },
            )
            .map_err(|_| Error::Crypto("job spec could not be encrypted".to_owned()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The plaintext of what [`SpecCipher::seal`] produced for `job_id`.
    pub(crate) fn open(&self, job_id: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Corrupt("job spec is truncated".to_owned()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| Error::Corrupt("job spec is truncated".to_owned()))?;
        self.0
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: job_id.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Corrupt("job spec failed to decrypt (wrong data key or tampered)".to_owned())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let cipher = SpecCipher::new([7; 32]);
        let sealed = cipher.seal("job-1", b"secret spec").expect("seal");
        assert_eq!(sealed.len(), NONCE_LEN + b"secret spec".len() + TAG_LEN);
        assert_eq!(cipher.open("job-1", &sealed).expect("open"), b"secret spec");
        // bound to the job id
        assert!(matches!(
            cipher.open("job-2", &sealed),
            Err(Error::Corrupt(_))
        ));
        // bound to the key
        let other = SpecCipher::new([8; 32]);
        assert!(matches!(
            other.open("job-1", &sealed),
            Err(Error::Corrupt(_))
        ));
        // nonces are random
        let again = cipher.seal("job-1", b"secret spec").expect("seal");
        assert_ne!(sealed, again);
        // tampering and truncation are caught
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            cipher.open("job-1", &tampered),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            cipher.open("job-1", &sealed[..20]),
            Err(Error::Corrupt(_))
        ));
    }
}
