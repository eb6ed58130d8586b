//! Validation: everything about a program that can be known before it runs.
//!
//! [`validate`] checks names, ops and attributes, arities, shapes, that every
//! tensor is defined before it is read, repeat counts and nesting, the total
//! number of op executions, that repeat bodies keep the shapes of what they
//! carry, and the peak memory of live tensors; it returns a
//! [`ValidatedProgram`] that the executor runs without re-checking.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use lockstep_backend::{Op, OpError};
use lockstep_limits::{
    DEFAULT_PROGRAM_MEMORY_BYTES, MAX_DIM, MAX_PROGRAM_NESTING, MAX_PROGRAM_OPS, MAX_RANK,
    MAX_REPEAT, MAX_TENSOR_ELEMENTS, MAX_TENSOR_NAME_BYTES,
};
use lockstep_tensor::shape_string;

use crate::model::{Program, Step, PROGRAM_VERSION};

/// Where a step sits: its index in the top-level body, then its index in
/// each enclosing repeat block's body. Written `5.2`: step 2 of the repeat
/// block that is top-level step 5.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpPath(Vec<usize>);

impl OpPath {
    pub fn new(indices: Vec<usize>) -> OpPath {
        OpPath(indices)
    }

    pub fn indices(&self) -> &[usize] {
        &self.0
    }

    fn child(&self, i: usize) -> OpPath {
        let mut v = self.0.clone();
        v.push(i);
        OpPath(v)
    }
}

impl fmt::Display for OpPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, i) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(".")?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}

/// A step's position and what it is: written `op 5.2 (matmul)`, or
/// `op 5 (repeat)` for a repeat block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub path: OpPath,
    /// The op name (as written, if it did not parse), or `repeat`.
    pub op: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {} ({})", self.path, self.op)
    }
}

/// What is wrong at one step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepProblem {
    /// Unknown op, bad attribute, wrong arity or shapes that do not fit, as
    /// the op set reports it (without repeating the op name).
    #[error("{}", op_problem(.0))]
    Op(OpError),
    #[error("reads '{0}' before anything defines it (undeclared tensor)")]
    Undeclared(String),
    #[error(
        "reads its own output '{0}', which nothing has defined yet (cycle: the op feeds itself)"
    )]
    Cycle(String),
    #[error("'{name}' is not a valid tensor name: {why}")]
    BadName { name: String, why: &'static str },
    #[error("repeat count {0}; it must be 1 to {MAX_REPEAT}")]
    RepeatCount(u32),
    #[error("the repeat body is empty")]
    EmptyRepeat,
    #[error("repeat blocks nested deeper than {MAX_PROGRAM_NESTING}")]
    TooDeep,
    #[error(
        "the program would execute more than {MAX_PROGRAM_OPS} ops, counting every repeat \
         iteration (this op alone runs {runs} times)"
    )]
    TooManyOps { runs: u64 },
    /// A repeat body changed the shape of a tensor from before the block.
    #[error("{0}")]
    ShapeChange(Box<CarriedShape>),
    #[error("live tensors would take {needed} bytes here, over the memory limit of {limit} bytes")]
    Memory { needed: u64, limit: u64 },
}

/// A tensor whose shape a repeat body changes: `name` existed before repeat
/// block `block` with shape `from` and leaves the body with shape `to`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "changes the shape of '{name}' from {from} to {to}, but '{name}' exists before repeat \
     block {block}, so the next iteration would see another shape; a repeat body must keep \
     the shapes of the tensors it carries"
)]
pub struct CarriedShape {
    pub name: String,
    pub block: OpPath,
    pub from: String,
    pub to: String,
}

/// Why a program cannot run. `Display` is one line that names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("program version {0} is not supported; this build reads version {PROGRAM_VERSION}")]
    Version(u32),
    #[error("input '{name}': {problem}")]
    Input { name: String, problem: String },
    #[error("output '{name}': {problem}")]
    Output { name: String, problem: String },
    #[error("the live inputs take {needed} bytes, over the memory limit of {limit} bytes")]
    InputsOverMemory { needed: u64, limit: u64 },
    #[error("{at}: {problem}")]
    Step { at: Site, problem: StepProblem },
}

impl ProgramError {
    /// The step at fault, if the error is about one.
    pub fn site(&self) -> Option<&Site> {
        match self {
            ProgramError::Step { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// An op error's message without the op name it starts with (the site
/// already names the op).
fn op_problem(e: &OpError) -> String {
    let text = e.to_string();
    if let OpError::Unknown(_) = e {
        return text;
    }
    for sep in [": ", " "] {
        for name in lockstep_backend::OP_NAMES {
            if let Some(rest) = text.strip_prefix(&format!("{name}{sep}")) {
                return rest.to_string();
            }
        }
    }
    text
}

/// Checks a tensor name: it becomes a file name (`NAME.npy`) in `lockstep
/// exec --out-dir`, so it must be a plain, short one.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_TENSOR_NAME_BYTES {
        return Err("it is longer than 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("use ASCII letters, digits, '_', '-' and '.' only");
    }
    if name.starts_with(['.', '-']) {
        return Err("it must not start with '.' or '-'");
    }
    Ok(())
}

/// Options for [`validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Bound on the bytes of tensors live at once.
    pub memory_limit: u64,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            memory_limit: DEFAULT_PROGRAM_MEMORY_BYTES,
        }
    }
}

/// A named tensor with its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedShape {
    pub name: String,
    pub shape: Vec<usize>,
}

/// One op of the program as validation saw it (each op once, in program
/// order, however often a repeat runs it).
#[derive(Debug, Clone)]
pub struct ValidatedOp {
    pub path: OpPath,
    pub op: Op,
    pub inputs: Vec<String>,
    pub output: String,
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shape: Vec<usize>,
    pub(crate) input_slots: Vec<usize>,
    pub(crate) output_slot: usize,
    pub(crate) output_bytes: u64,
    /// Slots not live after this op (its dying inputs, or its own output if
    /// nothing reads it).
    pub(crate) free_after: Vec<usize>,
}

impl ValidatedOp {
    pub fn site(&self) -> Site {
        Site {
            path: self.path.clone(),
            op: self.op.name().to_string(),
        }
    }
}

/// The validated program tree: ops by index into `ValidatedProgram::ops`.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Op(usize),
    Repeat(RepeatNode),
}

#[derive(Debug, Clone)]
pub(crate) struct RepeatNode {
    pub(crate) times: u32,
    pub(crate) body: Vec<Node>,
    /// Slots live at the end of an iteration only for the next one.
    pub(crate) free_after: Vec<usize>,
}

/// A program that passed every check, with what the executor needs: parsed
/// ops, shapes, and where each tensor dies.
#[derive(Debug, Clone)]
pub struct ValidatedProgram {
    program: Program,
    sha256: [u8; 32],
    pub(crate) names: Vec<String>,
    inputs: Vec<NamedShape>,
    pub(crate) input_slots: Vec<usize>,
    outputs: Vec<NamedShape>,
    pub(crate) output_slots: Vec<usize>,
    ops: Vec<ValidatedOp>,
    pub(crate) body: Vec<Node>,
    /// Inputs nothing reads (and that are not outputs).
    pub(crate) free_at_start: Vec<usize>,
    peak_bytes: u64,
    op_count: u64,
    memory_limit: u64,
}

impl ValidatedProgram {
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// [`Program::sha256`].
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Declared inputs, in declaration order.
    pub fn inputs(&self) -> &[NamedShape] {
        &self.inputs
    }

    /// Declared outputs with the shapes they will have.
    pub fn outputs(&self) -> &[NamedShape] {
        &self.outputs
    }

    /// Every op once, in program order.
    pub fn ops(&self) -> &[ValidatedOp] {
        &self.ops
    }

    /// Peak bytes of live tensors during execution (inputs included).
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }

    /// Op executions, counting every repeat iteration: the trace's length.
    pub fn op_count(&self) -> u64 {
        self.op_count
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }
}

fn input_shape(shape: &[u64]) -> Result<Vec<usize>, String> {
    let show = || {
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        if dims.is_empty() {
            "scalar".to_string()
        } else {
            dims.join("x")
        }
    };
    if shape.len() > MAX_RANK {
        return Err(format!(
            "shape {} has {} dimensions; Lockstep allows at most {MAX_RANK}",
            show(),
            shape.len()
        ));
    }
    let too_large = || {
        format!(
            "shape {} exceeds Lockstep's limits ({MAX_DIM} per dimension, \
             {MAX_TENSOR_ELEMENTS} elements in all)",
            show()
        )
    };
    let mut n: usize = 1;
    let mut dims = Vec::with_capacity(shape.len());
    for &d in shape {
        let d = usize::try_from(d)
            .ok()
            .filter(|&d| d <= MAX_DIM)
            .ok_or_else(too_large)?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(too_large)?;
        dims.push(d);
    }
    Ok(dims)
}

fn bytes_of(shape: &[usize]) -> u64 {
    // Shapes here passed the tensor bound, so this cannot overflow.
    shape.iter().product::<usize>() as u64 * 4
}

/// Validates `program` before anything runs. Errors name the step at fault.
pub fn validate(
    program: &Program,
    options: &ValidateOptions,
) -> Result<ValidatedProgram, ProgramError> {
    if program.version != PROGRAM_VERSION {
        return Err(ProgramError::Version(program.version));
    }
    let mut c = Checker::default();
    let mut inputs = Vec::new();
    let mut input_slots = Vec::new();
    for decl in &program.inputs {
        let input_err = |problem: String| ProgramError::Input {
            name: decl.name.clone(),
            problem,
        };
        check_name(&decl.name)
            .map_err(|why| input_err(format!("not a valid tensor name: {why}")))?;
        let shape = input_shape(&decl.shape).map_err(input_err)?;
        let slot = c.slot(&decl.name);
        if c.shapes[slot].is_some() {
            return Err(input_err("declared twice".into()));
        }
        c.shapes[slot] = Some(shape.clone());
        inputs.push(NamedShape {
            name: decl.name.clone(),
            shape,
        });
        input_slots.push(slot);
    }

    let body = c.body(&program.body, &OpPath(vec![]), 0, 1)?;

    let mut outputs = Vec::new();
    let mut output_slots = Vec::new();
    for name in &program.outputs {
        let output_err = |problem: String| ProgramError::Output {
            name: name.clone(),
            problem,
        };
        check_name(name).map_err(|why| output_err(format!("not a valid tensor name: {why}")))?;
        if outputs.iter().any(|o: &NamedShape| &o.name == name) {
            return Err(output_err("declared twice".into()));
        }
        let shape = c
            .index
            .get(name)
            .and_then(|&slot| c.shapes[slot].clone().map(|s| (slot, s)));
        let Some((slot, shape)) = shape else {
            return Err(output_err(
                "never produced: no input or step defines it".into(),
            ));
        };
        outputs.push(NamedShape {
            name: name.clone(),
            shape,
        });
        output_slots.push(slot);
    }

    let mut v = ValidatedProgram {
        program: program.clone(),
        sha256: program.sha256(),
        names: c.names,
        inputs,
        input_slots,
        outputs,
        output_slots,
        ops: c.ops,
        body,
        free_at_start: Vec::new(),
        peak_bytes: 0,
        op_count: c.executed,
        memory_limit: options.memory_limit,
    };
    liveness(&mut v);
    v.peak_bytes = peak_memory(&v, options.memory_limit)?;
    Ok(v)
}

/// The forward pass: names, ops, shapes, counts.
#[derive(Default)]
struct Checker {
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// Current shape of each slot; `None` while undefined.
    shapes: Vec<Option<Vec<usize>>>,
    /// The op that last defined each slot.
    last_def: Vec<Option<usize>>,
    ops: Vec<ValidatedOp>,
    executed: u64,
}

impl Checker {
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&s) = self.index.get(name) {
            return s;
        }
        let s = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), s);
        self.shapes.push(None);
        self.last_def.push(None);
        s
    }

    /// `runs`: how often one pass over `steps` is executed in all.
    fn body(
        &mut self,
        steps: &[Step],
        parent: &OpPath,
        depth: usize,
        runs: u64,
    ) -> Result<Vec<Node>, ProgramError> {
        let mut nodes = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let path = parent.child(i);
            match step {
                Step::Op(s) => {
                    let shown: String = s.op.chars().take(MAX_TENSOR_NAME_BYTES).collect();
                    let mut at = Site {
                        path: path.clone(),
                        op: shown,
                    };
                    let err = |at: &Site, problem| ProgramError::Step {
                        at: at.clone(),
                        problem,
                    };
                    let op =
                        Op::parse(&s.op, &s.attrs).map_err(|e| err(&at, StepProblem::Op(e)))?;
                    at.op = op.name().to_string();
                    for name in s.inputs.iter().chain([&s.output]) {
                        check_name(name).map_err(|why| {
                            err(
                                &at,
                                StepProblem::BadName {
                                    name: name.clone(),
                                    why,
                                },
                            )
                        })?;
                    }
                    if s.inputs.len() != op.arity() {
                        return Err(err(
                            &at,
                            StepProblem::Op(OpError::Arity {
                                op: op.name(),
                                expected: op.arity(),
                                got: s.inputs.len(),
                            }),
                        ));
                    }
                    let mut input_slots = Vec::with_capacity(s.inputs.len());
                    let mut input_shapes = Vec::with_capacity(s.inputs.len());
                    for name in &s.inputs {
                        let shape = self
                            .index
                            .get(name)
                            .and_then(|&slot| self.shapes[slot].clone().map(|sh| (slot, sh)));
                        let Some((slot, shape)) = shape else {
                            let problem = if *name == s.output {
                                StepProblem::Cycle(name.clone())
                            } else {
                                StepProblem::Undeclared(name.clone())
                            };
                            return Err(err(&at, problem));
                        };
                        input_slots.push(slot);
                        input_shapes.push(shape);
                    }
                    let refs: Vec<&[usize]> = input_shapes.iter().map(Vec::as_slice).collect();
                    let output_shape = op
                        .output_shape(&refs)
                        .map_err(|e| err(&at, StepProblem::Op(e)))?;
                    self.executed = self.executed.saturating_add(runs);
                    if self.executed > MAX_PROGRAM_OPS {
                        return Err(err(&at, StepProblem::TooManyOps { runs }));
                    }
                    let output_slot = self.slot(&s.output);
                    self.shapes[output_slot] = Some(output_shape.clone());
                    self.last_def[output_slot] = Some(self.ops.len());
                    nodes.push(Node::Op(self.ops.len()));
                    self.ops.push(ValidatedOp {
                        path,
                        op,
                        inputs: s.inputs.clone(),
                        output: s.output.clone(),
                        input_shapes,
                        output_bytes: bytes_of(&output_shape),
                        output_shape,
                        input_slots,
                        output_slot,
                        free_after: Vec::new(),
                    });
                }
                Step::Repeat(r) => {
                    let at = Site {
                        path: path.clone(),
                        op: "repeat".into(),
                    };
                    let err = |problem| ProgramError::Step {
                        at: at.clone(),
                        problem,
                    };
                    if depth + 1 > MAX_PROGRAM_NESTING {
                        return Err(err(StepProblem::TooDeep));
                    }
                    if r.times == 0 || r.times > MAX_REPEAT {
                        return Err(err(StepProblem::RepeatCount(r.times)));
                    }
                    if r.body.is_empty() {
                        return Err(err(StepProblem::EmptyRepeat));
                    }
                    let before = self.shapes.clone();
                    let body = self.body(
                        &r.body,
                        &path,
                        depth + 1,
                        runs.saturating_mul(r.times.into()),
                    )?;
                    // One pass over the body leaves every carried tensor as
                    // it found it, so every iteration sees the same shapes.
                    for (slot, old) in before.iter().enumerate() {
                        let Some(old) = old else { continue };
                        let new = self.shapes[slot]
                            .as_ref()
                            .expect("definitions are never undone");
                        if new != old {
                            let op = &self.ops[self.last_def[slot]
                                .expect("a changed shape was defined in the body")];
                            return Err(ProgramError::Step {
                                at: op.site(),
                                problem: StepProblem::ShapeChange(Box::new(CarriedShape {
                                    name: self.names[slot].clone(),
                                    block: path.clone(),
                                    from: shape_string(old),
                                    to: shape_string(new),
                                })),
                            });
                        }
                    }
                    nodes.push(Node::Repeat(RepeatNode {
                        times: r.times,
                        body,
                        free_after: Vec::new(),
                    }));
                }
            }
        }
        Ok(nodes)
    }
}

// ----------------------------------------------------------------- liveness

/// Backward liveness over the tree. A repeat body's live-out is the loop's
/// live-out plus the body's own live-in (the next iteration reads it), found
/// by iterating to the fixed point; what is live only for a next iteration is
/// freed when the loop ends.
fn liveness(v: &mut ValidatedProgram) {
    let live_out: BTreeSet<usize> = v.output_slots.iter().copied().collect();
    let mut body = std::mem::take(&mut v.body);
    let live_in = live_seq(&mut body, &mut v.ops, &live_out);
    v.body = body;
    v.free_at_start = v
        .input_slots
        .iter()
        .copied()
        .filter(|s| !live_in.contains(s))
        .collect();
}

fn live_seq(
    nodes: &mut [Node],
    ops: &mut [ValidatedOp],
    live_out: &BTreeSet<usize>,
) -> BTreeSet<usize> {
    let mut live = live_out.clone();
    for node in nodes.iter_mut().rev() {
        match node {
            Node::Op(i) => {
                let op = &mut ops[*i];
                let mut free: Vec<usize> = op
                    .input_slots
                    .iter()
                    .copied()
                    .chain([op.output_slot])
                    .filter(|s| !live.contains(s))
                    .collect();
                free.sort_unstable();
                free.dedup();
                op.free_after = free;
                live.remove(&op.output_slot);
                live.extend(op.input_slots.iter().copied());
            }
            Node::Repeat(r) => {
                let after = live.clone();
                let mut out = after.clone();
                let live_in = loop {
                    let live_in = live_seq(&mut r.body, ops, &out);
                    let next: BTreeSet<usize> = after.union(&live_in).copied().collect();
                    if next == out {
                        break live_in;
                    }
                    out = next;
                };
                r.free_after = out.difference(&after).copied().collect();
                // The body runs at least once, so what it reads first is
                // what the loop needs.
                live = live_in;
            }
        }
    }
    live
}

// ------------------------------------------------------------------- memory

/// Replays the executor's allocation and freeing on sizes alone (see
/// `exec.rs`, which does the same steps on tensors) and returns the peak,
/// or the first op at which it goes over `limit`.
fn peak_memory(v: &ValidatedProgram, limit: u64) -> Result<u64, ProgramError> {
    let mut sim = Sim {
        ops: &v.ops,
        held: vec![None; v.names.len()],
        current: 0,
        peak: 0,
        limit,
    };
    for (slot, decl) in v.input_slots.iter().zip(&v.inputs) {
        sim.held[*slot] = Some(bytes_of(&decl.shape));
        sim.current += bytes_of(&decl.shape);
    }
    for &slot in &v.free_at_start {
        sim.free(slot);
    }
    sim.peak = sim.current;
    if sim.current > limit {
        return Err(ProgramError::InputsOverMemory {
            needed: sim.current,
            limit,
        });
    }
    sim.nodes(&v.body)?;
    Ok(sim.peak)
}

struct Sim<'a> {
    ops: &'a [ValidatedOp],
    held: Vec<Option<u64>>,
    current: u64,
    peak: u64,
    limit: u64,
}

impl Sim<'_> {
    fn free(&mut self, slot: usize) {
        if let Some(b) = self.held[slot].take() {
            self.current -= b;
        }
    }

    fn nodes(&mut self, nodes: &[Node]) -> Result<(), ProgramError> {
        for node in nodes {
            match node {
                Node::Op(i) => {
                    let op = &self.ops[*i];
                    // An old value about to be overwritten, and not read by
                    // this op, is dead: drop it first.
                    if !op.input_slots.contains(&op.output_slot) {
                        self.free(op.output_slot);
                    }
                    let needed = self.current + op.output_bytes;
                    self.peak = self.peak.max(needed);
                    if needed > self.limit {
                        return Err(ProgramError::Step {
                            at: op.site(),
                            problem: StepProblem::Memory {
                                needed,
                                limit: self.limit,
                            },
                        });
                    }
                    self.free(op.output_slot);
                    self.held[op.output_slot] = Some(op.output_bytes);
                    self.current += op.output_bytes;
                    for &slot in &op.free_after {
                        self.free(slot);
                    }
                }
                Node::Repeat(r) => {
                    // An iteration is a function of the held set at its
                    // start: once two starts agree, the rest repeat exactly.
                    let mut previous: Option<Vec<Option<u64>>> = None;
                    for _ in 0..r.times {
                        if previous.as_ref() == Some(&self.held) {
                            break;
                        }
                        previous = Some(self.held.clone());
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
}
