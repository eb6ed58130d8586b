//! `lockstep keygen` (a submitter's key) and `lockstep permit` (the
//! submitter's permission for named nodes to fetch a job's outputs,
//! written as reference files).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lockstep_identity::{NodeId, SigningKey};
use lockstep_limits::MAX_PERMISSION_VALIDITY_S;
use lockstep_protocol::{Permission, Receipt, TensorReference};

use crate::evidence::{parse_key, read_signing_key_flag};
use crate::failure::Failure;

pub fn keygen(out: &Path) -> Result<(), Failure> {
    let pub_path = crate::submit::sibling(out, ".pub");
    for p in [out, pub_path.as_path()] {
        if p.exists() {
            return Err(Failure::Input(format!(
                "{}: already exists; not overwriting a key",
                p.display()
            )));
        }
    }
    let key = SigningKey::generate();
    key.write_file(out, None)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", out.display())))?;
    std::fs::write(&pub_path, key.public_key_file())
        .map_err(|e| Failure::Runtime(format!("{}: {e}", pub_path.display())))?;
    println!("{}", key.public().to_base64());
    Ok(())
}

#[derive(clap::Args)]
pub struct PermitArgs {
    /// The producing job's signed receipt (R.json.minisig beside it).
    #[arg(value_name = "R.json")]
    receipt: PathBuf,
    /// A node allowed to fetch the outputs (its node id); repeatable.
    #[arg(long = "consumer", value_name = "KEY", required = true)]
    consumers: Vec<String>,
    /// The submitter's secret key (`lockstep keygen`), the one the job was
    /// submitted with.
    #[arg(long, value_name = "KEY")]
    submitter_key: PathBuf,
    /// The outputs to permit (default: every output of the receipt).
    #[arg(long = "output", value_name = "NAME")]
    outputs: Vec<String>,
    /// The producer's address, as consumers reach it.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Take the producer's address from this fleet's inventory.
    #[arg(long, value_name = "FLEET")]
    fleet: Option<PathBuf>,
    /// Also require the receipt to be signed by this node.
    #[arg(long, value_name = "KEY")]
    node_key: Option<String>,
    /// How long the permission is valid.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    expires_in: u64,
    /// Where the reference files (NAME.ref.json) go.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// Reads `R.json` and its signature, verified under the node it names
/// (and `node_key`, if given). A signature that does not verify is a
/// verification failure (exit 1); an unreadable file is exit 2.
pub fn read_named_receipt(
    path: &Path,
    node_key: Option<&str>,
) -> Result<(Receipt, Vec<u8>, String, NodeId), Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    let fields: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Input(format!("{}: not a receipt: {e}", path.display())))?;
    let node = fields["node"]
        .as_str()
        .ok_or_else(|| Failure::Input(format!("{}: the receipt names no node", path.display())))?;
    let node = parse_key(&format!("{}: its node", path.display()), node)?;
    if let Some(k) = node_key {
        let k = parse_key("--node-key", k)?;
        if k != node {
            return Err(Failure::Runtime(format!(
                "{}: signed by node {node}, not the given --node-key",
                path.display()
            )));
        }
    }
    let sig_path = crate::submit::sibling(path, ".minisig");
    let signature = std::fs::read_to_string(&sig_path)
        .map_err(|e| Failure::Input(format!("{}: {e}", sig_path.display())))?;
    let receipt = Receipt::verify(&bytes, &signature, &node).map_err(|e| {
        Failure::Runtime(format!(
            "{}: does not verify under node {node}: {e}",
            path.display()
        ))
    })?;
    Ok((receipt, bytes, signature, node))
}

/// The address of `node` in the fleet's inventory.
pub fn fleet_address(fleet: &Path, node: &str) -> Result<Option<String>, Failure> {
    let inventory = lockstep_fleet::inventory::Inventory::open(fleet)
        .map_err(|e| Failure::Input(format!("--fleet {}: {e}", fleet.display())))?;
    let record = inventory
        .get(node)
        .map_err(|e| Failure::Runtime(format!("--fleet {}: {e}", fleet.display())))?;
    Ok(record.map(|r| r.address))
}

pub fn permit(args: &PermitArgs) -> Result<(), Failure> {
    let consumers: Vec<NodeId> = args
        .consumers
        .iter()
        .map(|c| parse_key("--consumer", c))
        .collect::<Result<_, _>>()?;
    if args.expires_in == 0 || args.expires_in > MAX_PERMISSION_VALIDITY_S {
        return Err(Failure::Input(format!(
            "--expires-in {}: give 1 to {MAX_PERMISSION_VALIDITY_S} seconds",
            args.expires_in
        )));
    }
    let (receipt, bytes, signature, node) =
        read_named_receipt(&args.receipt, args.node_key.as_deref())?;
    let address = match (&args.address, &args.fleet) {
        (Some(a), _) => a.clone(),
        (None, Some(fleet)) => fleet_address(fleet, &node.to_base64())?.ok_or_else(|| {
            Failure::Input(format!(
                "node {node} is unknown to the fleet at {}; give --address HOST:PORT",
                fleet.display()
            ))
        })?,
        (None, None) => {
            return Err(Failure::Input(
                "give the producer's address: --address HOST:PORT, or --fleet FLEET to take it from the inventory".into(),
            ))
        }
    };
    if address.parse::<std::net::SocketAddr>().is_err() {
        return Err(Failure::Input(format!(
            "producer address {address:?} is not IP:PORT"
        )));
    }
    let key = read_signing_key_flag(&args.submitter_key, "--submitter-key")?;
    let outputs: Vec<String> = if args.outputs.is_empty() {
        receipt.outputs.keys().cloned().collect()
    } else {
        args.outputs.clone()
    };
    let job_id = crate::evidence::job_id(&receipt)?;
    let expires_at = SystemTime::now() + Duration::from_secs(args.expires_in);
    let mut references = Vec::new();
    for output in &outputs {
        let permission = Permission::grant(&key, &receipt, output, &consumers, expires_at)
            .map_err(|e| Failure::Input(format!("output '{output}': {e}")))?;
        let sha256 = crate::verify::hex32(&receipt.outputs[output])?;
        references.push(TensorReference {
            input: output.clone(),
            producer: node.to_base64(),
            address: address.clone(),
            job_id,
            output: output.clone(),
            sha256,
            receipt: bytes.clone(),
            signature: signature.clone(),
            permission,
        });
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", args.out_dir.display())))?;
    let expires = lockstep_protocol::rfc3339(expires_at);
    for r in &references {
        let path = args.out_dir.join(format!("{}.ref.json", r.output));
        crate::reference_file::write(&path, r)?;
        println!(
            "wrote {} (output {} of job {}, for {} consumer(s), expires {expires})",
            path.display(),
            r.output,
            receipt.job_id,
            consumers.len()
        );
    }
    Ok(())
}
