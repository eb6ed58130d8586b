//! Loading Vulkan, creating the instance, and describing its devices.

use std::ffi::CStr;

use ash::vk;
use lockstep_backend::BackendError;

use crate::error::vk_err;

/// What `lockstep devices` shows and device selection uses.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub device_type: &'static str,
    pub vendor_id: u32,
    pub device_id: u32,
    /// VkDriverId; 0 when the device predates Vulkan 1.2.
    pub driver_id: u32,
    pub driver_name: String,
    pub driver_info: String,
    pub driver_version: u32,
    pub api_version: u32,
    pub float_controls: FloatControls,
    pub limits: DeviceLimits,
    /// Bytes in device-local heaps.
    pub device_local_bytes: u64,
    /// VkPhysicalDeviceIDProperties::deviceUUID (all zeros when the device
    /// predates Vulkan 1.2 and was not asked): certification reports bind
    /// to it.
    pub device_uuid: [u8; 16],
}

/// The 32-bit float controls the device advertises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloatControls {
    pub rounding_mode_rte: bool,
    pub denorm_preserve: bool,
    pub denorm_flush_to_zero: bool,
    pub signed_zero_inf_nan_preserve: bool,
}

/// The device limits the kernels depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    pub max_workgroup_count: [u32; 3],
    pub max_workgroup_size: [u32; 3],
    pub max_workgroup_invocations: u32,
    pub max_shared_memory_bytes: u32,
    pub max_storage_buffer_range: u32,
    pub max_push_constants_bytes: u32,
}

impl DeviceInfo {
    /// Why this device cannot run the bundle, if it cannot: the first
    /// requirement (what, needed, device's value) it falls short of.
    pub fn unsupported(&self) -> Option<BackendError> {
        self.requirements()
            .into_iter()
            .find(|&(_, needed, have)| needed > have)
            .map(|(what, needed, limit)| BackendError::UnsupportedLimit {
                what: if what == RTE_REQUIREMENT {
                    format!(
                        "{what} on {} (it cannot keep the float model; only \
                         --cross-implementation-test opens it, for comparison)",
                        self.name
                    )
                } else {
                    format!("{what} on {}", self.name)
                },
                needed,
                limit,
            })
    }

    /// Why this device cannot run the test-only portable bundle, if it
    /// cannot: every requirement but RoundingModeRTE (the portable binaries
    /// do not declare it), for non-conforming cross-implementation tests.
    pub fn unsupported_for_cross_implementation_test(&self) -> Option<BackendError> {
        self.requirements()
            .into_iter()
            .filter(|&(what, _, _)| what != RTE_REQUIREMENT)
            .find(|&(_, needed, have)| needed > have)
            .map(|(what, needed, limit)| BackendError::UnsupportedLimit {
                what: format!(
                    "{what} on {} (even for a cross-implementation test)",
                    self.name
                ),
                needed,
                limit,
            })
    }

    /// The float controls the float model needs that this device does not
    /// advertise, by name (empty on a conforming device).
    pub fn missing_float_controls(&self) -> Vec<&'static str> {
        let fc = &self.float_controls;
        let mut missing = Vec::new();
        if !fc.rounding_mode_rte {
            missing.push("RoundingModeRTE");
        }
        if !fc.signed_zero_inf_nan_preserve {
            missing.push("SignedZeroInfNanPreserve");
        }
        if !fc.denorm_preserve {
            missing.push("DenormPreserve");
        }
        missing
    }

    /// Every requirement of the bundle as (what, needed, device's value);
    /// the certification report lists them all.
    pub fn requirements(&self) -> [(&'static str, u64, u64); 8] {
        let api = |v: u32| {
            u64::from(vk::api_version_major(v)) * 1000 + u64::from(vk::api_version_minor(v))
        };
        let fc = &self.float_controls;
        let l = &self.limits;
        let requirements: [(&str, u64, u64); 8] = [
            (
                "Vulkan API version (major*1000+minor)",
                1002,
                api(self.api_version),
            ),
            (RTE_REQUIREMENT, 1, u64::from(fc.rounding_mode_rte)),
            (
                "SignedZeroInfNanPreserve for 32-bit floats",
                1,
                u64::from(fc.signed_zero_inf_nan_preserve),
            ),
            (
                "maxComputeWorkGroupInvocations",
                256,
                u64::from(l.max_workgroup_invocations),
            ),
            (
                "maxComputeWorkGroupSize[0]",
                256,
                u64::from(l.max_workgroup_size[0]),
            ),
            (
                "maxComputeWorkGroupSize[1]",
                16,
                u64::from(l.max_workgroup_size[1]),
            ),
            (
                "maxComputeSharedMemorySize",
                8192,
                u64::from(l.max_shared_memory_bytes),
            ),
            (
                "maxPushConstantsSize",
                16,
                u64::from(l.max_push_constants_bytes),
            ),
        ];
        requirements
    }

    /// Preference when no device is named: discrete GPUs first, a CPU device
    /// (lavapipe) last.
    fn rank(&self) -> u8 {
        match self.device_type {
            "discrete-gpu" => 4,
            "integrated-gpu" => 3,
            "virtual-gpu" => 2,
            "cpu" => 1,
            _ => 0,
        }
    }

    /// `1.3.239` style.
    pub fn api_version_string(&self) -> String {
        let v = self.api_version;
        format!(
            "{}.{}.{}",
            vk::api_version_major(v),
            vk::api_version_minor(v),
            vk::api_version_patch(v)
        )
    }
}

const RTE_REQUIREMENT: &str = "RoundingModeRTE for 32-bit floats";

/// How a device is opened: for real, or for a non-conforming
/// cross-implementation test (docs/float-model.md, "Implementations").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Conforming,
    CrossImplementationTest,
}

impl DeviceInfo {
    fn unsupported_in(&self, mode: OpenMode) -> Option<BackendError> {
        match mode {
            OpenMode::Conforming => self.unsupported(),
            OpenMode::CrossImplementationTest => self.unsupported_for_cross_implementation_test(),
        }
    }
}

/// A loaded Vulkan instance.
pub struct Instance {
    // Kept so the loader library stays mapped while the instance lives.
    _entry: ash::Entry,
    pub(crate) raw: ash::Instance,
}

impl Instance {
    pub fn new() -> Result<Instance, BackendError> {
        // SAFETY: loading the system's Vulkan loader runs its initialisers;
        // that is the documented way to use ash's `loaded` feature, and the
        // Entry is kept alive for as long as anything created from it.
        let entry =
            unsafe { ash::Entry::load() }.map_err(|e| BackendError::NoLoader(e.to_string()))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"lockstep")
            .engine_name(c"lockstep")
            .api_version(vk::API_VERSION_1_2);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `info` and everything it points to outlive the call.
        let raw = unsafe { entry.create_instance(&info, None) }.map_err(|r| match r {
            vk::Result::ERROR_INCOMPATIBLE_DRIVER => {
                BackendError::NoDevice("the loader found no compatible driver".into())
            }
            other => vk_err("vkCreateInstance", "creating the Vulkan instance", other),
        })?;
        Ok(Instance { _entry: entry, raw })
    }

    pub(crate) fn physical_devices(&self) -> Result<Vec<vk::PhysicalDevice>, BackendError> {
        // SAFETY: the instance is valid for the lifetime of self.
        unsafe { self.raw.enumerate_physical_devices() }
            .map_err(|r| vk_err("vkEnumeratePhysicalDevices", "listing devices", r))
    }

    /// Every device the loader reports, in its order.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError> {
        let pds = self.physical_devices()?;
        Ok(pds
            .iter()
            .enumerate()
            .map(|(index, &pd)| self.describe(index, pd))
            .collect())
    }

    pub(crate) fn describe(&self, index: usize, pd: vk::PhysicalDevice) -> DeviceInfo {
        // SAFETY: `pd` came from this instance.
        let basic = unsafe { self.raw.get_physical_device_properties(pd) };
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut fc = vk::PhysicalDeviceFloatControlsProperties::default();
        let mut id = vk::PhysicalDeviceIDProperties::default();
        if basic.api_version >= vk::API_VERSION_1_2 {
            let mut props2 = vk::PhysicalDeviceProperties2::default()
                .push_next(&mut driver)
                .push_next(&mut fc)
                .push_next(&mut id);
            // SAFETY: the chained structs are core in Vulkan 1.2 (the ID
            // properties since 1.1), which this device reports, and live
            // across the call.
            unsafe { self.raw.get_physical_device_properties2(pd, &mut props2) };
        }
        // SAFETY: `pd` came from this instance.
        let memory = unsafe { self.raw.get_physical_device_memory_properties(pd) };
        let device_local_bytes = memory.memory_heaps[..memory.memory_heap_count as usize]
            .iter()
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .sum();
        let l = &basic.limits;
        DeviceInfo {
            index,
            name: c_str(basic.device_name_as_c_str()),
            device_type: match basic.device_type {
                vk::PhysicalDeviceType::DISCRETE_GPU => "discrete-gpu",
                vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated-gpu",
                vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual-gpu",
                vk::PhysicalDeviceType::CPU => "cpu",
                _ => "other",
            },
            vendor_id: basic.vendor_id,
            device_id: basic.device_id,
            driver_id: driver.driver_id.as_raw() as u32,
            driver_name: c_str(driver.driver_name_as_c_str()),
            driver_info: c_str(driver.driver_info_as_c_str()),
            driver_version: basic.driver_version,
            api_version: basic.api_version,
            float_controls: FloatControls {
                rounding_mode_rte: fc.shader_rounding_mode_rte_float32 == vk::TRUE,
                denorm_preserve: fc.shader_denorm_preserve_float32 == vk::TRUE,
                denorm_flush_to_zero: fc.shader_denorm_flush_to_zero_float32 == vk::TRUE,
                signed_zero_inf_nan_preserve: fc.shader_signed_zero_inf_nan_preserve_float32
                    == vk::TRUE,
            },
            limits: DeviceLimits {
                max_workgroup_count: l.max_compute_work_group_count,
                max_workgroup_size: l.max_compute_work_group_size,
                max_workgroup_invocations: l.max_compute_work_group_invocations,
                max_shared_memory_bytes: l.max_compute_shared_memory_size,
                max_storage_buffer_range: l.max_storage_buffer_range,
                max_push_constants_bytes: l.max_push_constants_size,
            },
            device_local_bytes,
            device_uuid: id.device_uuid,
        }
    }

    /// The device `--device N` names, or the most preferred usable one.
    pub(crate) fn select(
        &self,
        wanted: Option<usize>,
        mode: OpenMode,
    ) -> Result<(vk::PhysicalDevice, DeviceInfo), BackendError> {
        let pds = self.physical_devices()?;
        if pds.is_empty() {
            return Err(BackendError::NoDevice(
                "the loader reports no physical device".into(),
            ));
        }
        let infos: Vec<DeviceInfo> = pds
            .iter()
            .enumerate()
            .map(|(i, &pd)| self.describe(i, pd))
            .collect();
        let chosen = match wanted {
            Some(index) => infos.get(index).ok_or(BackendError::NoSuchDevice {
                index,
                count: infos.len(),
            })?,
            None => infos
                .iter()
                .filter(|d| d.unsupported_in(mode).is_none())
                .max_by_key(|d| (d.rank(), std::cmp::Reverse(d.index)))
                .ok_or_else(|| {
                    infos[0]
                        .unsupported_in(mode)
                        .unwrap_or_else(|| BackendError::NoDevice("no usable device".into()))
                })?,
        };
        if let Some(e) = chosen.unsupported_in(mode) {
            return Err(e);
        }
        Ok((pds[chosen.index], chosen.clone()))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every object created from this instance is destroyed by its
        // owner (the backend) before the instance, which the backend's field
        // order and Drop guarantee.
        unsafe { self.raw.destroy_instance(None) };
    }
}

fn c_str(s: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    s.map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}
