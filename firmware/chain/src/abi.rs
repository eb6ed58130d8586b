//! The registry's ABI: call encoding, strict decoding of return values
//! and events, and the typed custom errors a call can revert with.
//!
//! Decoding never panics and never trusts an offset or a length: every
//! read is bounds-checked against the data actually returned.

use std::fmt;

use crate::address::{hex0x, keccak256, Address};

/// The first 4 bytes of the keccak of a function or error signature.
pub fn selector(signature: &str) -> [u8; 4] {
    let hash = keccak256(signature.as_bytes());
    [hash[0], hash[1], hash[2], hash[3]]
}

/// The registry's function signatures, as the selectors hash them.
pub mod signatures {
    pub const OWNER: &str = "owner()";
    pub const IS_REFEREE: &str = "isReferee(address)";
    pub const SET_REFEREE: &str = "setReferee(address,bool)";
    pub const REGISTER: &str =
        "register(bytes32,address,uint8,bytes32,bytes32,bytes32,bytes,bytes)";
    pub const REVOKE: &str = "revoke(bytes32)";
    pub const GET_NODE: &str = "getNode(bytes32)";
    pub const NODE_ID_OF: &str = "nodeIdOf(address)";
    pub const VERIFY_RECEIPT: &str = "verifyReceipt(bytes32,bytes)";
    pub const RECORD_DISPUTE: &str = "recordDispute(bytes32,bytes32,uint8,bytes32,bytes)";
    pub const GET_DISPUTE: &str = "getDispute(bytes32)";
    pub const FAULT_COUNT: &str = "faultCount(bytes32)";
    pub const CLEARED_COUNT: &str = "clearedCount(bytes32)";
    pub const REGISTRATION_DIGEST: &str =
        "registrationDigest(address,bytes32,address,uint8,bytes32,bytes32,bytes32)";
    pub const RECEIPT_TYPED_DIGEST: &str = "receiptTypedDigest(bytes32)";
    pub const DISPUTE_DIGEST: &str = "disputeDigest(bytes32,bytes32,uint8,bytes32)";
    pub const DOMAIN_SEPARATOR: &str = "domainSeparator()";

    pub const NODE_REGISTERED: &str =
        "NodeRegistered(bytes32,address,address,uint8,bytes32,bytes32,bytes32,bytes)";
    pub const NODE_REVOKED: &str = "NodeRevoked(bytes32,address,uint64)";
    pub const DISPUTE_RECORDED: &str =
        "DisputeRecorded(bytes32,bytes32,address,bytes32,uint8,bytes32)";
    pub const REFEREE_SET: &str = "RefereeSet(address,bool)";
}

/// One ABI argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Address(Address),
    /// `bytes32`.
    FixedBytes([u8; 32]),
    /// Any `uintN` up to 128 bits (`uint8`, `uint64`, ...).
    Uint(u128),
    /// A full `uint256`, big-endian.
    Uint256([u8; 32]),
    Bool(bool),
    /// Dynamic `bytes`.
    Bytes(Vec<u8>),
    /// Dynamic `address[]`.
    AddressArray(Vec<Address>),
}

impl Token {
    fn head_word(&self) -> Option<[u8; 32]> {
        let mut word = [0u8; 32];
        match self {
            Token::Address(address) => word[12..].copy_from_slice(address.as_bytes()),
            Token::FixedBytes(bytes) | Token::Uint256(bytes) => word = *bytes,
            Token::Uint(value) => word[16..].copy_from_slice(&value.to_be_bytes()),
            Token::Bool(value) => word[31] = u8::from(*value),
            Token::Bytes(_) | Token::AddressArray(_) => return None,
        }
        Some(word)
    }

    fn tail(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Token::Bytes(bytes) => {
                out.extend_from_slice(&Token::Uint(bytes.len() as u128).head_word().unwrap());
                out.extend_from_slice(bytes);
                out.resize(32 + bytes.len().div_ceil(32) * 32, 0);
            }
            Token::AddressArray(addresses) => {
                out.extend_from_slice(&Token::Uint(addresses.len() as u128).head_word().unwrap());
                for address in addresses {
                    out.extend_from_slice(&Token::Address(*address).head_word().unwrap());
                }
            }
            _ => {}
        }
        out
    }
}

/// The ABI encoding of a tuple of arguments (heads, then tails).
pub fn encode(tokens: &[Token]) -> Vec<u8> {
    let mut head = Vec::with_capacity(32 * tokens.len());
    let mut tail = Vec::new();
    let head_size = 32 * tokens.len();
    for token in tokens {
        match token.head_word() {
            Some(word) => head.extend_from_slice(&word),
            None => {
                let offset = Token::Uint((head_size + tail.len()) as u128);
                head.extend_from_slice(&offset.head_word().unwrap());
                tail.extend_from_slice(&token.tail());
            }
        }
    }
    head.extend_from_slice(&tail);
    head
}

/// Calldata: the selector of `signature` and the encoded arguments.
pub fn encode_call(signature: &str, tokens: &[Token]) -> Vec<u8> {
    let mut out = selector(signature).to_vec();
    out.extend_from_slice(&encode(tokens));
    out
}

/// Why returned data does not decode as the expected type: the chain (or
/// whatever answered as one) returned something the registry does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbiError {
    #[error("the returned data is {len} bytes, too short for the {needed} the expected type needs: the address is not a NodeRegistry (or the node answered for another contract); check the registry address")]
    Truncated { len: usize, needed: usize },
    #[error("the returned data's word {index} is not a valid {what}: the address is not a NodeRegistry of this version; check the registry address")]
    BadWord { index: usize, what: &'static str },
    #[error("the returned data's dynamic value at word {index} points outside the data: the answer is corrupt; check the chain node")]
    BadOffset { index: usize },
    #[error(
        "the log has {topics} topics, not the {expected} of {event}: it is not a registry event"
    )]
    BadTopics {
        event: &'static str,
        topics: usize,
        expected: usize,
    },
    #[error("the log's first topic is not a NodeRegistry event")]
    UnknownEvent,
}

/// A bounds-checked reader over ABI-encoded data.
#[derive(Debug, Clone, Copy)]
pub struct Decoder<'a> {
    data: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Reads `data` (return data without a selector).
    pub fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder { data }
    }

    /// Fails unless at least `words` head words are present.
    pub fn expect_words(&self, words: usize) -> Result<(), AbiError> {
        let needed = words.saturating_mul(32);
        if self.data.len() < needed {
            return Err(AbiError::Truncated {
                len: self.data.len(),
                needed,
            });
        }
        Ok(())
    }

    /// Word `index` of the head.
    pub fn word(&self, index: usize) -> Result<[u8; 32], AbiError> {
        let start = index.checked_mul(32).ok_or(AbiError::BadOffset { index })?;
        let end = start.checked_add(32).ok_or(AbiError::BadOffset { index })?;
        let slice = self.data.get(start..end).ok_or(AbiError::Truncated {
            len: self.data.len(),
            needed: end,
        })?;
        Ok(slice.try_into().expect("32 bytes"))
    }

    /// Word `index` as an unsigned integer of at most `bits` bits.
    fn uint_bits(&self, index: usize, bits: u32, what: &'static str) -> Result<u128, AbiError> {
        let word = self.word(index)?;
        if word[..16].iter().any(|&b| b != 0) {
            return Err(AbiError::BadWord { index, what });
        }
        let value = u128::from_be_bytes(word[16..].try_into().expect("16 bytes"));
        if bits < 128 && value >> bits != 0 {
            return Err(AbiError::BadWord { index, what });
        }
        Ok(value)
    }

    pub fn address(&self, index: usize) -> Result<Address, AbiError> {
        let word = self.word(index)?;
        if word[..12].iter().any(|&b| b != 0) {
            return Err(AbiError::BadWord {
                index,
                what: "address",
            });
        }
        Ok(Address(word[12..].try_into().expect("20 bytes")))
    }

    pub fn bytes32(&self, index: usize) -> Result<[u8; 32], AbiError> {
        self.word(index)
    }

    pub fn uint8(&self, index: usize) -> Result<u8, AbiError> {
        Ok(self.uint_bits(index, 8, "uint8")? as u8)
    }

    pub fn uint64(&self, index: usize) -> Result<u64, AbiError> {
        Ok(self.uint_bits(index, 64, "uint64")? as u64)
    }

    /// A `uint256` that must fit 128 bits (counts, amounts).
    pub fn uint128(&self, index: usize) -> Result<u128, AbiError> {
        self.uint_bits(index, 128, "uint256 below 2^128")
    }

    pub fn boolean(&self, index: usize) -> Result<bool, AbiError> {
        match self.uint_bits(index, 1, "bool")? {
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    /// The dynamic `bytes` whose offset is head word `index`.
    pub fn bytes(&self, index: usize) -> Result<&'a [u8], AbiError> {
        let bad = AbiError::BadOffset { index };
        let offset =
            usize::try_from(self.uint_bits(index, 64, "offset")?).map_err(|_| bad.clone())?;
        let at = Decoder {
            data: self.data.get(offset..).ok_or(bad.clone())?,
        };
        let len = usize::try_from(at.uint_bits(0, 64, "length").map_err(|_| bad.clone())?)
            .map_err(|_| bad.clone())?;
        let end = 32usize.checked_add(len).ok_or(bad.clone())?;
        at.data.get(32..end).ok_or(bad)
    }

    /// The dynamic `string` whose offset is head word `index`.
    pub fn string(&self, index: usize) -> Result<&'a str, AbiError> {
        std::str::from_utf8(self.bytes(index)?).map_err(|_| AbiError::BadWord {
            index,
            what: "UTF-8 string",
        })
    }
}

/// `getNode`'s record (all zero for a node never registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: [u8; 32],
    pub node_address: Address,
    pub operator: Address,
    /// The raw `uint8` (see [`crate::eip712::KeyProtection::from_code`]).
    pub key_protection: u8,
    pub attestation_digest: [u8; 32],
    pub certification_report_hash: [u8; 32],
    pub bundle_id: [u8; 32],
    /// Block timestamp (unix seconds), 0 if never registered.
    pub registered_at: u64,
    /// Block timestamp (unix seconds), 0 while not revoked.
    pub revoked_at: u64,
}

impl NodeRecord {
    /// Decodes `getNode`'s return data (a static tuple: 9 words).
    pub fn decode(data: &[u8]) -> Result<NodeRecord, AbiError> {
        let d = Decoder::new(data);
        d.expect_words(9)?;
        Ok(NodeRecord {
            node_id: d.bytes32(0)?,
            node_address: d.address(1)?,
            operator: d.address(2)?,
            key_protection: d.uint8(3)?,
            attestation_digest: d.bytes32(4)?,
            certification_report_hash: d.bytes32(5)?,
            bundle_id: d.bytes32(6)?,
            registered_at: d.uint64(7)?,
            revoked_at: d.uint64(8)?,
        })
    }

    /// Whether the node was registered (and not necessarily still is).
    pub fn exists(&self) -> bool {
        self.registered_at != 0
    }
}

/// `verifyReceipt`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptVerdict {
    /// The signer is a registered node that was not revoked.
    pub valid: bool,
    pub node_id: [u8; 32],
    pub registered_at: u64,
    pub revoked_at: u64,
}

impl ReceiptVerdict {
    pub fn decode(data: &[u8]) -> Result<ReceiptVerdict, AbiError> {
        let d = Decoder::new(data);
        d.expect_words(4)?;
        Ok(ReceiptVerdict {
            valid: d.boolean(0)?,
            node_id: d.bytes32(1)?,
            registered_at: d.uint64(2)?,
            revoked_at: d.uint64(3)?,
        })
    }
}

/// `getDispute`'s record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRecord {
    pub node_id: [u8; 32],
    pub receipt_digest: [u8; 32],
    /// The raw `uint8` (see [`crate::eip712::Outcome::from_code`]).
    pub outcome: u8,
    pub details_hash: [u8; 32],
    pub referee: Address,
    pub recorded_at: u64,
}

impl DisputeRecord {
    pub fn decode(data: &[u8]) -> Result<DisputeRecord, AbiError> {
        let d = Decoder::new(data);
        d.expect_words(6)?;
        Ok(DisputeRecord {
            node_id: d.bytes32(0)?,
            receipt_digest: d.bytes32(1)?,
            outcome: d.uint8(2)?,
            details_hash: d.bytes32(3)?,
            referee: d.address(4)?,
            recorded_at: d.uint64(5)?,
        })
    }
}

/// A registry event, decoded from a log's topics and data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    NodeRegistered {
        node_id: [u8; 32],
        operator: Address,
        node_address: Address,
        key_protection: u8,
        attestation_digest: [u8; 32],
        certification_report_hash: [u8; 32],
        bundle_id: [u8; 32],
        device_signature: Vec<u8>,
    },
    NodeRevoked {
        node_id: [u8; 32],
        operator: Address,
        revoked_at: u64,
    },
    DisputeRecorded {
        dispute_id: [u8; 32],
        node_id: [u8; 32],
        referee: Address,
        receipt_digest: [u8; 32],
        outcome: u8,
        details_hash: [u8; 32],
    },
    RefereeSet {
        referee: Address,
        trusted: bool,
    },
}

/// The first topic of an event signature.
pub fn event_topic(signature: &str) -> [u8; 32] {
    keccak256(signature.as_bytes())
}

impl RegistryEvent {
    /// Decodes a log of the registry (`topics[0]` names the event).
    pub fn decode(topics: &[[u8; 32]], data: &[u8]) -> Result<RegistryEvent, AbiError> {
        let first = topics.first().ok_or(AbiError::UnknownEvent)?;
        let indexed = |event: &'static str, expected: usize| {
            if topics.len() == expected {
                Ok(())
            } else {
                Err(AbiError::BadTopics {
                    event,
                    topics: topics.len(),
                    expected,
                })
            }
        };
        let topic_words: Vec<u8> = topics.iter().skip(1).flatten().copied().collect();
        let t = Decoder::new(&topic_words);
        let d = Decoder::new(data);
        if *first == event_topic(signatures::NODE_REGISTERED) {
            indexed("NodeRegistered", 4)?;
            d.expect_words(5)?;
            Ok(RegistryEvent::NodeRegistered {
                node_id: t.bytes32(0)?,
                operator: t.address(1)?,
                node_address: t.address(2)?,
                key_protection: d.uint8(0)?,
                attestation_digest: d.bytes32(1)?,
                certification_report_hash: d.bytes32(2)?,
                bundle_id: d.bytes32(3)?,
                device_signature: d.bytes(4)?.to_vec(),
            })
        } else if *first == event_topic(signatures::NODE_REVOKED) {
            indexed("NodeRevoked", 3)?;
            Ok(RegistryEvent::NodeRevoked {
                node_id: t.bytes32(0)?,
                operator: t.address(1)?,
                revoked_at: d.uint64(0)?,
            })
        } else if *first == event_topic(signatures::DISPUTE_RECORDED) {
            indexed("DisputeRecorded", 4)?;
            d.expect_words(3)?;
            Ok(RegistryEvent::DisputeRecorded {
                dispute_id: t.bytes32(0)?,
                node_id: t.bytes32(1)?,
                referee: t.address(2)?,
                receipt_digest: d.bytes32(0)?,
                outcome: d.uint8(1)?,
                details_hash: d.bytes32(2)?,
            })
        } else if *first == event_topic(signatures::REFEREE_SET) {
            indexed("RefereeSet", 2)?;
            Ok(RegistryEvent::RefereeSet {
                referee: t.address(0)?,
                trusted: d.boolean(0)?,
            })
        } else {
            Err(AbiError::UnknownEvent)
        }
    }
}

/// The registry's custom errors and Solidity's standard ones: why a call
/// or a transaction was refused. Its `Display` is one line for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryRevert {
    NotOwner {
        caller: Address,
    },
    ZeroNodeId,
    ZeroAddress,
    InvalidKeyProtection {
        value: u8,
    },
    InvalidDeviceSignature,
    AlreadyRegistered {
        node_id: [u8; 32],
    },
    NodeAddressInUse {
        node_address: Address,
    },
    NodeSignatureInvalid,
    NotRegistered {
        node_id: [u8; 32],
    },
    NotOperator {
        node_id: [u8; 32],
        caller: Address,
    },
    AlreadyRevoked {
        node_id: [u8; 32],
    },
    InvalidOutcome {
        value: u8,
    },
    NotReferee {
        signer: Address,
    },
    DisputeAlreadyRecorded {
        dispute_id: [u8; 32],
    },
    /// `Error(string)` (`require` with a message).
    Error(String),
    /// `Panic(uint256)`: an assertion, overflow or bad index in the
    /// contract (the code, big-endian).
    Panic([u8; 32]),
    /// A revert with no data (a bare `revert()`, out of gas, or a call to
    /// an address with no code).
    Empty,
    /// Data that matches none of the above.
    Unknown(Vec<u8>),
}

/// The custom errors' signatures, as their selectors hash them.
pub mod error_signatures {
    pub const NOT_OWNER: &str = "NotOwner(address)";
    pub const ZERO_NODE_ID: &str = "ZeroNodeId()";
    pub const ZERO_ADDRESS: &str = "ZeroAddress()";
    pub const INVALID_KEY_PROTECTION: &str = "InvalidKeyProtection(uint8)";
    pub const INVALID_DEVICE_SIGNATURE: &str = "InvalidDeviceSignature()";
    pub const ALREADY_REGISTERED: &str = "AlreadyRegistered(bytes32)";
    pub const NODE_ADDRESS_IN_USE: &str = "NodeAddressInUse(address)";
    pub const NODE_SIGNATURE_INVALID: &str = "NodeSignatureInvalid()";
    pub const NOT_REGISTERED: &str = "NotRegistered(bytes32)";
    pub const NOT_OPERATOR: &str = "NotOperator(bytes32,address)";
    pub const ALREADY_REVOKED: &str = "AlreadyRevoked(bytes32)";
    pub const INVALID_OUTCOME: &str = "InvalidOutcome(uint8)";
    pub const NOT_REFEREE: &str = "NotReferee(address)";
    pub const DISPUTE_ALREADY_RECORDED: &str = "DisputeAlreadyRecorded(bytes32)";
    pub const ERROR: &str = "Error(string)";
    pub const PANIC: &str = "Panic(uint256)";
}

impl RegistryRevert {
    /// Decodes revert data. Never fails: what matches no known error (or
    /// matches a selector with malformed arguments) is `Unknown`.
    pub fn decode(data: &[u8]) -> RegistryRevert {
        if data.is_empty() {
            return RegistryRevert::Empty;
        }
        Self::decode_known(data).unwrap_or_else(|| RegistryRevert::Unknown(data.to_vec()))
    }

    fn decode_known(data: &[u8]) -> Option<RegistryRevert> {
        use error_signatures as e;
        let (head, args) = data.split_at_checked(4)?;
        let head: [u8; 4] = head.try_into().ok()?;
        let d = Decoder::new(args);
        let is = |signature: &str| head == selector(signature);
        let revert = if is(e::NOT_OWNER) {
            RegistryRevert::NotOwner {
                caller: d.address(0).ok()?,
            }
        } else if is(e::ZERO_NODE_ID) {
            RegistryRevert::ZeroNodeId
        } else if is(e::ZERO_ADDRESS) {
            RegistryRevert::ZeroAddress
        } else if is(e::INVALID_KEY_PROTECTION) {
            RegistryRevert::InvalidKeyProtection {
                value: d.uint8(0).ok()?,
            }
        } else if is(e::INVALID_DEVICE_SIGNATURE) {
            RegistryRevert::InvalidDeviceSignature
        } else if is(e::ALREADY_REGISTERED) {
            RegistryRevert::AlreadyRegistered {
                node_id: d.bytes32(0).ok()?,
            }
        } else if is(e::NODE_ADDRESS_IN_USE) {
            RegistryRevert::NodeAddressInUse {
                node_address: d.address(0).ok()?,
            }
        } else if is(e::NODE_SIGNATURE_INVALID) {
            RegistryRevert::NodeSignatureInvalid
        } else if is(e::NOT_REGISTERED) {
            RegistryRevert::NotRegistered {
                node_id: d.bytes32(0).ok()?,
            }
        } else if is(e::NOT_OPERATOR) {
            RegistryRevert::NotOperator {
                node_id: d.bytes32(0).ok()?,
                caller: d.address(1).ok()?,
            }
        } else if is(e::ALREADY_REVOKED) {
            RegistryRevert::AlreadyRevoked {
                node_id: d.bytes32(0).ok()?,
            }
        } else if is(e::INVALID_OUTCOME) {
            RegistryRevert::InvalidOutcome {
                value: d.uint8(0).ok()?,
            }
        } else if is(e::NOT_REFEREE) {
            RegistryRevert::NotReferee {
                signer: d.address(0).ok()?,
            }
        } else if is(e::DISPUTE_ALREADY_RECORDED) {
            RegistryRevert::DisputeAlreadyRecorded {
                dispute_id: d.bytes32(0).ok()?,
            }
        } else if is(e::ERROR) {
            RegistryRevert::Error(d.string(0).ok()?.to_string())
        } else if is(e::PANIC) {
            RegistryRevert::Panic(d.word(0).ok()?)
        } else {
            return None;
        };
        Some(revert)
    }

    /// The encoding the contract reverts with (for tests and fakes).
    pub fn encode(&self) -> Vec<u8> {
        use error_signatures as e;
        let (signature, tokens) = match self {
            RegistryRevert::NotOwner { caller } => (e::NOT_OWNER, vec![Token::Address(*caller)]),
            RegistryRevert::ZeroNodeId => (e::ZERO_NODE_ID, vec![]),
            RegistryRevert::ZeroAddress => (e::ZERO_ADDRESS, vec![]),
            RegistryRevert::InvalidKeyProtection { value } => (
                e::INVALID_KEY_PROTECTION,
                vec![Token::Uint((*value).into())],
            ),
            RegistryRevert::InvalidDeviceSignature => (e::INVALID_DEVICE_SIGNATURE, vec![]),
            RegistryRevert::AlreadyRegistered { node_id } => {
                (e::ALREADY_REGISTERED, vec![Token::FixedBytes(*node_id)])
            }
            RegistryRevert::NodeAddressInUse { node_address } => {
                (e::NODE_ADDRESS_IN_USE, vec![Token::Address(*node_address)])
            }
            RegistryRevert::NodeSignatureInvalid => (e::NODE_SIGNATURE_INVALID, vec![]),
            RegistryRevert::NotRegistered { node_id } => {
                (e::NOT_REGISTERED, vec![Token::FixedBytes(*node_id)])
            }
            RegistryRevert::NotOperator { node_id, caller } => (
                e::NOT_OPERATOR,
                vec![Token::FixedBytes(*node_id), Token::Address(*caller)],
            ),
            RegistryRevert::AlreadyRevoked { node_id } => {
                (e::ALREADY_REVOKED, vec![Token::FixedBytes(*node_id)])
            }
            RegistryRevert::InvalidOutcome { value } => {
                (e::INVALID_OUTCOME, vec![Token::Uint((*value).into())])
            }
            RegistryRevert::NotReferee { signer } => {
                (e::NOT_REFEREE, vec![Token::Address(*signer)])
            }
            RegistryRevert::DisputeAlreadyRecorded { dispute_id } => (
                e::DISPUTE_ALREADY_RECORDED,
                vec![Token::FixedBytes(*dispute_id)],
            ),
            RegistryRevert::Error(message) => {
                (e::ERROR, vec![Token::Bytes(message.as_bytes().to_vec())])
            }
            RegistryRevert::Panic(code) => (e::PANIC, vec![Token::Uint256(*code)]),
            RegistryRevert::Empty => return Vec::new(),
            RegistryRevert::Unknown(data) => return data.clone(),
        };
        encode_call(signature, &tokens)
    }
}

fn quantity_text(word: &[u8; 32]) -> String {
    let digits = hex::encode(word);
    let trimmed = digits.trim_start_matches('0');
    format!("0x{}", if trimmed.is_empty() { "0" } else { trimmed })
}

impl fmt::Display for RegistryRevert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the registry refused: ")?;
        match self {
            RegistryRevert::NotOwner { caller } => write!(f, "{caller} is not the registry's owner; send it from the owner's account"),
            RegistryRevert::ZeroNodeId => f.write_str("the node id is zero; pass the node's id"),
            RegistryRevert::ZeroAddress => f.write_str("an address is zero; pass the node's (or referee's) real address"),
            RegistryRevert::InvalidKeyProtection { value } => write!(f, "key protection {value} is neither 0 (file) nor 1 (tpm-sealed)"),
            RegistryRevert::InvalidDeviceSignature => f.write_str("the device signature is malformed; pass the node's attestation signature as it is"),
            RegistryRevert::AlreadyRegistered { node_id } => write!(f, "node {} is already registered", hex0x(node_id)),
            RegistryRevert::NodeAddressInUse { node_address } => write!(f, "chain key address {node_address} is already used by another node; generate a new chain key for this node"),
            RegistryRevert::NodeSignatureInvalid => f.write_str("the node's signature does not match this registration (signed by another key, for another operator, chain or registry); have the node sign the registration again"),
            RegistryRevert::NotRegistered { node_id } => write!(f, "node {} is not registered", hex0x(node_id)),
            RegistryRevert::NotOperator { node_id, caller } => write!(f, "{caller} is not the operator of node {}; send it from the operator's account", hex0x(node_id)),
            RegistryRevert::AlreadyRevoked { node_id } => write!(f, "node {} is already revoked", hex0x(node_id)),
            RegistryRevert::InvalidOutcome { value } => write!(f, "dispute outcome {value} is neither 1 (node at fault) nor 2 (node cleared)"),
            RegistryRevert::NotReferee { signer } => write!(f, "the dispute outcome is signed by {signer}, which is not a trusted referee"),
            RegistryRevert::DisputeAlreadyRecorded { dispute_id } => write!(f, "dispute {} is already recorded", hex0x(dispute_id)),
            RegistryRevert::Error(message) => write!(f, "{message:?}"),
            RegistryRevert::Panic(code) => write!(f, "the contract panicked (code {}): a bug in the contract or a call it does not expect", quantity_text(code)),
            RegistryRevert::Empty => f.write_str("reverted without a reason (out of gas, or the address holds no registry); check the registry address"),
            RegistryRevert::Unknown(data) => write!(f, "reverted with data this client does not know ({}): the registry is another version than this client; check the registry address", hex0x(&data[..data.len().min(68)])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_selectors() {
        // Solidity's standard errors and ERC-20's transfer.
        assert_eq!(hex::encode(selector("Error(string)")), "08c379a0");
        assert_eq!(hex::encode(selector("Panic(uint256)")), "4e487b71");
        assert_eq!(
            hex::encode(selector("transfer(address,uint256)")),
            "a9059cbb"
        );
    }

    #[test]
    fn encodes_dynamic_arguments_after_the_heads() {
        let data = encode(&[
            Token::Uint(1),
            Token::Bytes(vec![0xaa; 33]),
            Token::Bool(true),
        ]);
        assert_eq!(data.len(), 3 * 32 + 32 + 64);
        let d = Decoder::new(&data);
        assert_eq!(d.uint64(0).unwrap(), 1);
        assert_eq!(d.uint64(1).unwrap(), 96);
        assert!(d.boolean(2).unwrap());
        assert_eq!(d.bytes(1).unwrap(), &[0xaa; 33][..]);
        let empty = encode(&[Token::Bytes(vec![])]);
        assert_eq!(empty.len(), 64);
        let referees = encode(&[Token::AddressArray(vec![
            Address([1; 20]),
            Address([2; 20]),
        ])]);
        assert_eq!(referees.len(), 32 * 4);
        assert_eq!(Decoder::new(&referees).uint64(1).unwrap(), 2);
    }

    #[test]
    fn revert_messages_are_typed() {
        let revert = RegistryRevert::decode(
            &RegistryRevert::AlreadyRegistered {
                node_id: [0x11; 32],
            }
            .encode(),
        );
        assert_eq!(
            revert,
            RegistryRevert::AlreadyRegistered {
                node_id: [0x11; 32]
            }
        );
        assert!(revert.to_string().starts_with(
            "the registry refused: node 0x1111111111111111111111111111111111111111111111111111111111111111 is already registered"
        ));
        let error = RegistryRevert::decode(&RegistryRevert::Error("nope".into()).encode());
        assert_eq!(error, RegistryRevert::Error("nope".into()));
        assert_eq!(RegistryRevert::decode(&[]), RegistryRevert::Empty);
        assert_eq!(
            RegistryRevert::decode(&[1, 2, 3]),
            RegistryRevert::Unknown(vec![1, 2, 3])
        );
        // A known selector with a truncated argument is not trusted.
        let mut cut = RegistryRevert::NotReferee {
            signer: Address([5; 20]),
        }
        .encode();
        cut.truncate(20);
        assert!(matches!(
            RegistryRevert::decode(&cut),
            RegistryRevert::Unknown(_)
        ));
        let mut panic = [0u8; 32];
        panic[31] = 0x11;
        assert!(RegistryRevert::Panic(panic)
            .to_string()
            .contains("code 0x11"));
    }

    #[test]
    fn strict_words() {
        let mut word = [0u8; 32];
        word[0] = 1;
        let d = Decoder::new(&word);
        assert!(d.address(0).is_err());
        assert!(d.uint8(0).is_err());
        assert!(d.boolean(0).is_err());
        assert!(d.word(1).is_err());
        assert!(d.bytes(0).is_err());
        assert!(NodeRecord::decode(&[0; 8 * 32]).is_err());
        let record = NodeRecord::decode(&[0; 9 * 32]).unwrap();
        assert!(!record.exists());
        // An offset pointing past the end, and a huge length.
        let mut data = encode(&[Token::Uint(u64::MAX.into())]);
        assert!(Decoder::new(&data).bytes(0).is_err());
        data = encode(&[Token::Uint(32), Token::Uint(u64::MAX.into())]);
        assert!(Decoder::new(&data).bytes(0).is_err());
    }

    #[test]
    fn events_decode() {
        let data = encode(&[
            Token::Uint(1),
            Token::FixedBytes([4; 32]),
            Token::FixedBytes([5; 32]),
            Token::FixedBytes([6; 32]),
            Token::Bytes(vec![7; 65]),
        ]);
        let mut operator = [0u8; 32];
        operator[12..].copy_from_slice(&[2; 20]);
        let mut node = [0u8; 32];
        node[12..].copy_from_slice(&[3; 20]);
        let topics = [
            event_topic(signatures::NODE_REGISTERED),
            [1; 32],
            operator,
            node,
        ];
        let event = RegistryEvent::decode(&topics, &data).unwrap();
        assert!(matches!(
            event,
            RegistryEvent::NodeRegistered { key_protection: 1, ref device_signature, .. } if device_signature.len() == 65
        ));
        assert!(RegistryEvent::decode(&topics[..3], &data).is_err());
        assert_eq!(
            RegistryEvent::decode(&[], &data),
            Err(AbiError::UnknownEvent)
        );
    }

    fn revert_strategy() -> impl Strategy<Value = RegistryRevert> {
        prop_oneof![
            any::<[u8; 20]>().prop_map(|a| RegistryRevert::NotOwner { caller: Address(a) }),
            Just(RegistryRevert::ZeroNodeId),
            any::<u8>().prop_map(|value| RegistryRevert::InvalidKeyProtection { value }),
            any::<[u8; 32]>().prop_map(|node_id| RegistryRevert::AlreadyRegistered { node_id }),
            (any::<[u8; 32]>(), any::<[u8; 20]>()).prop_map(|(node_id, a)| {
                RegistryRevert::NotOperator {
                    node_id,
                    caller: Address(a),
                }
            }),
            any::<[u8; 32]>()
                .prop_map(|dispute_id| RegistryRevert::DisputeAlreadyRecorded { dispute_id }),
            "\\PC{0,80}".prop_map(RegistryRevert::Error),
            any::<[u8; 32]>().prop_map(RegistryRevert::Panic),
        ]
    }

    proptest! {
        #[test]
        fn revert_round_trip(revert in revert_strategy()) {
            prop_assert_eq!(RegistryRevert::decode(&revert.encode()), revert);
        }

        #[test]
        fn tuple_round_trip(
            node_id in any::<[u8; 32]>(),
            address in any::<[u8; 20]>(),
            small in any::<u8>(),
            time in any::<u64>(),
            flag in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let data = encode(&[
                Token::FixedBytes(node_id),
                Token::Address(Address(address)),
                Token::Bytes(payload.clone()),
                Token::Uint(small.into()),
                Token::Uint(time.into()),
                Token::Bool(flag),
            ]);
            let d = Decoder::new(&data);
            prop_assert_eq!(d.bytes32(0).unwrap(), node_id);
            prop_assert_eq!(d.address(1).unwrap(), Address(address));
            prop_assert_eq!(d.bytes(2).unwrap(), &payload[..]);
            prop_assert_eq!(d.uint8(3).unwrap(), small);
            prop_assert_eq!(d.uint64(4).unwrap(), time);
            prop_assert_eq!(d.boolean(5).unwrap(), flag);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = NodeRecord::decode(&data);
            let _ = ReceiptVerdict::decode(&data);
            let _ = DisputeRecord::decode(&data);
            let _ = RegistryRevert::decode(&data).to_string();
            let d = Decoder::new(&data);
            for i in 0..14 {
                let _ = d.bytes(i);
                let _ = d.string(i);
            }
        }
    }
}
