//! TPM2_MakeCredential in software (TPM 2.0 Part 1 §24, Part 3 §12.6): a
//! secret only the TPM holding the EK's private key can recover, and only
//! for an object with exactly the AK's name loaded on that same TPM.

use crate::AttestError;
use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rsa::{Oaep, RsaPublicKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
type Aes128CfbEnc = cfb_mode::Encryptor<aes::Aes128>;

/// The OAEP label of a credential's seed: "IDENTITY" with its NUL
/// (Part 1 §24.4, annex B.10.3).
const IDENTITY_LABEL: &str = "IDENTITY\0";

/// The magic and version tpm2-tools puts before a credential blob.
const CREDENTIAL_FILE_MAGIC: u32 = 0xBADC_C0DE;
const CREDENTIAL_FILE_VERSION: u32 = 1;

/// What `TPM2_ActivateCredential` takes: the wrapped secret and the seed
/// encrypted to the EK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialChallenge {
    /// A marshalled TPM2B_ID_OBJECT: u16 size ‖ TPM2B_DIGEST(outer HMAC) ‖
    /// encIdentity.
    pub id_object: Vec<u8>,
    /// A marshalled TPM2B_ENCRYPTED_SECRET: u16 size ‖ RSA-OAEP ciphertext
    /// of the seed.
    pub encrypted_secret: Vec<u8>,
}

/// The file `tpm2_activatecredential -i` reads (tpm2-tools 5): u32 BE
/// 0xBADCC0DE ‖ u32 BE 1 ‖ id_object ‖ encrypted_secret.
pub fn credential_file(challenge: &CredentialChallenge) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + challenge.id_object.len() + challenge.encrypted_secret.len());
    out.extend_from_slice(&CREDENTIAL_FILE_MAGIC.to_be_bytes());
    out.extend_from_slice(&CREDENTIAL_FILE_VERSION.to_be_bytes());
    out.extend_from_slice(&challenge.id_object);
    out.extend_from_slice(&challenge.encrypted_secret);
    out
}

/// KDFa with HMAC-SHA256 (Part 1 §11.4.10.2): the concatenation of
/// HMAC(key, u32 i ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ u32 bits) for
/// i = 1, 2, ..., truncated to `bits` (a multiple of 8 here).
pub fn kdfa_sha256(
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = usize::try_from(bits / 8).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(bytes);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

/// MakeCredential for an RSA EK with nameAlg SHA-256 and AES-128-CFB as its
/// symmetric algorithm. All randomness (the seed, OAEP's) comes from
/// `seed_entropy`, so the same inputs give the same challenge.
pub(crate) fn make_credential(
    ek: &RsaPublicKey,
    ak_name: &[u8],
    secret: &[u8; 32],
    seed_entropy: [u8; 32],
) -> Result<CredentialChallenge, AttestError> {
    let mut rng = ChaCha20Rng::from_seed(seed_entropy);
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);

    let encrypted_seed = ek
        .encrypt(
            &mut rng,
            Oaep::new_with_label::<Sha256, _>(IDENTITY_LABEL),
            &seed,
        )
        .map_err(|e| AttestError::BadEkPublic {
            why: format!("RSA-OAEP encryption to the EK failed: {e}"),
        })?;

    let sym_key = kdfa_sha256(&seed, "STORAGE", ak_name, &[], 128);
    let mut enc_identity = Vec::with_capacity(34);
    enc_identity.extend_from_slice(&32u16.to_be_bytes());
    enc_identity.extend_from_slice(secret);
    Aes128CfbEnc::new_from_slices(&sym_key, &[0u8; 16])
        .expect("KDFa gave 16 bytes for a 16-byte key and the IV is 16 bytes")
        .encrypt(&mut enc_identity);

    let hmac_key = kdfa_sha256(&seed, "INTEGRITY", &[], &[], 256);
    let mut mac = HmacSha256::new_from_slice(&hmac_key).expect("HMAC takes a key of any length");
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer_hmac = mac.finalize().into_bytes();

    let mut inner = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    inner.extend_from_slice(&32u16.to_be_bytes());
    inner.extend_from_slice(&outer_hmac);
    inner.extend_from_slice(&enc_identity);
    Ok(CredentialChallenge {
        id_object: tpm2b(&inner)?,
        encrypted_secret: tpm2b(&encrypted_seed)?,
    })
}

fn tpm2b(body: &[u8]) -> Result<Vec<u8>, AttestError> {
    let len = u16::try_from(body.len()).map_err(|_| AttestError::BadEkPublic {
        why: "the credential does not fit a TPM2B".to_string(),
    })?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_truncates_and_counts_from_one() {
        let a = kdfa_sha256(b"key", "STORAGE", b"u", b"", 128);
        assert_eq!(a.len(), 16);
        let b = kdfa_sha256(b"key", "STORAGE", b"u", b"", 512);
        assert_eq!(b.len(), 64);
        // The first block is HMAC(key, 00000001 ‖ "STORAGE\0" ‖ "u" ‖ bits).
        let mut mac = HmacSha256::new_from_slice(b"key").unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0u");
        mac.update(&512u32.to_be_bytes());
        assert_eq!(&b[..32], mac.finalize().into_bytes().as_slice());
        // The number of bits is part of the input, so a shorter key is not
        // a prefix of a longer one.
        assert_ne!(&a[..], &b[..16]);
    }

    #[test]
    fn credential_file_has_the_tpm2_tools_header() {
        let c = CredentialChallenge {
            id_object: vec![0, 1, 9],
            encrypted_secret: vec![0, 1, 8],
        };
        assert_eq!(
            credential_file(&c),
            [0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1, 0, 1, 9, 0, 1, 8]
        );
    }
}

#[cfg(test)]
mod activate_tests {
    use super::*;
    use rsa::RsaPrivateKey;

    type Aes128CfbDec = cfb_mode::Decryptor<aes::Aes128>;

    /// TPM2_ActivateCredential in software, step by step as Part 1 §24.6
    /// describes it, to check MakeCredential is its inverse (tests/swtpm.rs
    /// checks the same against a real TPM).
    fn activate(ek: &RsaPrivateKey, name: &[u8], c: &CredentialChallenge) -> Option<Vec<u8>> {
        let inner = c.id_object.get(2..)?;
        assert_eq!(
            usize::from(u16::from_be_bytes([c.id_object[0], c.id_object[1]])),
            inner.len()
        );
        assert_eq!(inner.get(..2)?, [0, 32]);
        let (hmac, enc_identity) = inner.get(2..)?.split_at(32);
        let seed = ek
            .decrypt(
                Oaep::new_with_label::<Sha256, _>(IDENTITY_LABEL),
                c.encrypted_secret.get(2..)?,
            )
            .ok()?;
        let mut mac =
            HmacSha256::new_from_slice(&kdfa_sha256(&seed, "INTEGRITY", &[], &[], 256)).unwrap();
        mac.update(enc_identity);
        mac.update(name);
        mac.verify_slice(hmac).ok()?;
        let mut plain = enc_identity.to_vec();
        Aes128CfbDec::new_from_slices(&kdfa_sha256(&seed, "STORAGE", name, &[], 128), &[0; 16])
            .unwrap()
            .decrypt(&mut plain);
        assert_eq!(plain.get(..2)?, [0, 32]);
        Some(plain.get(2..)?.to_vec())
    }

    #[test]
    fn make_credential_is_undone_by_activate_credential_for_the_same_name_only() {
        let ek = RsaPrivateKey::new(&mut ChaCha20Rng::from_seed([7; 32]), 2048).unwrap();
        let name = [&[0x00, 0x0b][..], &[0x11; 32]].concat();
        let c = make_credential(&ek.to_public_key(), &name, &[0xab; 32], [1; 32]).unwrap();
        assert_eq!(activate(&ek, &name, &c), Some(vec![0xab; 32]));
        let other = [&[0x00, 0x0b][..], &[0x12; 32]].concat();
        assert_eq!(
            activate(&ek, &other, &c),
            None,
            "the outer HMAC binds the AK name"
        );
    }
}
