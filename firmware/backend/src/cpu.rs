//! The CPU reference backend: the kernels' Rust twins behind [`Backend`].

use lockstep_kernels::reference::{elementwise, matmul, reduce};
use lockstep_tensor::Tensor;

use crate::{Backend, BackendError, DeviceFingerprint, Op};

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
            },
            threads,
        }
    }
}

impl Backend for CpuBackend {
    fn fingerprint(&self) -> &DeviceFingerprint {
        &self.fingerprint
    }

    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let out_shape = op.output_shape(&shapes)?;
        let x = inputs[0].data();
        let data = match *op {
            Op::Matmul(t) => {
                let (m, k, n) = op.matmul_dims(&shapes)?;
                matmul::matmul(x, inputs[1].data(), m, k, n, t, self.threads)
            }
            Op::Add => elementwise::add(x, inputs[1].data()),
            Op::Sub => elementwise::sub(x, inputs[1].data()),
            Op::Mul => elementwise::mul(x, inputs[1].data()),
            Op::Scale { alpha } => elementwise::scale(x, alpha),
            Op::Relu => elementwise::relu(x),
            Op::ReluBackward => elementwise::relu_backward(x, inputs[1].data()),
            Op::SumRows => reduce::sum_rows(x, shapes[0][0], shapes[0][1]),
            Op::SumCols => reduce::sum_cols(x, shapes[0][0], shapes[0][1]),
        };
        Ok(Tensor::new(out_shape, data).expect("output shape matches the reference's length"))
    }
}
