//! `lockstep attest`: ask a node to prove that its key is kept by a
//! genuine TPM on a machine that booted an accepted image release, and
//! verify the answer (lockstep-attest); or verify a saved transcript again,
//! offline.
//!
//! Exit codes: 0 attested; 2 the answer is no (the attestation is refused:
//! the quote does not verify, the EK chain is untrusted, the measurements
//! are not an accepted release; or the node cannot attest: no TPM, a file
//! key) or bad input (files, flags), as for a receipt that does not
//! verify; 1 no answer could be had (network, a busy node, the node's TPM
//! failing).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lockstep_fleet::attest::{self, AttestFailure, Transcript};
use lockstep_identity::NodeId;

use crate::failure::Failure;

#[derive(clap::Args)]
pub struct AttestArgs {
    /// The node's address (UDP).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        required_unless_present = "check_transcript"
    )]
    node: Option<SocketAddr>,
    /// The node id to pin (its minisign public key).
    #[arg(long, value_name = "KEY", required_unless_present = "check_transcript")]
    node_key: Option<String>,
    /// PEM file of the TPM manufacturers' EK root (and intermediate)
    /// certificates to trust.
    #[arg(long, value_name = "PEMFILE")]
    ek_roots: PathBuf,
    /// An image manifest whose release (its "name" and
    /// "tpm_pcr11_sha256") is accepted (repeatable).
    #[arg(
        long = "accept-manifest",
        value_name = "MANIFEST.json",
        required = true
    )]
    accept_manifest: Vec<PathBuf>,
    /// Write the whole exchange here (JSON, hex), verified or not.
    #[arg(long, value_name = "FILE", conflicts_with = "check_transcript")]
    save_transcript: Option<PathBuf>,
    /// Verify a saved transcript instead of asking a node.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["node", "node_key"])]
    check_transcript: Option<PathBuf>,
}

fn failure(e: AttestFailure) -> Failure {
    match e {
        AttestFailure::Refused(_) | AttestFailure::NotAttestable(_) | AttestFailure::Input(_) => {
            Failure::Input(e.to_string())
        }
        AttestFailure::Busy(_) | AttestFailure::Machine(_) => Failure::Runtime(e.to_string()),
    }
}

fn write_transcript(path: &Path, t: &Transcript) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(t).expect("transcripts serialise");
    text.push('\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
}

pub fn attest(args: &AttestArgs) -> Result<(), Failure> {
    let roots = attest::read_ek_roots(&args.ek_roots).map_err(failure)?;
    let accepted = args
        .accept_manifest
        .iter()
        .map(|p| attest::read_manifest(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failure)?;
    let policy = attest::policy(roots, accepted);
    let transcript = match &args.check_transcript {
        Some(path) => Transcript::read(path).map_err(failure)?,
        None => {
            let (Some(addr), Some(key)) = (args.node, args.node_key.as_deref()) else {
                return Err(Failure::Input(
                    "give --node ADDR:PORT and --node-key KEY, or --check-transcript FILE".into(),
                ));
            };
            let node =
                NodeId::parse(key).map_err(|e| Failure::Input(format!("--node-key: {e}")))?;
            let t = smol::block_on(async {
                let connection = lockstep_transport::connect(addr, &node)
                    .await
                    .map_err(|e| AttestFailure::Machine(e.to_string()))?;
                attest::exchange(&connection, &node).await
            })
            .map_err(failure)?;
            if let Some(path) = &args.save_transcript {
                write_transcript(path, &t)?;
            }
            t
        }
    };
    let a = transcript.verify(&policy).map_err(failure)?;
    let pcr11 = a
        .pcrs
        .iter()
        .find(|p| p.index == 11)
        .map(|p| hex::encode(p.sha256))
        .unwrap_or_default();
    println!("attested node {}", transcript.node_key);
    println!("release: {}", a.release);
    println!("pcr11: {pcr11}");
    println!("attestation_sha256: {}", hex::encode(a.digest));
    println!(
        "ek_certificate_sha256: {}",
        hex::encode(a.ek_certificate_sha256)
    );
    println!("key_protection: {}", transcript.key_protection);
    Ok(())
}
