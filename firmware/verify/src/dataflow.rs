//! The dataflow of a trace: for execution index `i` (trace leaf `i`), which
//! op ran and which values it read, each either a program input or the
//! output of an earlier leaf. A spot checker needs it to fetch exactly an
//! op's operands; a referee needs it to know which leaves an op depends on.
//!
//! It is derived from the program's structure (repeat blocks unrolled in
//! execution order, as the executor runs them), not from anything a node
//! says.

use std::collections::HashMap;

use lockstep_program::{Step, ValidatedOp, ValidatedProgram};

/// Where an op's operand comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A program input, by name (its hash is in the receipt).
    Input(String),
    /// The output of an earlier op execution: that leaf's index.
    Leaf(u64),
}

impl Source {
    /// `input:NAME` or `leaf:J`, as dispute records write it.
    pub fn label(&self) -> String {
        match self {
            Source::Input(n) => format!("input:{n}"),
            Source::Leaf(j) => format!("leaf:{j}"),
        }
    }
}

/// One op execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFlow {
    /// Index into [`ValidatedProgram::ops`].
    pub op: usize,
    /// One source per operand, in operand order.
    pub inputs: Vec<Source>,
}

/// Every leaf's op and operands, in execution order.
#[derive(Debug, Clone)]
pub struct Dataflow {
    leaves: Vec<LeafFlow>,
}

impl Dataflow {
    /// Unrolls `program`. Its length is [`ValidatedProgram::op_count`],
    /// which validation bounded by `MAX_PROGRAM_OPS`.
    pub fn of(program: &ValidatedProgram) -> Dataflow {
        let by_path: HashMap<&[usize], usize> = program
            .ops()
            .iter()
            .enumerate()
            .map(|(i, op)| (op.path.indices(), i))
            .collect();
        let mut producers: HashMap<String, Source> = program
            .inputs()
            .iter()
            .map(|d| (d.name.clone(), Source::Input(d.name.clone())))
            .collect();
        let mut leaves = Vec::with_capacity(program.op_count() as usize);
        walk(
            &program.program().body,
            &mut Vec::new(),
            &by_path,
            &mut producers,
            &mut leaves,
        );
        Dataflow { leaves }
    }

    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    pub fn get(&self, index: u64) -> Option<&LeafFlow> {
        self.leaves.get(usize::try_from(index).ok()?)
    }

    /// The validated op behind leaf `index`.
    pub fn op<'p>(&self, program: &'p ValidatedProgram, index: u64) -> Option<&'p ValidatedOp> {
        self.get(index).map(|l| &program.ops()[l.op])
    }
}

fn walk(
    body: &[Step],
    path: &mut Vec<usize>,
    by_path: &HashMap<&[usize], usize>,
    producers: &mut HashMap<String, Source>,
    leaves: &mut Vec<LeafFlow>,
) {
    for (i, step) in body.iter().enumerate() {
        path.push(i);
        match step {
            Step::Op(op) => {
                let inputs = op
                    .inputs
                    .iter()
                    .map(|n| {
                        producers
                            .get(n)
                            .cloned()
                            .expect("validated: every name is defined before it is read")
                    })
                    .collect();
                let index = by_path[path.as_slice()];
                producers.insert(op.output.clone(), Source::Leaf(leaves.len() as u64));
                leaves.push(LeafFlow { op: index, inputs });
            }
            Step::Repeat(r) => {
                for _ in 0..r.times {
                    walk(&r.body, path, by_path, producers, leaves);
                }
            }
        }
        path.pop();
    }
}
