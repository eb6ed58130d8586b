//! The verifier's side of a TPM 2.0 attestation, as pure functions over
//! bytes: no I/O, no clock, no randomness inside (the time and the random
//! bytes are arguments), so every decision can be replayed in a test.
//!
//! The protocol, with the node's TPM holding an endorsement key (EK, whose
//! certificate a manufacturer signed) and an attestation key (AK, a
//! restricted signing key the node created under the EK's hierarchy):
//!
//! 1. The node sends [`NodeTpm`]: the EK and AK publics as the TPM marshals
//!    them (TPM2B_PUBLIC, what `tpm2_createek -u` / `tpm2_createak -u`
//!    write) and the EK certificate (DER, from NV index 0x01c00002).
//! 2. [`challenge`] checks the AK is a restricted signing key that cannot
//!    leave its TPM, and the EK an RSA 2048 storage key, and runs
//!    TPM2_MakeCredential in software: a secret only the TPM holding the
//!    EK's private key can unwrap, and only for a loaded key with exactly
//!    the AK's name. It returns the [`Pending`] state to keep and the
//!    [`CredentialChallenge`] to send ([`credential_file`] gives the file
//!    `tpm2_activatecredential -i` reads).
//! 3. The node answers [`Evidence`]: the activated secret, and a quote
//!    signed by the AK over its PCRs with [`quote_qualifying_data`] as the
//!    qualifying data, which binds the quote to this challenge's nonce and
//!    the node's Ed25519 key.
//! 4. [`verify`] checks all of it against a [`Policy`] (trusted EK roots,
//!    accepted releases' PCR 11, the time) and returns an [`Attestation`].
//!    The quote must name as its signer the AK's *qualified* name under the
//!    EK ([`qualified_name`]), as a TPM does: QN(AK) = 0x000B ‖
//!    SHA-256(QN(EK) ‖ name(AK)), QN(EK) = 0x000B ‖ SHA-256(0x4000000B ‖
//!    name(EK)). The AK's name itself is [`Pending::ak_name`] and
//!    [`Attestation::ak_name`].
//!
//! Each refusal is its own [`AttestError`] variant that says what failed.
//!
//! # The attestation digest
//!
//! [`Attestation::digest`] is SHA-256 over this byte string, where `u32`
//! is big-endian and `‖` concatenation:
//!
//! ```text
//! "lockstep-attestation/1" ‖ 0x00
//! ‖ u32 len(node_key)  ‖ node_key            (raw Ed25519 public key, 32 bytes)
//! ‖ SHA-256(EK certificate DER)              (32 bytes)
//! ‖ u32 len(ak_name)   ‖ ak_name             (0x000B ‖ SHA-256(AK TPMT_PUBLIC))
//! ‖ u32 len(quote)     ‖ quote               (TPMS_ATTEST bytes as signed)
//! ‖ u32 len(signature) ‖ signature           (TPMT_SIGNATURE bytes)
//! ```
//!
//! Anyone holding the EK certificate, the AK public, the quote and its
//! signature can recompute it, and re-verify the quote with the same inputs.

#![forbid(unsafe_code)]

mod cert;
mod credential;
mod tpm;

pub use credential::{credential_file, kdfa_sha256, CredentialChallenge};
pub use tpm::{
    parse_public, parse_quote, parse_signature, PublicKey, Quote, TpmPublic, TpmSignature,
    MAX_PUBLIC_BYTES, MAX_QUOTE_BYTES, MAX_SIGNATURE_BYTES, PCR_COUNT,
};

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use tpm::{attr, ALG_AES, ALG_CFB, ALG_ECDSA, ALG_RSASSA, ALG_SHA256};

pub use cert::{MAX_CERTIFICATE_BYTES, MAX_CHAIN_DEPTH, MAX_ROOTS};

/// The largest activated secret accepted from a node (ours is 32 bytes).
pub const MAX_ACTIVATED_SECRET_BYTES: usize = 64;
/// The largest PEM bundle [`pem_certificates`] reads.
pub const MAX_PEM_BYTES: usize = 1 << 20;
/// The domain separator of the quote's qualifying data.
pub const QUALIFYING_DATA_TAG: &[u8] = b"lockstep-attest/1\0";
/// The format tag at the start of the attestation digest's input.
pub const ATTESTATION_TAG: &[u8] = b"lockstep-attestation/1";

/// Why an attestation was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestError {
    /// The input ended inside a structure.
    #[error(
        "{what} is truncated; the node must send the whole structure as the TPM marshalled it"
    )]
    Truncated { what: &'static str },
    /// The input is longer than any valid one.
    #[error("{what} is {len} bytes, more than the {max} allowed; the node sent something else")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The bytes do not form the structure.
    #[error("{what} is malformed: {why}; the node must send it as the TPM marshalled it")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    /// An algorithm this verifier does not accept.
    #[error("{what}: algorithm 0x{alg:04x} is not accepted")]
    UnsupportedAlgorithm { what: &'static str, alg: u16 },
    /// The AK is not a key whose quotes can be trusted.
    #[error("the AK is not acceptable: {why}; create it with tpm2_createak (restricted ECDSA P-256 or RSASSA 2048, SHA-256)")]
    BadAkPublic { why: String },
    /// The EK is not the TPM's RSA 2048 storage EK.
    #[error("the EK public is not acceptable: {why}; send the RSA 2048 EK (tpm2_createek -G rsa)")]
    BadEkPublic { why: String },
    /// The node did not return the secret: the AK is not on the TPM that
    /// holds this EK (or the node did not run ActivateCredential).
    #[error("the credential was not activated: the AK is not on the TPM that holds this EK")]
    CredentialNotActivated,
    /// The quote signature does not verify under the AK.
    #[error("the quote's signature does not verify under the AK; the quote or signature was altered, or another key signed it")]
    BadQuoteSignature,
    /// The signed structure is not a TPM-generated quote.
    #[error("the attested structure is not a TPM quote: {why}")]
    NotAQuote { why: &'static str },
    /// The quote names another key as its signer.
    #[error(
        "the quote names another signer than the AK; quote with the AK the challenge was made for"
    )]
    WrongSigner,
    /// The quote's qualifying data is not this challenge's nonce and node key.
    #[error("the quote is not over this challenge's nonce and node key; quote with -q quote_qualifying_data(nonce, node_key) for a fresh challenge")]
    WrongNonceOrKey,
    /// The quote selects another bank than SHA-256.
    #[error("the quote selects PCR bank 0x{hash_alg:04x}; quote the SHA-256 bank (-l sha256:...)")]
    UnsupportedPcrBank { hash_alg: u16 },
    /// The PCR values sent do not match what the TPM quoted.
    #[error("the PCR values sent are not the ones quoted (indices differ from the selection, or their digest differs from pcrDigest); send the SHA-256 values of exactly the quoted PCRs, ascending")]
    PcrDigestMismatch,
    /// A PCR the policy requires is not in the quote.
    #[error("PCR {index} is required but not in the quote; include it in the quote's selection")]
    RequiredPcrMissing { index: u8 },
    /// The EK certificate cannot be parsed.
    #[error("the EK certificate is unreadable: {why}")]
    BadEkCertificate { why: String },
    /// The EK certificate is outside its validity period.
    #[error("the EK certificate is valid from {not_before_unix_s} to {not_after_unix_s} (unix seconds), not at {now_unix_s}; check the verifier's clock")]
    EkCertificateNotValidNow {
        not_before_unix_s: u64,
        not_after_unix_s: u64,
        now_unix_s: u64,
    },
    /// The EK certificate is for another key than the EK the node used.
    #[error("the EK certificate certifies another key than the EK public sent; send this TPM's own EK certificate")]
    EkCertificateKeyMismatch,
    /// The EK certificate does not chain to a trusted root.
    #[error("the EK certificate is not trusted: {why}; add the manufacturer's root (and intermediates) to the EK roots if it is genuine")]
    EkCertificateUntrusted { why: String },
    /// PCR 11 is not the measurement of any accepted release.
    #[error("PCR 11 is {pcr11_hex}, which no accepted release measures; the node runs unreleased software")]
    UnacceptedMeasurements { pcr11_hex: String },
    /// A PEM bundle could not be read.
    #[error("the PEM bundle is unreadable: {why}")]
    BadPem { why: String },
}

/// What the node sends first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTpm {
    /// TPM2B_PUBLIC of the RSA 2048 EK (`tpm2_createek -G rsa -u`).
    pub ek_public: Vec<u8>,
    /// DER EK certificate from NV index 0x01c00002.
    pub ek_certificate: Vec<u8>,
    /// TPM2B_PUBLIC of the AK (`tpm2_createak -u`).
    pub ak_public: Vec<u8>,
}

/// The AK as [`challenge`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AkPublic {
    /// The parsed public area.
    pub public: TpmPublic,
    /// Which of the two accepted kinds it is.
    pub kind: AkKind,
}

/// The two kinds of AK accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkKind {
    /// ECC NIST P-256, ECDSA with SHA-256.
    EcdsaP256Sha256,
    /// RSA 2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048Sha256,
}

/// What the verifier keeps between [`challenge`] and [`verify`]: plain
/// data, so it may be stored anywhere the verifier keeps its sessions. Its
/// `Debug` does not print the secret.
#[derive(Clone)]
pub struct Pending {
    nonce: [u8; 32],
    secret: [u8; 32],
    ak: AkPublic,
    ak_name: Vec<u8>,
    ak_qualified_name: Vec<u8>,
    ek_public: TpmPublic,
    ek_certificate: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("nonce", &hex::encode(self.nonce))
            .field("secret", &"<redacted>")
            .field("ak", &self.ak)
            .field("ak_name", &hex::encode(&self.ak_name))
            .field("ak_qualified_name", &hex::encode(&self.ak_qualified_name))
            .field("ek_public", &self.ek_public)
            .field("ek_certificate_len", &self.ek_certificate.len())
            .finish()
    }
}

impl Pending {
    /// The nonce the quote must be qualified with.
    pub fn nonce(&self) -> &[u8; 32] {
        &self.nonce
    }
    /// The AK as accepted.
    pub fn ak(&self) -> &AkPublic {
        &self.ak
    }
    /// The AK's name: 0x000B ‖ SHA-256(TPMT_PUBLIC).
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }
    /// The AK's qualified name as a child of the EK, which a quote names as
    /// its signer (see [`qualified_name`]).
    pub fn ak_qualified_name(&self) -> &[u8] {
        &self.ak_qualified_name
    }
    /// The EK's public area.
    pub fn ek_public(&self) -> &TpmPublic {
        &self.ek_public
    }
    /// The EK certificate as the node sent it.
    pub fn ek_certificate(&self) -> &[u8] {
        &self.ek_certificate
    }
}

/// One PCR of the SHA-256 bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PcrValue {
    /// The PCR index, 0..24.
    pub index: u8,
    /// Its SHA-256 bank value.
    pub sha256: [u8; 32],
}

/// What the node answers to a challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// TPMS_ATTEST (`tpm2_quote -m`).
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE (`tpm2_quote -s`, tss format).
    pub signature: Vec<u8>,
    /// The quoted PCRs' SHA-256 values, ascending by index.
    pub pcrs: Vec<PcrValue>,
    /// What `tpm2_activatecredential` recovered.
    pub activated_secret: Vec<u8>,
}

/// A release the verifier accepts, known by what it measures into PCR 11.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedRelease {
    /// The release's name, returned in [`Attestation::release`].
    pub name: String,
    /// The SHA-256 PCR 11 value a node booted into it has.
    pub pcr11: [u8; 32],
}

/// What the verifier trusts and requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// DER certificates: the trust anchors (self-signed), and intermediates
    /// that may link an EK certificate to them.
    pub ek_roots: Vec<Vec<u8>>,
    /// The releases whose PCR 11 is accepted.
    pub accepted: Vec<AcceptedRelease>,
    /// The verifier's time, for certificate validity.
    pub now_unix_s: u64,
    /// PCRs that must be in the quote.
    pub required_pcrs: Vec<u8>,
}

impl Policy {
    /// The PCRs required unless the caller says otherwise: 7 (Secure Boot
    /// state) and 11 (the unified kernel image, i.e. the release).
    pub const DEFAULT_REQUIRED_PCRS: [u8; 2] = [7, 11];

    /// A policy requiring [`Policy::DEFAULT_REQUIRED_PCRS`].
    pub fn new(ek_roots: Vec<Vec<u8>>, accepted: Vec<AcceptedRelease>, now_unix_s: u64) -> Self {
        Self {
            ek_roots,
            accepted,
            now_unix_s,
            required_pcrs: Self::DEFAULT_REQUIRED_PCRS.to_vec(),
        }
    }
}

/// A verified attestation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// SHA-256 of the canonical byte string in the crate docs.
    pub digest: [u8; 32],
    /// The accepted release PCR 11 matched.
    pub release: String,
    /// The quoted PCR values.
    pub pcrs: Vec<PcrValue>,
    /// The AK's name.
    pub ak_name: Vec<u8>,
    /// SHA-256 of the EK certificate DER.
    pub ek_certificate_sha256: [u8; 32],
    /// TPM resets since the last TPM2_Clear (from the quote).
    pub reset_count: u32,
    /// TPM restarts since the last reset (from the quote).
    pub restart_count: u32,
    /// The TPM's firmware version (from the quote).
    pub firmware_version: u64,
}

/// The quote's qualifying data: SHA-256("lockstep-attest/1\0" ‖ nonce ‖
/// node_key). It binds the quote to this challenge (freshness) and to the
/// node's Ed25519 key (so the quote cannot be relayed for another node).
pub fn quote_qualifying_data(nonce: &[u8; 32], node_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(QUALIFYING_DATA_TAG);
    h.update(nonce);
    h.update(node_key);
    h.finalize().into()
}

/// TPM_RH_ENDORSEMENT: the handle whose qualified name is the root of the
/// EK's, and so of the AK's.
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;

/// A qualified name (TPM 2.0 Part 1 §16.6): 0x000B ‖ SHA-256(parent's
/// qualified name ‖ name). A hierarchy's qualified name is its handle.
///
/// A quote's `qualifiedSigner` is the AK's qualified name, not its name: for
/// an AK created under the EK (as `tpm2_createak -C ek.ctx` does) that is
/// QN(AK) = QN(QN(EK), name(AK)) with QN(EK) = QN(0x4000000B, name(EK)).
/// Checking it also checks that the TPM holds the AK as a child of the EK.
pub fn qualified_name(parent_qualified_name: &[u8], name: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(parent_qualified_name);
    h.update(name);
    let mut out = ALG_SHA256.to_be_bytes().to_vec();
    out.extend_from_slice(&h.finalize());
    out
}

fn rsa_key(modulus: &[u8], exponent: u32) -> Result<RsaPublicKey, rsa::Error> {
    RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(exponent))
}

fn require(attributes: u32, bit: u32, set: bool) -> bool {
    (attributes & bit != 0) == set
}

/// Checks the AK: a restricted signing key (it signs only TPM-generated
/// structures, so a quote cannot be forged with it) that cannot leave its
/// TPM, created there, named with SHA-256.
fn check_ak(public: TpmPublic) -> Result<AkPublic, AttestError> {
    let bad = |why: &str| {
        Err(AttestError::BadAkPublic {
            why: why.to_string(),
        })
    };
    let a = public.attributes;
    for (bit, set, why) in [
        (attr::FIXED_TPM, true, "fixedTPM is clear"),
        (attr::FIXED_PARENT, true, "fixedParent is clear"),
        (
            attr::SENSITIVE_DATA_ORIGIN,
            true,
            "sensitiveDataOrigin is clear",
        ),
        (attr::RESTRICTED, true, "restricted is clear"),
        (attr::SIGN, true, "sign is clear"),
        (attr::DECRYPT, false, "decrypt is set"),
    ] {
        if !require(a, bit, set) {
            return bad(why);
        }
    }
    if public.name_alg != ALG_SHA256 {
        return bad("its nameAlg is not SHA-256");
    }
    let kind = match (&public.key, public.scheme) {
        (PublicKey::EccP256 { x, y }, Some((ALG_ECDSA, ALG_SHA256))) => {
            let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
            if p256::ecdsa::VerifyingKey::from_encoded_point(&point).is_err() {
                return bad("its point is not on P-256");
            }
            AkKind::EcdsaP256Sha256
        }
        (PublicKey::Rsa { modulus, exponent }, Some((ALG_RSASSA, ALG_SHA256))) => {
            if modulus.len() != 256 {
                return bad("its RSA key is not 2048 bits");
            }
            if rsa_key(modulus, *exponent).is_err() {
                return bad("its RSA key is invalid");
            }
            AkKind::Rsa2048Sha256
        }
        _ => return bad("it is neither ECDSA P-256 with SHA-256 nor RSASSA 2048 with SHA-256"),
    };
    Ok(AkPublic { public, kind })
}

/// Checks the EK: an RSA 2048 restricted decryption (storage) key with
/// AES-128-CFB, which is what MakeCredential needs and what the EK
/// certificate certifies.
fn check_ek(public: &TpmPublic) -> Result<RsaPublicKey, AttestError> {
    let bad = |why: &str| {
        Err(AttestError::BadEkPublic {
            why: why.to_string(),
        })
    };
    let a = public.attributes;
    for (bit, set, why) in [
        (attr::RESTRICTED, true, "restricted is clear"),
        (attr::DECRYPT, true, "decrypt is clear"),
        (attr::SIGN, false, "sign is set"),
    ] {
        if !require(a, bit, set) {
            return bad(why);
        }
    }
    if public.name_alg != ALG_SHA256 {
        return bad("its nameAlg is not SHA-256");
    }
    if public.symmetric != Some((ALG_AES, 128, ALG_CFB)) {
        return bad("its symmetric algorithm is not AES-128-CFB");
    }
    let PublicKey::Rsa { modulus, exponent } = &public.key else {
        return bad("it is not an RSA key");
    };
    if modulus.len() != 256 {
        return bad("it is not RSA 2048");
    }
    rsa_key(modulus, *exponent).or_else(|e| bad(&format!("its RSA key is invalid: {e}")))
}

/// Step 2: checks the node's EK and AK publics and makes the credential
/// challenge. `nonce` and `secret` must be fresh random bytes per
/// challenge, and `seed_entropy` too: it is the only randomness of the
/// MakeCredential seed and of RSA-OAEP.
pub fn challenge(
    node: &NodeTpm,
    nonce: [u8; 32],
    secret: [u8; 32],
    seed_entropy: [u8; 32],
) -> Result<(Pending, CredentialChallenge), AttestError> {
    if node.ek_certificate.len() > MAX_CERTIFICATE_BYTES {
        return Err(AttestError::TooLong {
            what: "EK certificate",
            len: node.ek_certificate.len(),
            max: MAX_CERTIFICATE_BYTES,
        });
    }
    let ek_public = parse_public(&node.ek_public, "EK public (TPM2B_PUBLIC)")?;
    let ek_key = check_ek(&ek_public)?;
    let ak = check_ak(parse_public(&node.ak_public, "AK public (TPM2B_PUBLIC)")?)?;
    let ak_name = ak.public.name();
    let ek_qualified_name = qualified_name(&TPM_RH_ENDORSEMENT.to_be_bytes(), &ek_public.name());
    let ak_qualified_name = qualified_name(&ek_qualified_name, &ak_name);
    let credential = credential::make_credential(&ek_key, &ak_name, &secret, seed_entropy)?;
    Ok((
        Pending {
            nonce,
            secret,
            ak,
            ak_name,
            ak_qualified_name,
            ek_public,
            ek_certificate: node.ek_certificate.clone(),
        },
        credential,
    ))
}

/// Compares without stopping at the first differing byte, so the time taken
/// says nothing about how much of a guessed secret was right.
fn same_secret(sent: &[u8], secret: &[u8; 32]) -> bool {
    sent.len() == secret.len()
        && sent
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Verifies the quote's signature with the AK over SHA-256(quote).
fn check_quote_signature(ak: &AkPublic, quote: &[u8], signature: &[u8]) -> Result<(), AttestError> {
    if quote.len() > MAX_QUOTE_BYTES {
        return Err(AttestError::TooLong {
            what: "quote (TPMS_ATTEST)",
            len: quote.len(),
            max: MAX_QUOTE_BYTES,
        });
    }
    let ok = match (&ak.public.key, parse_signature(signature)?) {
        (
            PublicKey::EccP256 { x, y },
            TpmSignature::Ecdsa {
                hash: ALG_SHA256,
                r,
                s,
            },
        ) => {
            let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
            let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map_err(|_| AttestError::BadQuoteSignature)?;
            p256::ecdsa::Signature::from_scalars(r, s)
                .map(|sig| key.verify(quote, &sig).is_ok())
                .unwrap_or(false)
        }
        (
            PublicKey::Rsa { modulus, exponent },
            TpmSignature::Rsassa {
                hash: ALG_SHA256,
                signature,
            },
        ) => rsa_key(modulus, *exponent)
            .map(|key| {
                key.verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(quote),
                    &signature,
                )
                .is_ok()
            })
            .unwrap_or(false),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AttestError::BadQuoteSignature)
    }
}

/// Step 5: verifies the node's evidence against what [`challenge`] kept and
/// the verifier's policy.
///
/// The order matters for what a refusal means: the secret first (is the AK
/// on the EK's TPM?), then the signature over the raw quote bytes (did the
/// AK sign exactly these bytes?), and only then the quote's contents, the
/// PCRs, the EK certificate and the release.
///
/// Use a [`Pending`] for one `verify` only, whatever its outcome, so a node
/// gets one try per challenge (and per fresh nonce and secret).
pub fn verify(
    pending: &Pending,
    evidence: &Evidence,
    node_key: &[u8],
    policy: &Policy,
) -> Result<Attestation, AttestError> {
    if node_key.len() != 32 {
        return Err(AttestError::Malformed {
            what: "node key",
            why: "an Ed25519 public key is 32 raw bytes",
        });
    }
    if evidence.activated_secret.len() > MAX_ACTIVATED_SECRET_BYTES
        || !same_secret(&evidence.activated_secret, &pending.secret)
    {
        return Err(AttestError::CredentialNotActivated);
    }

    check_quote_signature(&pending.ak, &evidence.quote, &evidence.signature)?;
    let quote = parse_quote(&evidence.quote)?;
    if quote.qualified_signer != pending.ak_qualified_name {
        return Err(AttestError::WrongSigner);
    }
    if quote.extra_data.as_slice() != quote_qualifying_data(&pending.nonce, node_key).as_slice() {
        return Err(AttestError::WrongNonceOrKey);
    }

    // The selection and the values sent must name the same PCRs in the same
    // (ascending) order, and their values must hash to what the TPM signed.
    if evidence.pcrs.len() != quote.pcr_selection.len()
        || evidence
            .pcrs
            .iter()
            .zip(&quote.pcr_selection)
            .any(|(v, index)| v.index != *index)
    {
        return Err(AttestError::PcrDigestMismatch);
    }
    let mut h = Sha256::new();
    for pcr in &evidence.pcrs {
        h.update(pcr.sha256);
    }
    if h.finalize().as_slice() != quote.pcr_digest.as_slice() {
        return Err(AttestError::PcrDigestMismatch);
    }
    for index in &policy.required_pcrs {
        if !quote.pcr_selection.contains(index) {
            return Err(AttestError::RequiredPcrMissing { index: *index });
        }
    }

    let ek_cert = cert::parse(&pending.ek_certificate, "the EK certificate")
        .map_err(|why| AttestError::BadEkCertificate { why })?;
    let PublicKey::Rsa { modulus, exponent } = &pending.ek_public.key else {
        return Err(AttestError::EkCertificateKeyMismatch);
    };
    match ek_cert.rsa_key() {
        Some(key)
            if rsa::traits::PublicKeyParts::n(&key) == &BigUint::from_bytes_be(modulus)
                && rsa::traits::PublicKeyParts::e(&key) == &BigUint::from(*exponent) => {}
        _ => return Err(AttestError::EkCertificateKeyMismatch),
    }
    check_ek_certificate(&pending.ek_certificate, &policy.ek_roots, policy.now_unix_s)?;

    let pcr11 = evidence
        .pcrs
        .iter()
        .find(|p| p.index == 11)
        .ok_or(AttestError::RequiredPcrMissing { index: 11 })?;
    let release = policy
        .accepted
        .iter()
        .find(|r| r.pcr11 == pcr11.sha256)
        .ok_or_else(|| AttestError::UnacceptedMeasurements {
            pcr11_hex: hex::encode(pcr11.sha256),
        })?;

    let ek_certificate_sha256: [u8; 32] = Sha256::digest(&pending.ek_certificate).into();
    Ok(Attestation {
        digest: attestation_digest(
            node_key,
            &ek_certificate_sha256,
            &pending.ak_name,
            &evidence.quote,
            &evidence.signature,
        ),
        release: release.name.clone(),
        pcrs: evidence.pcrs.clone(),
        ak_name: pending.ak_name.clone(),
        ek_certificate_sha256,
        reset_count: quote.reset_count,
        restart_count: quote.restart_count,
        firmware_version: quote.firmware_version,
    })
}

/// Checks an EK certificate on its own: it parses, is valid at
/// `now_unix_s`, and chains through certificates in `ek_roots` to a
/// self-signed one there (see [`Policy::ek_roots`]). [`verify`] runs this
/// after checking the certificate is for the EK the node used.
pub fn check_ek_certificate(
    ek_certificate: &[u8],
    ek_roots: &[Vec<u8>],
    now_unix_s: u64,
) -> Result<(), AttestError> {
    let ek_cert = cert::parse(ek_certificate, "the EK certificate")
        .map_err(|why| AttestError::BadEkCertificate { why })?;
    let (not_before_unix_s, not_after_unix_s) = ek_cert.validity();
    if now_unix_s < not_before_unix_s || now_unix_s > not_after_unix_s {
        return Err(AttestError::EkCertificateNotValidNow {
            not_before_unix_s,
            not_after_unix_s,
            now_unix_s,
        });
    }
    cert::chain_to_root(&ek_cert, ek_roots, now_unix_s)
        .map_err(|why| AttestError::EkCertificateUntrusted { why })
}

/// The attestation digest of the crate docs.
pub fn attestation_digest(
    node_key: &[u8],
    ek_certificate_sha256: &[u8; 32],
    ak_name: &[u8],
    quote: &[u8],
    signature: &[u8],
) -> [u8; 32] {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        // Every field is bounded far below 4 GiB by the checks in verify.
        h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(ATTESTATION_TAG);
    h.update([0]);
    field(&mut h, node_key);
    h.update(ek_certificate_sha256);
    field(&mut h, ak_name);
    field(&mut h, quote);
    field(&mut h, signature);
    h.finalize().into()
}

/// Reads the CERTIFICATE blocks of a PEM bundle (text between them is
/// ignored, as in `openssl x509 -text` output); each must be a parseable
/// X.509 certificate. A bundle without one is an error, so an empty or
/// wrong file is not taken for "trust nothing".
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, AttestError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |why: String| AttestError::BadPem { why };
    if text.len() > MAX_PEM_BYTES {
        return Err(bad(format!("it is larger than {MAX_PEM_BYTES} bytes")));
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = rest.get(start + BEGIN.len()..).unwrap_or("");
        let end = after
            .find(END)
            .ok_or_else(|| bad(format!("certificate {} has no END line", out.len() + 1)))?;
        let body: String = after
            .get(..end)
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der_bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| bad(format!("certificate {} is not base64: {e}", out.len() + 1)))?;
        cert::check_certificate(&der_bytes)
            .map_err(|e| bad(format!("certificate {}: {e}", out.len() + 1)))?;
        out.push(der_bytes);
        rest = after.get(end + END.len()..).unwrap_or("");
    }
    if out.is_empty() {
        return Err(bad("it holds no CERTIFICATE block".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EK: &[u8] = include_bytes!("../tests/fixtures/a/ek.pub");
    const AK: &[u8] = include_bytes!("../tests/fixtures/a/ak.pub");
    /// Where TPMA_OBJECT starts in a TPM2B_PUBLIC: size, type, nameAlg.
    const ATTRIBUTES_AT: usize = 2 + 2 + 2;

    fn with_attributes(public: &[u8], f: impl Fn(u32) -> u32) -> Vec<u8> {
        let mut out = public.to_vec();
        let at = ATTRIBUTES_AT..ATTRIBUTES_AT + 4;
        let old = u32::from_be_bytes(out[at.clone()].try_into().unwrap());
        out[at].copy_from_slice(&f(old).to_be_bytes());
        out
    }

    #[test]
    fn the_recorded_keys_pass_their_checks() {
        let ak = check_ak(parse_public(AK, "AK").unwrap()).unwrap();
        assert_eq!(ak.kind, AkKind::EcdsaP256Sha256);
        check_ek(&parse_public(EK, "EK").unwrap()).unwrap();
    }

    #[test]
    fn each_ak_attribute_is_required() {
        for (bit, set) in [
            (attr::FIXED_TPM, false),
            (attr::FIXED_PARENT, false),
            (attr::SENSITIVE_DATA_ORIGIN, false),
            (attr::RESTRICTED, false),
            (attr::SIGN, false),
            (attr::DECRYPT, true),
        ] {
            let ak = with_attributes(AK, |a| if set { a | bit } else { a & !bit });
            assert!(
                matches!(
                    check_ak(parse_public(&ak, "AK").unwrap()),
                    Err(AttestError::BadAkPublic { .. })
                ),
                "bit {bit:#x}"
            );
        }
    }

    #[test]
    fn each_ek_property_is_required() {
        for (bit, set) in [
            (attr::RESTRICTED, false),
            (attr::DECRYPT, false),
            (attr::SIGN, true),
        ] {
            let ek = with_attributes(EK, |a| if set { a | bit } else { a & !bit });
            assert!(
                matches!(
                    check_ek(&parse_public(&ek, "EK").unwrap()),
                    Err(AttestError::BadEkPublic { .. })
                ),
                "bit {bit:#x}"
            );
        }
        let mut ek = parse_public(EK, "EK").unwrap();
        ek.symmetric = Some((ALG_AES, 256, ALG_CFB));
        assert!(check_ek(&ek).is_err());
        let mut ek = parse_public(EK, "EK").unwrap();
        ek.name_alg = 0x0004;
        assert!(check_ek(&ek).is_err());
    }

    #[test]
    fn the_qualifying_data_is_a_tagged_hash() {
        let nonce = [1u8; 32];
        let key = [2u8; 32];
        let mut input = b"lockstep-attest/1\0".to_vec();
        input.extend_from_slice(&nonce);
        input.extend_from_slice(&key);
        assert_eq!(
            quote_qualifying_data(&nonce, &key),
            <[u8; 32]>::from(Sha256::digest(&input))
        );
        assert_ne!(
            quote_qualifying_data(&nonce, &key),
            quote_qualifying_data(&key, &nonce)
        );
    }

    #[test]
    fn the_ak_qualified_name_descends_from_the_endorsement_hierarchy() {
        let ek = parse_public(EK, "EK").unwrap();
        let ak = parse_public(AK, "AK").unwrap();
        let quote = parse_quote(include_bytes!("../tests/fixtures/a/quote.msg")).unwrap();
        let ek_qn = qualified_name(&[0x40, 0, 0, 0x0b], &ek.name());
        assert_eq!(qualified_name(&ek_qn, &ak.name()), quote.qualified_signer);
        assert_ne!(ak.name(), quote.qualified_signer);
    }
}
