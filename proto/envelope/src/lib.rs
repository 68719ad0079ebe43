//! Envelope v1: ferry's sealed payloads, each readable by exactly one agent.
//!
//! This crate owns the envelope format and its cryptography, nothing else:
//! X25519 key types ([`SecretKey`], [`PublicKey`]), sealing on the server
//! ([`Sealer`], [`RecipientSealer`]), opening on the agent ([`Opener`]), the
//! [`Envelope`] value with its canonical byte encoding, and the contexts
//! ferry binds envelopes to ([`listener_token_context`], [`job_context`]).
//! It knows nothing about protobuf or gRPC: callers move the four fields of
//! `ferry.v1.SealedEnvelope` in and out with [`Envelope::from_parts`] and the
//! public fields.
//!
//! The byte-exact specification is `docs/envelope.md`; test vectors are in
//! `proto/testvectors/envelope-v1.json`.
//!
//! In short, for server static key `S`, agent key `R` and a fresh ephemeral
//! key `e`:
//!
//! ```text
//! key   = HKDF-SHA256(ikm  = X25519(e, R) || X25519(S, R),
//!                     salt = e_pub || R, info = "ferry/v1/envelope")
//! aad   = "ferry/v1/envelope" || 0x01 || e_pub || R || u32_be(len(ctx)) || ctx
//! bytes = 0x01 || e_pub || nonce(24) || XChaCha20-Poly1305(key, nonce, aad, plaintext)
//! ```
//!
//! ```
//! use ferry_envelope::{Opener, Sealer, SecretKey, job_context};
//!
//! let server = Sealer::new(SecretKey::generate()?);
//! let agent_secret = SecretKey::generate()?;
//! let to_agent = server.sealer_for(&agent_secret.public_key())?;
//! let context = job_context("job-1", "agent-1");
//! let envelope = to_agent.seal(&context, b"payload")?;
//!
//! let opener = Opener::new(agent_secret, &server.public_key())?;
//! let plaintext = opener.open(&context, &envelope)?;
//! assert_eq!(plaintext.as_slice(), b"payload");
//! # Ok::<(), ferry_envelope::Error>(())
//! ```

mod cache;
mod envelope;
mod error;
mod keys;
mod seal;

pub use cache::SealerCache;
pub use envelope::{
    Envelope, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_ENCODED_LEN, MAX_PLAINTEXT_LEN, MIN_ENCODED_LEN,
    NONCE_LEN, TAG_LEN, VERSION,
};
pub use error::{Error, Result};
pub use keys::{KEY_LEN, PublicKey, SecretKey};
pub use seal::{LABEL, Opener, Plaintext, RecipientSealer, Sealer};

/// Context of a listener token sealed to an agent:
/// `"ferry/v1/listener-token/" + agent_id`, UTF-8.
pub fn listener_token_context(agent_id: &str) -> Vec<u8> {
    format!("ferry/v1/listener-token/{agent_id}").into_bytes()
}

/// Context of a job sealed to an agent:
/// `"ferry/v1/job/" + job_id + "/" + agent_id`, UTF-8.
///
/// Both ids are UUIDs, which never contain `/`, so the string is unambiguous.
pub fn job_context(job_id: &str, agent_id: &str) -> Vec<u8> {
    format!("ferry/v1/job/{job_id}/{agent_id}").into_bytes()
}
