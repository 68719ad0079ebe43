//! A bounded per-recipient cache of [`RecipientSealer`]s, so sealing to an
//! agent the server has sealed to before costs one X25519 operation, not two.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::{PublicKey, RecipientSealer, Result, Sealer};

/// Caches the server-static × agent shared secret per agent public key.
pub struct SealerCache {
    sealer: Sealer,
    capacity: usize,
    recipients: RwLock<HashMap<PublicKey, RecipientSealer>>,
}

impl std::fmt::Debug for SealerCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SealerCache")
            .field("server_public_key", &self.sealer.public_key())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SealerCache {
    /// A cache holding at most `capacity` recipients (it starts over when
    /// full: entries are cheap to recompute).
    pub fn new(sealer: Sealer, capacity: usize) -> Self {
        Self {
            sealer,
            capacity: capacity.max(1),
            recipients: RwLock::new(HashMap::new()),
        }
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.sealer.public_key()
    }

    /// The sealer for `recipient`, from the cache or computed and cached.
    pub fn sealer_for(&self, recipient: &PublicKey) -> Result<RecipientSealer> {
        if let Ok(recipients) = self.recipients.read()
            && let Some(found) = recipients.get(recipient)
        {
            return Ok(found.clone());
        }
        let computed = self.sealer.sealer_for(recipient)?;
        if let Ok(mut recipients) = self.recipients.write() {
            if recipients.len() >= self.capacity {
                recipients.clear();
            }
            recipients.insert(*recipient, computed.clone());
        }
        Ok(computed)
    }

    /// Seals `plaintext` to `recipient` in `context`.
    pub fn seal(
        &self,
        recipient: &PublicKey,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<crate::Envelope> {
        self.sealer_for(recipient)?.seal(context, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Opener, SecretKey};

    #[test]
    fn cached_sealers_seal_what_the_agent_opens_and_the_cache_stays_bounded() {
        let server = SecretKey::generate().expect("key");
        let server_public = server.public_key();
        let cache = SealerCache::new(Sealer::new(server), 2);
        let agents: Vec<SecretKey> = (0..3)
            .map(|_| SecretKey::generate().expect("key"))
            .collect();
        for agent in &agents {
            for _ in 0..2 {
                let envelope = cache
                    .seal(&agent.public_key(), b"ctx", b"hello")
                    .expect("seal");
                let opener = Opener::new(agent.clone(), &server_public).expect("opener");
                assert_eq!(
                    opener.open(b"ctx", &envelope).expect("open").as_slice(),
                    b"hello"
                );
            }
        }
        assert!(cache.recipients.read().expect("lock").len() <= 2);
        assert!(
            cache
                .seal(&PublicKey::from_bytes([0; 32]), b"ctx", b"x")
                .is_err()
        );
    }
}
