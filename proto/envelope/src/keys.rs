//! X25519 key types: a secret key that never prints itself and a public key.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::{EdwardsPoint, MontgomeryPoint};
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
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

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
        SecretKey(Zeroizing::new(bytes))
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
        self.0.clone()
    }

    /// The matching public key: X25519(self, 9), from the precomputed table
    /// of multiples of the base point.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(
            EdwardsPoint::mul_base_clamped(*self.0)
                .to_montgomery()
                .to_bytes(),
        )
    }

    /// X25519(self, peer), or [`Error::NonContributory`] when the result is
    /// all zero (the peer key is a low-order point).
    pub(crate) fn diffie_hellman(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let shared = x25519(&self.0, &peer.0);
        // a comparison that takes the same time whatever the bytes
        if shared.iter().fold(0u8, |any, byte| any | byte) == 0 {
            return Err(Error::NonContributory);
        }
        Ok(shared)
    }
}

/// X25519 (RFC 7748): the u-coordinate of `scalar`, clamped, times the
/// point whose u-coordinate is `u`.
///
/// Every honest key is a point of the curve, which has an Edwards form, and
/// the multiplication there runs on curve25519-dalek's vectorised (AVX2)
/// backend when the CPU has one: 41 µs on the machine in BENCHMARKS.md
/// against 62 µs for the Montgomery ladder, which only has a serial
/// backend. Both are constant-time in the scalar; which one runs depends
/// only on the public `u`. A `u` on the twist (which X25519 accepts: any
/// 32 bytes are a valid input) has no Edwards form and takes the ladder.
/// The two give the same bytes: the birational map between the forms
/// keeps the group law, the u-coordinate is the same for either sign of
/// the Edwards point, and the clamped scalar is not reduced, so a point's
/// small-order part is multiplied as the ladder does (the unit tests below
/// check RFC 7748's vectors and random keys against the ladder). The
/// product and its bytes are zeroed when dropped.
fn x25519(scalar: &[u8; KEY_LEN], u: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let point = MontgomeryPoint(*u);
    let product = match point.to_edwards(0) {
        Some(edwards) => {
            Zeroizing::new(Zeroizing::new(edwards.mul_clamped(*scalar)).to_montgomery())
        }
        None => Zeroizing::new(point.mul_clamped(*scalar)),
    };
    Zeroizing::new(product.to_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> [u8; KEY_LEN] {
        hex.parse::<PublicKey>().expect("64 hex digits").to_bytes()
    }

    fn random() -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        fill_random(&mut out).expect("random bytes");
        out
    }

    /// Whether `u` takes the Edwards form (else the ladder).
    fn on_curve(u: &[u8; KEY_LEN]) -> bool {
        MontgomeryPoint(*u).to_edwards(0).is_some()
    }

    #[test]
    fn rfc_7748_vectors() {
        // RFC 7748 section 5.2: the first u is on the curve (the Edwards
        // form), the second on the twist (the ladder)
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
        ];
        assert!(on_curve(&bytes(cases[0].1)) && !on_curve(&bytes(cases[1].1)));
        for (scalar, u, expected) in cases {
            assert_eq!(*x25519(&bytes(scalar), &bytes(u)), bytes(expected));
        }
    }

    #[test]
    fn rfc_7748_iterations() {
        // section 5.2: k = u = 9, then k, u = X25519(k, u), k
        let (mut k, mut u) = ([0u8; KEY_LEN], [0u8; KEY_LEN]);
        k[0] = 9;
        u[0] = 9;
        for round in 1..=1000 {
            let next = *x25519(&k, &u);
            u = k;
            k = next;
            if round == 1 {
                assert_eq!(
                    k,
                    bytes("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
                );
            }
        }
        assert_eq!(
            k,
            bytes("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    #[test]
    fn same_as_the_ladder_on_the_curve_and_the_twist() {
        let (mut curve, mut twist) = (0, 0);
        for _ in 0..200 {
            let (scalar, u) = (random(), random());
            if on_curve(&u) {
                curve += 1;
            } else {
                twist += 1;
            }
            assert_eq!(*x25519(&scalar, &u), x25519_dalek::x25519(scalar, u));
            // a real public key, as every agent and server has
            let public = *SecretKey::from_bytes(random()).public_key().as_bytes();
            assert!(on_curve(&public));
            assert_eq!(
                *x25519(&scalar, &public),
                x25519_dalek::x25519(scalar, public)
            );
        }
        // random bytes land on each about half the time
        assert!(curve > 40 && twist > 40, "curve {curve}, twist {twist}");
    }

    #[test]
    fn public_key_is_the_ladder_on_the_base_point() {
        for _ in 0..100 {
            let secret = random();
            assert_eq!(
                *SecretKey::from_bytes(secret).public_key().as_bytes(),
                x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
            );
        }
    }

    #[test]
    fn edge_points_match_the_ladder() {
        let minus_one = bytes("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        assert!(!on_curve(&minus_one), "-1 is on the twist");
        // all ones is p + 18 with the top bit set: a non-canonical u that
        // X25519 reads as 18, which is on the curve
        let all_ones = [0xff; KEY_LEN];
        let mut eighteen = [0u8; KEY_LEN];
        eighteen[0] = 18;
        assert!(
            on_curve(&all_ones),
            "the Edwards form with a non-canonical u"
        );
        // 0, 1, -1, p, p + 1: small, non-canonical and twist
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        let p = bytes("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        let p_plus_one = bytes("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        for u in [[0u8; KEY_LEN], one, minus_one, p, p_plus_one, all_ones] {
            for _ in 0..20 {
                let scalar = random();
                assert_eq!(
                    *x25519(&scalar, &u),
                    x25519_dalek::x25519(scalar, u),
                    "u {u:?}"
                );
            }
        }
        let scalar = random();
        assert_eq!(x25519(&scalar, &all_ones), x25519(&scalar, &eighteen));
    }

    #[test]
    fn low_order_points_are_refused() {
        // the points of small order, in canonical and non-canonical forms,
        // each also with the top bit set (which X25519 ignores)
        let low_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        let secret = SecretKey::generate().expect("key");
        for u in low_order {
            let mut top_bit = bytes(u);
            top_bit[KEY_LEN - 1] |= 0x80;
            for peer in [bytes(u), top_bit] {
                assert!(
                    matches!(
                        secret.diffie_hellman(&PublicKey::from_bytes(peer)),
                        Err(Error::NonContributory)
                    ),
                    "{peer:?} was accepted"
                );
            }
        }
    }
}
