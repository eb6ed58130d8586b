//! EIP-712 typed-data digests for the registry's messages.
//!
//! Only fixed types: every field is a static 32-byte word or a string
//! (hashed), so a struct hash is `keccak(typeHash || words)`.

use crate::address::{keccak256, Address};

/// The registry's domain type (with chain and contract: a registration
/// or a dispute outcome is valid on one chain, for one registry).
pub const REGISTRY_DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
/// The registry domain's name.
pub const REGISTRY_DOMAIN_NAME: &str = "Lockstep NodeRegistry";
/// The registry domain's version.
pub const REGISTRY_DOMAIN_VERSION: &str = "1";
/// The receipt domain's type: no chain fields, a receipt is
/// chain-independent.
pub const RECEIPT_DOMAIN_TYPE: &str = "EIP712Domain(string name,string version)";
/// The receipt domain's name.
pub const RECEIPT_DOMAIN_NAME: &str = "Lockstep Receipt";
/// The receipt domain's version.
pub const RECEIPT_DOMAIN_VERSION: &str = "1";

/// A node's registration, signed by the node's chain key.
pub const REGISTRATION_TYPE: &str = "Registration(address operator,bytes32 nodeId,address nodeAddress,uint8 keyProtection,bytes32 attestationDigest,bytes32 certificationReportHash,bytes32 bundleId)";
/// A receipt, signed by the node's chain key.
pub const RECEIPT_TYPE: &str = "Receipt(bytes32 receiptDigest)";
/// A referee's verdict on a disputed receipt.
pub const DISPUTE_OUTCOME_TYPE: &str =
    "DisputeOutcome(bytes32 nodeId,bytes32 receiptDigest,uint8 outcome,bytes32 detailsHash)";

/// How a node holds its chain key, as the registry records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyProtection {
    /// A file on the node's state partition.
    File = 0,
    /// Sealed to the node's TPM.
    TpmSealed = 1,
}

impl KeyProtection {
    /// The `uint8` the registry stores.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From the registry's `uint8`.
    pub fn from_code(code: u8) -> Option<KeyProtection> {
        match code {
            0 => Some(KeyProtection::File),
            1 => Some(KeyProtection::TpmSealed),
            _ => None,
        }
    }
}

/// A referee's verdict on a disputed receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The node produced a wrong result.
    NodeAtFault = 1,
    /// The node's result stands.
    NodeCleared = 2,
}

impl Outcome {
    /// The `uint8` the registry stores.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From the registry's `uint8`.
    pub fn from_code(code: u8) -> Option<Outcome> {
        match code {
            1 => Some(Outcome::NodeAtFault),
            2 => Some(Outcome::NodeCleared),
            _ => None,
        }
    }
}

/// A 32-byte ABI word holding an address (left-padded).
pub fn address_word(address: &Address) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(address.as_bytes());
    word
}

/// A 32-byte ABI word holding an unsigned integer (big-endian).
pub fn uint_word(value: u128) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[16..].copy_from_slice(&value.to_be_bytes());
    word
}

/// `keccak256` of a type string.
pub fn type_hash(type_string: &str) -> [u8; 32] {
    keccak256(type_string.as_bytes())
}

/// `hashStruct` of a struct whose members are already encoded as words
/// (static values as ABI words, strings and bytes as their keccak, nested
/// structs as their own struct hash), in the type's member order.
pub fn hash_struct(type_string: &str, words: &[[u8; 32]]) -> [u8; 32] {
    let mut buffer = Vec::with_capacity(32 * (words.len() + 1));
    buffer.extend_from_slice(&type_hash(type_string));
    for word in words {
        buffer.extend_from_slice(word);
    }
    keccak256(&buffer)
}

/// The domain separator of a domain with a name, a version and, when
/// given, a chain id and verifying contract (the type string follows).
pub fn domain_separator(name: &str, version: &str, chain: Option<(u64, Address)>) -> [u8; 32] {
    let name = keccak256(name.as_bytes());
    let version = keccak256(version.as_bytes());
    match chain {
        Some((chain_id, contract)) => hash_struct(
            REGISTRY_DOMAIN_TYPE,
            &[
                name,
                version,
                uint_word(chain_id.into()),
                address_word(&contract),
            ],
        ),
        None => hash_struct(RECEIPT_DOMAIN_TYPE, &[name, version]),
    }
}

/// The registry's domain separator on `chain_id` at `registry`.
pub fn registry_domain_separator(chain_id: u64, registry: Address) -> [u8; 32] {
    domain_separator(
        REGISTRY_DOMAIN_NAME,
        REGISTRY_DOMAIN_VERSION,
        Some((chain_id, registry)),
    )
}

/// The receipt domain's separator (a constant: no chain fields).
pub fn receipt_domain_separator() -> [u8; 32] {
    domain_separator(RECEIPT_DOMAIN_NAME, RECEIPT_DOMAIN_VERSION, None)
}

/// The digest a signer signs: `keccak(0x19 0x01 || domainSeparator ||
/// structHash)`.
pub fn typed_digest(domain_separator: &[u8; 32], struct_hash: &[u8; 32]) -> [u8; 32] {
    let mut buffer = [0u8; 66];
    buffer[0] = 0x19;
    buffer[1] = 0x01;
    buffer[2..34].copy_from_slice(domain_separator);
    buffer[34..].copy_from_slice(struct_hash);
    keccak256(&buffer)
}

/// A node's registration, as the node's chain key signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The account that submits it (the contract takes `msg.sender`).
    pub operator: Address,
    pub node_id: [u8; 32],
    /// The node chain key's address.
    pub node_address: Address,
    pub key_protection: KeyProtection,
    pub attestation_digest: [u8; 32],
    pub certification_report_hash: [u8; 32],
    pub bundle_id: [u8; 32],
}

impl Registration {
    /// `hashStruct(Registration)`.
    pub fn struct_hash(&self) -> [u8; 32] {
        hash_struct(
            REGISTRATION_TYPE,
            &[
                address_word(&self.operator),
                self.node_id,
                address_word(&self.node_address),
                uint_word(self.key_protection.code().into()),
                self.attestation_digest,
                self.certification_report_hash,
                self.bundle_id,
            ],
        )
    }

    /// The digest the node signs for the registry at `registry` on
    /// `chain_id`.
    pub fn digest(&self, chain_id: u64, registry: Address) -> [u8; 32] {
        typed_digest(
            &registry_domain_separator(chain_id, registry),
            &self.struct_hash(),
        )
    }
}

/// `hashStruct(Receipt)` of a receipt digest (the SHA-256 of a receipt's
/// canonical bytes).
pub fn receipt_struct_hash(receipt_digest: &[u8; 32]) -> [u8; 32] {
    hash_struct(RECEIPT_TYPE, &[*receipt_digest])
}

/// The digest a node signs for a receipt (chain-independent).
pub fn receipt_typed_digest(receipt_digest: &[u8; 32]) -> [u8; 32] {
    typed_digest(
        &receipt_domain_separator(),
        &receipt_struct_hash(receipt_digest),
    )
}

/// A referee's verdict on a disputed receipt, as the referee signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeOutcome {
    pub node_id: [u8; 32],
    pub receipt_digest: [u8; 32],
    pub outcome: Outcome,
    pub details_hash: [u8; 32],
}

impl DisputeOutcome {
    /// `hashStruct(DisputeOutcome)`.
    pub fn struct_hash(&self) -> [u8; 32] {
        hash_struct(
            DISPUTE_OUTCOME_TYPE,
            &[
                self.node_id,
                self.receipt_digest,
                uint_word(self.outcome.code().into()),
                self.details_hash,
            ],
        )
    }

    /// The digest the referee signs for the registry at `registry` on
    /// `chain_id`.
    pub fn digest(&self, chain_id: u64, registry: Address) -> [u8; 32] {
        typed_digest(
            &registry_domain_separator(chain_id, registry),
            &self.struct_hash(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{recover, ChainKey};

    const PERSON: &str = "Person(string name,address wallet)";
    const MAIL: &str =
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)";

    fn person(name: &str, wallet: &str) -> [u8; 32] {
        hash_struct(
            PERSON,
            &[
                keccak256(name.as_bytes()),
                address_word(&wallet.parse().unwrap()),
            ],
        )
    }

    /// The EIP-712 specification's example.
    #[test]
    fn the_spec_mail_example() {
        let domain = domain_separator(
            "Ether Mail",
            "1",
            Some((
                1,
                "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
                    .parse()
                    .unwrap(),
            )),
        );
        assert_eq!(
            hex::encode(domain),
            "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
        );
        let mail = hash_struct(
            MAIL,
            &[
                person("Cow", "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
                person("Bob", "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"),
                keccak256(b"Hello, Bob!"),
            ],
        );
        assert_eq!(
            hex::encode(mail),
            "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
        );
        let digest = typed_digest(&domain, &mail);
        assert_eq!(
            hex::encode(digest),
            "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
        );
        let cow = ChainKey::from_bytes(&keccak256(b"cow")).unwrap();
        assert_eq!(
            cow.address().to_string(),
            "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
        );
        let signature = cow.sign_digest(&digest);
        assert_eq!(signature.v(), 28);
        assert_eq!(
            hex::encode(signature.r()),
            "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        );
        assert_eq!(
            hex::encode(signature.s()),
            "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        );
        assert_eq!(recover(&digest, &signature).unwrap(), cow.address());
    }

    #[test]
    fn digests_bind_chain_registry_and_fields() {
        let registration = Registration {
            operator: Address([1; 20]),
            node_id: [2; 32],
            node_address: Address([3; 20]),
            key_protection: KeyProtection::TpmSealed,
            attestation_digest: [4; 32],
            certification_report_hash: [5; 32],
            bundle_id: [6; 32],
        };
        let registry = Address([9; 20]);
        let digest = registration.digest(1337, registry);
        assert_ne!(digest, registration.digest(1, registry));
        assert_ne!(digest, registration.digest(1337, Address([8; 20])));
        let mut other = registration.clone();
        other.key_protection = KeyProtection::File;
        assert_ne!(digest, other.digest(1337, registry));

        let dispute = DisputeOutcome {
            node_id: [2; 32],
            receipt_digest: [7; 32],
            outcome: Outcome::NodeAtFault,
            details_hash: [0; 32],
        };
        assert_ne!(
            dispute.digest(1337, registry),
            DisputeOutcome {
                outcome: Outcome::NodeCleared,
                ..dispute.clone()
            }
            .digest(1337, registry)
        );
        // A receipt's digest depends on the receipt alone.
        assert_ne!(
            receipt_typed_digest(&[1; 32]),
            receipt_typed_digest(&[2; 32])
        );
        assert_eq!(KeyProtection::from_code(1), Some(KeyProtection::TpmSealed));
        assert_eq!(KeyProtection::from_code(2), None);
        assert_eq!(Outcome::from_code(0), None);
    }
}
