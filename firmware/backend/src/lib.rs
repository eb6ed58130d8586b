//! What Lockstep computes, independent of where.
//!
//! - [`Op`]: the op set, parsed from a name and attributes, with the shape
//!   rules every backend shares.
//! - [`Backend`]: the one trait behind which the Vulkan executor and the CPU
//!   reference ([`CpuBackend`]) sit; they are interchangeable and must give
//!   the same bits.

#![forbid(unsafe_code)]

mod cpu;
mod cpu_split;
mod error;
mod op;
pub mod resident;

pub use cpu::{check_probe_input, CpuBackend};
pub use error::BackendError;
pub use op::{Op, OpError, OP_NAMES};
pub use resident::{BodyId, DeviceTensor, Resident};

use lockstep_kernels::reference::probe::ProbeKernel;
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
    /// VkPhysicalDeviceIDProperties::deviceUUID: tells apart two devices of
    /// the same model and driver, so a certification report binds to one
    /// physical device. The CPU backend has none and uses all zeros
    /// ([`CPU_DEVICE_UUID`]); its reports bind to the node key alone.
    pub device_uuid: [u8; 16],
}

/// The device UUID of the CPU backend, which has no physical device of its
/// own: all zeros.
pub const CPU_DEVICE_UUID: [u8; 16] = [0; 16];

/// A device limit the kernels depend on: what they need and what the
/// device offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLimit {
    pub name: String,
    pub needed: u64,
    pub device: u64,
}

/// What a backend has moved between host and device and how often it has
/// handed work to the device and waited for it, cumulative since the
/// backend was created; a run's cost is the difference of two readings
/// ([`TransferCounters::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferCounters {
    /// Bytes copied from host memory to the device (uploads).
    pub bytes_to_device: u64,
    /// Bytes copied from the device back to host memory (downloads).
    pub bytes_from_device: u64,
    /// Submissions of work to the device's queue (`vkQueueSubmit` calls).
    pub submits: u64,
    /// Times the host waited for the device (fence wait calls).
    pub fence_waits: u64,
}

impl TransferCounters {
    /// The counts of `self` less those of an earlier reading `before`.
    pub fn since(&self, before: &TransferCounters) -> TransferCounters {
        TransferCounters {
            bytes_to_device: self.bytes_to_device.saturating_sub(before.bytes_to_device),
            bytes_from_device: self
                .bytes_from_device
                .saturating_sub(before.bytes_from_device),
            submits: self.submits.saturating_sub(before.submits),
            fence_waits: self.fence_waits.saturating_sub(before.fence_waits),
        }
    }
}

/// An executor of ops. Implementations must be bit-identical to
/// [`CpuBackend`] for every op and input.
pub trait Backend {
    fn fingerprint(&self) -> &DeviceFingerprint;

    /// Runs one op. Shapes are checked with [`Op::output_shape`] before any
    /// work starts, so a bad input costs nothing and changes nothing.
    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError>;

    /// Bytes moved between host and device, submits and fence waits since
    /// this backend was created. By default all zeros: a backend without a
    /// device of its own (the CPU reference) moves nothing.
    fn counters(&self) -> TransferCounters {
        TransferCounters::default()
    }

    /// The most device memory this backend has held at once, in bytes, if it
    /// has device memory of its own.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// Runs one float-model probe kernel of the bundle over whole records of
    /// [`lockstep_kernels::reference::probe::IN_WORDS`] words (the
    /// certification suite's view of the device, below the ops).
    fn run_probe(&mut self, probe: ProbeKernel, input: &[u32]) -> Result<Vec<u32>, BackendError> {
        let _ = input;
        Err(BackendError::Unsupported(format!(
            "{} cannot run the probe kernel {}",
            self.fingerprint().name,
            probe.name
        )))
    }

    /// The device limits the kernels need, with the device's values (empty
    /// where the backend has no device limits).
    fn device_limits(&self) -> Vec<DeviceLimit> {
        Vec::new()
    }

    /// Bytes of device-local memory, if the backend has memory of its own.
    fn device_memory_bytes(&self) -> Option<u64> {
        None
    }

    /// `Some(why)` when this backend is a non-conforming cross-implementation
    /// test run (a Vulkan device opened without the float controls the
    /// float model needs, running the test-only portable bundle). Such a
    /// backend never certifies and never serves, and every output written
    /// from it carries this sentence.
    fn non_conforming(&self) -> Option<&str> {
        None
    }

    /// The backend's resident mode, if it has device memory of its own
    /// (the executor then keeps tensors on the device between ops).
    fn resident(&mut self) -> Option<&mut dyn Resident> {
        None
    }
}
