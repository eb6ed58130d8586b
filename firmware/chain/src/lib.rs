//! On-chain identity for Lockstep nodes (contracts/README.md): the client side
//! of the `NodeRegistry` contract, written by hand.
//!
//! The core is sans-IO, pure functions and data:
//!
//! - [`keccak256`] and [`Address`] (EIP-55 checksums);
//! - [`ChainKey`]: a node's secp256k1 chain key, generated from entropy the
//!   caller provides, signing digests as `ecrecover` checks them
//!   ([`Signature65`], [`recover`]);
//! - [`eip712`]: the registry's typed messages ([`eip712::Registration`],
//!   receipts, [`eip712::DisputeOutcome`]) and their digests;
//! - [`abi`]: the registry's calls, return values, events and custom
//!   errors ([`abi::RegistryRevert`]);
//! - [`tx`]: RLP and signed EIP-1559 transactions;
//! - [`keystore`]: the V3 keystore (Web3 Secret Storage) with bounded KDF
//!   costs;
//! - [`rpc`]: JSON-RPC 2.0 requests, bounded response parsing and the
//!   quantity/data hex forms.
//!
//! On top: [`http`], a minimal blocking HTTP/1.1 POST for `http://` URLs
//! (no TLS: talk to a local node or an http gateway), and [`client`], the
//! [`client::Registry`] client that deploys, registers, revokes, records
//! disputes and reads the registry's views. Besides the transport's
//! timeouts, waiting for a transaction's receipt is the only timing in the
//! crate.
//!
//! **Architecture Invariant:** this crate knows nothing of QUIC, Vulkan,
//! the node's files or receipts' JSON: it hashes, signs, encodes and talks
//! JSON-RPC. Time and randomness come in as arguments, and every size read
//! from the network or a file is bounded by a constant of `lockstep-limits`.

#![forbid(unsafe_code)]

pub mod abi;
mod address;
pub mod client;
pub mod eip712;
mod error;
pub mod http;
mod key;
pub mod keystore;
pub mod rpc;
mod scrypt;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tx;

pub use address::{hex0x, keccak256, Address, AddressError};
pub use error::ClientError;
pub use key::{recover, ChainKey, KeyError, Signature65};
