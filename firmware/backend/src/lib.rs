//! What Lockstep computes, independent of where.
//!
//! - [`Op`]: the op set, parsed from a name and attributes, with the shape
//!   rules every backend shares.
//! - [`Backend`]: the one trait behind which the Vulkan executor and the CPU
//!   reference ([`CpuBackend`]) sit; they are interchangeable and must give
//!   the same bits.

mod cpu;
mod error;
mod op;

pub use cpu::CpuBackend;
pub use error::BackendError;
pub use op::{Op, OpError, OP_NAMES};

use lockstep_tensor::Tensor;

/// Identity of the device a backend runs on, as receipts and reports will
/// record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFingerprint {
    /// "vulkan" or "cpu".
    pub backend: &'static str,
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    /// VkDriverId (0 for the CPU backend).
    pub driver_id: u32,
    pub driver_version: u32,
    /// Driver name and info string, as the driver reports them.
    pub driver_info: String,
    pub api_version: u32,
}

/// An executor of ops. Implementations must be bit-identical to
/// [`CpuBackend`] for every op and input.
pub trait Backend {
    fn fingerprint(&self) -> &DeviceFingerprint;

    /// Runs one op. Shapes are checked with [`Op::output_shape`] before any
    /// work starts, so a bad input costs nothing and changes nothing.
    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError>;

    /// The most device memory this backend has held at once, in bytes, if it
    /// has device memory of its own.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }
}
