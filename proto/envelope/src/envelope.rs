//! The sealed envelope and its canonical byte encoding.

use crate::error::{Error, Result};
use crate::keys::KEY_LEN;

/// The only envelope version defined.
pub const VERSION: u32 = 1;

/// Length of the XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// Length of the Poly1305 tag at the end of the ciphertext in bytes.
pub const TAG_LEN: usize = 16;

/// The largest plaintext that can be sealed: 16 MiB.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024 * 1024;

/// The largest ciphertext accepted: [`MAX_PLAINTEXT_LEN`] plus the tag.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + TAG_LEN;

/// Length of the canonical encoding before the ciphertext:
/// version byte, ephemeral public key, nonce.
pub const HEADER_LEN: usize = 1 + KEY_LEN + NONCE_LEN;

/// The shortest canonical encoding (empty plaintext).
pub const MIN_ENCODED_LEN: usize = HEADER_LEN + TAG_LEN;

/// The longest canonical encoding (plaintext of [`MAX_PLAINTEXT_LEN`]).
pub const MAX_ENCODED_LEN: usize = HEADER_LEN + MAX_CIPHERTEXT_LEN;

/// One payload sealed to one agent (envelope v1, `docs/envelope.md`).
///
/// The fields match the protobuf message `ferry.v1.SealedEnvelope`. Build one
/// from received fields with [`Envelope::from_parts`] or from the canonical
/// bytes with [`Envelope::from_bytes`]; both check every length.
/// [`crate::Opener::open`] checks them again, so an `Envelope` built by hand
/// with bad fields is refused there, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Format version; always [`VERSION`].
    pub version: u32,
    /// The sender's ephemeral X25519 public key.
    pub ephemeral_public_key: [u8; KEY_LEN],
    /// The XChaCha20-Poly1305 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Builds an envelope from the fields of a received
    /// `ferry.v1.SealedEnvelope`, checking the version and every length.
    pub fn from_parts(
        version: u32,
        ephemeral_public_key: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Envelope> {
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let ephemeral_public_key: [u8; KEY_LEN] =
            ephemeral_public_key
                .try_into()
                .map_err(|_| Error::InvalidLength {
                    field: "ephemeral_public_key",
                    expected: KEY_LEN,
                    actual: ephemeral_public_key.len(),
                })?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::InvalidLength {
            field: "nonce",
            expected: NONCE_LEN,
            actual: nonce.len(),
        })?;
        let envelope = Envelope {
            version,
            ephemeral_public_key,
            nonce,
            ciphertext,
        };
        envelope.check()?;
        Ok(envelope)
    }

    /// Parses the canonical encoding:
    /// `0x01 || ephemeral_public_key (32) || nonce (24) || ciphertext`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(Error::Truncated {
                actual: 0,
                min: MIN_ENCODED_LEN,
            });
        };
        let version = u32::from(version);
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if bytes.len() < MIN_ENCODED_LEN {
            return Err(Error::Truncated {
                actual: bytes.len(),
                min: MIN_ENCODED_LEN,
            });
        }
        let (epk, rest) = rest.split_at(KEY_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(Error::TooLarge {
                what: "ciphertext",
                size: ciphertext.len(),
                max: MAX_CIPHERTEXT_LEN,
            });
        }
        Envelope::from_parts(version, epk, nonce, ciphertext.to_vec())
    }

    /// The canonical encoding:
    /// `0x01 || ephemeral_public_key (32) || nonce (24) || ciphertext`.
    ///
    /// An envelope that passed [`Envelope::from_parts`] or came from sealing
    /// always has version 1; a hand-built one with another version encodes
    /// to a version byte other than 1 (0xff when it does not fit a byte), so
    /// the result never parses as something it was not.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.ciphertext.len());
        out.push(u8::try_from(self.version).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.ephemeral_public_key);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Checks the version and the ciphertext length.
    pub(crate) fn check(&self) -> Result<()> {
        if self.version != VERSION {
            return Err(Error::UnsupportedVersion(self.version));
        }
        if self.ciphertext.len() < TAG_LEN {
            return Err(Error::Truncated {
                actual: HEADER_LEN + self.ciphertext.len(),
                min: MIN_ENCODED_LEN,
            });
        }
        if self.ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(Error::TooLarge {
                what: "ciphertext",
                size: self.ciphertext.len(),
                max: MAX_CIPHERTEXT_LEN,
            });
        }
        Ok(())
    }
}
