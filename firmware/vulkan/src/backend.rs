//! The Vulkan backend: one logical device, its pinned pipelines, and the
//! staged transfers and dispatches that run an op.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use ash::vk;
use gpu_allocator::vulkan::{
    Allocation, AllocationCreateDesc, AllocationScheme, Allocator, AllocatorCreateDesc,
};
use gpu_allocator::MemoryLocation;
use lockstep_backend::{
    check_probe_input, Backend, BackendError, DeviceFingerprint, DeviceLimit, Op, TransferCounters,
};
use lockstep_kernels::reference::probe::{ProbeKernel, IN_WORDS};
use lockstep_kernels::{Bundle, BundleKind, Variant};
use lockstep_limits::{DEVICE_WAIT_TIMEOUT_NS, STAGING_CHUNK_BYTES};
use lockstep_tensor::Tensor;

use crate::error::{alloc_err, vk_err};
use crate::instance::{DeviceInfo, Instance, OpenMode};

/// The `backend` a non-conforming cross-implementation test run records in
/// its fingerprint (trace.json, `lockstep exec`, certification reports), so
/// that nothing it writes can pass for a conforming Vulkan run.
pub const CROSS_IMPLEMENTATION_TEST_BACKEND: &str = "vulkan-cross-implementation-test";
use crate::plan::{longest_loop, plan, probe_plan, MatmulKernels, Plan, Slot, Target};

/// VK_DRIVER_ID_MESA_LLVMPIPE (lavapipe).
const LLVMPIPE_DRIVER_ID: u32 = 13;
/// The most iterations lavapipe runs of one loop (nested loops counted
/// together): LP_MAX_TGSI_LOOP_ITERATIONS in Mesa's gallivm.
const LLVMPIPE_LOOP_ITERATIONS_MAX: u64 = 65535;

/// A pipeline built from one verified kernel of the bundle.
pub(crate) struct KernelPipeline {
    pub(crate) set_layout: vk::DescriptorSetLayout,
    pub(crate) layout: vk::PipelineLayout,
    pub(crate) pipeline: vk::Pipeline,
    pub(crate) bindings: u32,
    pub(crate) push_bytes: u32,
}

/// Host-visible buffers every transfer goes through, STAGING_CHUNK_BYTES
/// each: the bound on host memory a transfer adds beyond the tensor itself.
struct Staging {
    upload: Buffer,
    download: Buffer,
}

pub(crate) struct Buffer {
    pub(crate) raw: vk::Buffer,
    pub(crate) allocation: Option<Allocation>,
    pub(crate) bytes: u64,
}

/// The Vulkan executor. Create one per device; it is not `Sync`.
pub struct VulkanBackend {
    pub(crate) info: DeviceInfo,
    fingerprint: DeviceFingerprint,
    variant: Variant,
    bundle: Bundle,
    /// `Some(why)` only when opened by `new_cross_implementation_test`.
    non_conforming: Option<String>,
    pub(crate) target: Target,
    pub(crate) device: ash::Device,
    pub(crate) queue: vk::Queue,
    /// The queue's family, for the command pools of resident sessions.
    pub(crate) family: u32,
    command_pool: vk::CommandPool,
    command_buffer: vk::CommandBuffer,
    pub(crate) fence: vk::Fence,
    pipeline_cache: vk::PipelineCache,
    pub(crate) pipelines: BTreeMap<String, KernelPipeline>,
    /// The resident mode's state, between begin_session and end_session.
    pub(crate) session: Option<crate::resident::Session>,
    /// Created in `new`; `None` only while constructing and dropping.
    staging: Option<Staging>,
    /// Bytes of buffers alive now, and the most alive at once.
    device_bytes: u64,
    peak_device_bytes: u64,
    /// Bytes staged each way, submits and fence waits since `new` (a `Cell`
    /// because `submit` records under `&self`).
    pub(crate) counters: Cell<TransferCounters>,
    pub(crate) allocator: ManuallyDrop<Allocator>,
    // Last: everything above was created from it, and fields drop after
    // Drop::drop has destroyed them.
    _instance: Instance,
}

impl VulkanBackend {
    /// Opens device `device` (or the preferred one) with the given bundle,
    /// which must be a conforming one; the device must advertise every
    /// float control the float model needs.
    pub fn new(bundle: Bundle, device: Option<usize>) -> Result<VulkanBackend, BackendError> {
        bundle.require(BundleKind::Conforming)?;
        VulkanBackend::open(bundle, device, OpenMode::Conforming)
    }

    /// TEST ONLY: opens device `device` (or the preferred one) for a
    /// non-conforming cross-implementation test, even if it does not
    /// advertise RoundingModeRTE or DenormPreserve for 32-bit floats (it
    /// must still advertise SignedZeroInfNanPreserve and the kernels'
    /// limits). It always loads the test-only portable bundle
    /// ([`Bundle::embedded_portable`]), whose binaries declare no execution
    /// mode but SignedZeroInfNanPreserve, so no module declares a mode the
    /// device does not support.
    ///
    /// The backend's fingerprint says `vulkan-cross-implementation-test`,
    /// [`Backend::non_conforming`] says why, and its bundle id is the
    /// portable bundle's: it cannot certify (the suite fails it) and no node
    /// serves with it (lockstepd only opens devices with [`Self::new`]).
    pub fn new_cross_implementation_test(
        device: Option<usize>,
    ) -> Result<VulkanBackend, BackendError> {
        VulkanBackend::open(
            Bundle::embedded_portable()?,
            device,
            OpenMode::CrossImplementationTest,
        )
    }

    fn open(
        bundle: Bundle,
        device: Option<usize>,
        mode: OpenMode,
    ) -> Result<VulkanBackend, BackendError> {
        let instance = Instance::new()?;
        let (pd, info) = instance.select(device, mode)?;
        // SAFETY: `pd` came from this instance.
        let families = unsafe { instance.raw.get_physical_device_queue_family_properties(pd) };
        let family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| BackendError::NoDevice(format!("{} has no compute queue", info.name)))?
            as u32;
        let priorities = [1.0f32];
        let queue_info = vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities);
        let device_info =
            vk::DeviceCreateInfo::default().queue_create_infos(std::slice::from_ref(&queue_info));
        // SAFETY: `device_info` and what it points to outlive the call; `pd`
        // belongs to this instance.
        let device = unsafe { instance.raw.create_device(pd, &device_info, None) }
            .map_err(|r| vk_err("vkCreateDevice", "creating the logical device", r))?;
        // Everything below is destroyed by Drop once `backend` exists; until
        // then a failure tears down by hand.
        let allocator = Allocator::new(&AllocatorCreateDesc {
            instance: instance.raw.clone(),
            device: device.clone(),
            physical_device: pd,
            debug_settings: Default::default(),
            buffer_device_address: false,
            allocation_sizes: Default::default(),
        });
        let allocator = match allocator {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: nothing else was created from the device yet.
                unsafe { device.destroy_device(None) };
                return Err(alloc_err("creating the allocator", e));
            }
        };
        let (variant, non_conforming) = match mode {
            OpenMode::Conforming if info.float_controls.denorm_preserve => {
                (Variant::DenormPreserve, None)
            }
            OpenMode::Conforming => (Variant::Base, None),
            OpenMode::CrossImplementationTest => {
                let missing = info.missing_float_controls();
                let missing = if missing.is_empty() {
                    "every float control advertised".to_string()
                } else {
                    format!("{} not advertised", missing.join(", "))
                };
                let why = format!(
                    "NON-CONFORMING cross-implementation test run on {} ({missing} for 32-bit \
                     floats; test-only portable bundle {}): for comparison only, it can never \
                     certify or serve",
                    info.name,
                    bundle.id_hex()
                );
                (Variant::Portable, Some(why))
            }
        };
        let fingerprint = DeviceFingerprint {
            backend: match mode {
                OpenMode::Conforming => "vulkan",
                OpenMode::CrossImplementationTest => CROSS_IMPLEMENTATION_TEST_BACKEND,
            },
            name: info.name.clone(),
            vendor_id: info.vendor_id,
            device_id: info.device_id,
            driver_id: info.driver_id,
            driver_version: info.driver_version,
            driver_info: format!("{} {}", info.driver_name, info.driver_info)
                .trim()
                .to_string(),
            api_version: info.api_version,
            device_uuid: info.device_uuid,
        };
        let mut backend = VulkanBackend {
            target: Target {
                max_groups: info.limits.max_workgroup_count,
                matmul: if info.device_type == "cpu" {
                    MatmulKernels::Direct
                } else {
                    MatmulKernels::Tiled
                },
            },
            info,
            fingerprint,
            variant,
            bundle,
            non_conforming,
            // SAFETY: the queue family and index were requested above.
            queue: unsafe { device.get_device_queue(family, 0) },
            family,
            device,
            command_pool: vk::CommandPool::null(),
            command_buffer: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            pipeline_cache: vk::PipelineCache::null(),
            pipelines: BTreeMap::new(),
            session: None,
            staging: None,
            device_bytes: 0,
            peak_device_bytes: 0,
            counters: Cell::new(TransferCounters::default()),
            allocator: ManuallyDrop::new(allocator),
            _instance: instance,
        };
        backend.init_objects(family)?;
        let elements = (STAGING_CHUNK_BYTES / 4) as usize;
        let upload = backend.create_buffer(
            elements,
            vk::BufferUsageFlags::TRANSFER_SRC,
            MemoryLocation::CpuToGpu,
            "upload staging",
        )?;
        let download = backend.create_buffer(
            elements,
            vk::BufferUsageFlags::TRANSFER_DST,
            MemoryLocation::GpuToCpu,
            "download staging",
        );
        let download = match download {
            Ok(d) => d,
            Err(e) => {
                backend.destroy_buffer(upload);
                return Err(e);
            }
        };
        backend.staging = Some(Staging { upload, download });
        Ok(backend)
    }

    fn init_objects(&mut self, family: u32) -> Result<(), BackendError> {
        let d = &self.device;
        // No RESET_COMMAND_BUFFER flag: the pool holds one command buffer and
        // `submit` resets the whole pool, which is what the validation
        // layers' best practices ask for.
        let pool_info = vk::CommandPoolCreateInfo::default().queue_family_index(family);
        // SAFETY (this block): plain object creation on a valid device; each
        // handle is stored in self and destroyed in Drop.
        unsafe {
            self.command_pool = d
                .create_command_pool(&pool_info, None)
                .map_err(|r| vk_err("vkCreateCommandPool", "creating the command pool", r))?;
            let alloc_info = vk::CommandBufferAllocateInfo::default()
                .command_pool(self.command_pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            self.command_buffer = d.allocate_command_buffers(&alloc_info).map_err(|r| {
                vk_err("vkAllocateCommandBuffers", "allocating a command buffer", r)
            })?[0];
            self.fence = d
                .create_fence(&vk::FenceCreateInfo::default(), None)
                .map_err(|r| vk_err("vkCreateFence", "creating a fence", r))?;
            // One pipeline cache per device: every pipeline of this backend
            // goes through it.
            self.pipeline_cache = d
                .create_pipeline_cache(&vk::PipelineCacheCreateInfo::default(), None)
                .map_err(|r| vk_err("vkCreatePipelineCache", "creating the pipeline cache", r))?;
        }
        Ok(())
    }

    /// The device this backend runs on.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Which float-controls variant of the bundle this device loads.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Clamps workgroup counts below the device's own limits, so tests can
    /// exercise the split-dispatch path on any device.
    pub fn set_max_workgroups(&mut self, max: [u32; 3]) {
        let dev = self.info.limits.max_workgroup_count;
        self.target.max_groups = [max[0].min(dev[0]), max[1].min(dev[1]), max[2].min(dev[2])];
    }

    /// Which matmul family this backend dispatches (by default: tiled on
    /// GPUs, direct on CPU devices). Both give the same bits; tests run both.
    pub fn set_matmul_kernels(&mut self, kernels: MatmulKernels) {
        self.target.matmul = kernels;
    }

    pub fn matmul_kernels(&self) -> MatmulKernels {
        self.target.matmul
    }

    /// Runs `op` with its operands resident on the device, timing `repeats`
    /// executions of the dispatches alone (submit to fence), for benchmarks.
    /// Returns the output of the last execution and each one's wall time.
    pub fn run_timed(
        &mut self,
        op: &Op,
        inputs: &[&Tensor],
        repeats: usize,
    ) -> Result<(Tensor, Vec<Duration>), BackendError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let plan = plan(op, &shapes, self.target)?;
        self.check_loops(&plan)?;
        let out_len: usize = plan.out_shape.iter().product();
        if plan.dispatches.is_empty() {
            let t = Tensor::new(plan.out_shape.clone(), vec![0.0; out_len])
                .expect("Op::output_shape keeps outputs within the tensor bound");
            return Ok((t, vec![Duration::ZERO; repeats.max(1)]));
        }
        let mut buffers: Vec<Buffer> = Vec::new();
        let result = self.execute(&plan, inputs, repeats.max(1), &mut buffers);
        for b in buffers {
            self.destroy_buffer(b);
        }
        let (data, times) = result?;
        let t = Tensor::new(plan.out_shape, data)
            .expect("Op::output_shape keeps outputs within the tensor bound");
        Ok((t, times))
    }

    /// Refuses a plan whose kernels would loop longer than the device runs
    /// loops correctly: lavapipe (Mesa's llvmpipe) leaves any loop after
    /// 65535 iterations, nested ones counted together, and returns wrong
    /// bits without an error (measured on Mesa 22.3.6: a matmul with k =
    /// 65536 and a softmax_rows over 21845 columns). A typed refusal here
    /// instead: the CPU reference runs such an op.
    pub(crate) fn check_loops(&self, plan: &Plan) -> Result<(), BackendError> {
        if self.info.driver_id != LLVMPIPE_DRIVER_ID {
            return Ok(());
        }
        let needed = longest_loop(plan);
        if needed > LLVMPIPE_LOOP_ITERATIONS_MAX {
            return Err(BackendError::UnsupportedLimit {
                what: format!(
                    "loop iterations in one kernel invocation ({} leaves a loop after {} \
                     and computes wrong bits; run this op on the CPU reference)",
                    self.info.name, LLVMPIPE_LOOP_ITERATIONS_MAX
                ),
                needed,
                limit: LLVMPIPE_LOOP_ITERATIONS_MAX,
            });
        }
        Ok(())
    }

    fn execute(
        &mut self,
        plan: &Plan,
        inputs: &[&Tensor],
        repeats: usize,
        buffers: &mut Vec<Buffer>,
    ) -> Result<(Vec<f32>, Vec<Duration>), BackendError> {
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::TRANSFER_DST
            | vk::BufferUsageFlags::TRANSFER_SRC;
        // Buffers: inputs, then the output, then temporaries.
        for (i, t) in inputs.iter().enumerate() {
            let b = self.create_buffer(
                t.len(),
                storage,
                MemoryLocation::GpuOnly,
                &format!("input {i}"),
            )?;
            buffers.push(b);
        }
        let out_len: usize = plan.out_shape.iter().product();
        buffers.push(self.create_buffer(out_len, storage, MemoryLocation::GpuOnly, "output")?);
        for (i, &n) in plan.temps.iter().enumerate() {
            buffers.push(self.create_buffer(
                n,
                storage,
                MemoryLocation::GpuOnly,
                &format!("temporary {i}"),
            )?);
        }
        for (i, t) in inputs.iter().enumerate() {
            self.upload(buffers[i].raw, t.data())?;
        }
        let slot_buffer = |s: Slot| match s {
            Slot::Input(i) => buffers[i].raw,
            Slot::Output => buffers[inputs.len()].raw,
            Slot::Temp(j) => buffers[inputs.len() + 1 + j].raw,
        };

        for d in &plan.dispatches {
            self.ensure_pipeline(d.kernel)?;
        }
        let pool_sizes = [vk::DescriptorPoolSize {
            ty: vk::DescriptorType::STORAGE_BUFFER,
            descriptor_count: plan
                .dispatches
                .iter()
                .map(|d| d.bindings.len() as u32)
                .sum(),
        }];
        let pool_info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(plan.dispatches.len() as u32)
            .pool_sizes(&pool_sizes);
        // SAFETY: valid device; the pool is destroyed below on every path.
        let pool = unsafe { self.device.create_descriptor_pool(&pool_info, None) }
            .map_err(|r| vk_err("vkCreateDescriptorPool", "creating descriptor sets", r))?;
        let result = (|| -> Result<Vec<Duration>, BackendError> {
            let mut sets = Vec::new();
            for d in &plan.dispatches {
                let kp = &self.pipelines[d.kernel];
                let layouts = [kp.set_layout];
                let info = vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(pool)
                    .set_layouts(&layouts);
                // SAFETY: the pool was sized for every dispatch's set.
                let set = unsafe { self.device.allocate_descriptor_sets(&info) }.map_err(|r| {
                    vk_err("vkAllocateDescriptorSets", "allocating a descriptor set", r)
                })?[0];
                assert_eq!(
                    d.bindings.len() as u32,
                    kp.bindings,
                    "plan and manifest agree on {}",
                    d.kernel
                );
                let buffers: Vec<vk::Buffer> = d.bindings.iter().map(|&s| slot_buffer(s)).collect();
                write_set(&self.device, set, &buffers);
                sets.push(set);
            }
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let start = Instant::now();
                self.submit(
                    |dev, cb| {
                        // Uploads were earlier submissions: make their writes
                        // visible to the first dispatch.
                        barrier(
                            dev,
                            cb,
                            vk::PipelineStageFlags::TRANSFER,
                            vk::AccessFlags::TRANSFER_WRITE,
                            vk::PipelineStageFlags::COMPUTE_SHADER,
                            vk::AccessFlags::SHADER_READ,
                        );
                        for (d, &set) in plan.dispatches.iter().zip(&sets) {
                            record_kernel(
                                dev,
                                cb,
                                &self.pipelines[d.kernel],
                                set,
                                &d.push,
                                d.groups,
                            );
                            barrier(
                                dev,
                                cb,
                                vk::PipelineStageFlags::COMPUTE_SHADER,
                                vk::AccessFlags::SHADER_WRITE,
                                vk::PipelineStageFlags::COMPUTE_SHADER
                                    | vk::PipelineStageFlags::TRANSFER,
                                vk::AccessFlags::SHADER_READ | vk::AccessFlags::TRANSFER_READ,
                            );
                        }
                    },
                    "running kernels",
                )?;
                times.push(start.elapsed());
            }
            Ok(times)
        })();
        // SAFETY: the queue is idle (submit waits), so no set is in use.
        unsafe { self.device.destroy_descriptor_pool(pool, None) };
        let times = result?;
        let data = self.download(buffers[inputs.len()].raw, out_len)?;
        Ok((data, times))
    }

    pub(crate) fn create_buffer(
        &mut self,
        elements: usize,
        usage: vk::BufferUsageFlags,
        location: MemoryLocation,
        name: &str,
    ) -> Result<Buffer, BackendError> {
        let bytes = (elements.max(1) * 4) as u64;
        let range = self.info.limits.max_storage_buffer_range as u64;
        if usage.contains(vk::BufferUsageFlags::STORAGE_BUFFER) && bytes > range {
            return Err(BackendError::UnsupportedLimit {
                what: format!(
                    "the {name} buffer's bytes (maxStorageBufferRange on {})",
                    self.info.name
                ),
                needed: bytes,
                limit: range,
            });
        }
        let doing = format!("allocating {bytes} bytes for the {name}");
        let info = vk::BufferCreateInfo::default()
            .size(bytes)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info; the buffer is destroyed by
        // destroy_buffer.
        let raw = unsafe { self.device.create_buffer(&info, None) }
            .map_err(|r| vk_err("vkCreateBuffer", &doing, r))?;
        // SAFETY: `raw` was just created from this device.
        let requirements = unsafe { self.device.get_buffer_memory_requirements(raw) };
        let allocation = self.allocator.allocate(&AllocationCreateDesc {
            name,
            requirements,
            location,
            linear: true,
            allocation_scheme: AllocationScheme::GpuAllocatorManaged,
        });
        let allocation = match allocation {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: the buffer has no memory bound and is unused.
                unsafe { self.device.destroy_buffer(raw, None) };
                return Err(alloc_err(&doing, e));
            }
        };
        // SAFETY: memory and offset come from an allocation made for this
        // buffer's requirements.
        if let Err(r) = unsafe {
            self.device
                .bind_buffer_memory(raw, allocation.memory(), allocation.offset())
        } {
            let _ = self.allocator.free(allocation);
            // SAFETY: unused buffer.
            unsafe { self.device.destroy_buffer(raw, None) };
            return Err(vk_err("vkBindBufferMemory", &doing, r));
        }
        self.device_bytes += bytes;
        self.peak_device_bytes = self.peak_device_bytes.max(self.device_bytes);
        Ok(Buffer {
            raw,
            allocation: Some(allocation),
            bytes,
        })
    }

    pub(crate) fn destroy_buffer(&mut self, mut b: Buffer) {
        // SAFETY: callers only destroy buffers after the fence of the last
        // submission that used them has signalled.
        unsafe { self.device.destroy_buffer(b.raw, None) };
        self.device_bytes -= b.bytes;
        if let Some(a) = b.allocation.take() {
            // Freeing can only fail on a double free, which ownership rules out.
            let _ = self.allocator.free(a);
        }
    }

    fn staging(&mut self) -> &mut Staging {
        self.staging
            .as_mut()
            .expect("staging buffers exist from new() until drop")
    }

    /// Copies host data into a device buffer through the staging buffer, one
    /// bounded chunk at a time.
    pub(crate) fn upload(&mut self, dst: vk::Buffer, data: &[f32]) -> Result<(), BackendError> {
        let staging = self.staging().upload.raw;
        let chunk = (STAGING_CHUNK_BYTES / 4) as usize;
        for (i, piece) in data.chunks(chunk).enumerate() {
            let mapped = mapped(&mut self.staging().upload)?;
            for (dst, v) in mapped.chunks_exact_mut(4).zip(piece) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            let region = vk::BufferCopy {
                src_offset: 0,
                dst_offset: (i * chunk * 4) as u64,
                size: (piece.len() * 4) as u64,
            };
            self.count(|c| c.bytes_to_device += region.size);
            self.submit(
                |dev, cb| {
                    // SAFETY: both buffers are live and large enough.
                    unsafe { dev.cmd_copy_buffer(cb, staging, dst, &[region]) }
                },
                "uploading a tensor",
            )?;
        }
        Ok(())
    }

    pub(crate) fn download(
        &mut self,
        src: vk::Buffer,
        len: usize,
    ) -> Result<Vec<f32>, BackendError> {
        let staging = self.staging().download.raw;
        let chunk = (STAGING_CHUNK_BYTES / 4) as usize;
        let mut out = Vec::with_capacity(len);
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let region = vk::BufferCopy {
                src_offset: (done * 4) as u64,
                dst_offset: 0,
                size: (n * 4) as u64,
            };
            self.submit(
                |dev, cb| {
                    // SAFETY: both buffers are live and large enough.
                    unsafe { dev.cmd_copy_buffer(cb, src, staging, &[region]) };
                    barrier(
                        dev,
                        cb,
                        vk::PipelineStageFlags::TRANSFER,
                        vk::AccessFlags::TRANSFER_WRITE,
                        vk::PipelineStageFlags::HOST,
                        vk::AccessFlags::HOST_READ,
                    );
                },
                "downloading a tensor",
            )?;
            self.count(|c| c.bytes_from_device += region.size);
            let mapped = mapped(&mut self.staging().download)?;
            out.extend(
                mapped[..n * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            done += n;
        }
        Ok(out)
    }

    /// Adds to the transfer counters.
    pub(crate) fn count(&self, f: impl FnOnce(&mut TransferCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Records commands into the one command buffer, submits them and waits
    /// for the fence (bounded by DEVICE_WAIT_TIMEOUT_NS).
    fn submit(
        &self,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
        doing: &str,
    ) -> Result<(), BackendError> {
        let dev = &self.device;
        let cb = self.command_buffer;
        // SAFETY: the pool's one command buffer is idle (every submit waits
        // for its fence before returning) and both are owned by this backend.
        unsafe {
            dev.reset_command_pool(self.command_pool, vk::CommandPoolResetFlags::empty())
                .map_err(|r| vk_err("vkResetCommandPool", doing, r))?;
            dev.begin_command_buffer(
                cb,
                &vk::CommandBufferBeginInfo::default()
                    .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
            )
            .map_err(|r| vk_err("vkBeginCommandBuffer", doing, r))?;
        }
        record(dev, cb);
        let cbs = [cb];
        let submit = vk::SubmitInfo::default().command_buffers(&cbs);
        // SAFETY: recorded above; the fence is unsignalled (reset after each
        // wait) and the queue belongs to this device.
        unsafe {
            dev.end_command_buffer(cb)
                .map_err(|r| vk_err("vkEndCommandBuffer", doing, r))?;
            self.count(|c| c.submits += 1);
            dev.queue_submit(self.queue, &[submit], self.fence)
                .map_err(|r| vk_err("vkQueueSubmit", doing, r))?;
            self.count(|c| c.fence_waits += 1);
            let waited = dev.wait_for_fences(&[self.fence], true, DEVICE_WAIT_TIMEOUT_NS);
            if waited == Err(vk::Result::TIMEOUT) {
                return Err(BackendError::DeviceLost(format!(
                    "{doing}: the device did not finish within {} s",
                    DEVICE_WAIT_TIMEOUT_NS / 1_000_000_000
                )));
            }
            waited.map_err(|r| vk_err("vkWaitForFences", doing, r))?;
            dev.reset_fences(&[self.fence])
                .map_err(|r| vk_err("vkResetFences", doing, r))?;
        }
        Ok(())
    }

    /// Builds the pipeline of a bundle kernel once; later calls reuse it.
    pub(crate) fn ensure_pipeline(&mut self, name: &str) -> Result<(), BackendError> {
        if self.pipelines.contains_key(name) {
            return Ok(());
        }
        let kernel = self.bundle.kernel(name).ok_or_else(|| {
            BackendError::Bundle(lockstep_kernels::BundleError::Manifest(format!(
                "the bundle has no kernel '{name}', which this runtime needs; use a bundle built for it"
            )))
        })?;
        let spec = &kernel.spec;
        let code = kernel.spirv(self.variant);
        let push_bytes = spec.push_constant_bytes();
        let dev = &self.device;
        let doing = format!("building the pipeline of kernel '{name}'");
        let bindings: Vec<vk::DescriptorSetLayoutBinding> = spec
            .bindings
            .iter()
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b.binding)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let entry = CString::new(spec.entry_point.clone()).map_err(|_| {
            BackendError::Bundle(lockstep_kernels::BundleError::Manifest(format!(
                "kernel '{name}' entry point contains NUL"
            )))
        })?;
        // SAFETY (this block): object creation on a valid device from the
        // verified SPIR-V of the bundle; every handle is stored in
        // self.pipelines and destroyed in Drop, or destroyed here on failure.
        unsafe {
            let set_layout = dev
                .create_descriptor_set_layout(
                    &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                    None,
                )
                .map_err(|r| vk_err("vkCreateDescriptorSetLayout", &doing, r))?;
            let ranges = [vk::PushConstantRange {
                stage_flags: vk::ShaderStageFlags::COMPUTE,
                offset: 0,
                size: push_bytes,
            }];
            let set_layouts = [set_layout];
            let mut layout_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
            if push_bytes > 0 {
                layout_info = layout_info.push_constant_ranges(&ranges);
            }
            let layout = match dev.create_pipeline_layout(&layout_info, None) {
                Ok(l) => l,
                Err(r) => {
                    dev.destroy_descriptor_set_layout(set_layout, None);
                    return Err(vk_err("vkCreatePipelineLayout", &doing, r));
                }
            };
            let module = match dev
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(code), None)
            {
                Ok(m) => m,
                Err(r) => {
                    dev.destroy_pipeline_layout(layout, None);
                    dev.destroy_descriptor_set_layout(set_layout, None);
                    return Err(vk_err("vkCreateShaderModule", &doing, r));
                }
            };
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&entry);
            let info = vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(layout);
            let created = dev.create_compute_pipelines(self.pipeline_cache, &[info], None);
            dev.destroy_shader_module(module, None);
            let pipeline = match created {
                Ok(p) => p[0],
                Err((_, r)) => {
                    dev.destroy_pipeline_layout(layout, None);
                    dev.destroy_descriptor_set_layout(set_layout, None);
                    return Err(vk_err("vkCreateComputePipelines", &doing, r));
                }
            };
            self.pipelines.insert(
                name.to_string(),
                KernelPipeline {
                    set_layout,
                    layout,
                    pipeline,
                    bindings: bindings.len() as u32,
                    push_bytes,
                },
            );
        }
        Ok(())
    }
}

/// The host view of a staging buffer.
pub(crate) fn mapped(b: &mut Buffer) -> Result<&mut [u8], BackendError> {
    b.allocation
        .as_mut()
        .and_then(|a| a.mapped_slice_mut())
        .ok_or_else(|| BackendError::Vulkan {
            call: "vkMapMemory",
            code: "staging memory is not host-visible".into(),
        })
}

/// Points each binding of a fresh descriptor set at one whole buffer, in
/// binding order.
pub(crate) fn write_set(dev: &ash::Device, set: vk::DescriptorSet, buffers: &[vk::Buffer]) {
    let infos: Vec<vk::DescriptorBufferInfo> = buffers
        .iter()
        .map(|&b| {
            vk::DescriptorBufferInfo::default()
                .buffer(b)
                .offset(0)
                .range(vk::WHOLE_SIZE)
        })
        .collect();
    let writes: Vec<vk::WriteDescriptorSet> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| {
            vk::WriteDescriptorSet::default()
                .dst_set(set)
                .dst_binding(i as u32)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .buffer_info(std::slice::from_ref(info))
        })
        .collect();
    // SAFETY: callers pass a set not in use by any pending command buffer and
    // live buffers, one per binding of its layout.
    unsafe { dev.update_descriptor_sets(&writes, &[]) };
}

/// Records one dispatch of a kernel: its pipeline, set, push constants
/// (padded to the kernel's push-constant size) and workgroup counts.
pub(crate) fn record_kernel(
    dev: &ash::Device,
    cb: vk::CommandBuffer,
    kp: &KernelPipeline,
    set: vk::DescriptorSet,
    push: &[u32],
    groups: [u32; 3],
) {
    let mut bytes: Vec<u8> = push.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.resize(kp.push_bytes as usize, 0);
    // SAFETY: recording into a command buffer in the recording state, with a
    // pipeline, layout and set that outlive its execution.
    unsafe {
        dev.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, kp.pipeline);
        dev.cmd_bind_descriptor_sets(
            cb,
            vk::PipelineBindPoint::COMPUTE,
            kp.layout,
            0,
            &[set],
            &[],
        );
        if !bytes.is_empty() {
            dev.cmd_push_constants(cb, kp.layout, vk::ShaderStageFlags::COMPUTE, 0, &bytes);
        }
        dev.cmd_dispatch(cb, groups[0], groups[1], groups[2]);
    }
}

pub(crate) fn barrier(
    dev: &ash::Device,
    cb: vk::CommandBuffer,
    src_stage: vk::PipelineStageFlags,
    src_access: vk::AccessFlags,
    dst_stage: vk::PipelineStageFlags,
    dst_access: vk::AccessFlags,
) {
    let b = vk::MemoryBarrier::default()
        .src_access_mask(src_access)
        .dst_access_mask(dst_access);
    // SAFETY: recording a global memory barrier into a command buffer in the
    // recording state.
    unsafe {
        dev.cmd_pipeline_barrier(
            cb,
            src_stage,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[b],
            &[],
            &[],
        )
    };
}

impl Backend for VulkanBackend {
    fn fingerprint(&self) -> &DeviceFingerprint {
        &self.fingerprint
    }

    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError> {
        self.run_timed(op, inputs, 1).map(|(t, _)| t)
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        Some(self.peak_device_bytes)
    }

    /// Every byte staged host→device and device→host, every `vkQueueSubmit`
    /// and every fence wait since `new`: ops, probes and benchmark runs alike
    /// (they all go through `upload`, `download` and `submit`).
    fn counters(&self) -> TransferCounters {
        self.counters.get()
    }

    fn run_probe(&mut self, kernel: ProbeKernel, input: &[u32]) -> Result<Vec<u32>, BackendError> {
        check_probe_input(kernel, input)?;
        let records = input.len() / IN_WORDS;
        if records == 0 {
            return Ok(Vec::new());
        }
        let plan = probe_plan(kernel, records, self.target);
        // The words travel as f32 bit patterns: to_le_bytes/from_le_bytes
        // move them untouched, NaN payloads included.
        let words = Tensor::new(
            vec![input.len()],
            input.iter().map(|&w| f32::from_bits(w)).collect(),
        )
        .expect("check_probe_input bounds the length");
        let mut buffers: Vec<Buffer> = Vec::new();
        let result = self.execute(&plan, &[&words], 1, &mut buffers);
        for b in buffers {
            self.destroy_buffer(b);
        }
        let (data, _) = result?;
        Ok(data.into_iter().map(f32::to_bits).collect())
    }

    fn device_limits(&self) -> Vec<DeviceLimit> {
        self.info
            .requirements()
            .into_iter()
            .map(|(name, needed, device)| DeviceLimit {
                name: name.to_string(),
                needed,
                device,
            })
            .collect()
    }

    fn device_memory_bytes(&self) -> Option<u64> {
        Some(self.info.device_local_bytes)
    }

    fn non_conforming(&self) -> Option<&str> {
        self.non_conforming.as_deref()
    }

    fn resident(&mut self) -> Option<&mut dyn lockstep_backend::Resident> {
        Some(self)
    }
}

impl Drop for VulkanBackend {
    fn drop(&mut self) {
        // SAFETY: after device_wait_idle nothing is in flight; every handle
        // below was created from this device, is destroyed once, and the
        // allocator goes before the device and the instance (a field that
        // drops after this function).
        unsafe {
            let _ = self.device.device_wait_idle();
            crate::resident::end(self);
            if let Some(st) = self.staging.take() {
                self.destroy_buffer(st.upload);
                self.destroy_buffer(st.download);
            }
            for (_, p) in std::mem::take(&mut self.pipelines) {
                self.device.destroy_pipeline(p.pipeline, None);
                self.device.destroy_pipeline_layout(p.layout, None);
                self.device
                    .destroy_descriptor_set_layout(p.set_layout, None);
            }
            self.device
                .destroy_pipeline_cache(self.pipeline_cache, None);
            self.device.destroy_fence(self.fence, None);
            self.device.destroy_command_pool(self.command_pool, None);
            ManuallyDrop::drop(&mut self.allocator);
            self.device.destroy_device(None);
        }
    }
}
