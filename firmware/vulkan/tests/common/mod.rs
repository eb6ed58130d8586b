//! What the Vulkan test files share.

use lockstep_kernels::Bundle;
use lockstep_vulkan::VulkanBackend;

/// The preferred Vulkan device with the embedded bundle (lavapipe in CI);
/// `None`, with a line saying so, when LOCKSTEP_SKIP_VULKAN_TESTS=1 on a
/// machine without Mesa.
pub fn vulkan() -> Option<VulkanBackend> {
    if std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1") {
        eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping a Vulkan test");
        return None;
    }
    let bundle = Bundle::embedded().expect("embedded bundle verifies");
    Some(VulkanBackend::new(bundle, None).unwrap_or_else(|e| {
        panic!("no usable Vulkan device ({e}); install mesa-vulkan-drivers or set LOCKSTEP_SKIP_VULKAN_TESTS=1")
    }))
}
