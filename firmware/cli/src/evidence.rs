//! The client side of a node's retained evidence, and the two kinds of
//! party a comparison or dispute talks to: a node over QUIC, or a local
//! trace held in memory. Every answer is checked by the caller against a
//! signed receipt; nothing a node sends here is trusted as such.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lockstep_identity::{NodeId, SigningKey};
use lockstep_program::trace::Hash;
use lockstep_program::ValidatedProgram;
use lockstep_protocol::{
    header, ErrorKind, EvidenceAccess, Frame, InputRequest, JobRequest, LeafRequest, Message,
    Receipt, TensorReceiver,
};
use lockstep_tensor::Tensor;
use lockstep_transport::frames::{write_frame, FrameReader};
use lockstep_verify::LeafProof;
use rand_core::RngCore;

use crate::failure::Failure;

/// One open connection to a node, counting the evidence bytes it moved.
pub struct Remote {
    connection: quinn::Connection,
    addr: SocketAddr,
    /// The job's receipt, which every evidence request carries: a node
    /// serves a job's evidence only to holders of its receipt.
    access: EvidenceAccess,
    /// Tensor data, hashes and audit paths received.
    pub bytes: u64,
    /// Requests made.
    pub requests: u64,
}

impl Remote {
    /// Connects to the node that signed a job's receipt (`receipt` and
    /// `signature`, as the node sent them), to fetch that job's evidence.
    pub fn connect(
        addr: SocketAddr,
        key: &NodeId,
        receipt: Vec<u8>,
        signature: String,
    ) -> Result<Remote, Failure> {
        let connection = smol::block_on(lockstep_transport::connect(addr, key))
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        Ok(Remote {
            connection,
            addr,
            access: EvidenceAccess::Receipt { receipt, signature },
            bytes: 0,
            requests: 0,
        })
    }

    fn net(&self, e: &dyn std::fmt::Display) -> Failure {
        Failure::Runtime(format!("node at {}: {e}", self.addr))
    }

    /// Sends one request; returns the first reply and the stream's reader.
    fn ask(&mut self, request: Message) -> Result<(Message, FrameReader), Failure> {
        self.requests += 1;
        smol::block_on(async {
            let (mut send, recv) = self.connection.open_bi().await.map_err(|e| self.net(&e))?;
            write_frame(&mut send, &request.to_frame())
                .await
                .map_err(|e| self.net(&e))?;
            let _ = send.finish();
            let mut reader = FrameReader::new(recv);
            let reply = crate::submit::first_reply(&mut reader, self.addr).await?;
            if let Message::Busy { retry_after_ms } = &reply {
                return Err(Failure::Runtime(format!(
                    "node at {} is busy serving evidence; retry after {retry_after_ms} ms",
                    self.addr
                )));
            }
            if let Message::Rejected(e) = &reply {
                let what = match e.kind {
                    ErrorKind::NotRetained => "no longer holds the evidence",
                    ErrorKind::Unauthorized => "refused to serve the evidence",
                    _ => "refused",
                };
                return Err(Failure::Runtime(format!(
                    "node at {} {what}: {}",
                    self.addr, e.message
                )));
            }
            Ok((reply, reader))
        })
    }

    fn receive(
        &mut self,
        reader: &mut FrameReader,
        h: lockstep_protocol::TensorHeader,
    ) -> Result<Tensor, Failure> {
        let mut receiver = TensorReceiver::new(vec![h]).map_err(|e| self.net(&e))?;
        let mut got = receiver.take_ready();
        while !receiver.is_done() {
            match smol::block_on(reader.next()).map_err(|e| self.net(&e))? {
                Some(Frame::Data(chunk)) => {
                    self.bytes += chunk.len() as u64;
                    got.extend(receiver.push(&chunk).map_err(|e| self.net(&e))?);
                }
                _ => return Err(self.net(&"the reply ended inside tensor data")),
            }
        }
        got.pop()
            .map(|(_, t)| t)
            .ok_or_else(|| self.net(&"no tensor in the reply"))
    }

    /// Leaf `index` of job `job_id`: hash and audit path, and the tensor
    /// if `with_data` (checked against the leaf hash here).
    pub fn leaf(
        &mut self,
        job_id: [u8; 16],
        index: u64,
        with_data: bool,
    ) -> Result<(LeafProof, Option<Tensor>), Failure> {
        let (reply, mut reader) = self.ask(Message::FetchLeaf(LeafRequest {
            job_id,
            index,
            with_data,
            access: self.access.clone(),
        }))?;
        let Message::Leaf(e) = reply else {
            return Err(self.net(&"unexpected reply to a leaf request"));
        };
        self.bytes += 48 + 32 * e.path.len() as u64;
        let tensor = match (e.tensor, with_data) {
            (Some(h), true) => {
                let t = self.receive(&mut reader, h)?;
                if t.sha256() != e.leaf {
                    return Err(self.net(&format!(
                        "leaf {index}'s tensor does not hash to the leaf it claims"
                    )));
                }
                Some(t)
            }
            (None, false) => None,
            _ => return Err(self.net(&"the reply's tensor does not match the request")),
        };
        Ok((
            LeafProof {
                index: e.index,
                size: e.size,
                leaf: e.leaf,
                path: e.path,
            },
            tensor,
        ))
    }

    /// The retained program input `name` of job `job_id`.
    pub fn input(&mut self, job_id: [u8; 16], name: &str) -> Result<Tensor, Failure> {
        let (reply, mut reader) = self.ask(Message::FetchInput(InputRequest {
            job_id,
            name: name.to_string(),
            access: self.access.clone(),
        }))?;
        let Message::Input(h) = reply else {
            return Err(self.net(&"unexpected reply to an input request"));
        };
        self.receive(&mut reader, h)
    }

    /// Where job `job_id`'s input `input` came from: the source receipt
    /// the node holds for a referenced input (checked by the caller).
    pub fn source(
        &mut self,
        job_id: [u8; 16],
        input: &str,
    ) -> Result<lockstep_protocol::SourceEvidence, Failure> {
        let (reply, _) = self.ask(Message::FetchSource(lockstep_protocol::SourceRequest {
            job_id,
            input: input.to_string(),
            access: self.access.clone(),
        }))?;
        let Message::Source(e) = reply else {
            return Err(self.net(&"unexpected reply to a source request"));
        };
        Ok(e)
    }

    /// The program job `job_id` ran, as the node holds it (checked by the
    /// caller against the receipt's program hash).
    pub fn program(&mut self, job_id: [u8; 16]) -> Result<Vec<u8>, Failure> {
        let (reply, _) = self.ask(Message::FetchProgram(lockstep_protocol::ProgramRequest {
            job_id,
            access: self.access.clone(),
        }))?;
        let Message::Program(bytes) = reply else {
            return Err(self.net(&"unexpected reply to a program request"));
        };
        self.bytes += bytes.len() as u64;
        Ok(bytes)
    }

    pub fn close(self) {
        self.connection.close(0u32.into(), b"done");
    }
}

/// A party to a comparison: a node holding a job's evidence, or a trace in
/// memory (a local re-execution).
pub enum Side {
    Node { remote: Remote, job_id: [u8; 16] },
    Local { leaves: Vec<Hash> },
}

impl Side {
    /// Leaf `index`'s hash and audit path (checked by the caller).
    pub fn leaf(&mut self, index: u64) -> Result<LeafProof, Failure> {
        match self {
            Side::Node { remote, job_id } => Ok(remote.leaf(*job_id, index, false)?.0),
            Side::Local { leaves } => LeafProof::from_leaves(leaves, index)
                .ok_or_else(|| Failure::Runtime(format!("no local leaf {index}"))),
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            Side::Node { remote, .. } => remote.bytes,
            Side::Local { .. } => 0,
        }
    }
}

/// The 16-byte job id a receipt names.
pub fn job_id(receipt: &Receipt) -> Result<[u8; 16], Failure> {
    hex::decode(&receipt.job_id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            Failure::Input(format!(
                "the receipt's job id {:?} is not 16 bytes of hex",
                receipt.job_id
            ))
        })
}

/// Reads `R.json` and `R.json.minisig` and checks them against `key`.
pub fn read_receipt(path: &Path, key: &NodeId) -> Result<(Receipt, Vec<u8>, String), Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_path = PathBuf::from(sig_path);
    let sig = std::fs::read_to_string(&sig_path)
        .map_err(|e| Failure::Input(format!("{}: {e}", sig_path.display())))?;
    let r = Receipt::verify(&bytes, &sig, key)
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    Ok((r, bytes, sig))
}

pub fn parse_key(flag: &str, text: &str) -> Result<NodeId, Failure> {
    NodeId::parse(text).map_err(|e| Failure::Input(format!("{flag}: {e}")))
}

/// Runs the program on a node: its verified receipt, bytes and signature.
pub fn run_on(
    addr: SocketAddr,
    key: &NodeId,
    program: &ValidatedProgram,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Receipt, Vec<u8>, String), Failure> {
    let mut job_id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut job_id);
    let request = JobRequest {
        job_id,
        program: program.program().to_postcard(),
        inputs: inputs.iter().map(|(n, t)| header(n, t)).collect(),
        references: vec![],
        submitter: None,
        device: None,
    };
    let (done, _) = smol::block_on(crate::submit::exchange(addr, key, request, inputs))?;
    let receipt = Receipt::verify(&done.receipt, &done.signature, key).map_err(|e| {
        Failure::Runtime(format!("node at {addr}: its receipt does not verify: {e}"))
    })?;
    Ok((receipt, done.receipt, done.signature))
}

/// Reads a referee or operator key given with `--key`: the password, for
/// an encrypted one, from `LOCKSTEP_KEY_PASSWORD`, else asked on a
/// terminal.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    read_signing_key_flag(path, "--key")
}

/// [`read_signing_key`] for a key given with `flag`.
pub fn read_signing_key_flag(path: &Path, flag: &str) -> Result<SigningKey, Failure> {
    use lockstep_identity::SecretKeyError;
    let password = std::env::var("LOCKSTEP_KEY_PASSWORD").ok();
    match SigningKey::read_file(path, password.as_deref()) {
        Ok(k) => Ok(k),
        Err(SecretKeyError::PasswordNeeded { .. })
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) =>
        {
            eprint!("password for {}: ", path.display());
            let _ = std::io::Write::flush(&mut std::io::stderr());
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::Input(format!("reading the password: {e}")))?;
            SigningKey::read_file(path, Some(line.trim_end_matches(['\r', '\n'])))
                .map_err(|e| Failure::Input(format!("{flag}: {e}")))
        }
        Err(e) => Err(Failure::Input(format!("{flag}: {e}"))),
    }
}
