//! Test vectors: `proto/testvectors/envelope-v1.json`.
//!
//! `cargo test -p ferry-envelope --test vectors` checks the file byte for
//! byte; with `FERRY_WRITE_VECTORS=1` it first regenerates it. Every
//! intermediate value is recomputed here from the primitives (x25519, hkdf,
//! chacha20poly1305) independently of the crate, then compared with both the
//! file and the crate's output.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::PathBuf;

use chacha20poly1305::aead::Aead;
use chacha20poly1305::aead::Payload;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ferry_envelope::{
    Envelope, Error, Opener, PublicKey, Sealer, SecretKey, job_context, listener_token_context,
};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const LABEL: &[u8] = b"ferry/v1/envelope";

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct File {
    description: String,
    algorithm: String,
    vectors: Vec<Vector>,
    rejections: Vec<Rejection>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vector {
    name: String,
    server_secret_key: String,
    server_public_key: String,
    agent_secret_key: String,
    agent_public_key: String,
    ephemeral_secret_key: String,
    ephemeral_public_key: String,
    nonce: String,
    context: String,
    plaintext: String,
    shared_dh1: String,
    shared_dh2: String,
    key: String,
    aad: String,
    envelope: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Rejection {
    name: String,
    /// "open" or "seal"
    operation: String,
    server_secret_key: Option<String>,
    server_public_key: String,
    agent_secret_key: Option<String>,
    agent_public_key: String,
    ephemeral_secret_key: Option<String>,
    nonce: Option<String>,
    context: String,
    plaintext: Option<String>,
    envelope: Option<String>,
    /// snake_case name of the `Error` variant
    error: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testvectors/envelope-v1.json")
}

fn label_bytes(label: &str) -> [u8; 32] {
    Sha256::digest(format!("ferry/v1/envelope/test-vector/{label}").as_bytes()).into()
}

fn un_hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn un_hex32(s: &str) -> [u8; 32] {
    un_hex(s).try_into().unwrap()
}

fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Decrypt => "decrypt",
        Error::NonContributory => "non_contributory",
        Error::Truncated { .. } => "truncated",
        Error::UnsupportedVersion(_) => "unsupported_version",
        Error::TooLarge { .. } => "too_large",
        Error::InvalidLength { .. } => "invalid_length",
        other => panic!("unexpected error {other:?}"),
    }
}

/// Independent reference computation of one vector from its inputs.
struct Reference {
    e_pub: [u8; 32],
    dh1: [u8; 32],
    dh2: [u8; 32],
    key: [u8; 32],
    aad: Vec<u8>,
    envelope: Vec<u8>,
}

fn reference(
    s: [u8; 32],
    r_pub: [u8; 32],
    e: [u8; 32],
    nonce: [u8; 24],
    ctx: &[u8],
    pt: &[u8],
) -> Reference {
    let e_pub = x25519_dalek::x25519(e, x25519_dalek::X25519_BASEPOINT_BYTES);
    let dh1 = x25519_dalek::x25519(e, r_pub);
    let dh2 = x25519_dalek::x25519(s, r_pub);
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[e_pub, r_pub].concat()), &[dh1, dh2].concat())
        .expand(LABEL, &mut key)
        .unwrap();
    let ctx_len = u32::try_from(ctx.len()).unwrap().to_be_bytes();
    let aad = [LABEL, &[1], &e_pub, &r_pub, &ctx_len, ctx].concat();
    let ciphertext = XChaCha20Poly1305::new(&key.into())
        .encrypt(&XNonce::from(nonce), Payload { msg: pt, aad: &aad })
        .unwrap();
    let envelope = [&[1u8][..], &e_pub, &nonce, &ciphertext].concat();
    Reference {
        e_pub,
        dh1,
        dh2,
        key,
        aad,
        envelope,
    }
}

fn make_vector(name: &str, server: &str, agent: &str, context: &[u8], plaintext: &[u8]) -> Vector {
    let s = label_bytes(&format!("{server}/secret"));
    let r = label_bytes(&format!("{agent}/secret"));
    let e = label_bytes(&format!("{name}/ephemeral"));
    let nonce: [u8; 24] = label_bytes(&format!("{name}/nonce"))[..24]
        .try_into()
        .unwrap();
    let server_key = SecretKey::from_bytes(s);
    let agent_key = SecretKey::from_bytes(r);
    let envelope = Sealer::new(server_key.clone())
        .sealer_for(&agent_key.public_key())
        .unwrap()
        .seal_with(&SecretKey::from_bytes(e), nonce, context, plaintext)
        .unwrap();
    let reference = reference(
        s,
        agent_key.public_key().to_bytes(),
        e,
        nonce,
        context,
        plaintext,
    );
    Vector {
        name: name.into(),
        server_secret_key: hex::encode(s),
        server_public_key: hex::encode(server_key.public_key().as_bytes()),
        agent_secret_key: hex::encode(r),
        agent_public_key: hex::encode(agent_key.public_key().as_bytes()),
        ephemeral_secret_key: hex::encode(e),
        ephemeral_public_key: hex::encode(reference.e_pub),
        nonce: hex::encode(nonce),
        context: hex::encode(context),
        plaintext: hex::encode(plaintext),
        shared_dh1: hex::encode(reference.dh1),
        shared_dh2: hex::encode(reference.dh2),
        key: hex::encode(reference.key),
        aad: hex::encode(&reference.aad),
        envelope: hex::encode(envelope.to_bytes()),
    }
}

fn binary_plaintext() -> Vec<u8> {
    (0u32..1000)
        .map(|i| Sha256::digest(i.to_be_bytes())[0])
        .collect()
}

fn generate() -> File {
    let job = job_context(
        "3f2c7a9e-5b1d-4e8a-9c0f-6d2b8e4a1c35",
        "a41e6c2d-7f3b-4d9a-8e15-0c9b2f7d6e48",
    );
    let token = listener_token_context("a41e6c2d-7f3b-4d9a-8e15-0c9b2f7d6e48");
    let vectors = vec![
        make_vector("empty-plaintext", "server-1", "agent-1", &token, b""),
        make_vector("short-ascii", "server-1", "agent-1", &job, b"hello, ferry"),
        make_vector(
            "binary-1000",
            "server-1",
            "agent-1",
            &job,
            &binary_plaintext(),
        ),
        make_vector(
            "empty-context",
            "server-1",
            "agent-1",
            b"",
            b"no context at all",
        ),
        make_vector(
            "other-keys",
            "server-2",
            "agent-2",
            &token,
            b"{\"token\":\"abc\"}",
        ),
    ];
    File {
        description: "ferry envelope v1 test vectors (docs/envelope.md). All byte strings are \
                      lowercase hex. Each vector must seal to exactly `envelope` from the given \
                      secret keys, ephemeral key and nonce, and open back to `plaintext`. Each \
                      rejection must fail with the named error."
            .into(),
        algorithm: "X25519 (e,R) and (S,R); HKDF-SHA256 ikm=dh1||dh2 salt=e_pub||R \
                    info=\"ferry/v1/envelope\" L=32; XChaCha20-Poly1305 with \
                    aad=\"ferry/v1/envelope\"||0x01||e_pub||R||u32be(len(context))||context; \
                    envelope=0x01||e_pub||nonce||ciphertext||tag"
            .into(),
        rejections: rejections(&vectors[1], &token),
        vectors,
    }
}

fn rejections(good: &Vector, other_context: &[u8]) -> Vec<Rejection> {
    let bytes = un_hex(&good.envelope);
    let open = |name: &str, envelope: Vec<u8>, context: &str, server_public: &str, error: &str| {
        Rejection {
            name: name.into(),
            operation: "open".into(),
            server_secret_key: None,
            server_public_key: server_public.into(),
            agent_secret_key: Some(good.agent_secret_key.clone()),
            agent_public_key: good.agent_public_key.clone(),
            ephemeral_secret_key: None,
            nonce: None,
            context: context.into(),
            plaintext: None,
            envelope: Some(hex::encode(envelope)),
            error: error.into(),
        }
    };
    let flip = |at: usize| {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        b
    };
    let last = bytes.len() - 1;
    let other_server = hex::encode(
        SecretKey::from_bytes(label_bytes("server-2/secret"))
            .public_key()
            .as_bytes(),
    );
    let mut low_order_epk = bytes.clone();
    low_order_epk[1..33].fill(0);
    let mut version_2 = bytes.clone();
    version_2[0] = 2;
    let ctx = good.context.as_str();
    let spk = good.server_public_key.as_str();
    let mut list = vec![
        open("flipped-ciphertext-byte", flip(57), ctx, spk, "decrypt"),
        open("flipped-tag-byte", flip(last), ctx, spk, "decrypt"),
        open("flipped-ephemeral-key-byte", flip(1), ctx, spk, "decrypt"),
        open("flipped-nonce-byte", flip(33), ctx, spk, "decrypt"),
        open(
            "wrong-context",
            bytes.clone(),
            &hex::encode(other_context),
            spk,
            "decrypt",
        ),
        open("empty-context-instead", bytes.clone(), "", spk, "decrypt"),
        open(
            "wrong-server-public-key",
            bytes.clone(),
            ctx,
            &other_server,
            "decrypt",
        ),
        open(
            "truncated-below-minimum",
            bytes[..72].to_vec(),
            ctx,
            spk,
            "truncated",
        ),
        open("truncated-to-empty", Vec::new(), ctx, spk, "truncated"),
        open(
            "unknown-version",
            version_2,
            ctx,
            spk,
            "unsupported_version",
        ),
        open(
            "low-order-ephemeral-key",
            low_order_epk,
            ctx,
            spk,
            "non_contributory",
        ),
    ];
    let order_8 = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
    for (name, point) in [
        ("seal-to-all-zero-agent-key", "00".repeat(32)),
        ("seal-to-order-8-agent-key", order_8.into()),
    ] {
        list.push(Rejection {
            name: name.into(),
            operation: "seal".into(),
            server_secret_key: Some(good.server_secret_key.clone()),
            server_public_key: good.server_public_key.clone(),
            agent_secret_key: None,
            agent_public_key: point,
            ephemeral_secret_key: Some(good.ephemeral_secret_key.clone()),
            nonce: Some(good.nonce.clone()),
            context: good.context.clone(),
            plaintext: Some(good.plaintext.clone()),
            envelope: None,
            error: "non_contributory".into(),
        });
    }
    list
}

fn check_vector(v: &Vector) {
    let (s, r, e) = (
        un_hex32(&v.server_secret_key),
        un_hex32(&v.agent_secret_key),
        un_hex32(&v.ephemeral_secret_key),
    );
    let nonce: [u8; 24] = un_hex(&v.nonce).try_into().unwrap();
    let (context, plaintext) = (un_hex(&v.context), un_hex(&v.plaintext));
    let base = x25519_dalek::X25519_BASEPOINT_BYTES;
    assert_eq!(
        hex::encode(x25519_dalek::x25519(s, base)),
        v.server_public_key,
        "{}",
        v.name
    );
    assert_eq!(
        hex::encode(x25519_dalek::x25519(r, base)),
        v.agent_public_key,
        "{}",
        v.name
    );
    let reference = reference(
        s,
        un_hex32(&v.agent_public_key),
        e,
        nonce,
        &context,
        &plaintext,
    );
    assert_eq!(
        hex::encode(reference.e_pub),
        v.ephemeral_public_key,
        "{}",
        v.name
    );
    assert_eq!(hex::encode(reference.dh1), v.shared_dh1, "{}", v.name);
    assert_eq!(hex::encode(reference.dh2), v.shared_dh2, "{}", v.name);
    assert_eq!(hex::encode(reference.key), v.key, "{}", v.name);
    assert_eq!(hex::encode(&reference.aad), v.aad, "{}", v.name);
    assert_eq!(hex::encode(&reference.envelope), v.envelope, "{}", v.name);

    // the crate seals to the same bytes ...
    let agent_public = PublicKey::from_slice(&un_hex(&v.agent_public_key)).unwrap();
    let sealed = Sealer::new(SecretKey::from_bytes(s))
        .sealer_for(&agent_public)
        .unwrap()
        .seal_with(&SecretKey::from_bytes(e), nonce, &context, &plaintext)
        .unwrap();
    assert_eq!(hex::encode(sealed.to_bytes()), v.envelope, "{}", v.name);
    // ... and opens the file's bytes
    let envelope = Envelope::from_bytes(&un_hex(&v.envelope)).unwrap();
    let server_public = PublicKey::from_slice(&un_hex(&v.server_public_key)).unwrap();
    let opener = Opener::new(SecretKey::from_bytes(r), &server_public).unwrap();
    assert_eq!(
        opener.open(&context, &envelope).unwrap().as_slice(),
        plaintext,
        "{}",
        v.name
    );
}

fn check_rejection(rej: &Rejection) {
    let context = un_hex(&rej.context);
    let result = match rej.operation.as_str() {
        "open" => {
            let server_public = PublicKey::from_slice(&un_hex(&rej.server_public_key)).unwrap();
            let agent = SecretKey::from_bytes(un_hex32(rej.agent_secret_key.as_deref().unwrap()));
            let opener = Opener::new(agent, &server_public).unwrap();
            let bytes = un_hex(rej.envelope.as_deref().unwrap());
            Envelope::from_bytes(&bytes)
                .and_then(|e| opener.open(&context, &e))
                .map(|_| ())
        }
        "seal" => {
            let agent_public = PublicKey::from_slice(&un_hex(&rej.agent_public_key)).unwrap();
            let server = SecretKey::from_bytes(un_hex32(rej.server_secret_key.as_deref().unwrap()));
            let ephemeral =
                SecretKey::from_bytes(un_hex32(rej.ephemeral_secret_key.as_deref().unwrap()));
            let nonce: [u8; 24] = un_hex(rej.nonce.as_deref().unwrap()).try_into().unwrap();
            let plaintext = un_hex(rej.plaintext.as_deref().unwrap());
            Sealer::new(server)
                .sealer_for(&agent_public)
                .and_then(|s| s.seal_with(&ephemeral, nonce, &context, &plaintext))
                .map(|_| ())
        }
        other => panic!("unknown operation {other}"),
    };
    match result {
        Ok(()) => panic!("{}: expected {}, but it succeeded", rej.name, rej.error),
        Err(error) => assert_eq!(error_kind(&error), rej.error, "{}: {error:?}", rej.name),
    }
}

#[test]
fn test_vectors() {
    if std::env::var("FERRY_WRITE_VECTORS").as_deref() == Ok("1") {
        let json = serde_json::to_string_pretty(&generate()).unwrap();
        std::fs::write(path(), json + "\n").unwrap();
    }
    let text =
        std::fs::read_to_string(path()).expect("run with FERRY_WRITE_VECTORS=1 to create the file");
    let file: File = serde_json::from_str(&text).unwrap();
    assert!(file.vectors.len() >= 4);
    for vector in &file.vectors {
        check_vector(vector);
    }
    for rejection in &file.rejections {
        check_rejection(rejection);
    }
    // the file is exactly what the generator produces (stable, complete)
    assert_eq!(
        file,
        generate(),
        "vectors file is stale: regenerate with FERRY_WRITE_VECTORS=1"
    );
}
