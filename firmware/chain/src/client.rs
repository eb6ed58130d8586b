//! A blocking JSON-RPC client and the `NodeRegistry` client on top.
//!
//! Transactions are EIP-1559, signed here: nonce from
//! `eth_getTransactionCount(pending)`, both fees from `eth_gasPrice`, gas
//! from `eth_estimateGas` plus [`GAS_MARGIN_PERCENT`]; a revert in the
//! estimate (the usual case: the registry refuses before anything is
//! sent) or in a mined transaction (re-run with `eth_call`) comes back as
//! [`ClientError::Reverted`] with the registry's typed reason. Polling for
//! the receipt is the only waiting in this crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lockstep_limits::{TX_RECEIPT_POLL_ATTEMPTS, TX_RECEIPT_POLL_INTERVAL_MS};
use serde_json::{json, Value};

use crate::abi::{
    encode, encode_call, signatures as sig, Decoder, DisputeRecord, NodeRecord, ReceiptVerdict,
    RegistryRevert, Token,
};
use crate::address::Address;
use crate::eip712::{DisputeOutcome, Registration};
use crate::error::ClientError;
use crate::http::{post_json, HttpUrl};
use crate::key::{ChainKey, Signature65};
use crate::rpc::{self, RpcError};
use crate::tx::{tx_hash, Eip1559Tx};

/// Gas added to `eth_estimateGas`'s answer, in percent.
pub const GAS_MARGIN_PERCENT: u64 = 20;

/// A JSON-RPC endpoint (`Sync`: calls may come from several threads;
/// each is its own connection).
#[derive(Debug)]
pub struct RpcClient {
    url: HttpUrl,
    next_id: AtomicU64,
}

/// A log of a mined transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub address: Address,
    pub topics: Vec<[u8; 32]>,
    pub data: Vec<u8>,
}

/// What a mined transaction's receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    pub hash: [u8; 32],
    pub gas_used: u64,
    pub success: bool,
    pub block_number: u64,
    /// The created contract's address, for a deployment.
    pub contract_address: Option<Address>,
    pub logs: Vec<Log>,
}

impl RpcClient {
    /// A client for `url` (`http://host:port[/path]`); nothing is sent yet.
    pub fn new(url: &str) -> Result<RpcClient, ClientError> {
        Ok(RpcClient {
            url: HttpUrl::parse(url)?,
            next_id: AtomicU64::new(1),
        })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// One JSON-RPC call. An EVM revert becomes
    /// [`ClientError::Reverted`].
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = post_json(&self.url, &rpc::request(id, method, params))?;
        match rpc::parse_response(&body, id) {
            Ok(value) => Ok(value),
            Err(RpcError::Remote {
                revert: Some(data), ..
            }) => Err(ClientError::Reverted(RegistryRevert::decode(&data))),
            Err(e) => Err(e.into()),
        }
    }

    pub fn chain_id(&self) -> Result<u64, ClientError> {
        Ok(rpc::parse_u64(&self.call("eth_chainId", json!([]))?)?)
    }

    /// The next nonce of `address`, counting pending transactions.
    pub fn pending_nonce(&self, address: &Address) -> Result<u64, ClientError> {
        let value = self.call(
            "eth_getTransactionCount",
            json!([address.to_string(), "pending"]),
        )?;
        Ok(rpc::parse_u64(&value)?)
    }

    pub fn gas_price(&self) -> Result<u128, ClientError> {
        Ok(rpc::parse_quantity(&self.call("eth_gasPrice", json!([]))?)?)
    }

    fn call_object(from: Option<&Address>, to: Option<&Address>, data: &[u8]) -> Value {
        let mut object = json!({ "data": rpc::data(data) });
        if let Some(from) = from {
            object["from"] = json!(from.to_string());
        }
        if let Some(to) = to {
            object["to"] = json!(to.to_string());
        }
        object
    }

    /// `eth_estimateGas` of a call or a creation (`to` = `None`).
    pub fn estimate_gas(
        &self,
        from: Option<&Address>,
        to: Option<&Address>,
        data: &[u8],
    ) -> Result<u64, ClientError> {
        let value = self.call(
            "eth_estimateGas",
            json!([Self::call_object(from, to, data)]),
        )?;
        Ok(rpc::parse_u64(&value)?)
    }

    /// `eth_call` against the latest block.
    pub fn eth_call(
        &self,
        from: Option<&Address>,
        to: &Address,
        data: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let value = self.call(
            "eth_call",
            json!([Self::call_object(from, Some(to), data), "latest"]),
        )?;
        Ok(rpc::parse_data_value(&value)?)
    }

    /// The receipt of `hash`, `None` while it is not mined.
    pub fn receipt(&self, hash: &[u8; 32]) -> Result<Option<TxReceipt>, ClientError> {
        let value = self.call("eth_getTransactionReceipt", json!([rpc::data(hash)]))?;
        if value.is_null() {
            return Ok(None);
        }
        let field = |name: &str| {
            value.get(name).ok_or_else(|| RpcError::Malformed {
                reason: format!("a receipt without {name}"),
            })
        };
        let contract_address = match value.get("contractAddress") {
            None | Some(Value::Null) => None,
            Some(address) => Some(rpc::parse_address(address)?),
        };
        let mut logs = Vec::new();
        if let Some(Value::Array(items)) = value.get("logs") {
            for item in items {
                let get = |name: &str| {
                    item.get(name).ok_or_else(|| RpcError::Malformed {
                        reason: format!("a log without {name}"),
                    })
                };
                let topics = match get("topics")? {
                    Value::Array(topics) => topics
                        .iter()
                        .map(rpc::parse_bytes32)
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => {
                        return Err(RpcError::Malformed {
                            reason: "log topics are not a list".into(),
                        }
                        .into())
                    }
                };
                logs.push(Log {
                    address: rpc::parse_address(get("address")?)?,
                    topics,
                    data: rpc::parse_data_value(get("data")?)?,
                });
            }
        }
        Ok(Some(TxReceipt {
            hash: *hash,
            gas_used: rpc::parse_u64(field("gasUsed")?)?,
            success: rpc::parse_u64(field("status")?)? == 1,
            block_number: rpc::parse_u64(field("blockNumber")?)?,
            contract_address,
            logs,
        }))
    }

    /// Signs and sends a transaction from `key` to `to` (`None`: a
    /// creation) and waits for its receipt. A transaction that would
    /// revert is refused at the estimate, before anything is sent.
    pub fn send_transaction(
        &self,
        key: &ChainKey,
        chain_id: u64,
        to: Option<&Address>,
        data: Vec<u8>,
    ) -> Result<TxReceipt, ClientError> {
        let from = key.address();
        let estimate = self.estimate_gas(Some(&from), to, &data)?;
        let gas_limit = estimate.saturating_add(estimate.saturating_mul(GAS_MARGIN_PERCENT) / 100);
        let gas_price = self.gas_price()?;
        let nonce = self.pending_nonce(&from)?;
        let tx = Eip1559Tx {
            chain_id,
            nonce,
            max_priority_fee_per_gas: gas_price,
            max_fee_per_gas: gas_price,
            gas_limit,
            to: to.copied(),
            value: 0,
            data,
        };
        let raw = tx.sign(key);
        let hash = tx_hash(&raw);
        let answered = self.call("eth_sendRawTransaction", json!([rpc::data(&raw)]))?;
        if rpc::parse_bytes32(&answered)? != hash {
            return Err(RpcError::Malformed {
                reason: "eth_sendRawTransaction answered another transaction hash".into(),
            }
            .into());
        }
        let receipt = self.wait_for_receipt(&hash)?;
        if !receipt.success {
            if let Some(to) = to {
                if let Err(ClientError::Reverted(revert)) = self.eth_call(Some(&from), to, &tx.data)
                {
                    return Err(ClientError::Reverted(revert));
                }
            }
            return Err(ClientError::TxFailed {
                hash: hex::encode(hash),
                gas_used: receipt.gas_used,
            });
        }
        Ok(receipt)
    }

    /// Polls for the receipt of `hash` ([`TX_RECEIPT_POLL_ATTEMPTS`]
    /// times, [`TX_RECEIPT_POLL_INTERVAL_MS`] apart).
    pub fn wait_for_receipt(&self, hash: &[u8; 32]) -> Result<TxReceipt, ClientError> {
        for attempt in 0..TX_RECEIPT_POLL_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(TX_RECEIPT_POLL_INTERVAL_MS));
            }
            if let Some(receipt) = self.receipt(hash)? {
                return Ok(receipt);
            }
        }
        Err(ClientError::NotMined {
            hash: hex::encode(hash),
            attempts: TX_RECEIPT_POLL_ATTEMPTS,
        })
    }
}

/// A `NodeRegistry` at a known address on the chain behind an RPC URL.
#[derive(Debug)]
pub struct Registry {
    rpc: RpcClient,
    address: Address,
    chain_id: u64,
}

impl Registry {
    /// The registry at `address`, asking the node for its chain id.
    pub fn at(url: &str, address: Address) -> Result<Registry, ClientError> {
        let rpc = RpcClient::new(url)?;
        let chain_id = rpc.chain_id()?;
        Ok(Registry {
            rpc,
            address,
            chain_id,
        })
    }

    /// Deploys a registry from its creation `bytecode` with the initial
    /// trusted `referees`; `owner` pays and becomes the owner.
    pub fn deploy(
        url: &str,
        owner: &ChainKey,
        bytecode: &[u8],
        referees: &[Address],
    ) -> Result<(Registry, TxReceipt), ClientError> {
        let rpc = RpcClient::new(url)?;
        let chain_id = rpc.chain_id()?;
        let mut data = bytecode.to_vec();
        data.extend_from_slice(&encode(&[Token::AddressArray(referees.to_vec())]));
        let receipt = rpc.send_transaction(owner, chain_id, None, data)?;
        let address = receipt
            .contract_address
            .ok_or_else(|| ClientError::NoContractAddress {
                hash: hex::encode(receipt.hash),
            })?;
        Ok((
            Registry {
                rpc,
                address,
                chain_id,
            },
            receipt,
        ))
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    fn transact(&self, key: &ChainKey, data: Vec<u8>) -> Result<TxReceipt, ClientError> {
        self.rpc
            .send_transaction(key, self.chain_id, Some(&self.address), data)
    }

    fn view(&self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.rpc.eth_call(None, &self.address, data)
    }

    fn view_word(&self, data: &[u8]) -> Result<[u8; 32], ClientError> {
        Ok(Decoder::new(&self.view(data)?).bytes32(0)?)
    }

    /// Registers a node, sent by `operator` (the contract takes the
    /// operator from the sender: a registration signed for another
    /// operator is refused with `NodeSignatureInvalid`).
    pub fn register(
        &self,
        operator: &ChainKey,
        registration: &Registration,
        node_signature: &Signature65,
        device_signature: &[u8],
    ) -> Result<TxReceipt, ClientError> {
        self.transact(
            operator,
            register_call(registration, node_signature, device_signature),
        )
    }

    /// Revokes a node (only its operator may).
    pub fn revoke(
        &self,
        operator: &ChainKey,
        node_id: &[u8; 32],
    ) -> Result<TxReceipt, ClientError> {
        self.transact(
            operator,
            encode_call(sig::REVOKE, &[Token::FixedBytes(*node_id)]),
        )
    }

    /// Trusts or distrusts a referee (only the owner may).
    pub fn set_referee(
        &self,
        owner: &ChainKey,
        referee: &Address,
        trusted: bool,
    ) -> Result<TxReceipt, ClientError> {
        self.transact(
            owner,
            encode_call(
                sig::SET_REFEREE,
                &[Token::Address(*referee), Token::Bool(trusted)],
            ),
        )
    }

    /// Records a referee's signed verdict, sent by anyone (`sender`
    /// pays); returns the dispute id (the verdict's EIP-712 digest).
    pub fn record_dispute(
        &self,
        sender: &ChainKey,
        dispute: &DisputeOutcome,
        referee_signature: &Signature65,
    ) -> Result<([u8; 32], TxReceipt), ClientError> {
        let data = encode_call(
            sig::RECORD_DISPUTE,
            &[
                Token::FixedBytes(dispute.node_id),
                Token::FixedBytes(dispute.receipt_digest),
                Token::Uint(dispute.outcome.code().into()),
                Token::FixedBytes(dispute.details_hash),
                Token::Bytes(referee_signature.0.to_vec()),
            ],
        );
        let receipt = self.transact(sender, data)?;
        Ok((dispute.digest(self.chain_id, self.address), receipt))
    }

    pub fn owner(&self) -> Result<Address, ClientError> {
        Ok(Decoder::new(&self.view(&encode_call(sig::OWNER, &[]))?).address(0)?)
    }

    pub fn is_referee(&self, account: &Address) -> Result<bool, ClientError> {
        let data = self.view(&encode_call(sig::IS_REFEREE, &[Token::Address(*account)]))?;
        Ok(Decoder::new(&data).boolean(0)?)
    }

    pub fn get_node(&self, node_id: &[u8; 32]) -> Result<NodeRecord, ClientError> {
        let data = self.view(&encode_call(sig::GET_NODE, &[Token::FixedBytes(*node_id)]))?;
        Ok(NodeRecord::decode(&data)?)
    }

    pub fn node_id_of(&self, node_address: &Address) -> Result<[u8; 32], ClientError> {
        self.view_word(&encode_call(
            sig::NODE_ID_OF,
            &[Token::Address(*node_address)],
        ))
    }

    pub fn verify_receipt(
        &self,
        receipt_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<ReceiptVerdict, ClientError> {
        let data = self.view(&verify_receipt_call(receipt_digest, signature))?;
        Ok(ReceiptVerdict::decode(&data)?)
    }

    /// `eth_estimateGas` of a `verifyReceipt` call (what a contract
    /// calling it pays, plus the 21000 of a transaction).
    pub fn estimate_verify_receipt(
        &self,
        receipt_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<u64, ClientError> {
        self.rpc.estimate_gas(
            None,
            Some(&self.address),
            &verify_receipt_call(receipt_digest, signature),
        )
    }

    pub fn get_dispute(&self, dispute_id: &[u8; 32]) -> Result<DisputeRecord, ClientError> {
        let data = self.view(&encode_call(
            sig::GET_DISPUTE,
            &[Token::FixedBytes(*dispute_id)],
        ))?;
        Ok(DisputeRecord::decode(&data)?)
    }

    pub fn fault_count(&self, node_id: &[u8; 32]) -> Result<u128, ClientError> {
        let data = self.view(&encode_call(
            sig::FAULT_COUNT,
            &[Token::FixedBytes(*node_id)],
        ))?;
        Ok(Decoder::new(&data).uint128(0)?)
    }

    pub fn cleared_count(&self, node_id: &[u8; 32]) -> Result<u128, ClientError> {
        let data = self.view(&encode_call(
            sig::CLEARED_COUNT,
            &[Token::FixedBytes(*node_id)],
        ))?;
        Ok(Decoder::new(&data).uint128(0)?)
    }

    /// The contract's own registration digest (to check against
    /// [`Registration::digest`]).
    pub fn registration_digest(&self, r: &Registration) -> Result<[u8; 32], ClientError> {
        self.view_word(&encode_call(
            sig::REGISTRATION_DIGEST,
            &[
                Token::Address(r.operator),
                Token::FixedBytes(r.node_id),
                Token::Address(r.node_address),
                Token::Uint(r.key_protection.code().into()),
                Token::FixedBytes(r.attestation_digest),
                Token::FixedBytes(r.certification_report_hash),
                Token::FixedBytes(r.bundle_id),
            ],
        ))
    }

    pub fn receipt_typed_digest(&self, receipt_digest: &[u8; 32]) -> Result<[u8; 32], ClientError> {
        self.view_word(&encode_call(
            sig::RECEIPT_TYPED_DIGEST,
            &[Token::FixedBytes(*receipt_digest)],
        ))
    }

    pub fn dispute_digest(&self, d: &DisputeOutcome) -> Result<[u8; 32], ClientError> {
        self.view_word(&encode_call(
            sig::DISPUTE_DIGEST,
            &[
                Token::FixedBytes(d.node_id),
                Token::FixedBytes(d.receipt_digest),
                Token::Uint(d.outcome.code().into()),
                Token::FixedBytes(d.details_hash),
            ],
        ))
    }

    pub fn domain_separator(&self) -> Result<[u8; 32], ClientError> {
        self.view_word(&encode_call(sig::DOMAIN_SEPARATOR, &[]))
    }
}

/// `register`'s calldata.
pub fn register_call(
    r: &Registration,
    node_signature: &Signature65,
    device_signature: &[u8],
) -> Vec<u8> {
    encode_call(
        sig::REGISTER,
        &[
            Token::FixedBytes(r.node_id),
            Token::Address(r.node_address),
            Token::Uint(r.key_protection.code().into()),
            Token::FixedBytes(r.attestation_digest),
            Token::FixedBytes(r.certification_report_hash),
            Token::FixedBytes(r.bundle_id),
            Token::Bytes(node_signature.0.to_vec()),
            Token::Bytes(device_signature.to_vec()),
        ],
    )
}

/// `verifyReceipt`'s calldata.
pub fn verify_receipt_call(receipt_digest: &[u8; 32], signature: &[u8]) -> Vec<u8> {
    encode_call(
        sig::VERIFY_RECEIPT,
        &[
            Token::FixedBytes(*receipt_digest),
            Token::Bytes(signature.to_vec()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eip712::KeyProtection;

    #[test]
    fn register_calldata_layout() {
        let registration = Registration {
            operator: Address([1; 20]),
            node_id: [2; 32],
            node_address: Address([3; 20]),
            key_protection: KeyProtection::TpmSealed,
            attestation_digest: [4; 32],
            certification_report_hash: [5; 32],
            bundle_id: [6; 32],
        };
        let data = register_call(&registration, &Signature65([7; 65]), &[8; 64]);
        assert_eq!(data[..4], crate::abi::selector(sig::REGISTER));
        let d = Decoder::new(&data[4..]);
        assert_eq!(d.bytes(6).unwrap(), &[7; 65][..]);
        assert_eq!(d.bytes(7).unwrap(), &[8; 64][..]);
        assert_eq!(d.uint8(2).unwrap(), 1);
        // 8 heads, 65 bytes padded to 96 with its length word, 64 with its.
        assert_eq!(data.len(), 4 + 8 * 32 + 32 + 96 + 32 + 64);
    }

    /// A JSON-RPC server on 127.0.0.1 that answers each method with
    /// `answer(method, params)` (a `result` or an `error` object), one
    /// connection per request, until the test ends.
    fn fake_node(answer: fn(&str, &Value) -> Value) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let mut socket = socket.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = socket.read(&mut buf).unwrap();
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= length {
                            break body.to_string();
                        }
                    }
                };
                let request: Value = serde_json::from_str(&body).unwrap();
                let mut response = json!({"jsonrpc": "2.0", "id": request["id"]});
                let answer = answer(request["method"].as_str().unwrap(), &request["params"]);
                match answer.get("error") {
                    Some(error) => response["error"] = error.clone(),
                    None => response["result"] = answer["result"].clone(),
                }
                let text = response.to_string();
                let _ = write!(
                    socket,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        url
    }

    fn failing_node(method: &str, params: &Value) -> Value {
        match method {
            "eth_chainId" => json!({"result": "0x539"}),
            "eth_estimateGas" => json!({"result": "0x5208"}),
            "eth_gasPrice" => json!({"result": "0x1"}),
            "eth_getTransactionCount" => json!({"result": "0x0"}),
            "eth_sendRawTransaction" => {
                let raw = rpc::parse_data_value(&params[0]).unwrap();
                json!({"result": rpc::data(&tx_hash(&raw))})
            }
            "eth_getTransactionReceipt" => json!({"result": {
                "status": "0x0", "gasUsed": "0x5000", "blockNumber": "0x2",
                "contractAddress": null, "logs": [],
            }}),
            "eth_call" => {
                let revert = RegistryRevert::NotOperator {
                    node_id: [1; 32],
                    caller: Address([2; 20]),
                };
                json!({"error": {"code": -32000, "message": "VM Exception while processing transaction: revert",
                    "data": {"result": rpc::data(&revert.encode())}}})
            }
            other => panic!("unexpected {other}"),
        }
    }

    fn silently_failing_node(method: &str, params: &Value) -> Value {
        match method {
            "eth_call" => json!({"result": "0x"}),
            _ => failing_node(method, params),
        }
    }

    #[test]
    fn a_transaction_that_fails_on_chain_is_explained_by_eth_call() {
        let key = ChainKey::generate([3; 32]).unwrap();
        let registry = Registry::at(&fake_node(failing_node), Address([9; 20])).unwrap();
        assert_eq!(registry.chain_id(), 1337);
        assert_eq!(
            registry.revoke(&key, &[1; 32]).unwrap_err(),
            ClientError::Reverted(RegistryRevert::NotOperator {
                node_id: [1; 32],
                caller: Address([2; 20])
            })
        );
        let registry = Registry::at(&fake_node(silently_failing_node), Address([9; 20])).unwrap();
        assert!(matches!(
            registry.revoke(&key, &[1; 32]),
            Err(ClientError::TxFailed {
                gas_used: 0x5000,
                ..
            })
        ));
    }

    #[test]
    fn clients_are_shareable() {
        fn sync<T: Send + Sync>() {}
        sync::<RpcClient>();
        sync::<Registry>();
    }

    #[test]
    fn a_malformed_url_is_bad_input() {
        assert!(matches!(
            RpcClient::new("localhost:8545"),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            Registry::at("https://example.org", Address::ZERO),
            Err(ClientError::UnsupportedScheme { .. })
        ));
    }
}
