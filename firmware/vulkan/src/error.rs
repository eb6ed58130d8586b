//! Mapping Vulkan and allocator failures onto [`BackendError`].

use ash::vk;
use lockstep_backend::BackendError;

/// Maps a failed Vulkan call; `doing` says what we were doing, for the
/// message.
pub(crate) fn vk_err(call: &'static str, doing: &str, r: vk::Result) -> BackendError {
    match r {
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => BackendError::OutOfDeviceMemory(doing.into()),
        vk::Result::ERROR_OUT_OF_HOST_MEMORY => BackendError::OutOfHostMemory(doing.into()),
        vk::Result::ERROR_DEVICE_LOST => BackendError::DeviceLost(doing.into()),
        other => BackendError::Vulkan {
            call,
            code: format!("{other:?} while {doing}"),
        },
    }
}

pub(crate) fn alloc_err(doing: &str, e: gpu_allocator::AllocationError) -> BackendError {
    match e {
        gpu_allocator::AllocationError::OutOfMemory => {
            BackendError::OutOfDeviceMemory(doing.into())
        }
        other => BackendError::Vulkan {
            call: "gpu_allocator::Allocator::allocate",
            code: format!("{other} while {doing}"),
        },
    }
}
