//! Lockstep's Vulkan backend (ash + gpu-allocator).
//!
//! - [`Instance`]: loads Vulkan and describes every device
//!   ([`DeviceInfo`]: ids, driver, float controls, limits).
//! - [`VulkanBackend`]: one logical device running the pinned bundle behind
//!   the shared [`lockstep_backend::Backend`] trait. Pipelines come only from
//!   a verified [`lockstep_kernels::Bundle`]; nothing is compiled here.
//!
//! How an op runs: `plan` turns it into dispatches (pure, device-limit
//! aware); the backend uploads operands through a bounded staging buffer,
//! records every dispatch with barriers between them into one submission,
//! waits on a fence with a bounded timeout, and downloads the output the same
//! staged way.

mod backend;
mod error;
pub mod host_float;
mod instance;
mod plan;
mod resident;

pub use backend::{VulkanBackend, CROSS_IMPLEMENTATION_TEST_BACKEND};
pub use instance::{DeviceInfo, DeviceLimits, FloatControls, Instance};
pub use plan::MatmulKernels;
