//! JSON-RPC 2.0 framing, sans-IO: requests to bytes, bounded response
//! parsing, revert data out of an error, and the `0x` hex forms of
//! quantities and data.

use lockstep_limits::MAX_RPC_RESPONSE_BYTES;
use serde_json::{json, Value};

use crate::address::Address;

/// Why a JSON-RPC response is refused, or the error it carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    #[error("the chain node's response is {bytes} bytes, over the {max}-byte bound: it is not a JSON-RPC answer to this client's requests; check the RPC URL")]
    TooLarge { bytes: usize, max: usize },
    #[error("the chain node's response is not valid JSON-RPC ({reason}); check that the RPC URL is an Ethereum JSON-RPC endpoint")]
    Malformed { reason: String },
    #[error("the chain node answered request {found} instead of {expected}: it is confused or not an Ethereum JSON-RPC endpoint; check the RPC URL")]
    IdMismatch { expected: u64, found: String },
    /// The node's `error` object. `revert` holds the revert data when the
    /// error is an EVM revert (possibly empty).
    #[error("the chain node refused the request: {message} (JSON-RPC error {code})")]
    Remote {
        code: i64,
        message: String,
        revert: Option<Vec<u8>>,
    },
}

fn malformed(reason: impl Into<String>) -> RpcError {
    RpcError::Malformed {
        reason: reason.into(),
    }
}

/// A JSON-RPC 2.0 request's bytes.
pub fn request(id: u64, method: &str, params: Value) -> Vec<u8> {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
        .to_string()
        .into_bytes()
}

/// The `result` of the response to request `id`, or its error.
pub fn parse_response(body: &[u8], id: u64) -> Result<Value, RpcError> {
    if body.len() > MAX_RPC_RESPONSE_BYTES {
        return Err(RpcError::TooLarge {
            bytes: body.len(),
            max: MAX_RPC_RESPONSE_BYTES,
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(malformed(
            "not a JSON object (a batch answer to a single request?)",
        ));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(malformed("no \"jsonrpc\": \"2.0\""));
    }
    match object.get("id") {
        Some(Value::Number(n)) if n.as_u64() == Some(id) => {}
        // Some nodes answer a request they could not parse with a null id.
        Some(Value::Null) if object.contains_key("error") => {}
        other => {
            return Err(RpcError::IdMismatch {
                expected: id,
                found: other.map_or("none".to_string(), |v| {
                    let text = v.to_string();
                    text.chars().take(40).collect()
                }),
            })
        }
    }
    if let Some(error) = object.remove("error") {
        let code = error
            .get("code")
            .and_then(Value::as_i64)
            .ok_or_else(|| malformed("an error without an integer code"))?;
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(500)
            .collect::<String>();
        let mut revert = error.get("data").and_then(revert_data);
        if revert.is_none() && message.to_ascii_lowercase().contains("revert") {
            revert = Some(Vec::new());
        }
        return Err(RpcError::Remote {
            code,
            message,
            revert,
        });
    }
    object
        .remove("result")
        .ok_or_else(|| malformed("neither result nor error"))
}

/// Revert bytes from an error's `data`: a `0x` hex string, or an object
/// holding one under `data`, `result` or `return` (ganache's forms), at
/// most two levels down.
pub fn revert_data(data: &Value) -> Option<Vec<u8>> {
    fn find(value: &Value, depth: usize) -> Option<Vec<u8>> {
        match value {
            Value::String(text) => parse_data(text).ok(),
            Value::Object(object) if depth < 2 => ["data", "result", "return"]
                .iter()
                .find_map(|key| object.get(*key).and_then(|v| find(v, depth + 1))),
            _ => None,
        }
    }
    find(data, 0)
}

/// A quantity: `0x` and minimal hex digits (`0x0` for zero).
pub fn quantity(value: u128) -> String {
    format!("{value:#x}")
}

/// Parses a quantity (`0x` and 1 to 32 hex digits).
pub fn parse_quantity(value: &Value) -> Result<u128, RpcError> {
    let text = value
        .as_str()
        .ok_or_else(|| malformed(format!("expected a hex quantity, got {}", short(value))))?;
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| malformed(format!("quantity {text:?} lacks 0x")))?;
    if digits.is_empty() || digits.len() > 32 {
        return Err(malformed(format!(
            "quantity {:?} has a bad length",
            short(value)
        )));
    }
    u128::from_str_radix(digits, 16).map_err(|_| malformed(format!("quantity {text:?} is not hex")))
}

/// A quantity that must fit a `u64` (nonces, gas, block numbers, chain ids).
pub fn parse_u64(value: &Value) -> Result<u64, RpcError> {
    let wide = parse_quantity(value)?;
    u64::try_from(wide).map_err(|_| malformed(format!("quantity {wide} is over 2^64")))
}

/// Data: `0x` and the hex of `bytes`.
pub fn data(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Parses data (`0x` and an even number of hex digits).
pub fn parse_data(text: &str) -> Result<Vec<u8>, RpcError> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| malformed("data lacks 0x"))?;
    hex::decode(digits).map_err(|_| malformed("data is not an even number of hex digits"))
}

/// Parses a JSON string holding data.
pub fn parse_data_value(value: &Value) -> Result<Vec<u8>, RpcError> {
    parse_data(
        value
            .as_str()
            .ok_or_else(|| malformed(format!("expected hex data, got {}", short(value))))?,
    )
}

/// Parses 32 bytes of data (hashes).
pub fn parse_bytes32(value: &Value) -> Result<[u8; 32], RpcError> {
    parse_data_value(value)?
        .try_into()
        .map_err(|_| malformed("expected 32 bytes"))
}

/// Parses an address (checksum not required from a node).
pub fn parse_address(value: &Value) -> Result<Address, RpcError> {
    let bytes: [u8; 20] = parse_data_value(value)?
        .try_into()
        .map_err(|_| malformed("expected a 20-byte address"))?;
    Ok(Address(bytes))
}

fn short(value: &Value) -> String {
    value.to_string().chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_shape() {
        let bytes = request(7, "eth_chainId", json!([]));
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []})
        );
    }

    #[test]
    fn results_and_errors() {
        assert_eq!(
            parse_response(br#"{"jsonrpc":"2.0","id":3,"result":"0x539"}"#, 3).unwrap(),
            json!("0x539")
        );
        assert!(matches!(
            parse_response(br#"{"jsonrpc":"2.0","id":4,"result":"0x539"}"#, 3),
            Err(RpcError::IdMismatch { .. })
        ));
        assert!(matches!(
            parse_response(b"<html>", 3),
            Err(RpcError::Malformed { .. })
        ));
        assert!(matches!(
            parse_response(b"[]", 3),
            Err(RpcError::Malformed { .. })
        ));
        assert!(matches!(
            parse_response(br#"{"jsonrpc":"2.0","id":3}"#, 3),
            Err(RpcError::Malformed { .. })
        ));
        assert!(matches!(
            parse_response(&vec![b' '; MAX_RPC_RESPONSE_BYTES + 1], 3),
            Err(RpcError::TooLarge { .. })
        ));
        // Ganache's forms of revert data.
        let direct = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"VM Exception while processing transaction: revert","data":"0x08c379a0"}}"#;
        let nested = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"VM Exception","data":{"hash":null,"result":"0x08c379a0","reason":null}}}"#;
        for body in [&direct[..], &nested[..]] {
            assert_eq!(
                parse_response(body, 3).unwrap_err(),
                RpcError::Remote {
                    code: -32000,
                    message: if body == direct {
                        "VM Exception while processing transaction: revert".into()
                    } else {
                        "VM Exception".into()
                    },
                    revert: Some(vec![0x08, 0xc3, 0x79, 0xa0]),
                }
            );
        }
        let bare = br#"{"jsonrpc":"2.0","id":3,"error":{"code":3,"message":"execution reverted"}}"#;
        assert!(
            matches!(parse_response(bare, 3), Err(RpcError::Remote { revert: Some(ref r), .. }) if r.is_empty())
        );
        let other =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#;
        assert!(matches!(
            parse_response(other, 3),
            Err(RpcError::Remote { revert: None, .. })
        ));
    }

    #[test]
    fn hex_forms() {
        assert_eq!(quantity(0), "0x0");
        assert_eq!(quantity(1337), "0x539");
        assert_eq!(parse_quantity(&json!("0x539")).unwrap(), 1337);
        assert!(parse_quantity(&json!("0x")).is_err());
        assert!(parse_quantity(&json!("539")).is_err());
        assert!(parse_quantity(&json!(1337)).is_err());
        assert!(parse_u64(&json!("0x10000000000000000")).is_err());
        assert_eq!(data(&[1, 0xab]), "0x01ab");
        assert!(parse_data("0x1").is_err());
        assert_eq!(parse_data("0x").unwrap(), Vec::<u8>::new());
    }

    proptest! {
        #[test]
        fn quantity_round_trip(value in any::<u128>()) {
            prop_assert_eq!(parse_quantity(&json!(quantity(value))).unwrap(), value);
        }

        #[test]
        fn data_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(parse_data(&data(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_response(&body, 1);
        }
    }
}
