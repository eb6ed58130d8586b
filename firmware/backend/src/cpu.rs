//! The CPU reference backend: the kernels' Rust twins behind [`Backend`].

use lockstep_kernels::reference::probe::{self, ProbeKernel};
use lockstep_kernels::reference::{elementwise, layout, matmul, random, reduce, rows};
use lockstep_limits::MAX_TENSOR_ELEMENTS;
use lockstep_tensor::Tensor;

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
        let out = match op {
            Op::Matmul(t) => {
                let (m, k, n) = op.matmul_dims(&shapes)?;
                matmul::matmul(data(0), data(1), m, k, n, *t, self.threads)
            }
            Op::Add => elementwise::add(data(0), data(1)),
            Op::Sub => elementwise::sub(data(0), data(1)),
            Op::Mul => elementwise::mul(data(0), data(1)),
            Op::Div => elementwise::div(data(0), data(1)),
            Op::Scale { alpha } => elementwise::scale(data(0), *alpha),
            Op::Affine { alpha, beta } => elementwise::affine(data(0), *alpha, *beta),
            Op::Axpby { alpha, beta } => elementwise::axpby(data(0), data(1), *alpha, *beta),
            Op::Relu => elementwise::relu(data(0)),
            Op::ReluBackward => elementwise::relu_backward(data(0), data(1)),
            Op::Exp => elementwise::exp(data(0)),
            Op::Log => elementwise::log(data(0)),
            Op::Sqrt => elementwise::sqrt(data(0)),
            Op::Tanh => elementwise::tanh(data(0)),
            Op::TanhBackward => elementwise::tanh_backward(data(0), data(1)),
            Op::Sigmoid => elementwise::sigmoid(data(0)),
            Op::Gelu => elementwise::gelu(data(0)),
            Op::GeluBackward => elementwise::gelu_backward(data(0), data(1)),
            Op::SumRows => reduce::sum_rows(data(0), m, n),
            Op::SumCols => reduce::sum_cols(data(0), m, n),
            Op::SoftmaxRows => rows::softmax_rows(data(0), n),
            Op::LogSoftmaxRows => rows::log_softmax_rows(data(0), n),
            Op::LayernormRows { eps } => rows::layernorm_rows(data(0), data(1), data(2), n, *eps),
            Op::LayernormBackward { eps } => {
                rows::layernorm_backward(data(0), data(1), data(2), n, *eps)
            }
            Op::LayernormBackwardGamma { eps } => {
                reduce::sum_cols(&rows::layernorm_dy_xhat(data(0), data(1), n, *eps), m, n)
            }
            Op::CrossEntropy => {
                let losses = rows::cross_entropy_rows(data(0), data(1), n);
                let total = reduce::sum_axis(&losses, 1, m, 1);
                elementwise::div_scalar(&total, m as f32)
            }
            Op::CrossEntropyBackward => rows::cross_entropy_backward(data(0), data(1), n),
            Op::ArgmaxRows => rows::argmax_rows(data(0), m, n),
            Op::BiasAdd => layout::bias_add(data(0), data(1)),
            Op::Transpose => layout::transpose(data(0), m, n),
            Op::SetElement => layout::set_element(data(0), scalar(1), scalar(2)),
            Op::SgdUpdate { lr } => elementwise::sgd_update(data(0), data(1), *lr),
            Op::AdamUpdate { lr, eps } => {
                elementwise::adam_update(data(0), data(1), data(2), scalar(3), scalar(4), *lr, *eps)
            }
            Op::RandUniform(r) => {
                random::rand_uniform(out_shape.iter().product(), r.seed, r.stream, r.offset)
            }
            Op::RandNormal(r) => {
                random::rand_normal(out_shape.iter().product(), r.seed, r.stream, r.offset)
            }
        };
        Ok(Tensor::new(out_shape, out).expect("output shape matches the reference's length"))
    }
}

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
