//! Behaviour tests: round trips, tampering, wrong keys, limits.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use ferry_envelope::{
    Envelope, Error, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MIN_ENCODED_LEN, Opener,
    PublicKey, RecipientSealer, Sealer, SecretKey, TAG_LEN, job_context, listener_token_context,
};

/// Low-order points of Curve25519 (and non-canonical encodings of them);
/// X25519 with any of them gives all zeros.
const LOW_ORDER: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p, a non-canonical encoding of 0
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

struct Pair {
    sealer: Sealer,
    agent: SecretKey,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            sealer: Sealer::new(SecretKey::generate().unwrap()),
            agent: SecretKey::generate().unwrap(),
        }
    }

    fn to_agent(&self) -> RecipientSealer {
        self.sealer.sealer_for(&self.agent.public_key()).unwrap()
    }

    fn opener(&self) -> Opener {
        Opener::new(self.agent.clone(), &self.sealer.public_key()).unwrap()
    }
}

#[test]
fn round_trip() {
    let pair = Pair::new();
    let context = job_context("0b5f3c1e-job", "7d1e-agent");
    for plaintext in [&b""[..], b"x", b"hello, ferry", &[0xa5; 4096]] {
        let envelope = pair.to_agent().seal(&context, plaintext).unwrap();
        assert_eq!(envelope.version, 1);
        assert_eq!(envelope.ciphertext.len(), plaintext.len() + TAG_LEN);
        let opened = pair.opener().open(&context, &envelope).unwrap();
        assert_eq!(opened.as_slice(), plaintext);

        let bytes = envelope.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
        let parsed = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, envelope);
        let from_parts = Envelope::from_parts(
            envelope.version,
            &envelope.ephemeral_public_key,
            &envelope.nonce,
            envelope.ciphertext.clone(),
        )
        .unwrap();
        assert_eq!(from_parts, envelope);
        assert_eq!(
            pair.opener().open(&context, &parsed).unwrap().as_slice(),
            plaintext
        );
    }
}

#[test]
fn every_single_byte_change_is_rejected() {
    let pair = Pair::new();
    let context = listener_token_context("agent-1");
    let envelope = pair.to_agent().seal(&context, b"short secret").unwrap();
    let bytes = envelope.to_bytes();
    let opener = pair.opener();
    assert!(
        opener
            .open(&context, &Envelope::from_bytes(&bytes).unwrap())
            .is_ok()
    );
    for position in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut tampered = bytes.clone();
            tampered[position] ^= flip;
            let result = Envelope::from_bytes(&tampered).and_then(|e| opener.open(&context, &e));
            match result {
                Err(Error::UnsupportedVersion(_)) if position == 0 => {}
                // flipping the top bit of e_pub is ignored by X25519, but the
                // raw bytes are in the salt and aad, so the tag still fails
                Err(Error::Decrypt) if position > 0 => {}
                other => panic!("byte {position} ^ {flip:#04x}: got {other:?}"),
            }
        }
    }
}

#[test]
fn wrong_recipient_key() {
    let pair = Pair::new();
    let envelope = pair.to_agent().seal(b"ctx", b"secret").unwrap();
    let other_agent =
        Opener::new(SecretKey::generate().unwrap(), &pair.sealer.public_key()).unwrap();
    assert_eq!(other_agent.open(b"ctx", &envelope), Err(Error::Decrypt));
}

#[test]
fn wrong_sender_key() {
    let pair = Pair::new();
    let envelope = pair.to_agent().seal(b"ctx", b"secret").unwrap();
    // the agent expects another server: the forged envelope must not open
    let other_server = SecretKey::generate().unwrap().public_key();
    let opener = Opener::new(pair.agent.clone(), &other_server).unwrap();
    assert_eq!(opener.open(b"ctx", &envelope), Err(Error::Decrypt));
    // and an envelope sealed by another server does not open with the right one
    let impostor = Sealer::new(SecretKey::generate().unwrap());
    let forged = impostor.sealer_for(&pair.agent.public_key()).unwrap();
    let envelope = forged.seal(b"ctx", b"secret").unwrap();
    assert_eq!(pair.opener().open(b"ctx", &envelope), Err(Error::Decrypt));
}

#[test]
fn wrong_context() {
    let pair = Pair::new();
    let context = job_context("job-1", "agent-1");
    let envelope = pair.to_agent().seal(&context, b"secret").unwrap();
    for wrong in [
        job_context("job-2", "agent-1"),
        job_context("job-1", "agent-2"),
        listener_token_context("agent-1"),
        Vec::new(),
        [context.as_slice(), b"\0"].concat(),
    ] {
        assert_eq!(pair.opener().open(&wrong, &envelope), Err(Error::Decrypt));
    }
    let empty = pair.to_agent().seal(b"", b"secret").unwrap();
    assert_eq!(pair.opener().open(b"\0", &empty), Err(Error::Decrypt));
}

#[test]
fn truncated_input() {
    let pair = Pair::new();
    let envelope = pair.to_agent().seal(b"ctx", b"secret").unwrap();
    let bytes = envelope.to_bytes();
    for len in 0..bytes.len() {
        let result = Envelope::from_bytes(&bytes[..len]);
        match result {
            Err(Error::Truncated { actual, min }) => {
                assert_eq!((actual, min), (len, MIN_ENCODED_LEN));
                assert!(len < MIN_ENCODED_LEN);
            }
            Ok(short) => {
                assert!(len >= MIN_ENCODED_LEN);
                assert_eq!(pair.opener().open(b"ctx", &short), Err(Error::Decrypt));
            }
            Err(other) => panic!("length {len}: {other:?}"),
        }
    }
    let short_ct = Envelope::from_parts(1, &[9; 32], &[0; 24], vec![0; TAG_LEN - 1]);
    assert!(matches!(short_ct, Err(Error::Truncated { .. })));
    // a hand-built envelope is checked again on open
    let mut hand_built = envelope.clone();
    hand_built.ciphertext.truncate(TAG_LEN - 1);
    assert!(matches!(
        pair.opener().open(b"ctx", &hand_built),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn bad_fields_are_refused() {
    assert_eq!(
        Envelope::from_parts(2, &[9; 32], &[0; 24], vec![0; 16]),
        Err(Error::UnsupportedVersion(2))
    );
    assert_eq!(
        Envelope::from_parts(0, &[9; 32], &[0; 24], vec![0; 16]),
        Err(Error::UnsupportedVersion(0))
    );
    assert!(matches!(
        Envelope::from_parts(1, &[9; 31], &[0; 24], vec![0; 16]),
        Err(Error::InvalidLength {
            field: "ephemeral_public_key",
            expected: 32,
            actual: 31
        })
    ));
    assert!(matches!(
        Envelope::from_parts(1, &[9; 32], &[0; 12], vec![0; 16]),
        Err(Error::InvalidLength {
            field: "nonce",
            expected: 24,
            actual: 12
        })
    ));
    let mut bytes = vec![2u8];
    bytes.extend_from_slice(&[0; 100]);
    assert_eq!(
        Envelope::from_bytes(&bytes),
        Err(Error::UnsupportedVersion(2))
    );
    assert!(matches!(
        PublicKey::from_slice(&[0; 33]),
        Err(Error::InvalidKeyLength { actual: 33 })
    ));
    assert!(matches!(
        SecretKey::from_slice(&[0; 31]),
        Err(Error::InvalidKeyLength { actual: 31 })
    ));
    let pair = Pair::new();
    let mut hand_built = pair.to_agent().seal(b"", b"").unwrap();
    hand_built.version = 257;
    assert_eq!(hand_built.to_bytes()[0], 0xff);
    assert_eq!(
        pair.opener().open(b"", &hand_built),
        Err(Error::UnsupportedVersion(257))
    );
}

#[test]
fn oversize_input() {
    let pair = Pair::new();
    let sealer = pair.to_agent();
    let too_big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    assert!(matches!(
        sealer.seal(b"ctx", &too_big),
        Err(Error::TooLarge { what: "plaintext", size, max }) if size == MAX_PLAINTEXT_LEN + 1 && max == MAX_PLAINTEXT_LEN
    ));
    let biggest = sealer.seal(b"ctx", &too_big[..MAX_PLAINTEXT_LEN]).unwrap();
    let bytes = biggest.to_bytes();
    assert_eq!(
        Envelope::from_bytes(&bytes).unwrap().ciphertext.len(),
        MAX_CIPHERTEXT_LEN
    );
    assert_eq!(
        pair.opener().open(b"ctx", &biggest).unwrap().len(),
        MAX_PLAINTEXT_LEN
    );

    let mut oversize = bytes;
    oversize.push(0);
    assert!(matches!(
        Envelope::from_bytes(&oversize),
        Err(Error::TooLarge {
            what: "ciphertext",
            ..
        })
    ));
    let mut ciphertext = biggest.ciphertext.clone();
    ciphertext.push(0);
    assert!(matches!(
        Envelope::from_parts(
            1,
            &biggest.ephemeral_public_key,
            &biggest.nonce,
            ciphertext.clone()
        ),
        Err(Error::TooLarge {
            what: "ciphertext",
            ..
        })
    ));
    let hand_built = Envelope {
        ciphertext,
        ..biggest
    };
    assert!(matches!(
        pair.opener().open(b"ctx", &hand_built),
        Err(Error::TooLarge {
            what: "ciphertext",
            ..
        })
    ));
}

#[test]
fn low_order_keys_are_refused() {
    let pair = Pair::new();
    for point in LOW_ORDER {
        let point = PublicKey::from_bytes(point);
        // sealing to a low-order agent key
        assert_eq!(
            pair.sealer.sealer_for(&point).err(),
            Some(Error::NonContributory)
        );
        // opening with a low-order server key
        assert_eq!(
            Opener::new(pair.agent.clone(), &point).err(),
            Some(Error::NonContributory)
        );
        // opening an envelope whose ephemeral key is low-order
        let mut envelope = pair.to_agent().seal(b"ctx", b"secret").unwrap();
        envelope.ephemeral_public_key = point.to_bytes();
        assert_eq!(
            pair.opener().open(b"ctx", &envelope),
            Err(Error::NonContributory)
        );
    }
}

#[test]
fn secret_key_debug_does_not_leak() {
    let secret = SecretKey::from_bytes([0x42; 32]);
    let printed = format!("{secret:?} {secret:#?}");
    assert_eq!(format!("{secret:?}"), "SecretKey(..)");
    assert!(!printed.contains("42"), "{printed}");
    assert!(!printed.contains("66"), "{printed}");
    let pair = Pair {
        sealer: Sealer::new(secret.clone()),
        agent: secret,
    };
    let printed = format!(
        "{:?} {:?} {:?}",
        pair.sealer,
        pair.to_agent(),
        pair.opener()
    );
    assert!(!printed.contains("4242"), "{printed}");
}

#[test]
fn two_seals_differ() {
    let pair = Pair::new();
    let sealer = pair.to_agent();
    let a = sealer.seal(b"ctx", b"same plaintext").unwrap();
    let b = sealer.seal(b"ctx", b"same plaintext").unwrap();
    assert_ne!(a.ephemeral_public_key, b.ephemeral_public_key);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_eq!(
        pair.opener().open(b"ctx", &a).unwrap(),
        pair.opener().open(b"ctx", &b).unwrap()
    );
}

#[test]
fn keys_round_trip() {
    let secret = SecretKey::generate().unwrap();
    let again = SecretKey::from_bytes(*secret.to_bytes());
    assert_eq!(secret.public_key(), again.public_key());
    let public = secret.public_key();
    let text = public.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<PublicKey>().unwrap(), public);
    assert_eq!(text.to_uppercase().parse::<PublicKey>().unwrap(), public);
    assert_eq!(PublicKey::from_slice(public.as_bytes()).unwrap(), public);
    assert_eq!(
        "zz".repeat(32).parse::<PublicKey>(),
        Err(Error::InvalidKeyEncoding)
    );
    assert_eq!("ab".parse::<PublicKey>(), Err(Error::InvalidKeyEncoding));
}

#[test]
fn sealers_are_shareable() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<RecipientSealer>();
    assert_shareable::<Sealer>();
    assert_shareable::<Opener>();
    assert_shareable::<Envelope>();
    assert_shareable::<Error>();
}

#[test]
fn contexts() {
    assert_eq!(
        listener_token_context("a-1"),
        b"ferry/v1/listener-token/a-1"
    );
    assert_eq!(job_context("j-1", "a-1"), b"ferry/v1/job/j-1/a-1");
}
