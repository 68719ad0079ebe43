//! X25519 key types: a secret key that never prints itself and a public key.

use std::fmt;
use std::str::FromStr;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{Error, Result, fill_random};

/// Length of X25519 keys and shared secrets in bytes.
pub const KEY_LEN: usize = 32;

/// An X25519 secret key (the server's static key, an agent's key, or the
/// ephemeral key of one envelope).
///
/// The bytes are zeroed when the key is dropped, and `Debug` prints
/// `SecretKey(..)`, never the key.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

impl SecretKey {
    /// Draws a new key from the operating system's random number generator.
    pub fn generate() -> Result<SecretKey> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(SecretKey::from_bytes(*bytes))
    }

    /// Loads a key from its 32 bytes (any 32 bytes are a valid key: X25519
    /// clamps them when it uses them).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(StaticSecret::from(bytes))
    }

    /// Loads a key from a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<SecretKey> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::InvalidKeyLength {
            actual: bytes.len(),
        })?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// The key's 32 bytes, for storage; the copy is zeroed when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key: X25519(self, 9).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// X25519(self, peer), or [`Error::NonContributory`] when the result is
    /// all zero (the peer key is a low-order point).
    pub(crate) fn diffie_hellman(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(Error::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// An X25519 public key: 32 bytes, the u-coordinate of a curve point.
///
/// `Display` and `Debug` print lowercase hex; `FromStr` parses it back.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps 32 bytes. No check is made here; low-order points are refused
    /// when the key is used.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Loads a key from a slice (for example a protobuf `bytes` field), which
    /// must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<PublicKey> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::InvalidKeyLength {
            actual: bytes.len(),
        })?;
        Ok(PublicKey(bytes))
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's bytes, copied.
    pub const fn to_bytes(self) -> [u8; KEY_LEN] {
        self.0
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }
}

impl AsRef<[u8]> for PublicKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<PublicKey> {
        let digits = s.as_bytes();
        if digits.len() != 2 * KEY_LEN {
            return Err(Error::InvalidKeyEncoding);
        }
        let mut out = [0u8; KEY_LEN];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hi = hex_digit(pair[0]).ok_or(Error::InvalidKeyEncoding)?;
            let lo = hex_digit(pair[1]).ok_or(Error::InvalidKeyEncoding)?;
            *byte = (hi << 4) | lo;
        }
        Ok(PublicKey(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
