//! `lockstep verify-receipt --fleet FLEET`: the receipt's signature as
//! usual, plus what the fleet's inventory says about the node that signed
//! it: unknown to the fleet, or revoked (and whether the receipt was signed
//! after the revocation).

use std::path::{Path, PathBuf};

use lockstep_fleet::inventory::Inventory;

use crate::failure::Failure;

pub fn verify_receipt(
    receipt: &Path,
    node_key: Option<&str>,
    fleet: Option<&Path>,
    outputs: &[PathBuf],
    chain: Option<&crate::chain_check::ChainOptions>,
) -> Result<(), Failure> {
    let on_chain = |verified: crate::submit::Verified| -> Result<(), Failure> {
        if let Some(options) = chain {
            let shown = receipt.display().to_string();
            println!("{}", crate::chain_check::check(&verified, options, &shown)?);
        }
        Ok(())
    };
    let Some(fleet) = fleet else {
        let key = node_key.ok_or_else(|| {
            Failure::Input(
                "give --node-key KEY, or --fleet FLEET to take the node from the fleet's inventory"
                    .into(),
            )
        })?;
        return on_chain(crate::submit::verify_receipt_files(receipt, key, outputs)?);
    };
    let bytes = std::fs::read(receipt)
        .map_err(|e| Failure::Input(format!("{}: {e}", receipt.display())))?;
    let fields: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Input(format!("{}: not a receipt: {e}", receipt.display())))?;
    let node = fields["node"].as_str().ok_or_else(|| {
        Failure::Input(format!("{}: the receipt names no node", receipt.display()))
    })?;
    let finished = fields["finished_at"].as_str().unwrap_or("");
    if let Some(key) = node_key {
        if key.trim() != node {
            return Err(Failure::Input(format!(
                "{}: signed by node {node}, not the given --node-key",
                receipt.display()
            )));
        }
    }
    let inventory = Inventory::open(fleet).map_err(|e| Failure::Input(e.to_string()))?;
    let record = inventory
        .get(node)
        .map_err(|e| Failure::Runtime(e.to_string()))?
        .ok_or_else(|| {
            Failure::Input(format!(
                "{}: node {node} is unknown to the fleet at {}: not trusted",
                receipt.display(),
                fleet.display()
            ))
        })?;
    let verified = crate::submit::verify_receipt_files(receipt, node, outputs)?;
    match record.revoked_at {
        // RFC 3339 UTC strings of one format compare in time order.
        Some(revoked) if finished >= revoked.as_str() => Err(Failure::Input(format!(
            "{}: from a revoked node: {node} was revoked at {revoked}, the receipt was signed at {finished}",
            receipt.display()
        ))),
        Some(revoked) => {
            println!(
                "note: node {node} was revoked at {revoked}, after this receipt ({finished})"
            );
            on_chain(verified)
        }
        None => {
            println!("node {node} is enrolled in the fleet (since {})", record.enrolled_at);
            on_chain(verified)
        }
    }
}
