//! The dispute record: what a referee found when two nodes disagreed on a
//! job, in canonical JSON so it can be signed (minisign, prehashed: the
//! stock `minisign -Vm` verifies it) and re-checked by anyone.
//!
//! It carries everything a checker needs without talking to the nodes:
//! both signed receipts (so the trace roots are the nodes' own), the first
//! differing op with both parties' leaf hashes and audit paths, each
//! operand's hash with audit paths against both roots (they agree: every
//! earlier leaf does), the operands' data when small enough to re-execute
//! the op, and the referee's own result and verdict.

use std::collections::BTreeMap;

use base64::Engine;
use lockstep_backend::{Backend, Op};
use lockstep_identity::{NodeId, Signature};
use lockstep_program::trace::Hash;
use lockstep_program::{Step, ValidatedProgram};
use lockstep_protocol::Receipt;
use lockstep_tensor::{npy, Tensor};
use serde::{Deserialize, Serialize};

use crate::dataflow::Dataflow;
use crate::proof::LeafProof;

/// Version of the record's layout.
pub const DISPUTE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeRecord {
    pub format: u32,
    /// SHA-256 of the program's canonical postcard bytes.
    pub program_sha256: String,
    /// Leaves in each trace (the program's op executions).
    pub trace_size: u64,
    /// The first execution index at which the parties' outputs differ.
    pub op_index: u64,
    pub op: DisputedOp,
    pub a: PartyClaim,
    pub b: PartyClaim,
    /// The op's operands, in order.
    pub inputs: Vec<OpInput>,
    pub referee: RefereeResult,
    pub verdict: Verdict,
    /// Bisection rounds (one request to each party per round), the operand
    /// fetch included.
    pub rounds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputedOp {
    /// The op's place in the program, e.g. `5.2`.
    pub path: String,
    pub name: String,
    pub attrs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyClaim {
    /// The node id (minisign public key, base64).
    pub node: String,
    /// The node's receipt, its exact signed bytes as text.
    pub receipt: String,
    /// The receipt's minisign signature file.
    pub receipt_signature: String,
    pub trace_root: String,
    /// The node's output hash at `op_index`.
    pub leaf_sha256: String,
    /// Its audit path (hex, leaf to root).
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpInput {
    /// `input:NAME` (a program input, hashed in both receipts) or `leaf:J`
    /// (the output of execution J < op_index).
    pub source: String,
    pub sha256: String,
    /// Audit paths of leaf J against each party's root (empty for inputs).
    pub proof_a: Vec<String>,
    pub proof_b: Vec<String>,
    /// The operand's canonical `.npy` bytes, base64, when within
    /// `MAX_DISPUTE_OPERAND_BYTES` (so a checker can re-execute the op).
    pub npy_base64: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefereeResult {
    /// The referee's public key (minisign, base64): who signed the record.
    pub key: String,
    /// "vulkan" or "cpu".
    pub backend: String,
    pub device: String,
    /// The SHA-256 of the referee's own output of the op.
    pub output_sha256: String,
}

/// Who computed the op wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    AWrong,
    BWrong,
    BothWrong,
}

impl Verdict {
    /// The verdict given the referee's output hash; `None` if it matches
    /// both parties (then they did not differ).
    pub fn judge(referee: &str, a: &str, b: &str) -> Option<Verdict> {
        match (a != referee, b != referee) {
            (true, false) => Some(Verdict::AWrong),
            (false, true) => Some(Verdict::BWrong),
            (true, true) => Some(Verdict::BothWrong),
            (false, false) => None,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Verdict::AWrong => "party A computed it wrongly",
            Verdict::BWrong => "party B computed it wrongly",
            Verdict::BothWrong => "both parties computed it wrongly",
        }
    }
}

/// Why a dispute record does not stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisputeError {
    #[error("dispute record signature: {0}")]
    Signature(String),
    #[error("not a dispute record: {0}")]
    Malformed(String),
    #[error("the record is not in canonical form (edited after signing)")]
    NotCanonical,
    #[error("the record was signed by {signed}, but names referee {named}")]
    Referee { signed: String, named: String },
    #[error("party {party}: {problem}")]
    Party { party: char, problem: String },
    #[error("operand {operand}: {problem}")]
    Operand { operand: String, problem: String },
    #[error("the verdict does not follow from the hashes: {0}")]
    Verdict(String),
    #[error("the record does not match the given program: {0}")]
    Program(String),
    #[error("re-executing the op: {0}")]
    Reexecute(String),
}

fn hex32(s: &str) -> Result<Hash, String> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("{s:?} is not a 32-byte hex hash"))
}

fn path_of(hexes: &[String]) -> Result<Vec<Hash>, String> {
    if hexes.len() > lockstep_limits::MAX_AUDIT_PATH_HASHES {
        return Err(format!(
            "an audit path of {} hashes; at most {}",
            hexes.len(),
            lockstep_limits::MAX_AUDIT_PATH_HASHES
        ));
    }
    hexes.iter().map(|h| hex32(h)).collect()
}

/// Hex of each hash of an audit path.
pub fn path_hex(path: &[Hash]) -> Vec<String> {
    path.iter().map(hex::encode).collect()
}

impl DisputeRecord {
    /// The exact bytes that are signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        lockstep_canonical_json::to_vec(self).expect("records hold strings and integers only")
    }

    /// The trusted comment the referee's signature carries.
    pub fn signature_comment(&self) -> String {
        format!(
            "lockstep dispute program {} op {} verdict {:?}",
            self.program_sha256, self.op_index, self.verdict
        )
    }

    /// Checks the referee's signature over exactly `bytes`, that they are a
    /// canonical record naming that referee, and then [`Self::check`].
    pub fn verify(
        bytes: &[u8],
        signature_file: &str,
        referee: &NodeId,
    ) -> Result<DisputeRecord, DisputeError> {
        Signature::parse(signature_file)
            .and_then(|s| s.verify(referee, bytes))
            .map_err(|e| DisputeError::Signature(e.to_string()))?;
        let record = DisputeRecord::parse(bytes)?;
        if record.referee.key != referee.to_base64() {
            return Err(DisputeError::Referee {
                signed: referee.to_base64(),
                named: record.referee.key.clone(),
            });
        }
        record.check()?;
        Ok(record)
    }

    /// Decodes a record, accepting only its canonical bytes (so the bytes
    /// signed are the bytes read). Bounded by `MAX_DISPUTE_RECORD_BYTES`.
    pub fn parse(bytes: &[u8]) -> Result<DisputeRecord, DisputeError> {
        if bytes.len() > lockstep_limits::MAX_DISPUTE_RECORD_BYTES {
            return Err(DisputeError::Malformed(format!(
                "{} bytes; a record is at most {}",
                bytes.len(),
                lockstep_limits::MAX_DISPUTE_RECORD_BYTES
            )));
        }
        let record: DisputeRecord =
            serde_json::from_slice(bytes).map_err(|e| DisputeError::Malformed(e.to_string()))?;
        if record.canonical_bytes() != bytes {
            return Err(DisputeError::NotCanonical);
        }
        Ok(record)
    }

    /// Re-checks every claim the record makes that needs no program: both
    /// receipts' signatures and agreement on the job, both leaf proofs,
    /// every operand's hash and proofs, and that the verdict follows from
    /// the referee's hash.
    pub fn check(&self) -> Result<(), DisputeError> {
        if self.format != DISPUTE_FORMAT {
            return Err(DisputeError::Malformed(format!(
                "format {}; this build reads {DISPUTE_FORMAT}",
                self.format
            )));
        }
        let ra = self.a.check_receipt('A', &self.program_sha256)?;
        let rb = self.b.check_receipt('B', &self.program_sha256)?;
        if ra.inputs != rb.inputs {
            return Err(DisputeError::Party {
                party: 'B',
                problem: "its receipt names other program inputs than A's: not the same job".into(),
            });
        }
        let root_a = hex32(&self.a.trace_root).map_err(DisputeError::Malformed)?;
        let root_b = hex32(&self.b.trace_root).map_err(DisputeError::Malformed)?;
        self.a
            .check_leaf('A', &root_a, self.trace_size, self.op_index)?;
        self.b
            .check_leaf('B', &root_b, self.trace_size, self.op_index)?;
        if self.a.leaf_sha256 == self.b.leaf_sha256 {
            return Err(DisputeError::Verdict(
                "both parties have the same output at the disputed op".into(),
            ));
        }
        for input in &self.inputs {
            let fail = |problem: String| DisputeError::Operand {
                operand: input.source.clone(),
                problem,
            };
            let hash = hex32(&input.sha256).map_err(fail)?;
            if let Some(name) = input.source.strip_prefix("input:") {
                if ra.inputs.get(name) != Some(&input.sha256) {
                    return Err(fail("its hash is not the receipts' input hash".into()));
                }
            } else if let Some(j) = input.source.strip_prefix("leaf:") {
                let j: u64 = j.parse().map_err(|_| fail("not a leaf index".into()))?;
                if j >= self.op_index {
                    return Err(fail("an operand must come from an earlier op".into()));
                }
                for (root, proof) in [(&root_a, &input.proof_a), (&root_b, &input.proof_b)] {
                    LeafProof {
                        index: j,
                        size: self.trace_size,
                        leaf: hash,
                        path: path_of(proof).map_err(fail)?,
                    }
                    .verify(root, self.trace_size, j)
                    .map_err(|e| fail(e.to_string()))?;
                }
            } else {
                return Err(fail("a source is input:NAME or leaf:J".into()));
            }
            if let Some(t) = input.tensor().map_err(fail)? {
                if t.sha256() != hash {
                    return Err(fail("its data does not hash to its sha256".into()));
                }
            }
        }
        let expected = Verdict::judge(
            &self.referee.output_sha256,
            &self.a.leaf_sha256,
            &self.b.leaf_sha256,
        );
        if expected != Some(self.verdict) {
            return Err(DisputeError::Verdict(format!(
                "the referee's hash gives {expected:?}, the record says {:?}",
                self.verdict
            )));
        }
        Ok(())
    }

    /// Checks that the record's op and operands are what `program` runs
    /// at `op_index`.
    pub fn check_program(&self, program: &ValidatedProgram) -> Result<(), DisputeError> {
        let fail = |s: String| DisputeError::Program(s);
        if hex::encode(program.sha256()) != self.program_sha256 {
            return Err(fail(format!(
                "the record is about program {}, this one is {}",
                self.program_sha256,
                hex::encode(program.sha256())
            )));
        }
        let flow = Dataflow::of(program);
        if flow.len() != self.trace_size {
            return Err(fail(format!(
                "the program runs {} ops; the record says {}",
                flow.len(),
                self.trace_size
            )));
        }
        let leaf = flow
            .get(self.op_index)
            .ok_or_else(|| fail("op index out of range".into()))?;
        let vop = &program.ops()[leaf.op];
        let expected = disputed_op(program, leaf.op);
        if expected != self.op {
            return Err(fail(format!(
                "execution {} is op {} ({}), not {} ({}) with these attributes",
                self.op_index,
                vop.path,
                vop.op.name(),
                self.op.path,
                self.op.name
            )));
        }
        let sources: Vec<String> = leaf.inputs.iter().map(|s| s.label()).collect();
        let claimed: Vec<String> = self.inputs.iter().map(|i| i.source.clone()).collect();
        if sources != claimed {
            return Err(fail(format!(
                "the op reads {sources:?}; the record lists {claimed:?}"
            )));
        }
        Ok(())
    }

    /// Runs the op on `backend` from the record's operand data; returns
    /// its output hash (hex). Needs every operand's data.
    pub fn reexecute(&self, backend: &mut dyn Backend) -> Result<String, DisputeError> {
        let fail = |s: String| DisputeError::Reexecute(s);
        let op = Op::parse(&self.op.name, &self.op.attrs).map_err(|e| fail(e.to_string()))?;
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let t = input.tensor().map_err(&fail)?.ok_or_else(|| {
                fail(format!(
                    "operand {} was too large to include; re-execute from the program and inputs",
                    input.source
                ))
            })?;
            tensors.push(t);
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let out = backend.run(&op, &refs).map_err(|e| fail(e.to_string()))?;
        Ok(out.sha256_hex())
    }
}

/// The record's description of validated op `index` of `program`.
pub fn disputed_op(program: &ValidatedProgram, index: usize) -> DisputedOp {
    let vop = &program.ops()[index];
    let mut body = &program.program().body;
    let mut attrs = BTreeMap::new();
    for &i in vop.path.indices() {
        match &body[i] {
            Step::Op(op) => attrs = op.attrs.clone(),
            Step::Repeat(r) => body = &r.body,
        }
    }
    DisputedOp {
        path: vop.path.to_string(),
        name: vop.op.name().to_string(),
        attrs,
    }
}

impl OpInput {
    /// The operand's tensor, if the record carries it.
    pub fn tensor(&self) -> Result<Option<Tensor>, String> {
        let Some(b64) = &self.npy_base64 else {
            return Ok(None);
        };
        if b64.len() > lockstep_limits::MAX_DISPUTE_OPERAND_BYTES / 3 * 4 + 4 {
            return Err("the operand data is over the record's bound".into());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("operand data is not base64: {e}"))?;
        npy::decode(&bytes)
            .map(Some)
            .map_err(|e| format!("operand data: {e}"))
    }

    /// Base64 of `t`'s canonical `.npy` bytes, or `None` over the bound.
    pub fn encode(t: &Tensor) -> Option<String> {
        let bytes = npy::encode(t);
        (bytes.len() <= lockstep_limits::MAX_DISPUTE_OPERAND_BYTES)
            .then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl PartyClaim {
    fn check_receipt(&self, party: char, program: &str) -> Result<Receipt, DisputeError> {
        let fail = |problem: String| DisputeError::Party { party, problem };
        let node = NodeId::parse(&self.node).map_err(|e| fail(e.to_string()))?;
        let receipt = Receipt::verify(self.receipt.as_bytes(), &self.receipt_signature, &node)
            .map_err(|e| fail(e.to_string()))?;
        if receipt.program_sha256 != program {
            return Err(fail(format!(
                "its receipt is for program {}, not {program}",
                receipt.program_sha256
            )));
        }
        if receipt.trace_root != self.trace_root {
            return Err(fail("the trace root differs from its receipt's".into()));
        }
        Ok(receipt)
    }

    fn check_leaf(
        &self,
        party: char,
        root: &Hash,
        size: u64,
        index: u64,
    ) -> Result<(), DisputeError> {
        let fail = |problem: String| DisputeError::Party { party, problem };
        LeafProof {
            index,
            size,
            leaf: hex32(&self.leaf_sha256).map_err(fail)?,
            path: path_of(&self.proof).map_err(fail)?,
        }
        .verify(root, size, index)
        .map_err(|e| fail(e.to_string()))
    }
}
