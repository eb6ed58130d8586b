//! Keccak-256 and 20-byte account addresses with EIP-55 checksums.

use std::fmt;
use std::str::FromStr;

use sha3::{Digest, Keccak256};

/// Keccak-256 (the pre-standard SHA-3 Ethereum uses) of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// An account or contract address: the last 20 bytes of the keccak of a
/// public key (or of a creation's sender and nonce).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 20]);

/// Why a text is not an address (bad input: the message says what to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("{text:?} is not an address: it must start with 0x; write it as 0x and 40 hex digits")]
    MissingPrefix { text: String },
    #[error(
        "{text:?} is not an address: it has {digits} hex digits, not 40; copy the whole address"
    )]
    WrongLength { text: String, digits: usize },
    #[error("{text:?} is not an address: it holds a character that is not a hex digit; copy the address again")]
    NotHex { text: String },
    #[error("{text:?} fails its EIP-55 checksum (mixed case that is not {expected}): it was mistyped; copy the address again, or write it all in lower case to skip the check")]
    BadChecksum { text: String, expected: String },
}

impl Address {
    /// The zero address.
    pub const ZERO: Address = Address([0; 20]);

    /// The address of an uncompressed secp256k1 public key (64 bytes,
    /// x || y, without the 0x04 tag).
    pub fn from_public_key(xy: &[u8; 64]) -> Address {
        let hash = keccak256(xy);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// The 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Parses `0x` and 40 hex digits. All lower or all upper case is
    /// taken as is; mixed case must be the EIP-55 checksum.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .ok_or_else(|| AddressError::MissingPrefix {
                text: text.to_string(),
            })?;
        if digits.len() != 40 {
            return Err(AddressError::WrongLength {
                text: text.to_string(),
                digits: digits.chars().count(),
            });
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(digits, &mut out).map_err(|_| AddressError::NotHex {
            text: text.to_string(),
        })?;
        let address = Address(out);
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper {
            let expected = address.to_checksum();
            if expected[2..] != *digits {
                return Err(AddressError::BadChecksum {
                    text: text.to_string(),
                    expected,
                });
            }
        }
        Ok(address)
    }

    /// The EIP-55 mixed-case checksum form, `0x`-prefixed.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

/// `0x` and the lower-case hex of `bytes` (for bytes32 values in messages).
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EIP55: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn keccak_of_empty_input() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn eip55_vectors_round_trip() {
        for text in EIP55 {
            let address = Address::parse(text).unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(Address::parse(&text.to_lowercase()).unwrap(), address);
            assert_eq!(
                Address::parse(&format!("0x{}", text[2..].to_uppercase())).unwrap(),
                address
            );
        }
    }

    #[test]
    fn a_mistyped_checksum_is_refused() {
        // One letter's case flipped.
        let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(matches!(
            Address::parse(bad),
            Err(AddressError::BadChecksum { .. })
        ));
        assert!(matches!(
            Address::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::MissingPrefix { .. })
        ));
        assert!(matches!(
            Address::parse("0x5aAeb6"),
            Err(AddressError::WrongLength { digits: 6, .. })
        ));
        assert!(matches!(
            Address::parse("0xzaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::NotHex { .. })
        ));
        // Multi-byte characters never panic on slicing.
        assert!(Address::parse("0xééééééééééééééééééééé").is_err());
    }

    proptest! {
        #[test]
        fn display_parses_back(bytes in any::<[u8; 20]>()) {
            let address = Address(bytes);
            prop_assert_eq!(Address::parse(&address.to_string()).unwrap(), address);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,50}") {
            let _ = Address::parse(&text);
        }
    }
}
