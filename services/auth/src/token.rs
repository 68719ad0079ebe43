//! Signed bearer tokens: compact JWS (RFC 7515) with `alg: EdDSA` (Ed25519)
//! and `typ: at+jwt`, carrying the OAuth access-token claims of RFC 9068
//! plus ferry's own (`pool_id`, `agent_id`, `job_id`, `project`,
//! `pipeline`). Any language with a JWT library can read them; every ferry
//! service verifies them locally with the server's public signing key.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Clock skew tolerated when checking `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;

/// Longest token accepted, in bytes: anything longer is refused unparsed.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Whom a token is for. Each kind of credential has its own audience so one
/// can never be used where another is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Listener tokens: long-poll for jobs.
    Listener,
    /// Job tokens: logs, status, resources of one job.
    Job,
}

impl Audience {
    /// The `aud` claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Listener => "ferry:listener",
            Audience::Job => "ferry:job",
        }
    }
}

/// Scope values.
pub mod scope {
    /// Listener token: poll for jobs.
    pub const AGENT_LISTEN: &str = "agent:listen";
    /// Job token: stream the job's logs.
    pub const JOB_LOGS: &str = "job:logs";
    /// Job token: report step and job status.
    pub const JOB_STATUS: &str = "job:status";
    /// Job token: read the job's resources and upload its results.
    pub const JOB_RESOURCES: &str = "job:resources";
}

/// The claims ferry puts in its tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `agent:{id}` or `job:{id}`.
    pub sub: String,
    /// Audience (one value).
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The OAuth client: the agent id.
    pub client_id: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// Pool of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The job (job tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The pipeline's project (job tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The pipeline (job tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The job's attempt this token is for (job tokens): the fencing token
    /// that makes a stale agent's writes fail after a requeue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The claims are not secret, but the jti identifies a live token.
        formatter
            .debug_struct("Claims")
            .field("sub", &self.sub)
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Claims {
    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }
}

/// Why a token was refused. The message never includes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, bad base64 or bad JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// Not `alg: EdDSA` / `typ: at+jwt`.
    #[error("unsupported token type")]
    Unsupported,
    /// Signed by another key, or altered.
    #[error("token signature does not verify")]
    BadSignature,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Issued in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// For another audience.
    #[error("token is not valid for this service (audience {0})")]
    WrongAudience(String),
    /// From another issuer.
    #[error("token is from another issuer")]
    WrongIssuer,
    /// Signing failed (a bug or a broken key).
    #[error("could not sign token")]
    Signing,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Signs tokens with the server's Ed25519 key.
pub struct TokenSigner {
    key_pair: Ed25519KeyPair,
    issuer: String,
    key_id: String,
    /// Shared with this signer's verifiers: a token signed here is known
    /// to them as verified from the start.
    verified: Arc<Mutex<Verified>>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Makes a new Ed25519 key, PKCS#8 encoded, for [`TokenSigner::from_pkcs8`].
pub fn generate_signing_key() -> Result<Vec<u8>, TokenError> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|document| document.as_ref().to_vec())
        .map_err(|_| TokenError::Signing)
}

fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

impl TokenSigner {
    /// A signer from a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(pkcs8: &[u8], issuer: impl Into<String>) -> Result<Self, TokenError> {
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::Signing)?;
        let key_id = key_id(key_pair.public_key().as_ref());
        Ok(Self {
            key_pair,
            issuer: issuer.into(),
            key_id,
            verified: Arc::default(),
        })
    }

    /// The issuer these tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The verifier for tokens this signer makes. It knows every token
    /// this signer makes (in this process) without verifying it.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier {
            verified: self.verified.clone(),
            ..TokenVerifier::new(self.key_pair.public_key().as_ref(), self.issuer.clone())
        }
    }

    /// Signs the claims; `iss` is set to this signer's issuer.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "EdDSA".to_owned(),
            typ: "at+jwt".to_owned(),
            kid: self.key_id.clone(),
        };
        let mut claims = claims.clone();
        claims.iss = self.issuer.clone();
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Signing)?;
        let mut token = String::with_capacity(512);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.key_pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        lock(&self.verified).remember(&token, &claims, claims.iat);
        Ok(token)
    }
}

fn lock(verified: &Mutex<Verified>) -> MutexGuard<'_, Verified> {
    verified
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Verifies tokens locally with the server's public signing key.
#[derive(Clone)]
pub struct TokenVerifier {
    public_key: UnparsedPublicKey<Vec<u8>>,
    key_id: String,
    issuer: String,
    verified: Arc<Mutex<Verified>>,
}

/// Most tokens remembered as verified; past it, expired ones are dropped,
/// and if none had expired, all of them.
const VERIFIED_CAPACITY: usize = if cfg!(test) { 64 } else { 16_384 };

/// Tokens whose signature, header and issuer were checked, with their
/// claims. A job token comes back on every call of its job and a listener
/// token on every poll; checking such a token again is comparing strings
/// and its claims' audience and times instead of an Ed25519 verification
/// (about 50 µs). What is remembered is exactly what a check of the same
/// bytes would conclude, so nothing is accepted that would not be.
#[derive(Default)]
struct Verified {
    tokens: HashMap<Box<str>, Claims>,
}

impl Verified {
    fn remember(&mut self, token: &str, claims: &Claims, now: i64) {
        if self.tokens.len() >= VERIFIED_CAPACITY {
            self.tokens
                .retain(|_, claims| claims.exp + LEEWAY_SECONDS >= now);
            if self.tokens.len() >= VERIFIED_CAPACITY {
                self.tokens.clear();
            }
        }
        self.tokens.insert(token.into(), claims.clone());
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier for the raw 32-byte Ed25519 public key.
    pub fn new(public_key: &[u8], issuer: impl Into<String>) -> Self {
        Self {
            key_id: key_id(public_key),
            public_key: UnparsedPublicKey::new(&ED25519, public_key.to_vec()),
            issuer: issuer.into(),
            verified: Arc::default(),
        }
    }

    /// Checks the signature, issuer, audience and times of `token` at `now`
    /// (seconds since the epoch) and returns its claims. The signature of a
    /// token seen before is not verified again (see `Verified`).
    pub fn verify(&self, token: &str, audience: Audience, now: i64) -> Result<Claims, TokenError> {
        let known = self.remembered().tokens.get(token).cloned();
        let (claims, remembered) = match known {
            Some(claims) => (claims, true),
            None => (self.verify_signed(token)?, false),
        };
        if claims.aud != audience.as_str() {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        if claims.exp + LEEWAY_SECONDS < now {
            return Err(TokenError::Expired);
        }
        if claims.iat - LEEWAY_SECONDS > now {
            return Err(TokenError::NotYetValid);
        }
        if !remembered {
            self.remembered().remember(token, &claims, now);
        }
        Ok(claims)
    }

    fn remembered(&self) -> MutexGuard<'_, Verified> {
        lock(&self.verified)
    }

    /// What does not change with time or audience: the shape, the header,
    /// the signature and the issuer.
    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != "EdDSA" || header.typ != "at+jwt" {
            return Err(TokenError::Unsupported);
        }
        if header.kid != self.key_id {
            return Err(TokenError::BadSignature);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        self.public_key
            .verify(&token.as_bytes()[..signed_len], &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_json(payload)?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        Ok(claims)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(audience: Audience, now: i64) -> Claims {
        Claims {
            iss: String::new(),
            sub: "agent:a1".to_owned(),
            aud: audience.as_str().to_owned(),
            exp: now + 300,
            iat: now,
            jti: "t1".to_owned(),
            client_id: "a1".to_owned(),
            scope: scope::AGENT_LISTEN.to_owned(),
            pool_id: Some("p1".to_owned()),
            agent_id: Some("a1".to_owned()),
            job_id: None,
            project: None,
            pipeline: None,
            attempt: None,
        }
    }

    fn signer() -> TokenSigner {
        let key = generate_signing_key().expect("key");
        TokenSigner::from_pkcs8(&key, "ferry-test").expect("signer")
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let signer = signer();
        let now = 1_800_000_000;
        let token = signer.sign(&claims(Audience::Listener, now)).expect("sign");
        let verified = signer
            .verifier()
            .verify(&token, Audience::Listener, now + 10)
            .expect("verify");
        assert_eq!(verified.iss, "ferry-test");
        assert_eq!(verified.agent_id.as_deref(), Some("a1"));
        assert_eq!(verified.scopes().collect::<Vec<_>>(), ["agent:listen"]);
    }

    /// A listener token issued at `now` for 300 s is refused as a job
    /// token, after it expired and before it was issued.
    fn refuses_wrong_audience_and_times(verifier: &TokenVerifier, token: &str, now: i64) {
        assert_eq!(
            verifier.verify(token, Audience::Job, now),
            Err(TokenError::WrongAudience("ferry:listener".to_owned()))
        );
        assert_eq!(
            verifier.verify(token, Audience::Listener, now + 300 + LEEWAY_SECONDS + 1),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verifier.verify(token, Audience::Listener, now - LEEWAY_SECONDS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn wrong_audience_expiry_key_and_tampering_are_refused() {
        let signer = signer();
        // not the signer's own verifier, which knows its tokens: this one
        // checks every signature
        let verifier = TokenVerifier::new(signer.key_pair.public_key().as_ref(), "ferry-test");
        let now = 1_800_000_000;
        let token = signer.sign(&claims(Audience::Listener, now)).expect("sign");
        refuses_wrong_audience_and_times(&verifier, &token, now);
        let other = self::signer().verifier();
        assert_eq!(
            other.verify(&token, Audience::Listener, now),
            Err(TokenError::BadSignature)
        );
        // Change one character of the payload: the signature no longer fits.
        let mut tampered = token.clone().into_bytes();
        let dot = token.find('.').expect("dot") + 5;
        tampered[dot] = if tampered[dot] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("utf8");
        assert!(verifier.verify(&tampered, Audience::Listener, now).is_err());
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.***",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                verifier.verify(garbage, Audience::Listener, now).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_audience_times_and_bytes() {
        let signer = signer();
        let verifier = signer.verifier();
        let now = 1_800_000_000;
        let token = signer.sign(&claims(Audience::Listener, now)).expect("sign");
        // made by this verifier's signer, so known before any check
        assert_eq!(verifier.remembered().tokens.len(), 1);
        verifier
            .verify(&token, Audience::Listener, now)
            .expect("verify");
        // a verifier of the same key but not of this signer checks it, then
        // remembers it
        let separate = TokenVerifier::new(signer.key_pair.public_key().as_ref(), "ferry-test");
        assert!(separate.remembered().tokens.is_empty());
        separate
            .verify(&token, Audience::Listener, now)
            .expect("verify");
        assert_eq!(separate.remembered().tokens.len(), 1);
        refuses_wrong_audience_and_times(&verifier, &token, now);
        // the same token with one signature character changed is another
        // string: verified (and refused), not taken from memory
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("utf8");
        assert_eq!(
            verifier.verify(&forged, Audience::Listener, now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verifier.remembered().tokens.len(), 1);
        // a verifier of another key remembers nothing of this one's
        assert_eq!(
            self::signer()
                .verifier()
                .verify(&token, Audience::Listener, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let signer = signer();
        let verifier = signer.verifier();
        let now = 1_800_000_000;
        let mut expired = claims(Audience::Listener, now - 1000);
        expired.exp = now - 1000 + 60;
        let old = signer.sign(&expired).expect("sign");
        verifier
            .verify(&old, Audience::Listener, now - 1000)
            .expect("verify");
        let mut fresh = claims(Audience::Listener, now);
        for index in 0..VERIFIED_CAPACITY {
            fresh.jti = format!("t{index}");
            let token = signer.sign(&fresh).expect("sign");
            verifier
                .verify(&token, Audience::Listener, now)
                .expect("verify");
            assert!(verifier.remembered().tokens.len() <= VERIFIED_CAPACITY);
        }
        // reaching the capacity dropped the expired token first
        assert!(!verifier.remembered().tokens.contains_key(old.as_str()));
        assert_eq!(verifier.remembered().tokens.len(), VERIFIED_CAPACITY);
    }

    #[test]
    fn the_token_is_a_standard_jwt() {
        let signer = signer();
        let token = signer.sign(&claims(Audience::Job, 5)).expect("sign");
        let header = token.split('.').next().expect("header");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "at+jwt");
    }
}
