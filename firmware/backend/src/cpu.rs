//! The CPU reference backend: the kernels' Rust twins behind [`Backend`].

use lockstep_kernels::reference::probe::{self, ProbeKernel};
use lockstep_kernels::reference::{elementwise, layout, matmul, random, reduce, rows};
use lockstep_limits::MAX_TENSOR_ELEMENTS;
use lockstep_tensor::Tensor;

use crate::cpu_split::{split, Cost::Cheap, Cost::Math};
use crate::{Backend, BackendError, DeviceFingerprint, Op};

/// The CPU reference. It has no device of its own and moves nothing between
/// host and device, so its [`Backend::counters`] are always zero.
pub struct CpuBackend {
    fingerprint: DeviceFingerprint,
    threads: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuBackend {
            fingerprint: DeviceFingerprint {
                backend: "cpu",
                name: format!(
                    "CPU reference ({} {})",
                    std::env::consts::ARCH,
                    std::env::consts::OS
                ),
                vendor_id: 0,
                device_id: 0,
                driver_id: 0,
                driver_version: 0,
                driver_info: concat!("lockstep-backend ", env!("CARGO_PKG_VERSION")).to_string(),
                api_version: 0,
                device_uuid: crate::CPU_DEVICE_UUID,
            },
            threads,
        }
    }
}

impl Backend for CpuBackend {
    fn fingerprint(&self) -> &DeviceFingerprint {
        &self.fingerprint
    }

    fn run_probe(&mut self, kernel: ProbeKernel, input: &[u32]) -> Result<Vec<u32>, BackendError> {
        check_probe_input(kernel, input)?;
        Ok(probe::run(kernel, input))
    }

    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let out_shape = op.output_shape(&shapes)?;
        let data = |i: usize| inputs[i].data();
        let scalar = |i: usize| inputs[i].data()[0];
        // Rows and columns of the first operand, for the matrix ops.
        let (m, n) = match shapes.first() {
            Some([m, n]) => (*m, *n),
            _ => (0, 0),
        };
        // Elementwise and row ops run in contiguous pieces on every core
        // (`cpu_split`: the same bits as one call on the whole).
        let threads = self.threads;
        let len = inputs.first().map_or(0, |t| t.data().len());
        let each1 = |cost, f: &Unary<'_>| split(threads, len, 1, cost, |r| f(&data(0)[r]));
        let each2 = |cost, f: &Binary<'_>| {
            split(threads, len, 1, cost, |r| {
                f(&data(0)[r.clone()], &data(1)[r])
            })
        };
        // Rows `r` of operand `i` (an m×n matrix).
        let row_slice = |i: usize, r: &std::ops::Range<usize>| &data(i)[r.start * n..r.end * n];
        let by_rows =
            |f: &(dyn Fn(std::ops::Range<usize>) -> Vec<f32> + Sync)| split(threads, m, n, Math, f);
        let out = match op {
            Op::Matmul(t) => {
                let (m, k, n) = op.matmul_dims(&shapes)?;
                matmul::matmul(data(0), data(1), m, k, n, *t, self.threads)
            }
            Op::Add => each2(Cheap, &elementwise::add),
            Op::Sub => each2(Cheap, &elementwise::sub),
            Op::Mul => each2(Cheap, &elementwise::mul),
            Op::Div => each2(Math, &elementwise::div),
            Op::Scale { alpha } => each1(Cheap, &|x| elementwise::scale(x, *alpha)),
            Op::Affine { alpha, beta } => each1(Cheap, &|x| elementwise::affine(x, *alpha, *beta)),
            Op::Axpby { alpha, beta } => {
                each2(Cheap, &|x, y| elementwise::axpby(x, y, *alpha, *beta))
            }
            Op::Relu => each1(Cheap, &elementwise::relu),
            Op::ReluBackward => each2(Cheap, &elementwise::relu_backward),
            Op::Exp => each1(Math, &elementwise::exp),
            Op::Log => each1(Math, &elementwise::log),
            Op::Sqrt => each1(Math, &elementwise::sqrt),
            Op::Tanh => each1(Math, &elementwise::tanh),
            Op::TanhBackward => each2(Cheap, &elementwise::tanh_backward),
            Op::Sigmoid => each1(Math, &elementwise::sigmoid),
            Op::Erf => each1(Math, &elementwise::erf),
            Op::Where => split(threads, len, 1, Cheap, |r| {
                elementwise::select(&data(0)[r.clone()], &data(1)[r.clone()], &data(2)[r])
            }),
            Op::Gelu => each1(Math, &elementwise::gelu),
            Op::GeluBackward => each2(Math, &elementwise::gelu_backward),
            Op::SumRows => reduce::sum_rows(data(0), m, n),
            Op::SumCols => reduce::sum_cols(data(0), m, n),
            Op::SoftmaxRows => by_rows(&|r| rows::softmax_rows(row_slice(0, &r), n)),
            Op::LogSoftmaxRows => by_rows(&|r| rows::log_softmax_rows(row_slice(0, &r), n)),
            Op::LayernormRows { eps } => {
                by_rows(&|r| rows::layernorm_rows(row_slice(0, &r), data(1), data(2), n, *eps))
            }
            Op::LayernormBackward { eps } => by_rows(&|r| {
                rows::layernorm_backward(row_slice(0, &r), row_slice(1, &r), data(2), n, *eps)
            }),
            Op::LayernormBackwardGamma { eps } => {
                reduce::sum_cols(&rows::layernorm_dy_xhat(data(0), data(1), n, *eps), m, n)
            }
            Op::CrossEntropy => {
                let losses = rows::cross_entropy_rows(data(0), data(1), n);
                let total = reduce::sum_axis(&losses, 1, m, 1);
                elementwise::div_scalar(&total, m as f32)
            }
            Op::CrossEntropyBackward => rows::cross_entropy_backward(data(0), data(1), n),
            Op::ArgmaxRows => by_rows(&|r| rows::argmax_rows(row_slice(0, &r), r.len(), n)),
            Op::BiasAdd => split(self.threads, m, n, Cheap, |r| {
                layout::bias_add(row_slice(0, &r), data(1))
            }),
            Op::Transpose => layout::transpose(data(0), m, n),
            Op::SetElement => layout::set_element(data(0), scalar(1), scalar(2)),
            Op::SgdUpdate { lr } => each2(Cheap, &|w, g| elementwise::sgd_update(w, g, *lr)),
            Op::AdamUpdate { lr, eps } => {
                let len = data(0).len();
                split(self.threads, len, 1, Math, |r| {
                    let [w, mo, v] = [0, 1, 2].map(|i| &data(i)[r.clone()]);
                    elementwise::adam_update(w, mo, v, scalar(3), scalar(4), *lr, *eps)
                })
            }
            Op::RandUniform(r) => {
                random::rand_uniform(out_shape.iter().product(), r.seed, r.stream, r.offset)
            }
            Op::RandNormal(r) => {
                random::rand_normal(out_shape.iter().product(), r.seed, r.stream, r.offset)
            }
            Op::Zeros(_) => layout::fill(out_shape.iter().product(), 0.0),
            Op::Full { value, .. } => layout::fill(out_shape.iter().product(), *value),
            Op::Reshape(_) => layout::slice(data(0), 1, len, 0, 0),
            Op::ConcatRows => layout::concat(data(0), data(1), 1, len, data(1).len()),
            Op::ConcatCols => layout::concat(data(0), data(1), m, n, out_shape[1] - n),
            Op::SliceRows { start, len: rows } => layout::slice(data(0), 1, rows * n, 0, start * n),
            Op::SliceCols { start, len: cols } => layout::slice(data(0), m, *cols, n, *start),
            Op::GatherRows => layout::gather_rows(data(0), data(1), m, n),
            Op::MaxRows => by_rows(&|r| rows::max_rows(row_slice(0, &r), r.len(), n)),
            Op::Permute(perm) => layout::permute(data(0), shapes[0], perm),
            Op::Greater => each2(Cheap, &elementwise::greater),
            Op::Less => each2(Cheap, &elementwise::less),
            Op::Equal => each2(Cheap, &elementwise::equal),
            Op::MeanRows => elementwise::div_scalar(&reduce::sum_rows(data(0), m, n), n as f32),
        };
        Ok(Tensor::new(out_shape, out).expect("output shape matches the reference's length"))
    }
}

/// An elementwise reference kernel of one operand, and of two.
type Unary<'a> = dyn Fn(&[f32]) -> Vec<f32> + Sync + 'a;
type Binary<'a> = dyn Fn(&[f32], &[f32]) -> Vec<f32> + Sync + 'a;

/// Probe inputs are whole records within the tensor bound, on every backend.
pub fn check_probe_input(kernel: ProbeKernel, input: &[u32]) -> Result<(), BackendError> {
    let records = input.len() / probe::IN_WORDS;
    if !input.len().is_multiple_of(probe::IN_WORDS)
        || records * kernel.out_words.max(probe::IN_WORDS) > MAX_TENSOR_ELEMENTS
    {
        return Err(BackendError::Unsupported(format!(
            "probe {} input of {} words is not whole {}-word records within {MAX_TENSOR_ELEMENTS} elements",
            kernel.name,
            input.len(),
            probe::IN_WORDS
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_split::pieces;
    use lockstep_tensor::SplitMix64;

    /// Values across the float range, with NaNs, infinities, zeros of both
    /// signs and subnormals, and labels in range.
    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = SplitMix64::new(seed);
        let len = shape.iter().product();
        let data = (0..len)
            .map(|_| match rng.below(64) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -0.0,
                3 => f32::from_bits(0x0000_0005),
                4 => f32::from_bits(rng.next_u64() as u32),
                _ => (rng.below(20_001) as f32 - 10_000.0) / 997.0,
            })
            .collect();
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.data().iter().map(|v| v.to_bits()).collect()
    }

    /// The split ops on every core give the bits of one thread doing the
    /// whole, for shapes big enough to be split, with pieces that do not
    /// divide the rows or elements evenly.
    #[test]
    fn split_ops_equal_one_thread() {
        let mut one = CpuBackend::new();
        one.threads = 1;
        let mut many = CpuBackend::new();
        many.threads = 3;
        // Three pieces of each: past three times the split minimum.
        let big = [(3 << 20) + 7];
        let math = [(3 << 13) + 11];
        let rows = [67, 401];
        assert_eq!(pieces(3, big[0], 1, Cheap), 3);
        assert_eq!(pieces(3, math[0], 1, Math), 3);
        assert_eq!(pieces(3, rows[0], rows[1], Math), 3);
        assert_eq!(pieces(3, 21_001, 151, Cheap), 3);
        let scalar = [1];
        let cases: Vec<(Op, Vec<&[usize]>)> = vec![
            (Op::Add, vec![&big, &big]),
            (Op::Sub, vec![&big, &big]),
            (Op::Mul, vec![&big, &big]),
            (Op::Div, vec![&math, &math]),
            (Op::Scale { alpha: 0.7 }, vec![&big]),
            (
                Op::Affine {
                    alpha: 0.7,
                    beta: -1.5,
                },
                vec![&big],
            ),
            (
                Op::Axpby {
                    alpha: 0.3,
                    beta: 1.1,
                },
                vec![&big, &big],
            ),
            (Op::Relu, vec![&big]),
            (Op::ReluBackward, vec![&big, &big]),
            (Op::Exp, vec![&math]),
            (Op::Log, vec![&math]),
            (Op::Sqrt, vec![&math]),
            (Op::Tanh, vec![&math]),
            (Op::TanhBackward, vec![&big, &big]),
            (Op::Sigmoid, vec![&math]),
            (Op::Erf, vec![&math]),
            (Op::Where, vec![&big, &big, &big]),
            (Op::Gelu, vec![&math]),
            (Op::GeluBackward, vec![&math, &math]),
            (Op::SoftmaxRows, vec![&rows]),
            (Op::LogSoftmaxRows, vec![&rows]),
            (Op::LayernormRows { eps: 1e-5 }, vec![&rows, &[401], &[401]]),
            (
                Op::LayernormBackward { eps: 1e-5 },
                vec![&rows, &rows, &[401]],
            ),
            (Op::ArgmaxRows, vec![&rows]),
            (Op::MaxRows, vec![&rows]),
            (Op::BiasAdd, vec![&[21_001, 151], &[151]]),
            (Op::SgdUpdate { lr: 0.01 }, vec![&big, &big]),
            (
                Op::AdamUpdate {
                    lr: 0.001,
                    eps: 1e-8,
                },
                vec![&math, &math, &math, &scalar, &scalar],
            ),
        ];
        for (i, (op, shapes)) in cases.iter().enumerate() {
            let inputs: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(j, s)| tensor(s, (i * 8 + j) as u64))
                .collect();
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let want = one.run(op, &refs).unwrap();
            let got = many.run(op, &refs).unwrap();
            assert_eq!(got.shape(), want.shape(), "{op:?}");
            assert!(bits(&got) == bits(&want), "{op:?}: split bits differ");
        }
    }
}
