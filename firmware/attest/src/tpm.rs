//! TPM 2.0 structures as the TPM marshals them (TPM 2.0 Part 2), read from
//! untrusted bytes: big-endian, every length checked against what is left
//! and against a bound before anything is taken, no trailing bytes.

use crate::AttestError;
use sha2::{Digest, Sha256};

/// TPM_ALG_RSA.
pub(crate) const ALG_RSA: u16 = 0x0001;
/// TPM_ALG_SHA256.
pub(crate) const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_AES.
pub(crate) const ALG_AES: u16 = 0x0006;
/// TPM_ALG_NULL.
pub(crate) const ALG_NULL: u16 = 0x0010;
/// TPM_ALG_RSASSA.
pub(crate) const ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_ECDSA.
pub(crate) const ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_ECC.
pub(crate) const ALG_ECC: u16 = 0x0023;
/// TPM_ALG_CFB.
pub(crate) const ALG_CFB: u16 = 0x0043;
/// TPM_ECC_NIST_P256.
pub(crate) const ECC_NIST_P256: u16 = 0x0003;
/// TPM_GENERATED_VALUE: only the TPM itself signs structures that start so.
pub(crate) const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub(crate) const ST_ATTEST_QUOTE: u16 = 0x8018;

/// TPMA_OBJECT bits (Part 2 §8.3).
pub(crate) mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// The largest TPM2B_PUBLIC accepted: an RSA 4096 key with a SHA-512 policy
/// fits in well under this; anything larger is not a key we can use.
pub const MAX_PUBLIC_BYTES: usize = 1024;
/// The largest TPMS_ATTEST accepted (a quote is ~150 bytes; firmware may add
/// up to 64 bytes of qualifying data and a 66-byte name).
pub const MAX_QUOTE_BYTES: usize = 1024;
/// The largest TPMT_SIGNATURE accepted (RSA 4096 is 518 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// PCRs in a bank that a TPM 2.0 PC client has (IMPLEMENTATION_PCR).
pub const PCR_COUNT: u8 = 24;

/// A cursor over untrusted bytes that never panics: every read checks what
/// is left and names the structure in its error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AttestError> {
        let (head, tail) = self
            .bytes
            .split_at_checked(n)
            .ok_or(AttestError::Truncated { what: self.what })?;
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AttestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, AttestError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, AttestError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, AttestError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, AttestError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A TPM2B: u16 size, then that many bytes, at most `max`.
    pub(crate) fn tpm2b(&mut self, max: usize) -> Result<&'a [u8], AttestError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(AttestError::Malformed {
                what: self.what,
                why: "a sized field is larger than the structure allows",
            });
        }
        self.take(len)
    }

    /// All input must have been read: trailing bytes mean the sender and we
    /// disagree about the structure, which we refuse rather than guess.
    pub(crate) fn finish(self) -> Result<(), AttestError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(AttestError::Malformed {
                what: self.what,
                why: "bytes follow the end of the structure",
            })
        }
    }
}

/// The key inside a TPMT_PUBLIC that we know how to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: big-endian modulus and the public exponent (0 in the TPM means
    /// 65537 and is already replaced here).
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// ECC on NIST P-256: the point's coordinates, 32 bytes each.
    EccP256 { x: [u8; 32], y: [u8; 32] },
}

/// A parsed TPMT_PUBLIC, keeping the exact bytes its name is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmPublic {
    /// The TPMT_PUBLIC bytes (the TPM2B_PUBLIC without its size).
    pub tpmt: Vec<u8>,
    /// TPMI_ALG_HASH nameAlg.
    pub name_alg: u16,
    /// TPMA_OBJECT.
    pub attributes: u32,
    /// The symmetric algorithm of a storage key: (algorithm, key bits, mode);
    /// `None` for TPM_ALG_NULL.
    pub symmetric: Option<(u16, u16, u16)>,
    /// The signing or encryption scheme: (scheme, hash); `None` for NULL.
    pub scheme: Option<(u16, u16)>,
    /// The key.
    pub key: PublicKey,
}

impl TpmPublic {
    /// The object's name: nameAlg ‖ H(TPMT_PUBLIC). Only SHA-256 is accepted
    /// as nameAlg, so this is 0x000B ‖ SHA-256(TPMT_PUBLIC), 34 bytes.
    pub fn name(&self) -> Vec<u8> {
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.tpmt));
        name
    }
}

fn unsupported(what: &'static str, alg: u16) -> AttestError {
    AttestError::UnsupportedAlgorithm { what, alg }
}

/// Parses a TPM2B_PUBLIC (u16 size ‖ TPMT_PUBLIC) holding an RSA or an ECC
/// key. The scheme and symmetric fields are returned for the caller to
/// judge; only their encoding is checked here.
pub fn parse_public(bytes: &[u8], what: &'static str) -> Result<TpmPublic, AttestError> {
    if bytes.len() > MAX_PUBLIC_BYTES + 2 {
        return Err(AttestError::TooLong {
            what,
            len: bytes.len(),
            max: MAX_PUBLIC_BYTES + 2,
        });
    }
    let mut outer = Reader::new(bytes, what);
    let tpmt = outer.tpm2b(MAX_PUBLIC_BYTES)?;
    outer.finish()?;

    let mut r = Reader::new(tpmt, what);
    let alg = r.u16()?;
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    let _auth_policy = r.tpm2b(64)?;
    let symmetric = match r.u16()? {
        ALG_NULL => None,
        sym => Some((sym, r.u16()?, r.u16()?)),
    };
    let scheme_with_hash = |r: &mut Reader<'_>| -> Result<Option<(u16, u16)>, AttestError> {
        match r.u16()? {
            ALG_NULL => Ok(None),
            // RSAES is the only scheme of these two key types without a hash.
            0x0015 => Ok(Some((0x0015, ALG_NULL))),
            scheme => Ok(Some((scheme, r.u16()?))),
        }
    };
    let (scheme, key) = match alg {
        ALG_RSA => {
            let scheme = scheme_with_hash(&mut r)?;
            let key_bits = r.u16()?;
            let exponent = match r.u32()? {
                0 => 65537,
                e => e,
            };
            let modulus = r.tpm2b(512)?;
            if usize::from(key_bits) != modulus.len() * 8 {
                return Err(AttestError::Malformed {
                    what,
                    why: "the RSA modulus length differs from keyBits",
                });
            }
            (
                scheme,
                PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent,
                },
            )
        }
        ALG_ECC => {
            let scheme = scheme_with_hash(&mut r)?;
            let curve = r.u16()?;
            // TPMT_KDF_SCHEME: NULL, or a KDF with its hash.
            if r.u16()? != ALG_NULL {
                let _kdf_hash = r.u16()?;
            }
            let x = r.tpm2b(66)?;
            let y = r.tpm2b(66)?;
            if curve != ECC_NIST_P256 {
                return Err(unsupported("ECC curve (only NIST P-256)", curve));
            }
            (
                scheme,
                PublicKey::EccP256 {
                    x: left_pad_32(x, what)?,
                    y: left_pad_32(y, what)?,
                },
            )
        }
        other => return Err(unsupported("key type (only RSA and ECC)", other)),
    };
    r.finish()?;
    Ok(TpmPublic {
        tpmt: tpmt.to_vec(),
        name_alg,
        attributes,
        symmetric,
        scheme,
        key,
    })
}

/// A P-256 scalar or coordinate as 32 bytes; the TPM may drop leading zeros.
pub(crate) fn left_pad_32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], AttestError> {
    let mut out = [0u8; 32];
    let start = 32usize
        .checked_sub(bytes.len())
        .ok_or(AttestError::Malformed {
            what,
            why: "a P-256 value is longer than 32 bytes",
        })?;
    out[start..].copy_from_slice(bytes);
    Ok(out)
}

/// A TPMT_SIGNATURE of the two kinds an AK makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmSignature {
    /// TPM_ALG_ECDSA with its hash and the scalars, 32 bytes each.
    Ecdsa { hash: u16, r: [u8; 32], s: [u8; 32] },
    /// TPM_ALG_RSASSA (PKCS#1 v1.5) with its hash.
    Rsassa { hash: u16, signature: Vec<u8> },
}

/// Parses a TPMT_SIGNATURE (what `tpm2_quote -s` writes in tss format).
pub fn parse_signature(bytes: &[u8]) -> Result<TpmSignature, AttestError> {
    const WHAT: &str = "quote signature (TPMT_SIGNATURE)";
    if bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(AttestError::TooLong {
            what: WHAT,
            len: bytes.len(),
            max: MAX_SIGNATURE_BYTES,
        });
    }
    let mut r = Reader::new(bytes, WHAT);
    let sig = match r.u16()? {
        ALG_ECDSA => {
            let hash = r.u16()?;
            let sr = left_pad_32(r.tpm2b(66)?, WHAT)?;
            let ss = left_pad_32(r.tpm2b(66)?, WHAT)?;
            TpmSignature::Ecdsa { hash, r: sr, s: ss }
        }
        ALG_RSASSA => {
            let hash = r.u16()?;
            let signature = r.tpm2b(512)?.to_vec();
            TpmSignature::Rsassa { hash, signature }
        }
        other => {
            return Err(unsupported(
                "signature scheme (only ECDSA and RSASSA)",
                other,
            ))
        }
    };
    r.finish()?;
    Ok(sig)
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The signer's qualified name (TPM2B_NAME contents).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (TPM2B_DATA contents).
    pub extra_data: Vec<u8>,
    /// TPMS_CLOCK_INFO.resetCount: TPM resets since the last clear.
    pub reset_count: u32,
    /// TPMS_CLOCK_INFO.restartCount: restarts since the last reset.
    pub restart_count: u32,
    /// The TPM vendor's firmware version.
    pub firmware_version: u64,
    /// The selected SHA-256 PCR indices, ascending.
    pub pcr_selection: Vec<u8>,
    /// pcrDigest: the SHA-256 of the selected PCR values in selection order.
    pub pcr_digest: Vec<u8>,
}

/// Parses a TPMS_ATTEST (what `tpm2_quote -m` writes) that must be a quote
/// generated by a TPM, over SHA-256 PCRs only.
pub fn parse_quote(bytes: &[u8]) -> Result<Quote, AttestError> {
    const WHAT: &str = "quote (TPMS_ATTEST)";
    if bytes.len() > MAX_QUOTE_BYTES {
        return Err(AttestError::TooLong {
            what: WHAT,
            len: bytes.len(),
            max: MAX_QUOTE_BYTES,
        });
    }
    let mut r = Reader::new(bytes, WHAT);
    if r.u32()? != TPM_GENERATED_VALUE {
        return Err(AttestError::NotAQuote {
            why: "it does not start with TPM_GENERATED_VALUE, so the TPM did not make it",
        });
    }
    if r.u16()? != ST_ATTEST_QUOTE {
        return Err(AttestError::NotAQuote {
            why: "its type is not TPM_ST_ATTEST_QUOTE",
        });
    }
    let qualified_signer = r.tpm2b(66)?.to_vec();
    let extra_data = r.tpm2b(64)?.to_vec();
    let _clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    let _safe = r.u8()?;
    let firmware_version = r.u64()?;
    // TPML_PCR_SELECTION: at most one bank, and it must be SHA-256, so the
    // digest can be recomputed from the SHA-256 values the node sends.
    let count = r.u32()?;
    let mut pcr_selection = Vec::new();
    match count {
        0 => {}
        1 => {
            let hash = r.u16()?;
            if hash != ALG_SHA256 {
                return Err(AttestError::UnsupportedPcrBank { hash_alg: hash });
            }
            let size = usize::from(r.u8()?);
            if size > usize::from(PCR_COUNT / 8) {
                return Err(AttestError::Malformed {
                    what: WHAT,
                    why: "the PCR selection is larger than a TPM's 24 PCRs",
                });
            }
            for (byte_index, byte) in (0u8..).zip(r.take(size)?) {
                for bit in 0..8u8 {
                    if byte & (1 << bit) != 0 {
                        pcr_selection.push(byte_index * 8 + bit);
                    }
                }
            }
        }
        _ => {
            return Err(AttestError::Malformed {
                what: WHAT,
                why: "the quote selects more than one PCR bank; quote the SHA-256 bank only",
            })
        }
    }
    let pcr_digest = r.tpm2b(64)?.to_vec();
    r.finish()?;
    Ok(Quote {
        qualified_signer,
        extra_data,
        reset_count,
        restart_count,
        firmware_version,
        pcr_selection,
        pcr_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2], "x");
        assert!(matches!(r.tpm2b(10), Err(AttestError::Truncated { .. })));
        let mut r = Reader::new(&[0x00], "x");
        assert!(matches!(r.u16(), Err(AttestError::Truncated { .. })));
    }

    #[test]
    fn sized_fields_are_bounded() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2, 3, 4, 5], "x");
        assert!(matches!(r.tpm2b(4), Err(AttestError::Malformed { .. })));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut r = Reader::new(&[1, 2, 3], "x");
        r.u16().unwrap();
        assert!(matches!(r.finish(), Err(AttestError::Malformed { .. })));
    }

    #[test]
    fn left_pad_restores_dropped_zeros() {
        let v = left_pad_32(&[1, 2], "x").unwrap();
        assert_eq!(&v[30..], &[1, 2]);
        assert!(v[..30].iter().all(|b| *b == 0));
        assert!(left_pad_32(&[0; 33], "x").is_err());
    }
}
