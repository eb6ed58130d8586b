#![no_main]
//! Arbitrary bytes as what a chain node sends back: an HTTP response
//! (complete or cut short) and a JSON-RPC response body, with the revert
//! data an error carries decoded as the registry's errors. None may
//! panic; each is a value or a typed error.

use libfuzzer_sys::fuzz_target;
use lockstep_chain::abi::RegistryRevert;
use lockstep_chain::http;
use lockstep_chain::rpc::{self, RpcError};

fuzz_target!(|data: &[u8]| {
    let _ = http::parse_response(data, false);
    let _ = http::parse_response(data, true);
    if let Err(RpcError::Remote {
        revert: Some(revert),
        ..
    }) = rpc::parse_response(data, 1)
    {
        let _ = RegistryRevert::decode(&revert).to_string();
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = rpc::parse_quantity(&value);
        let _ = rpc::parse_bytes32(&value);
        let _ = rpc::revert_data(&value);
    }
});
