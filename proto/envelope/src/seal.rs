//! Sealing (server side) and opening (agent side).

use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::{Envelope, MAX_PLAINTEXT_LEN, NONCE_LEN, TAG_LEN, VERSION};
use crate::error::{Error, Result, fill_random};
use crate::keys::{KEY_LEN, PublicKey, SecretKey};

/// Domain label: the HKDF `info` and the first bytes of the associated data.
pub const LABEL: &[u8] = b"ferry/v1/envelope";

/// The server side: its static secret key, from which one
/// [`RecipientSealer`] per agent is derived.
#[derive(Clone)]
pub struct Sealer {
    server: SecretKey,
}

impl Sealer {
    /// Wraps the server's static secret key.
    pub fn new(server_secret: SecretKey) -> Sealer {
        Sealer {
            server: server_secret,
        }
    }

    /// The server's static public key, which agents get at registration.
    pub fn public_key(&self) -> PublicKey {
        self.server.public_key()
    }

    /// Prepares sealing to one agent: computes X25519(server, agent) once so
    /// that each seal costs one fixed-base and one variable-base
    /// multiplication. Refuses a low-order agent key
    /// ([`Error::NonContributory`]).
    pub fn sealer_for(&self, recipient: &PublicKey) -> Result<RecipientSealer> {
        let dh2 = self.server.diffie_hellman(recipient)?;
        Ok(RecipientSealer {
            recipient: *recipient,
            dh2,
        })
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Seals envelopes to one agent. Cheap to clone; cache one per agent.
/// The cached shared secret is zeroed on drop.
#[derive(Clone)]
pub struct RecipientSealer {
    recipient: PublicKey,
    dh2: Zeroizing<[u8; KEY_LEN]>,
}

impl RecipientSealer {
    /// The agent this sealer seals to.
    pub fn recipient(&self) -> &PublicKey {
        &self.recipient
    }

    /// Seals `plaintext` for `context` with a fresh random ephemeral key and
    /// a fresh random nonce.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Envelope> {
        // both from one call to the operating system
        let mut random = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN]);
        fill_random(random.as_mut())?;
        let ephemeral = SecretKey::from_slice(&random[..KEY_LEN])?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&random[KEY_LEN..]);
        self.seal_with(&ephemeral, nonce, context, plaintext)
    }

    /// Seals with a caller-chosen ephemeral key and nonce.
    ///
    /// For test vectors only: reusing an ephemeral key or a nonce breaks the
    /// envelope's security. Use [`RecipientSealer::seal`].
    pub fn seal_with(
        &self,
        ephemeral: &SecretKey,
        nonce: [u8; NONCE_LEN],
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Envelope> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge {
                what: "plaintext",
                size: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        let ephemeral_public = ephemeral.public_key();
        let dh1 = ephemeral.diffie_hellman(&self.recipient)?;
        let cipher = cipher(&dh1, &self.dh2, &ephemeral_public, &self.recipient)?;
        let aad = associated_data(&ephemeral_public, &self.recipient, context)?;
        let mut ciphertext = Vec::with_capacity(plaintext.len() + TAG_LEN);
        ciphertext.extend_from_slice(plaintext);
        cipher
            .encrypt_in_place(&XNonce::from(nonce), &aad, &mut ciphertext)
            .map_err(|_| Error::TooLarge {
                what: "plaintext",
                size: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            })?;
        Ok(Envelope {
            version: VERSION,
            ephemeral_public_key: ephemeral_public.to_bytes(),
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Debug for RecipientSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientSealer")
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

/// The agent side: its secret key and the server's public key, with
/// X25519(agent, server) computed once.
#[derive(Clone)]
pub struct Opener {
    agent: SecretKey,
    agent_public: PublicKey,
    server_public: PublicKey,
    dh2: Zeroizing<[u8; KEY_LEN]>,
}

impl Opener {
    /// Prepares opening envelopes sealed by the server whose static public
    /// key is `server_public`. Refuses a low-order server key
    /// ([`Error::NonContributory`]).
    pub fn new(agent_secret: SecretKey, server_public: &PublicKey) -> Result<Opener> {
        let dh2 = agent_secret.diffie_hellman(server_public)?;
        Ok(Opener {
            agent_public: agent_secret.public_key(),
            agent: agent_secret,
            server_public: *server_public,
            dh2,
        })
    }

    /// The agent's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.agent_public
    }

    /// The server public key envelopes must come from.
    pub fn server_public_key(&self) -> &PublicKey {
        &self.server_public
    }

    /// Opens an envelope sealed for `context`. Any authentication failure is
    /// [`Error::Decrypt`]. The plaintext is zeroed when dropped.
    ///
    /// Copies the ciphertext first; [`Opener::open_owned`] decrypts in the
    /// envelope's own buffer instead.
    pub fn open(&self, context: &[u8], envelope: &Envelope) -> Result<Plaintext> {
        self.open_owned(context, envelope.clone())
    }

    /// [`Opener::open`] for an envelope the caller owns: decrypts in place,
    /// in the envelope's ciphertext buffer, without copying it. The tag is
    /// checked before anything is decrypted, so a refused envelope leaves
    /// no plaintext behind.
    pub fn open_owned(&self, context: &[u8], envelope: Envelope) -> Result<Plaintext> {
        envelope.check()?;
        let ephemeral_public = PublicKey::from_bytes(envelope.ephemeral_public_key);
        let dh1 = self.agent.diffie_hellman(&ephemeral_public)?;
        let cipher = cipher(&dh1, &self.dh2, &ephemeral_public, &self.agent_public)?;
        let aad = associated_data(&ephemeral_public, &self.agent_public, context)?;
        let mut buffer = Plaintext(envelope.ciphertext);
        cipher
            .decrypt_in_place(&XNonce::from(envelope.nonce), &aad, &mut buffer.0)
            .map_err(|_| Error::Decrypt)?;
        Ok(buffer)
    }
}

/// An opened envelope's plaintext: read it through `Deref`; its whole
/// buffer (length and spare capacity) is zeroed when it is dropped.
///
/// Zeroing is a plain `fill(0)` (one `memset`, several GiB/s) followed by
/// [`std::hint::black_box`] on the buffer, which keeps the compiler from
/// removing the writes as dead stores before the free — rather than
/// `zeroize`'s byte-at-a-time volatile loop, which cost 15 % of opening a
/// large envelope.
#[derive(PartialEq, Eq)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// The plaintext's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        // within the capacity: never reallocates (which would leave a copy)
        self.0.resize(capacity, 0);
        self.0.fill(0);
        std::hint::black_box(self.0.as_mut_slice());
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("public_key", &self.agent_public)
            .field("server_public_key", &self.server_public)
            .finish_non_exhaustive()
    }
}

/// HKDF-SHA256(ikm = dh1 || dh2, salt = e_pub || R, info = [`LABEL`]),
/// 32 bytes: the XChaCha20-Poly1305 key.
fn derive_key(
    dh1: &[u8; KEY_LEN],
    dh2: &[u8; KEY_LEN],
    ephemeral_public: &PublicKey,
    recipient: &PublicKey,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut ikm = Zeroizing::new([0u8; 2 * KEY_LEN]);
    ikm[..KEY_LEN].copy_from_slice(dh1);
    ikm[KEY_LEN..].copy_from_slice(dh2);
    let mut salt = [0u8; 2 * KEY_LEN];
    salt[..KEY_LEN].copy_from_slice(ephemeral_public.as_bytes());
    salt[KEY_LEN..].copy_from_slice(recipient.as_bytes());
    let hkdf = Hkdf::<Sha256>::new(Some(&salt), ikm.as_ref());
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // Cannot fail: 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    hkdf.expand(LABEL, key.as_mut())
        .map_err(|_| Error::KeyDerivation)?;
    Ok(key)
}

/// `LABEL || 0x01 || e_pub || R || u32_be(len(context)) || context`.
fn associated_data(
    ephemeral_public: &PublicKey,
    recipient: &PublicKey,
    context: &[u8],
) -> Result<Vec<u8>> {
    let context_len = u32::try_from(context.len()).map_err(|_| Error::ContextTooLong {
        size: context.len(),
    })?;
    let mut aad = Vec::with_capacity(LABEL.len() + 1 + 2 * KEY_LEN + 4 + context.len());
    aad.extend_from_slice(LABEL);
    aad.push(1);
    aad.extend_from_slice(ephemeral_public.as_bytes());
    aad.extend_from_slice(recipient.as_bytes());
    aad.extend_from_slice(&context_len.to_be_bytes());
    aad.extend_from_slice(context);
    Ok(aad)
}

fn cipher(
    dh1: &[u8; KEY_LEN],
    dh2: &[u8; KEY_LEN],
    ephemeral_public: &PublicKey,
    recipient: &PublicKey,
) -> Result<XChaCha20Poly1305> {
    let key = derive_key(dh1, dh2, ephemeral_public, recipient)?;
    Ok(XChaCha20Poly1305::new(<&Key>::from(&*key)))
}
