//! Credentials and their checks, shared by every ferry service.
//!
//! - [`token`]: the signed bearer tokens (JWT, EdDSA, RFC 9068 claims) that
//!   agents carry: listener tokens and job tokens, each with its own audience
//!   and scope, verified locally by every service with the server's public
//!   signing key: no call per request.
//! - [`pat`]: administrators' personal access tokens, stored only as hashes.
//! - [`layer`]: the tower layer that authenticates every gRPC call against a
//!   per-method [`Requirement`] and hands handlers a [`Principal`].

pub mod layer;
pub mod pat;
pub mod principal;
pub mod token;

pub use layer::{AdministratorLookup, AuthLayer, Authenticator, Policy, Requirement};
pub use principal::{AdministratorIdentity, AgentIdentity, JobIdentity, Principal};
pub use token::{Audience, Claims, TokenError, TokenSigner, TokenVerifier};
