use lockstep_kernels::BundleError;

use crate::op::OpError;

/// Everything a backend can fail with. Vulkan failures are mapped onto these
/// kinds so callers can tell "fix your input" from "fix the machine".
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("no Vulkan loader: {0}; install libvulkan1 (and mesa-vulkan-drivers for a CPU device), or use --backend cpu")]
    NoLoader(String),
    #[error("no Vulkan device: {0}; install a driver (mesa-vulkan-drivers gives lavapipe) or use --backend cpu")]
    NoDevice(String),
    #[error(
        "device {index} does not exist: there are {count} Vulkan devices (see `lockstep devices`)"
    )]
    NoSuchDevice { index: usize, count: usize },
    #[error("out of device memory while {0}; use smaller tensors or a device with more memory")]
    OutOfDeviceMemory(String),
    #[error("out of host memory while {0}")]
    OutOfHostMemory(String),
    #[error("the device was lost while {0}; the driver reset it: check `dmesg`, then retry")]
    DeviceLost(String),
    #[error("device limit: {what} needs {needed} but the device allows {limit}")]
    UnsupportedLimit {
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("kernel bundle refused: {0}")]
    Bundle(#[from] BundleError),
    #[error("unsupported: {0}; use a backend built from this repository")]
    Unsupported(String),
    #[error("Vulkan call {call} failed: {code}")]
    Vulkan { call: &'static str, code: String },
}

impl BackendError {
    /// True when the caller's input is at fault (the CLI exits with 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            BackendError::Op(_) | BackendError::NoSuchDevice { .. }
        )
    }
}
