//! Turning an op on given shapes into kernel dispatches: pure, so the
//! splitting and pass structure are tested without a device.

use lockstep_backend::{Op, OpError};
use lockstep_kernels::reference::matmul::Transpose;
use lockstep_kernels::reference::probe::ProbeKernel;
use lockstep_kernels::reference::reduce::{CHUNK, FAN};

/// Rows and columns of C one matmul workgroup computes (TM and TN = WG*CN in
/// matmul.comp); only the dispatch size depends on them, never the bits.
const MATMUL_TILE_M: usize = 16;
const MATMUL_TILE_N: usize = 256;
/// Rows per workgroup of rows.comp.
const ROWS_WORKGROUP: usize = 64;
/// Records per workgroup of probe.comp.
const PROBE_WORKGROUP: usize = 64;
/// The square tile of matmul_tiled.comp.
const MATMUL_TILED_TILE: usize = 64;

/// Which matmul kernels a device runs: both families compute the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernels {
    /// matmul.comp: register blocks fed straight from the buffers; fastest
    /// on CPU devices such as lavapipe.
    Direct,
    /// matmul_tiled.comp: shared-memory tiles; for GPUs.
    Tiled,
}

/// What a plan must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub max_groups: [u32; 3],
    pub matmul: MatmulKernels,
}

/// A buffer a dispatch reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Input(usize),
    Temp(usize),
    Output,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dispatch {
    pub kernel: &'static str,
    /// One slot per binding, in binding order.
    pub bindings: Vec<Slot>,
    pub push: Vec<u32>,
    pub groups: [u32; 3],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub out_shape: Vec<usize>,
    /// Element counts of the temporaries.
    pub temps: Vec<usize>,
    /// Run in order, each after the previous one's writes are visible.
    pub dispatches: Vec<Dispatch>,
}

/// The row kernels (rows.comp): one invocation walks its row in at most
/// four passes over the row's n elements.
const ROW_KERNELS: &[&str] = &[
    "argmax_rows",
    "cross_entropy_backward",
    "cross_entropy_rows",
    "layernorm_backward",
    "layernorm_dy_xhat",
    "layernorm_rows",
    "log_softmax_rows",
    "softmax_rows",
];
const ROW_PASSES: u64 = 4;

/// An upper bound on the loop iterations one invocation of `plan` runs in
/// its loops whose length depends on the operands: the direct matmul's k
/// loop and a row kernel's passes over n, times the grid-stride passes of
/// a clamped dispatch. (The other kernels' loops have constant bounds, or
/// grid-stride counts far below this at any tensor size the limits allow.)
/// lavapipe leaves any loop after 65535 iterations, nested ones counted
/// together, and computes wrong bits without an error; the backend refuses
/// a plan over that bound there.
pub(crate) fn longest_loop(plan: &Plan) -> u64 {
    let up = |a: u64, b: u64| a.div_ceil(b.max(1));
    plan.dispatches
        .iter()
        .map(|d| {
            let g = |i: usize| u64::from(d.groups[i]);
            let w = |i: usize| u64::from(d.push.get(i).copied().unwrap_or(0));
            match d.kernel {
                "matmul" | "matmul_tn" | "matmul_nt" => {
                    let (m, n, k) = (w(0), w(1), w(2));
                    let passes = up(up(m, MATMUL_TILE_M as u64), g(1))
                        * up(up(n, MATMUL_TILE_N as u64), g(0));
                    k * passes
                }
                name if ROW_KERNELS.contains(&name) => {
                    let (m, n) = (w(0), w(1));
                    ROW_PASSES * n * up(m, g(0) * ROWS_WORKGROUP as u64)
                }
                _ => 0,
            }
        })
        .max()
        .unwrap_or(0)
}

/// Workgroup counts are clamped to the device's limits; the kernels
/// grid-stride over whatever the dispatch does not cover, computing each
/// output exactly as they would in a larger dispatch.
fn clamp(needed: usize, limit: u32) -> u32 {
    (needed.max(1) as u64).min(limit.max(1) as u64) as u32
}

/// One dispatch of a probe kernel over `records` records: input words in
/// slot 0, output words in the output slot.
pub(crate) fn probe_plan(kernel: ProbeKernel, records: usize, target: Target) -> Plan {
    Plan {
        out_shape: vec![records * kernel.out_words],
        temps: Vec::new(),
        dispatches: vec![Dispatch {
            kernel: kernel.name,
            bindings: vec![Slot::Input(0), Slot::Output],
            push: vec![records as u32],
            groups: [
                clamp(records.div_ceil(PROBE_WORKGROUP), target.max_groups[0]),
                1,
                1,
            ],
        }],
    }
}

pub(crate) fn plan(op: &Op, shapes: &[&[usize]], target: Target) -> Result<Plan, OpError> {
    let max_groups = target.max_groups;
    let out_shape = op.output_shape(shapes)?;
    let out_len: usize = out_shape.iter().product();
    let mut plan = Plan {
        out_shape,
        temps: Vec::new(),
        dispatches: Vec::new(),
    };
    // An empty output needs no work; a non-empty output over an empty
    // operand (k = 0, a sum over 0 elements) is all +0.0 by definition,
    // which the executor writes without a kernel.
    let in_len: usize = shapes
        .iter()
        .map(|s| s.iter().product::<usize>())
        .min()
        .unwrap_or(out_len);
    // Data movement from an empty operand is no sum: concat and gather
    // plan it below.
    let moves = matches!(op, Op::ConcatRows | Op::ConcatCols | Op::GatherRows);
    if out_len == 0 || (in_len == 0 && !moves) {
        return Ok(plan);
    }
    let linear = |n: usize| [clamp(n.div_ceil(256), max_groups[0]), 1, 1];
    let per_row = |m: usize| [clamp(m.div_ceil(ROWS_WORKGROUP), max_groups[0]), 1, 1];
    let u = |v: usize| v as u32;
    let (m, n) = match shapes.first() {
        Some([m, n]) => (*m, *n),
        _ => (0, 0),
    };
    let inputs = |count: usize| -> Vec<Slot> {
        (0..count)
            .map(Slot::Input)
            .chain(std::iter::once(Slot::Output))
            .collect()
    };
    // `len` copies of `value`, and a copy of `src` (layout.comp's slice
    // kernel over one row).
    let fill = |len: usize, value: f32| Dispatch {
        kernel: "fill",
        bindings: vec![Slot::Output],
        push: vec![1, u(len), value.to_bits(), 0],
        groups: linear(len),
    };
    let copy = |src: Slot, len: usize| Dispatch {
        kernel: "slice",
        bindings: vec![src, Slot::Output],
        push: vec![1, u(len), 0, 0],
        groups: linear(len),
    };
    // Element-wise kernels: (len, alpha bits, beta bits).
    let elementwise =
        |plan: &mut Plan, kernel: &'static str, arity: usize, alpha: f32, beta: f32| {
            plan.dispatches.push(Dispatch {
                kernel,
                bindings: inputs(arity),
                push: vec![u(out_len), alpha.to_bits(), beta.to_bits()],
                groups: linear(out_len),
            })
        };
    let rows = |plan: &mut Plan, kernel: &'static str, bindings: Vec<Slot>, eps: f32| {
        plan.dispatches.push(Dispatch {
            kernel,
            bindings,
            push: vec![u(m), u(n), eps.to_bits()],
            groups: per_row(m),
        })
    };
    match op {
        Op::Matmul(t) => {
            let (m, k, n) = op.matmul_dims(shapes)?;
            let (kernel, tile_m, tile_n) = match (target.matmul, t) {
                (MatmulKernels::Direct, _) => (op.name(), MATMUL_TILE_M, MATMUL_TILE_N),
                (MatmulKernels::Tiled, Transpose::None) => {
                    ("matmul_tiled", MATMUL_TILED_TILE, MATMUL_TILED_TILE)
                }
                (MatmulKernels::Tiled, Transpose::A) => {
                    ("matmul_tn_tiled", MATMUL_TILED_TILE, MATMUL_TILED_TILE)
                }
                (MatmulKernels::Tiled, Transpose::B) => {
                    ("matmul_nt_tiled", MATMUL_TILED_TILE, MATMUL_TILED_TILE)
                }
            };
            plan.dispatches.push(Dispatch {
                kernel,
                bindings: inputs(2),
                push: vec![u(m), u(n), u(k)],
                groups: [
                    clamp(n.div_ceil(tile_n), max_groups[0]),
                    clamp(m.div_ceil(tile_m), max_groups[1]),
                    1,
                ],
            });
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::ReluBackward
        | Op::TanhBackward
        | Op::GeluBackward
        | Op::Greater
        | Op::Less
        | Op::Equal => elementwise(&mut plan, op.name(), 2, 0.0, 0.0),
        Op::Where => elementwise(&mut plan, "where", 3, 0.0, 0.0),
        Op::Axpby { alpha, beta } => elementwise(&mut plan, "axpby", 2, *alpha, *beta),
        Op::SgdUpdate { lr } => elementwise(&mut plan, "sgd_update", 2, *lr, 0.0),
        Op::Scale { alpha } => elementwise(&mut plan, "scale", 1, *alpha, 0.0),
        Op::Affine { alpha, beta } => elementwise(&mut plan, "affine", 1, *alpha, *beta),
        Op::Relu | Op::Exp | Op::Log | Op::Sqrt | Op::Tanh | Op::Sigmoid | Op::Erf | Op::Gelu => {
            elementwise(&mut plan, op.name(), 1, 0.0, 0.0)
        }
        Op::AdamUpdate { lr, eps } => plan.dispatches.push(Dispatch {
            kernel: "adam_update",
            bindings: inputs(5),
            push: vec![u(out_len), lr.to_bits(), eps.to_bits()],
            groups: linear(out_len),
        }),
        Op::SoftmaxRows | Op::LogSoftmaxRows | Op::ArgmaxRows => {
            rows(&mut plan, op.name(), inputs(1), 0.0)
        }
        Op::LayernormRows { eps } | Op::LayernormBackward { eps } => {
            rows(&mut plan, op.name(), inputs(3), *eps)
        }
        Op::CrossEntropyBackward => rows(&mut plan, "cross_entropy_backward", inputs(2), 0.0),
        Op::LayernormBackwardGamma { eps } => {
            // dgamma = sum_cols(dy * xhat).
            plan.temps.push(m * n);
            let prod = Slot::Temp(0);
            rows(
                &mut plan,
                "layernorm_dy_xhat",
                vec![Slot::Input(0), Slot::Input(1), prod],
                *eps,
            );
            reduce(&mut plan, prod, (1, m, n), Slot::Output, max_groups);
        }
        Op::CrossEntropy => {
            // mean = sum(per-row losses) / m, the sum in the fixed tree order.
            plan.temps.push(m);
            plan.temps.push(1);
            let (losses, total) = (Slot::Temp(0), Slot::Temp(1));
            rows(
                &mut plan,
                "cross_entropy_rows",
                vec![Slot::Input(0), Slot::Input(1), losses],
                0.0,
            );
            reduce(&mut plan, losses, (1, m, 1), total, max_groups);
            plan.dispatches.push(Dispatch {
                kernel: "div_scalar",
                bindings: vec![total, Slot::Output],
                push: vec![1, (m as f32).to_bits(), 0],
                groups: [1, 1, 1],
            });
        }
        Op::SumRows => reduce(
            &mut plan,
            Slot::Input(0),
            (m, n, 1),
            Slot::Output,
            max_groups,
        ),
        Op::SumCols => reduce(
            &mut plan,
            Slot::Input(0),
            (1, m, n),
            Slot::Output,
            max_groups,
        ),
        Op::BiasAdd | Op::Transpose => plan.dispatches.push(Dispatch {
            kernel: op.name(),
            bindings: inputs(op.arity()),
            push: vec![u(m), u(n)],
            groups: linear(out_len),
        }),
        Op::SetElement => plan.dispatches.push(Dispatch {
            kernel: "set_element",
            bindings: inputs(3),
            push: vec![u(out_len), 1],
            groups: linear(out_len),
        }),
        // layout.comp's later kernels take (m, n, a, b).
        Op::Zeros(_) | Op::Full { .. } => {
            let value = match op {
                Op::Full { value, .. } => *value,
                _ => 0.0,
            };
            plan.dispatches.push(fill(out_len, value))
        }
        Op::Reshape(_) => plan.dispatches.push(copy(Slot::Input(0), out_len)),
        Op::ConcatRows | Op::ConcatCols => {
            let a_len = shapes[0].iter().product::<usize>();
            let b_len = shapes[1].iter().product::<usize>();
            // An empty operand binds no buffer: the output is the other.
            let dispatch = if a_len == 0 {
                copy(Slot::Input(1), out_len)
            } else if b_len == 0 {
                copy(Slot::Input(0), out_len)
            } else {
                let (rows, p, q) = if matches!(op, Op::ConcatRows) {
                    (1, a_len, b_len)
                } else {
                    (m, n, out_len / m - n)
                };
                Dispatch {
                    kernel: "concat",
                    bindings: inputs(2),
                    push: vec![u(rows), u(p), u(q), 0],
                    groups: linear(out_len),
                }
            };
            plan.dispatches.push(dispatch);
        }
        Op::SliceRows { start, len } => plan.dispatches.push(Dispatch {
            kernel: "slice",
            bindings: inputs(1),
            push: vec![1, u(len * n), 0, u(start * n)],
            groups: linear(out_len),
        }),
        Op::SliceCols { start, len } => plan.dispatches.push(Dispatch {
            kernel: "slice",
            bindings: inputs(1),
            push: vec![u(m), u(*len), u(n), u(*start)],
            groups: linear(out_len),
        }),
        Op::GatherRows => plan.dispatches.push(if m * n == 0 {
            // No row of an empty table is valid: every element is NaN.
            fill(
                out_len,
                f32::from_bits(lockstep_kernels::reference::CANONICAL_NAN_BITS),
            )
        } else {
            Dispatch {
                kernel: "gather_rows",
                bindings: inputs(2),
                push: vec![u(out_len / n), u(n), u(m), 0],
                groups: linear(out_len),
            }
        }),
        Op::Permute(perm) => {
            let (dims, strides) =
                lockstep_kernels::reference::layout::permute_plan(shapes[0], perm);
            plan.dispatches.push(Dispatch {
                kernel: "permute",
                bindings: inputs(1),
                push: dims.iter().chain(&strides).map(|&v| u(v)).collect(),
                groups: linear(out_len),
            })
        }
        Op::MaxRows => rows(&mut plan, "max_rows", inputs(1), 0.0),
        Op::MeanRows => {
            // mean = sum_rows(x) / n, the sum in the fixed tree order.
            plan.temps.push(m);
            let sums = Slot::Temp(0);
            reduce(&mut plan, Slot::Input(0), (m, n, 1), sums, max_groups);
            plan.dispatches.push(Dispatch {
                kernel: "div_scalar",
                bindings: vec![sums, Slot::Output],
                push: vec![u(m), (n as f32).to_bits(), 0],
                groups: linear(m),
            });
        }
        Op::RandUniform(r) | Op::RandNormal(r) => plan.dispatches.push(Dispatch {
            kernel: op.name(),
            bindings: vec![Slot::Output],
            push: vec![
                u(out_len),
                r.seed as u32,
                (r.seed >> 32) as u32,
                r.stream,
                r.offset as u32,
                (r.offset >> 32) as u32,
            ],
            groups: linear(out_len),
        }),
    }
    Ok(plan)
}

/// Appends the fixed-order reduction of `src`, viewed as
/// `[outer, len, inner]`, along `len` (len > 0): chunk sums, then tree
/// passes until one element per (outer, inner) is left; the last pass
/// writes `dst`.
fn reduce(
    plan: &mut Plan,
    src: Slot,
    (outer, len, inner): (usize, usize, usize),
    dst: Slot,
    max_groups: [u32; 3],
) {
    let u = |v: usize| v as u32;
    let linear = |n: usize| [clamp(n.div_ceil(256), max_groups[0]), 1, 1];
    let mut level = len.div_ceil(CHUNK);
    let temp = |plan: &mut Plan, elements: usize| {
        plan.temps.push(elements);
        Slot::Temp(plan.temps.len() - 1)
    };
    let mut from = src;
    let mut to = if level == 1 {
        dst
    } else {
        temp(plan, outer * level * inner)
    };
    plan.dispatches.push(Dispatch {
        kernel: "reduce_chunks",
        bindings: vec![from, to],
        push: vec![u(outer), u(len), u(inner), u(level)],
        groups: linear(outer * level * inner),
    });
    while level > 1 {
        let next = level.div_ceil(FAN);
        from = to;
        to = if next == 1 {
            dst
        } else {
            temp(plan, outer * next * inner)
        };
        plan.dispatches.push(Dispatch {
            kernel: "reduce_tree",
            bindings: vec![from, to],
            push: vec![u(outer), u(level), u(inner), u(next)],
            groups: linear(outer * next * inner),
        });
        level = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Target = Target {
        max_groups: [65535, 65535, 65535],
        matmul: MatmulKernels::Direct,
    };

    #[test]
    fn longest_loop_counts_k_row_passes_and_grid_stride() {
        let mm = Op::Matmul(Transpose::None);
        assert_eq!(
            longest_loop(&plan(&mm, &[&[1, 100], &[100, 1]], BIG).unwrap()),
            100
        );
        // Clamped to one workgroup each way: every tile in one invocation.
        let one = Target {
            max_groups: [1, 1, 1],
            ..BIG
        };
        let p = plan(&mm, &[&[64, 100], &[100, 1024]], one).unwrap();
        assert_eq!(longest_loop(&p), 100 * (64 / 16) * (1024 / 256));
        let p = plan(&Op::SoftmaxRows, &[&[2, 5000]], BIG).unwrap();
        assert_eq!(longest_loop(&p), 4 * 5000);
        // Sums are chunked: their loops are short whatever the length.
        let p = plan(&Op::SumRows, &[&[3, 100_000]], BIG).unwrap();
        assert_eq!(longest_loop(&p), 0);
    }

    #[test]
    fn long_rows_take_tree_passes() {
        // 100_000 elements: 1563 chunks -> 98 -> 7 -> 1.
        let p = plan(&Op::SumRows, &[&[3, 100_000]], BIG).unwrap();
        let kernels: Vec<_> = p.dispatches.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            ["reduce_chunks", "reduce_tree", "reduce_tree", "reduce_tree"]
        );
        assert_eq!(p.temps, vec![3 * 1563, 3 * 98, 3 * 7]);
        assert_eq!(p.dispatches.last().unwrap().bindings[1], Slot::Output);
        assert_eq!(p.out_shape, vec![3]);
    }

    #[test]
    fn short_rows_need_one_pass() {
        let p = plan(&Op::SumCols, &[&[64, 5]], BIG).unwrap();
        assert_eq!(p.dispatches.len(), 1);
        assert!(p.temps.is_empty());
    }

    #[test]
    fn dispatches_respect_device_limits() {
        let small = |max_groups| Target {
            max_groups,
            matmul: MatmulKernels::Tiled,
        };
        let p = plan(&Op::Add, &[&[1 << 24], &[1 << 24]], small([7, 7, 7])).unwrap();
        assert_eq!(p.dispatches[0].groups, [7, 1, 1]);
        let p = plan(
            &Op::Matmul(lockstep_kernels::reference::matmul::Transpose::None),
            &[&[1000, 3], &[3, 1000]],
            small([2, 3, 1]),
        )
        .unwrap();
        assert_eq!(p.dispatches[0].groups, [2, 3, 1]);
        assert_eq!(p.dispatches[0].kernel, "matmul_tiled");
    }

    #[test]
    fn empty_work_plans_no_dispatch() {
        let mm = Op::Matmul(lockstep_kernels::reference::matmul::Transpose::None);
        let p = plan(&mm, &[&[4, 0], &[0, 5]], BIG).unwrap();
        assert!(p.dispatches.is_empty());
        assert_eq!(p.out_shape, vec![4, 5]);
    }
}
