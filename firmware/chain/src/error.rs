//! The errors of the IO layer ([`crate::http`], [`crate::client`]): bad
//! input from the caller, a machine or network problem, a peer that does
//! not speak JSON-RPC, or a chain that refused; the message says what to
//! do next.

use crate::abi::{AbiError, RegistryRevert};
use crate::rpc::RpcError;

/// Why a JSON-RPC call or a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // Bad input.
    #[error("{url:?} is not a usable RPC URL: {reason}; write it as http://host:port[/path]")]
    BadUrl { url: String, reason: String },
    #[error("{url:?} is an https URL, which this client does not speak (no TLS, on purpose): run a local node, or put an http gateway on the node's private network, and give its http:// URL")]
    UnsupportedScheme { url: String },

    // The machine or the network.
    #[error("the chain node at {url} is unreachable ({reason}): check that it runs and that the URL's host and port are right")]
    Unreachable { url: String, reason: String },
    #[error("the chain node at {url} did not answer within {ms} ms: it is overloaded or the network is down; try again later")]
    Timeout { url: String, ms: u64 },
    #[error("the connection to the chain node at {url} failed mid-exchange ({reason}); try again")]
    Io { url: String, reason: String },

    // A peer that does not behave.
    #[error("the chain node at {url} answered HTTP {status} ({body:?}): the URL is not its JSON-RPC endpoint, or it refuses this client; check the URL")]
    HttpStatus {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the chain node at {url} sent a malformed HTTP response ({reason}): it is not an HTTP JSON-RPC endpoint; check the URL")]
    BadHttp { url: String, reason: String },
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the registry's answer does not decode: {0}")]
    Abi(#[from] AbiError),

    // The chain refused or did not include a transaction.
    #[error("{0}")]
    Reverted(RegistryRevert),
    #[error("transaction 0x{hash} failed on chain (it used {gas_used} gas) and re-running it does not revert now (the state changed meanwhile): look at the registry's state and try again")]
    TxFailed { hash: String, gas_used: u64 },
    #[error("transaction 0x{hash} was not mined after {attempts} polls: the fee may be too low or the chain stalled; check it with a block explorer before sending it again")]
    NotMined { hash: String, attempts: u32 },
    #[error("the deployment transaction 0x{hash} was mined but its receipt names no contract address: the chain node is broken; use another")]
    NoContractAddress { hash: String },
}
