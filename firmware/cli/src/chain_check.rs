//! `lockstep verify-receipt … --chain RPC_URL --registry ADDR`: after both
//! signatures verified, ask the `NodeRegistry` whether the receipt's chain
//! signer is a registered node, that node is the receipt's, and it was not
//! revoked when the receipt was made.

use std::time::{Duration, UNIX_EPOCH};

use lockstep_chain::client::Registry;
use lockstep_chain::{Address, ClientError};
use lockstep_protocol::receipt::parse_rfc3339;
use lockstep_protocol::rfc3339;

use crate::failure::Failure;
use crate::submit::Verified;

/// `--chain` and `--registry`, checked: both or neither.
pub struct ChainOptions {
    pub url: String,
    pub registry: Address,
}

impl ChainOptions {
    pub fn parse(
        chain: Option<&str>,
        registry: Option<&str>,
    ) -> Result<Option<ChainOptions>, Failure> {
        match (chain, registry) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(Failure::Input(
                "--chain needs --registry ADDR (the NodeRegistry's address)".into(),
            )),
            (None, Some(_)) => Err(Failure::Input(
                "--registry needs --chain RPC_URL (the chain node's http:// JSON-RPC URL)".into(),
            )),
            (Some(url), Some(registry)) => Ok(Some(ChainOptions {
                url: url.to_string(),
                registry: Address::parse(registry)
                    .map_err(|e| Failure::Input(format!("--registry: {e}")))?,
            })),
        }
    }
}

/// A bad URL is the caller's; anything else (down, unreachable, not an
/// RPC endpoint, an answer that does not decode) is the machine's.
fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::BadUrl { .. } | ClientError::UnsupportedScheme { .. } => {
            Failure::Input(format!("--chain: {e}"))
        }
        other => Failure::Runtime(other.to_string()),
    }
}

fn time(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Asks the registry about a verified receipt; `Ok` is the one line to
/// print, `Err(Input)` a receipt the registry does not vouch for.
pub(crate) fn check(
    verified: &Verified,
    options: &ChainOptions,
    shown: &str,
) -> Result<String, Failure> {
    let receipt = &verified.receipt;
    let Some((address, signature)) = &verified.chain else {
        return Err(Failure::Input(format!(
            "{shown}: a format {} receipt has no chain signature, so the registry cannot vouch for it; --chain checks format 3 receipts",
            receipt.format
        )));
    };
    let finished = parse_rfc3339(&receipt.finished_at).ok_or_else(|| {
        Failure::Input(format!(
            "{shown}: finished_at {:?} is not an RFC 3339 UTC time",
            receipt.finished_at
        ))
    })?;
    let node = lockstep_identity::NodeId::parse(&receipt.node)
        .map_err(|e| Failure::Input(format!("{shown}: the receipt's node: {e}")))?;
    let registry = Registry::at(&options.url, options.registry).map_err(failure)?;
    let verdict = registry
        .verify_receipt(&receipt.digest(), &signature.0)
        .map_err(failure)?;
    let where_ = format!(
        "registry {} on chain {}",
        options.registry,
        registry.chain_id()
    );
    if verdict.registered_at == 0 || verdict.node_id == [0; 32] {
        return Err(Failure::Input(format!(
            "{shown}: its chain signer {address} is not a node registered in {where_}: not vouched for"
        )));
    }
    if verdict.node_id != node.public_key_bytes() {
        return Err(Failure::Input(format!(
            "{shown}: its chain signer {address} is registered in {where_} for node 0x{}, not for the receipt's node {}: refused",
            hex::encode(verdict.node_id),
            receipt.node
        )));
    }
    let registered = if verdict.registered_at > finished {
        format!(
            "registered at {}, after this receipt ({})",
            time(verdict.registered_at),
            receipt.finished_at
        )
    } else {
        format!("registered at {}", time(verdict.registered_at))
    };
    match verdict.revoked_at {
        0 => Ok(format!(
            "chain: node {address} {registered} in {where_}, not revoked"
        )),
        revoked if revoked <= finished => Err(Failure::Input(format!(
            "{shown}: from a revoked node: {address} was revoked in {where_} at {}, at or before this receipt ({})",
            time(revoked),
            receipt.finished_at
        ))),
        revoked => Ok(format!(
            "chain: node {address} {registered} in {where_}; revoked at {}, after this receipt ({})",
            time(revoked),
            receipt.finished_at
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_registry_come_together() {
        assert!(ChainOptions::parse(None, None).unwrap().is_none());
        assert!(matches!(
            ChainOptions::parse(Some("http://127.0.0.1:1"), None),
            Err(Failure::Input(_))
        ));
        assert!(matches!(
            ChainOptions::parse(None, Some("0x5FbDB2315678afecb367f032d93F642f64180aa3")),
            Err(Failure::Input(_))
        ));
        assert!(matches!(
            ChainOptions::parse(Some("http://127.0.0.1:1"), Some("0x12")),
            Err(Failure::Input(_))
        ));
        assert!(ChainOptions::parse(
            Some("http://127.0.0.1:1"),
            Some("0x5FbDB2315678afecb367f032d93F642f64180aa3")
        )
        .unwrap()
        .is_some());
    }
}
