//! The resident executor: the same steps as [`crate::exec`]'s per-op
//! executor, but tensors stay in the backend's device memory from the op
//! that produces them to their last use, and trace leaves are hashed on the
//! device.
//!
//! - Only program inputs are uploaded and only declared outputs downloaded
//!   (and one 32-byte digest per traced op).
//! - Ops are recorded into batches of at most [`RESIDENT_BATCH_OPS`]; each
//!   batch is one submission and one fence wait, and the job's deadline is
//!   checked between batches.
//! - A repeat block whose body is ops only is recorded once and replayed
//!   for every iteration; carried tensors are copied back into the buffers
//!   the body reads them from at the end of each iteration. A body with a
//!   nested repeat is walked per iteration (its inner repeats are then
//!   recorded once per entry).
//!
//! The trace (leaf order, digests, root) and the outputs are exactly those
//! of the per-op executor: the digests are SHA-256 of the same canonical
//! `.npy` bytes, computed by the bundle's `sha256_npy` kernel.

use std::collections::BTreeMap;
use std::time::Instant;

use lockstep_backend::{BackendError, DeviceTensor, Resident};
use lockstep_limits::RESIDENT_BATCH_OPS;
use lockstep_tensor::Tensor;

use crate::exec::{ExecError, TraceEntry};
use crate::trace::MerkleBuilder;
use crate::validate::{Node, ValidatedProgram};

/// What a resident run produced.
pub(crate) struct ResidentOutcome {
    pub outputs: BTreeMap<String, Tensor>,
    pub trace: Option<(MerkleBuilder, Vec<TraceEntry>)>,
    pub done: u64,
    pub peak: u64,
}

/// Whether every node of a body is an op (such a body is recorded once).
fn straight(body: &[Node]) -> bool {
    body.iter().all(|n| matches!(n, Node::Op(_)))
}

/// The most digests one batch can hold: a batch is at most
/// RESIDENT_BATCH_OPS ops, or whole iterations of one straight body.
fn digests_per_batch(body: &[Node]) -> usize {
    let mut most = RESIDENT_BATCH_OPS;
    for node in body {
        if let Node::Repeat(r) = node {
            if straight(&r.body) {
                most = most.max(r.body.len());
            } else {
                most = most.max(digests_per_batch(&r.body));
            }
        }
    }
    most
}

/// Runs `program` with its inputs already placed in `inputs` (one entry per
/// slot, the declared inputs filled in).
pub(crate) fn execute(
    program: &ValidatedProgram,
    dev: &mut dyn Resident,
    inputs: Vec<Option<Tensor>>,
    trace: bool,
    progress: Option<&mut dyn FnMut(u64, u64)>,
    deadline: Option<Instant>,
) -> Result<ResidentOutcome, ExecError> {
    dev.begin_session(digests_per_batch(&program.body))
        .map_err(|error| at_start(program, error))?;
    let mut run = Run {
        program,
        dev,
        slots: vec![None; program.names.len()],
        bytes: vec![None; program.names.len()],
        current: 0,
        peak: 0,
        done: 0,
        recorded: 0,
        pending: Vec::new(),
        body: None,
        trace: trace.then(|| (MerkleBuilder::new(), Vec::new())),
        progress,
        deadline,
    };
    let result = run.all(inputs);
    run.dev.end_session();
    let outputs = result?;
    Ok(ResidentOutcome {
        outputs,
        trace: run.trace,
        done: run.done,
        peak: run.peak,
    })
}

/// A failure before the first op: put down to the first op (or, in a
/// program without ops, to its start).
fn at_start(program: &ValidatedProgram, error: BackendError) -> ExecError {
    match program.ops().first() {
        Some(first) => ExecError::Backend {
            at: first.site(),
            error: Box::new(error),
        },
        None => ExecError::Input {
            name: "(all)".into(),
            problem: error.to_string(),
        },
    }
}

struct Run<'a, 'p> {
    program: &'a ValidatedProgram,
    dev: &'a mut dyn Resident,
    slots: Vec<Option<DeviceTensor>>,
    /// Bytes of each live slot's value (the same accounting as the per-op
    /// executor's, from the validated shapes).
    bytes: Vec<Option<u64>>,
    current: u64,
    peak: u64,
    /// Ops whose results have come back (leaf indices are assigned in this
    /// order).
    done: u64,
    /// Ops recorded into the open batch.
    recorded: usize,
    /// The op of every execution queued since the last flush, in order.
    pending: Vec<usize>,
    /// While recording a body: the ops it executes per iteration.
    body: Option<Vec<usize>>,
    trace: Option<(MerkleBuilder, Vec<TraceEntry>)>,
    progress: Option<&'p mut dyn FnMut(u64, u64)>,
    deadline: Option<Instant>,
}

impl Run<'_, '_> {
    fn all(&mut self, inputs: Vec<Option<Tensor>>) -> Result<BTreeMap<String, Tensor>, ExecError> {
        let program = self.program;
        for (slot, t) in inputs.into_iter().enumerate() {
            if let Some(t) = t {
                let handle = self
                    .dev
                    .upload(&t)
                    .map_err(|error| at_start(program, error))?;
                self.bytes[slot] = Some(t.len() as u64 * 4);
                self.current += t.len() as u64 * 4;
                self.slots[slot] = Some(handle);
            }
        }
        for &slot in &program.free_at_start {
            self.free(slot);
        }
        self.peak = self.current;
        self.nodes(&program.body)?;
        self.flush()?;
        let mut outputs = BTreeMap::new();
        for (decl, &slot) in program.outputs().iter().zip(&program.output_slots) {
            let handle = self.slots[slot].expect("outputs are live to the end, and listed once");
            let t = self
                .dev
                .download(handle)
                .map_err(|error| ExecError::Output {
                    name: decl.name.clone(),
                    error: Box::new(error),
                })?;
            assert_eq!(
                t.shape(),
                decl.shape.as_slice(),
                "validated shapes are the backend's shapes (Op::output_shape)"
            );
            outputs.insert(decl.name.clone(), t);
        }
        Ok(outputs)
    }

    fn free(&mut self, slot: usize) {
        if let Some(handle) = self.slots[slot].take() {
            self.dev.release(handle);
        }
        if let Some(b) = self.bytes[slot].take() {
            self.current -= b;
        }
    }

    fn nodes(&mut self, nodes: &[Node]) -> Result<(), ExecError> {
        for node in nodes {
            match node {
                Node::Op(i) => self.op(*i)?,
                Node::Repeat(r)
                    if r.times > 0
                        && !r.body.is_empty()
                        && straight(&r.body)
                        && self.body.is_none() =>
                {
                    self.repeat_recorded(&r.body, r.times)?;
                    for &slot in &r.free_after {
                        self.free(slot);
                    }
                }
                Node::Repeat(r) => {
                    for _ in 0..r.times {
                        self.nodes(&r.body)?;
                    }
                    for &slot in &r.free_after {
                        self.free(slot);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records one op (into the open batch, or into the body being
    /// recorded).
    fn op(&mut self, i: usize) -> Result<(), ExecError> {
        let vop = &self.program.ops()[i];
        if self.body.is_none() {
            if self.recorded >= RESIDENT_BATCH_OPS {
                self.flush()?;
            }
            if self.recorded == 0 && self.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(ExecError::Deadline {
                    at: vop.site(),
                    done: self.done,
                });
            }
        }
        if !vop.input_slots.contains(&vop.output_slot) {
            self.free(vop.output_slot);
        }
        let inputs: Vec<DeviceTensor> = vop
            .input_slots
            .iter()
            .map(|&s| self.slots[s].expect("validated: inputs are live"))
            .collect();
        let backend = |error| ExecError::Backend {
            at: vop.site(),
            error: Box::new(error),
        };
        let output = self.dev.record(&vop.op, &inputs).map_err(backend)?;
        if self.trace.is_some() {
            self.dev.record_hash(output).map_err(backend)?;
        }
        self.peak = self.peak.max(self.current + vop.output_bytes);
        self.free(vop.output_slot);
        self.current += vop.output_bytes;
        self.slots[vop.output_slot] = Some(output);
        self.bytes[vop.output_slot] = Some(vop.output_bytes);
        for &slot in &vop.free_after {
            self.free(slot);
        }
        match &mut self.body {
            Some(body) => body.push(i),
            None => {
                self.pending.push(i);
                self.recorded += 1;
            }
        }
        Ok(())
    }

    /// A repeat whose body is ops only: recorded once, replayed `times`
    /// times in batches of whole iterations.
    fn repeat_recorded(&mut self, body: &[Node], times: u32) -> Result<(), ExecError> {
        // Replays follow the open batch's work, but a batch's digests are
        // sized for RESIDENT_BATCH_OPS or whole iterations, not both: so
        // the open batch goes first.
        self.flush()?;
        let first_op = match body.first() {
            Some(Node::Op(i)) => *i,
            _ => unreachable!("only called for a non-empty body of ops"),
        };
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(ExecError::Deadline {
                at: self.program.ops()[first_op].site(),
                done: self.done,
            });
        }
        let first = self.slots.clone();
        self.dev.begin_body().map_err(|error| ExecError::Backend {
            at: self.program.ops()[first_op].site(),
            error: Box::new(error),
        })?;
        self.body = Some(Vec::new());
        let recorded = self.nodes(body);
        let ops = self.body.take().expect("set above");
        recorded?;
        // A tensor live both before and after the body, now in another
        // buffer, goes back to the buffer the next iteration reads.
        let mut carry = Vec::new();
        for (slot, (before, after)) in first.iter().zip(&self.slots).enumerate() {
            if let (Some(before), Some(after)) = (before, after) {
                if before != after {
                    carry.push((*after, *before, slot));
                }
            }
        }
        let pairs: Vec<(DeviceTensor, DeviceTensor)> =
            carry.iter().map(|&(a, b, _)| (a, b)).collect();
        let id = self
            .dev
            .end_body(&pairs)
            .map_err(|error| ExecError::Backend {
                at: self.program.ops()[first_op].site(),
                error: Box::new(error),
            })?;
        for (after, before, slot) in carry {
            self.dev.release(after);
            self.slots[slot] = Some(before);
        }
        // The accounting of iterations after the first: the live set at the
        // end of an iteration is a fixed point after one iteration, so a
        // second pass gives every later one's peak.
        if times > 1 {
            self.account(&ops);
        }
        let per_batch = (RESIDENT_BATCH_OPS / ops.len().max(1)).max(1) as u32;
        let mut left = times;
        while left > 0 {
            if self.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(ExecError::Deadline {
                    at: self.program.ops()[first_op].site(),
                    done: self.done,
                });
            }
            let n = left.min(per_batch);
            self.dev.replay(id, n).map_err(|error| ExecError::Backend {
                at: self.program.ops()[first_op].site(),
                error: Box::new(error),
            })?;
            for _ in 0..n {
                self.pending.extend_from_slice(&ops);
            }
            self.flush()?;
            left -= n;
        }
        self.dev.drop_body(id);
        Ok(())
    }

    /// The memory accounting of one more iteration of a recorded body,
    /// without recording anything.
    fn account(&mut self, ops: &[usize]) {
        for &i in ops {
            let vop = &self.program.ops()[i];
            let free = |this: &mut Self, slot: usize| {
                if let Some(b) = this.bytes[slot].take() {
                    this.current -= b;
                }
            };
            if !vop.input_slots.contains(&vop.output_slot) {
                free(self, vop.output_slot);
            }
            self.peak = self.peak.max(self.current + vop.output_bytes);
            free(self, vop.output_slot);
            self.current += vop.output_bytes;
            self.bytes[vop.output_slot] = Some(vop.output_bytes);
            for &slot in &vop.free_after {
                free(self, slot);
            }
        }
    }

    /// Runs the open batch and takes in its digests as trace leaves.
    fn flush(&mut self) -> Result<(), ExecError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.recorded = 0;
        let digests = self.dev.flush().map_err(|error| ExecError::Backend {
            at: self.program.ops()[pending[0]].site(),
            error: Box::new(error),
        })?;
        if let Some((builder, entries)) = &mut self.trace {
            assert_eq!(
                digests.len(),
                pending.len(),
                "the device hashed every recorded op's output once"
            );
            for (&i, digest) in pending.iter().zip(&digests) {
                let vop = &self.program.ops()[i];
                builder.push(digest);
                entries.push(TraceEntry {
                    index: self.done,
                    path: vop.path.clone(),
                    op: vop.op.name(),
                    output_sha256: *digest,
                });
                self.done += 1;
            }
        } else {
            self.done += pending.len() as u64;
        }
        if let Some(progress) = &mut self.progress {
            progress(self.done, self.program.op_count());
        }
        Ok(())
    }
}
