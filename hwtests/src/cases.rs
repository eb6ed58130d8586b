//! The fixed conformance cases: every op of `lockstep_backend::Op` (and so
//! every kernel of the bundle the ops dispatch to) over several shapes
//! (1, primes, sizes that are no multiple of any tile or workgroup, a reduce
//! long enough for several tree passes) and seeded inputs full of edge
//! values. Changing a case changes the golden hashes: bump SUITE_VERSION.

use std::collections::BTreeMap;

use lockstep_backend::{Op, OpError};
use lockstep_tensor::{shape_string, Fill, SplitMix64, Tensor, TensorError};

/// Edge values per thousand elements in the edgy fills: every class (±0,
/// subnormals, ±inf, NaN, near-overflow) shows up in every case of a few
/// hundred elements.
const EDGE_PER_MILLE: u32 = 60;

/// How one input is made.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `Fill::Edgy` from this seed.
    Edgy { shape: Vec<usize>, seed: u64 },
    /// `Fill::Uniform` from this seed.
    Uniform { shape: Vec<usize>, seed: u64 },
    /// Class labels for `classes` classes: mostly valid, some out of range,
    /// fractional or NaN (which the ops define as "no label").
    Labels {
        len: usize,
        classes: usize,
        seed: u64,
    },
    /// A one-element tensor holding exactly this value.
    Value(f32),
}

impl Input {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Input::Edgy { shape, .. } | Input::Uniform { shape, .. } => shape.clone(),
            Input::Labels { len, .. } => vec![*len],
            Input::Value(_) => vec![1],
        }
    }

    pub fn make(&self) -> Result<Tensor, TensorError> {
        match self {
            Input::Edgy { shape, seed } => Tensor::filled(
                shape.clone(),
                *seed,
                Fill::Edgy {
                    edge_per_mille: EDGE_PER_MILLE,
                },
            ),
            Input::Uniform { shape, seed } => Tensor::filled(shape.clone(), *seed, Fill::Uniform),
            Input::Labels { len, classes, seed } => {
                let mut rng = SplitMix64::new(*seed);
                let data = (0..*len)
                    .map(|_| match rng.below(20) {
                        0 => *classes as f32,
                        1 => 0.5,
                        2 => f32::NAN,
                        3 => -1.0,
                        _ => rng.below(*classes as u64) as f32,
                    })
                    .collect();
                Tensor::new(vec![*len], data)
            }
            Input::Value(v) => Tensor::new(vec![1], vec![*v]),
        }
    }
}

/// One conformance case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `op/index`: the key of its golden hash.
    pub id: String,
    pub op: &'static str,
    pub attrs: BTreeMap<String, String>,
    pub inputs: Vec<Input>,
}

impl Case {
    pub fn parse_op(&self) -> Result<Op, OpError> {
        Op::parse(self.op, &self.attrs)
    }

    /// `op/index shapes attrs`, for progress and mismatches.
    pub fn describe(&self) -> String {
        let shapes: Vec<String> = self
            .inputs
            .iter()
            .map(|i| shape_string(&i.shape()))
            .collect();
        let attrs: Vec<String> = self.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} [{}] {}", self.id, shapes.join(", "), attrs.join(" "))
            .trim_end()
            .to_string()
    }
}

struct Builder {
    cases: Vec<Case>,
    seed: u64,
}

impl Builder {
    fn next_seed(&mut self) -> u64 {
        self.seed += 1;
        self.seed
    }

    fn edgy(&mut self, shape: &[usize]) -> Input {
        Input::Edgy {
            shape: shape.to_vec(),
            seed: self.next_seed(),
        }
    }

    fn uniform(&mut self, shape: &[usize]) -> Input {
        Input::Uniform {
            shape: shape.to_vec(),
            seed: self.next_seed(),
        }
    }

    fn add(&mut self, op: &'static str, attrs: &[(&str, &str)], inputs: Vec<Input>) {
        let index = self.cases.iter().filter(|c| c.op == op).count();
        self.cases.push(Case {
            id: format!("{op}/{index}"),
            op,
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs,
        });
    }
}

/// Alternative attribute sets of one op.
type AttrSets = &'static [&'static [(&'static str, &'static str)]];

/// Shapes of the element-wise cases.
const FLAT: &[&[usize]] = &[&[1], &[257], &[61, 67], &[3, 5, 7]];
/// (rows, columns) of the row-wise and layout cases.
const ROWS: &[(usize, usize)] = &[(1, 1), (5, 33), (67, 129), (2, 1000)];

/// Every case, in a fixed order.
pub fn cases() -> Vec<Case> {
    let mut b = Builder {
        cases: Vec::new(),
        seed: 0x5EED_0000,
    };
    // matmul family: (m, k, n), including k = 0 and sizes off every tile.
    let dims: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (7, 13, 5),
        (31, 37, 41),
        (33, 70, 257),
        (64, 64, 64),
        (5, 0, 3),
        (3, 300, 2),
    ];
    for op in ["matmul", "matmul_tn", "matmul_nt"] {
        for (i, &(m, k, n)) in dims.iter().enumerate() {
            let (a, bb) = match op {
                "matmul" => ([m, k], [k, n]),
                "matmul_tn" => ([k, m], [k, n]),
                _ => ([m, k], [n, k]),
            };
            // Edge values spread through a whole row of the output; half
            // the cases use realistic values so most outputs are finite.
            let inputs = if i % 2 == 0 {
                vec![b.edgy(&a), b.edgy(&bb)]
            } else {
                vec![b.uniform(&a), b.uniform(&bb)]
            };
            b.add(op, &[], inputs);
        }
    }
    let binary: &[(&str, AttrSets)] = &[
        ("add", &[&[]]),
        ("sub", &[&[]]),
        ("mul", &[&[]]),
        ("div", &[&[]]),
        ("relu_backward", &[&[]]),
        ("tanh_backward", &[&[]]),
        ("gelu_backward", &[&[]]),
        (
            "axpby",
            &[
                &[("alpha", "0.5"), ("beta", "-2")],
                &[("alpha", "1e30"), ("beta", "1e30")],
            ],
        ),
        ("sgd_update", &[&[("lr", "0.01")], &[("lr", "-1e38")]]),
    ];
    for &(op, attr_sets) in binary {
        for attrs in attr_sets {
            for shape in FLAT {
                let inputs = vec![b.edgy(shape), b.edgy(shape)];
                b.add(op, attrs, inputs);
            }
            let inputs = vec![b.uniform(&[1000]), b.uniform(&[1000])];
            b.add(op, attrs, inputs);
        }
    }
    let unary: &[(&str, AttrSets)] = &[
        ("relu", &[&[]]),
        ("exp", &[&[]]),
        ("log", &[&[]]),
        ("sqrt", &[&[]]),
        ("tanh", &[&[]]),
        ("sigmoid", &[&[]]),
        ("erf", &[&[]]),
        ("gelu", &[&[]]),
        (
            "scale",
            &[
                &[("alpha", "0.5")],
                &[("alpha", "0x00000003")],
                &[("alpha", "-inf")],
            ],
        ),
        (
            "affine",
            &[
                &[("alpha", "2"), ("beta", "-1")],
                &[("alpha", "0x00400000"), ("beta", "1e-40")],
            ],
        ),
    ];
    for &(op, attr_sets) in unary {
        for attrs in attr_sets {
            for shape in FLAT {
                let inputs = vec![b.edgy(shape)];
                b.add(op, attrs, inputs);
            }
            let inputs = vec![b.uniform(&[1000])];
            b.add(op, attrs, inputs);
        }
    }
    // Reductions: a 70001-long row needs several reduce_tree passes.
    for op in ["sum_rows", "sum_cols"] {
        for &(m, n) in &[(1, 1), (3, 1000), (67, 129), (2, 70_001), (70_001, 2)] {
            let inputs = vec![b.edgy(&[m, n])];
            b.add(op, &[], inputs);
        }
        let inputs = vec![b.uniform(&[40, 3000])];
        b.add(op, &[], inputs);
    }
    for op in [
        "softmax_rows",
        "log_softmax_rows",
        "argmax_rows",
        "transpose",
    ] {
        for &(m, n) in ROWS {
            let inputs = vec![b.edgy(&[m, n])];
            b.add(op, &[], inputs);
        }
        let inputs = vec![b.uniform(&[64, 65])];
        b.add(op, &[], inputs);
    }
    for eps in [None, Some("0.1")] {
        let attrs: Vec<(&str, &str)> = eps.map(|e| ("eps", e)).into_iter().collect();
        for &(m, n) in ROWS {
            let inputs = vec![b.edgy(&[m, n]), b.uniform(&[n]), b.uniform(&[n])];
            b.add("layernorm_rows", &attrs, inputs);
            let inputs = vec![b.uniform(&[m, n]), b.edgy(&[m, n]), b.uniform(&[n])];
            b.add("layernorm_backward", &attrs, inputs);
            let inputs = vec![b.edgy(&[m, n]), b.uniform(&[m, n])];
            b.add("layernorm_backward_gamma", &attrs, inputs);
        }
    }
    for op in ["cross_entropy", "cross_entropy_backward"] {
        for &(m, n) in ROWS {
            let logits = if m > 2 {
                b.edgy(&[m, n])
            } else {
                b.uniform(&[m, n])
            };
            let labels = Input::Labels {
                len: m,
                classes: n,
                seed: b.next_seed(),
            };
            b.add(op, &[], vec![logits, labels]);
        }
    }
    for &(m, n) in ROWS {
        let inputs = vec![b.edgy(&[m, n]), b.edgy(&[n])];
        b.add("bias_add", &[], inputs);
    }
    for index in [0.0, 256.0, 257.0, 3.5, -1.0, f32::NAN] {
        let inputs = vec![b.uniform(&[257]), Input::Value(-0.0), Input::Value(index)];
        b.add("set_element", &[], inputs);
    }
    let inputs = vec![b.edgy(&[5, 7]), b.edgy(&[1]), Input::Value(34.0)];
    b.add("set_element", &[], inputs);
    for (lr, eps) in [("0.001", "1e-8"), ("0.1", "1e-30")] {
        for shape in [&[257][..], &[61, 67]] {
            let inputs = vec![
                b.edgy(shape),
                b.uniform(shape),
                b.edgy(shape),
                Input::Value(0.1),
                Input::Value(0.001),
            ];
            b.add("adam_update", &[("lr", lr), ("eps", eps)], inputs);
        }
    }
    let rand: &[&[(&str, &str)]] = &[
        &[("shape", "1"), ("seed", "0")],
        &[
            ("shape", "1001"),
            ("seed", "7"),
            ("stream", "3"),
            ("offset", "4294967295"),
        ],
        &[
            ("shape", "33,65"),
            ("seed", "18446744073709551615"),
            ("stream", "4294967295"),
            ("offset", "18446744073709551614"),
        ],
    ];
    for op in ["rand_uniform", "rand_normal"] {
        for attrs in rand {
            b.add(op, attrs, Vec::new());
        }
    }
    // Last, so that adding it moved no other case's seeds: edgy conditions
    // (±0, subnormals, NaN) pick between edgy values.
    for shape in FLAT {
        let inputs = vec![b.edgy(shape), b.edgy(shape), b.edgy(shape)];
        b.add("where", &[], inputs);
    }
    // Data movement, fills and row max and mean (issue 19), after every
    // earlier case for the same reason.
    for (m, n) in [(1, 1), (7, 33), (61, 67)] {
        let inputs = vec![b.edgy(&[m, n]), b.edgy(&[3, n])];
        b.add("concat_rows", &[], inputs);
        let inputs = vec![b.edgy(&[m, n]), b.edgy(&[m, 5])];
        b.add("concat_cols", &[], inputs);
        let start = (m / 2).to_string();
        let len = (m - m / 2).to_string();
        let inputs = vec![b.edgy(&[m, n])];
        b.add("slice_rows", &[("start", &start), ("len", &len)], inputs);
        let start = (n / 3).to_string();
        let len = (n - n / 3).to_string();
        let inputs = vec![b.edgy(&[m, n])];
        b.add("slice_cols", &[("start", &start), ("len", &len)], inputs);
        let shape = format!("{n},{m}");
        let inputs = vec![b.edgy(&[m, n])];
        b.add("reshape", &[("shape", &shape)], inputs);
        let index = Input::Labels {
            len: 40,
            classes: m,
            seed: b.next_seed(),
        };
        let inputs = vec![b.edgy(&[m, n]), index];
        b.add("gather_rows", &[], inputs);
        let inputs = vec![b.edgy(&[m, n])];
        b.add("max_rows", &[], inputs);
        let inputs = vec![b.edgy(&[m, n])];
        b.add("mean_rows", &[], inputs);
        let shape = format!("{m},{n}");
        b.add("zeros", &[("shape", &shape)], Vec::new());
        for value in ["-0.0", "0x00000001", "nan", "-inf", "3.5"] {
            b.add("full", &[("shape", &shape), ("value", value)], Vec::new());
        }
    }
    // Comparisons: edgy against edgy, and a tensor against itself's copy
    // (equal everywhere but at NaN).
    for op in ["greater", "less", "equal"] {
        for shape in FLAT {
            let inputs = vec![b.edgy(shape), b.edgy(shape)];
            b.add(op, &[], inputs);
        }
        let seed = b.next_seed();
        let same = |seed| Input::Edgy {
            shape: vec![61, 67],
            seed,
        };
        b.add(op, &[], vec![same(seed), same(seed)]);
    }
    // Reordered axes, rank 3 and 4.
    for (shape, perm) in [
        (&[5, 7, 9][..], "2,0,1"),
        (&[3, 4, 5, 6][..], "0,2,1,3"),
        (&[2, 3, 4, 5][..], "3,2,1,0"),
    ] {
        let inputs = vec![b.edgy(shape)];
        b.add("permute", &[("perm", perm)], inputs);
    }
    b.cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_cases_and_every_case_is_valid() {
        let all = cases();
        for name in lockstep_backend::OP_NAMES {
            assert!(all.iter().any(|c| c.op == *name), "no case for {name}");
        }
        for c in &all {
            let op = c.parse_op().unwrap_or_else(|e| panic!("{}: {e}", c.id));
            let shapes: Vec<Vec<usize>> = c.inputs.iter().map(Input::shape).collect();
            let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            op.output_shape(&refs)
                .unwrap_or_else(|e| panic!("{}: {e}", c.id));
        }
        let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "case ids are unique");
    }

    #[test]
    fn labels_mix_valid_and_invalid_classes() {
        let t = Input::Labels {
            len: 400,
            classes: 7,
            seed: 1,
        }
        .make()
        .unwrap();
        let valid = t
            .data()
            .iter()
            .filter(|&&x| (0.0..7.0).contains(&x) && x.fract() == 0.0)
            .count();
        assert!(valid > 300 && valid < 400, "{valid}");
    }
}
