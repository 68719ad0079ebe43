//! Envelopes in and out of the `ferry.v1.SealedEnvelope` message.

use ferry_envelope::Envelope;
use ferry_proto::v1::SealedEnvelope;

/// The wire form of an envelope.
pub fn to_proto(envelope: Envelope) -> SealedEnvelope {
    SealedEnvelope {
        version: envelope.version,
        ephemeral_public_key: envelope.ephemeral_public_key.to_vec(),
        nonce: envelope.nonce.to_vec(),
        ciphertext: envelope.ciphertext,
    }
}

/// An envelope from its wire form, checking every field's length.
pub fn from_proto(sealed: SealedEnvelope) -> ferry_envelope::Result<Envelope> {
    Envelope::from_parts(
        sealed.version,
        &sealed.ephemeral_public_key,
        &sealed.nonce,
        sealed.ciphertext,
    )
}
