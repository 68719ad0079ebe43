//! The one error type of the crate.

/// Everything that can go wrong while handling keys and envelopes.
///
/// Authentication failures are deliberately one variant, [`Error::Decrypt`]:
/// a wrong key, a wrong context and tampered bytes look the same to the
/// caller, so the error tells an attacker nothing about which it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A public or secret key was not exactly 32 bytes.
    #[error("x25519 key must be 32 bytes, got {actual}")]
    InvalidKeyLength {
        /// The length that was given.
        actual: usize,
    },

    /// A key in text form was not 64 hexadecimal digits.
    #[error("x25519 key must be 64 hex digits")]
    InvalidKeyEncoding,

    /// A fixed-size envelope field had the wrong length.
    #[error("envelope field {field} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// The field name, as in the protobuf message.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },

    /// A Diffie-Hellman result was all zero: the peer key is a low-order point.
    #[error("key exchange is non-contributory: the public key is a low-order point")]
    NonContributory,

    /// A plaintext or ciphertext is over the size limit.
    #[error("{what} of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// `"plaintext"` or `"ciphertext"`.
        what: &'static str,
        /// The size that was given.
        size: usize,
        /// The largest size allowed.
        max: usize,
    },

    /// The context is longer than its 32-bit length prefix can express.
    #[error("context of {size} bytes is too long")]
    ContextTooLong {
        /// The size that was given.
        size: usize,
    },

    /// The envelope is shorter than the smallest valid one.
    #[error("envelope is truncated: {actual} bytes, need at least {min}")]
    Truncated {
        /// The length that was given.
        actual: usize,
        /// The smallest valid length.
        min: usize,
    },

    /// The envelope version is not 1.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),

    /// Authentication failed.
    #[error("envelope does not open: wrong key, wrong context or tampered bytes")]
    Decrypt,

    /// HKDF refused to expand the key (cannot happen for a 32-byte key).
    #[error("key derivation failed")]
    KeyDerivation,

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Fills `dest` from the operating system's random number generator.
pub(crate) fn fill_random(dest: &mut [u8]) -> Result<()> {
    getrandom::fill(dest).map_err(|e| Error::Random(e.to_string()))
}
