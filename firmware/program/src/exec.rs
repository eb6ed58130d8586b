//! The executor: runs a [`ValidatedProgram`] on any [`Backend`], freeing
//! each tensor right after its last use and committing to every op's output
//! in the trace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockstep_backend::{Backend, BackendError, TransferCounters};
use lockstep_tensor::{shape_string, Tensor};

use crate::trace::{Hash, MerkleBuilder};
use crate::validate::{Node, OpPath, Site, ValidatedProgram};

/// Sees each traced op's entry and output as it is produced.
pub type Observer<'a> = &'a mut dyn FnMut(&TraceEntry, &Tensor);

/// How to run.
pub struct ExecOptions<'a> {
    /// Hash every op's output into the trace (on by default).
    pub trace: bool,
    /// Called after each op execution with `(done, total)`.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Stop before the next op once this instant has passed (a node's job
    /// time limit); the run then ends with [`ExecError::Deadline`].
    pub deadline: Option<Instant>,
    /// Called after each traced op with its trace entry and its output, so
    /// a node can retain every intermediate tensor as evidence. Only with
    /// `trace` on (the entry is what it is called with).
    pub observer: Option<Observer<'a>>,
    /// Corrupt some ops' outputs on purpose (tests of verification only).
    /// Takes effect only in builds with the `fault-injection` feature
    /// ([`crate::FAULT_INJECTION`]); callers must refuse it otherwise.
    pub fault: Option<crate::fault::Fault>,
    /// Time each op execution (the backend call alone, not hashing) and
    /// report the times per op name in [`ExecReport::profile`] (off by
    /// default).
    pub profile: bool,
    /// Run op by op through [`Backend::run`], every operand uploaded and
    /// every output downloaded and hashed on the host, even where the
    /// backend has a resident mode ([`Backend::resident`]). The per-op path
    /// is also taken whenever `observer`, `fault` or `profile` is set: they
    /// need each output on the host, or each op alone.
    pub per_op: bool,
}

impl Default for ExecOptions<'_> {
    fn default() -> Self {
        ExecOptions {
            trace: true,
            progress: None,
            deadline: None,
            observer: None,
            fault: None,
            profile: false,
            per_op: false,
        }
    }
}

/// The executions of one op name in a run, with `profile` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpProfile {
    /// The op's name (`matmul`, `add`, ...).
    pub op: String,
    /// Executions, counting every repeat iteration.
    pub count: u64,
    /// Wall time of the backend calls, summed.
    pub total: Duration,
    /// The longest single backend call.
    pub max: Duration,
}

/// One executed op: one trace leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Position in execution order, from 0: the leaf index.
    pub index: u64,
    /// The op's place in the program (the same for every iteration).
    pub path: OpPath,
    pub op: &'static str,
    /// SHA-256 of the output's canonical `.npy` bytes: the leaf.
    pub output_sha256: Hash,
}

/// The trace: every executed op's output digest, and their Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub ops: Vec<TraceEntry>,
    pub root: Hash,
}

impl Trace {
    /// The leaves, in order (what [`crate::trace::prove`] takes).
    pub fn leaves(&self) -> Vec<Hash> {
        self.ops.iter().map(|e| e.output_sha256).collect()
    }
}

/// What a run produced and what it cost.
#[derive(Debug)]
pub struct ExecReport {
    /// Every declared output.
    pub outputs: BTreeMap<String, Tensor>,
    /// `None` when run with `trace: false`.
    pub trace: Option<Trace>,
    /// Op executions, counting every repeat iteration.
    pub op_count: u64,
    /// Wall time of the whole run, hashing included.
    pub wall: Duration,
    /// Part of `wall` spent hashing outputs and building the tree.
    pub hashing: Duration,
    /// Peak bytes of live tensors, measured (equal to
    /// [`ValidatedProgram::peak_bytes`]).
    pub peak_bytes: u64,
    /// Per op name, sorted by total time, longest first (ties by name);
    /// `None` unless run with `profile: true`.
    pub profile: Option<Vec<OpProfile>>,
    /// What the backend moved and how often it submitted and waited during
    /// this run (its counters after less before; zero on the CPU reference).
    pub transfers: TransferCounters,
    /// Whether the run was resident: tensors kept in device memory between
    /// ops and leaves hashed on the device (then `hashing` is zero: it is
    /// part of the device's time).
    pub resident: bool,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("input '{name}': {problem}")]
    Input { name: String, problem: String },
    /// The backend failed; `error` says whether the input or the machine is
    /// at fault ([`BackendError::is_input_error`]).
    #[error("{at}: {error}")]
    Backend { at: Site, error: Box<BackendError> },
    /// A declared output could not be brought back from the device.
    #[error("output '{name}': {error}")]
    Output {
        name: String,
        error: Box<BackendError>,
    },
    #[error("stopped before {at}: the run passed its time limit after {done} ops")]
    Deadline { at: Site, done: u64 },
    #[error("{at}: the backend returned a {got} tensor where {expected} was expected")]
    WrongShape {
        at: Site,
        got: String,
        expected: String,
    },
}

/// Runs `program` on `backend` with `inputs` (exactly the declared ones,
/// with the declared shapes).
pub fn execute(
    program: &ValidatedProgram,
    backend: &mut dyn Backend,
    mut inputs: BTreeMap<String, Tensor>,
    options: ExecOptions<'_>,
) -> Result<ExecReport, ExecError> {
    let start = Instant::now();
    let counters_before = backend.counters();
    let mut slots: Vec<Option<Tensor>> = vec![None; program.names.len()];
    for (decl, &slot) in program.inputs().iter().zip(&program.input_slots) {
        let Some(t) = inputs.remove(&decl.name) else {
            return Err(ExecError::Input {
                name: decl.name.clone(),
                problem: "declared by the program but not given".into(),
            });
        };
        if t.shape() != decl.shape.as_slice() {
            return Err(ExecError::Input {
                name: decl.name.clone(),
                problem: format!(
                    "shape {} differs from the declared {}",
                    t.shape_string(),
                    shape_string(&decl.shape)
                ),
            });
        }
        slots[slot] = Some(t);
    }
    if let Some(name) = inputs.keys().next() {
        return Err(ExecError::Input {
            name: name.clone(),
            problem: "given but not declared by the program".into(),
        });
    }
    let resident_allowed = !options.per_op
        && !options.profile
        && options.observer.is_none()
        && options.fault.is_none();
    if resident_allowed {
        if let Some(dev) = backend.resident() {
            let outcome = crate::resident::execute(
                program,
                dev,
                slots,
                options.trace,
                options.progress,
                options.deadline,
            )?;
            let transfers = backend.counters().since(&counters_before);
            return Ok(ExecReport {
                outputs: outcome.outputs,
                trace: outcome.trace.map(|(builder, ops)| Trace {
                    ops,
                    root: builder.root(),
                }),
                op_count: outcome.done,
                wall: start.elapsed(),
                hashing: Duration::ZERO,
                peak_bytes: outcome.peak,
                profile: None,
                transfers,
                resident: true,
            });
        }
    }
    let mut run = Run {
        program,
        backend,
        slots,
        current: 0,
        peak: 0,
        done: 0,
        trace: options.trace.then(|| (MerkleBuilder::new(), Vec::new())),
        hashing: Duration::ZERO,
        progress: options.progress,
        deadline: options.deadline,
        observer: options.observer,
        fault: options.fault,
        profile: options.profile.then(BTreeMap::new),
    };
    run.current = run.slots.iter().flatten().map(bytes).sum();
    for &slot in &program.free_at_start {
        run.free(slot);
    }
    run.peak = run.current;
    run.nodes(&program.body)?;

    let mut outputs = BTreeMap::new();
    for (decl, &slot) in program.outputs().iter().zip(&program.output_slots) {
        let t = run.slots[slot]
            .take()
            .expect("outputs are live to the end, and listed once");
        outputs.insert(decl.name.clone(), t);
    }
    let trace = run.trace.map(|(builder, ops)| Trace {
        ops,
        root: builder.root(),
    });
    let profile = run.profile.map(|by_op| {
        let mut rows: Vec<OpProfile> = by_op.into_values().collect();
        rows.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.op.cmp(&b.op)));
        rows
    });
    let transfers = run.backend.counters().since(&counters_before);
    Ok(ExecReport {
        outputs,
        trace,
        op_count: run.done,
        wall: start.elapsed(),
        hashing: run.hashing,
        peak_bytes: run.peak,
        profile,
        transfers,
        resident: false,
    })
}

fn bytes(t: &Tensor) -> u64 {
    t.len() as u64 * 4
}

struct Run<'a, 'p> {
    program: &'a ValidatedProgram,
    backend: &'a mut dyn Backend,
    slots: Vec<Option<Tensor>>,
    current: u64,
    peak: u64,
    done: u64,
    trace: Option<(MerkleBuilder, Vec<TraceEntry>)>,
    hashing: Duration,
    progress: Option<&'p mut dyn FnMut(u64, u64)>,
    deadline: Option<Instant>,
    observer: Option<Observer<'p>>,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fault: Option<crate::fault::Fault>,
    /// Per op name, with `profile` on.
    profile: Option<BTreeMap<&'static str, OpProfile>>,
}

impl Run<'_, '_> {
    fn free(&mut self, slot: usize) {
        if let Some(t) = self.slots[slot].take() {
            self.current -= bytes(&t);
        }
    }

    /// The same steps as the validator's memory replay, on real tensors.
    fn nodes(&mut self, nodes: &[Node]) -> Result<(), ExecError> {
        for node in nodes {
            match node {
                Node::Op(i) => self.op(*i)?,
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

    fn op(&mut self, i: usize) -> Result<(), ExecError> {
        let vop = &self.program.ops()[i];
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(ExecError::Deadline {
                at: vop.site(),
                done: self.done,
            });
        }
        if !vop.input_slots.contains(&vop.output_slot) {
            self.free(vop.output_slot);
        }
        #[allow(unused_mut)]
        let mut output = {
            let inputs: Vec<&Tensor> = vop
                .input_slots
                .iter()
                .map(|&s| self.slots[s].as_ref().expect("validated: inputs are live"))
                .collect();
            let t0 = self.profile.is_some().then(Instant::now);
            let output = self.backend.run(&vop.op, &inputs);
            if let (Some(t0), Some(profile)) = (t0, &mut self.profile) {
                let took = t0.elapsed();
                let name = vop.op.name();
                let row = profile.entry(name).or_insert_with(|| OpProfile {
                    op: name.to_string(),
                    count: 0,
                    total: Duration::ZERO,
                    max: Duration::ZERO,
                });
                row.count += 1;
                row.total += took;
                row.max = row.max.max(took);
            }
            output.map_err(|error| ExecError::Backend {
                at: vop.site(),
                error: Box::new(error),
            })?
        };
        if output.shape() != vop.output_shape.as_slice() {
            return Err(ExecError::WrongShape {
                at: vop.site(),
                got: output.shape_string(),
                expected: shape_string(&vop.output_shape),
            });
        }
        // Before hashing, so the corrupted bits are committed and used
        // downstream exactly as a faulty device's would be.
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = &self.fault {
            fault.apply(self.done, &mut output);
        }
        self.peak = self.peak.max(self.current + bytes(&output));
        if let Some((builder, ops)) = &mut self.trace {
            let t0 = Instant::now();
            let digest = output.sha256();
            builder.push(&digest);
            ops.push(TraceEntry {
                index: self.done,
                path: vop.path.clone(),
                op: vop.op.name(),
                output_sha256: digest,
            });
            self.hashing += t0.elapsed();
            if let Some(observer) = &mut self.observer {
                let entry = ops.last().expect("pushed just above");
                observer(entry, &output);
            }
        }
        self.free(vop.output_slot);
        self.current += bytes(&output);
        self.slots[vop.output_slot] = Some(output);
        for &slot in &vop.free_after {
            self.free(slot);
        }
        self.done += 1;
        if let Some(progress) = &mut self.progress {
            progress(self.done, self.program.op_count());
        }
        Ok(())
    }
}
