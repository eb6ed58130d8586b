//! The resident mode of [`VulkanBackend`] ([`lockstep_backend::Resident`]):
//! tensors in device buffers between ops, ops recorded into batches that run
//! with one submission and one fence wait, repeat bodies recorded once into
//! a command buffer and replayed, and trace leaves hashed on the device by
//! the bundle's `sha256_npy` kernel.
//!
//! Ordering: every command buffer starts and every dispatch, fill and copy
//! ends with a global memory barrier (shader and transfer writes before
//! shader and transfer reads and writes), and everything goes to one queue.
//! So work runs in recording order, and a buffer released after its last
//! use can back the next tensor at once (the barrier orders the new writes
//! after the old reads). Buffers are kept in a pool by size and destroyed
//! only when the session ends, since a replayed body still uses them.

use std::collections::BTreeMap;

use ash::vk;
use gpu_allocator::MemoryLocation;
use lockstep_backend::{BackendError, BodyId, DeviceTensor, Op, Resident};
use lockstep_kernels::reference::sha256;
use lockstep_tensor::{npy, Tensor};

use crate::backend::{barrier, mapped, record_kernel, write_set, Buffer, VulkanBackend};
use crate::error::vk_err;
use crate::plan::{plan, Slot};

/// The trace-hash kernels of the bundle: one message where it lies, and
/// many messages from the arena side by side.
const HASH_KERNEL: &str = "sha256_npy";
const HASH_MANY_KERNEL: &str = "sha256_npy_many";
/// Descriptor sets per descriptor pool (and four storage descriptors each).
const SETS_PER_POOL: u32 = 256;

/// A resident tensor.
struct Held {
    buffer: Buffer,
    shape: Vec<usize>,
    /// Released while a body was being recorded, but made before it: kept
    /// until the body ends (a carried tensor's first buffer).
    deferred: bool,
}

/// Descriptor sets from pools that grow on demand.
#[derive(Default)]
struct Sets {
    pools: Vec<vk::DescriptorPool>,
    left: u32,
}

/// A recorded body.
struct Body {
    cb: vk::CommandBuffer,
    sets: Sets,
    hashes: usize,
}

/// The body being recorded.
struct Recording {
    cb: vk::CommandBuffer,
    sets: Sets,
    hashes: usize,
    /// Handles below this existed before the body.
    first_id: u32,
}

pub(crate) struct Session {
    next_id: u32,
    live: BTreeMap<u32, Held>,
    /// Free buffers by size in bytes.
    pool: BTreeMap<u64, Vec<Buffer>>,
    /// Host-visible: the digests of one batch, 8 words each.
    digests: Buffer,
    /// One word: the slot the next digests are placed after (a replayed
    /// body advances it by its digest count), zeroed at the start of every
    /// batch.
    counter: Buffer,
    capacity: usize,
    /// Device buffer the outputs to hash are copied into, and the
    /// host-visible table of those messages (`capacity` entries).
    arena: Buffer,
    arena_words: u32,
    table: Buffer,
    /// Words of the arena used, and the messages in it not yet hashed.
    arena_used: u32,
    arena_messages: Vec<sha256::Message>,
    /// Table entries written since the batch (or body) began.
    table_used: usize,
    batch_pool: vk::CommandPool,
    /// Command buffers allocated from `batch_pool`; the first `batch_used`
    /// are this batch's.
    batch_cbs: Vec<vk::CommandBuffer>,
    batch_used: usize,
    /// What the batch submits, in order (replayed bodies repeat).
    submit: Vec<vk::CommandBuffer>,
    /// The batch's command buffer being recorded, if any.
    open: Option<vk::CommandBuffer>,
    batch_sets: Sets,
    /// Digests the batch will write.
    hashes: usize,
    body_pool: vk::CommandPool,
    bodies: BTreeMap<u32, Body>,
    next_body: u32,
    recording: Option<Recording>,
}

fn misuse(what: &str) -> BackendError {
    BackendError::Vulkan {
        call: "resident session",
        code: what.to_string(),
    }
}

impl VulkanBackend {
    /// Runs `f` with the session taken out of `self` (so both can be
    /// borrowed), and puts it back whatever `f` returns.
    fn with_session<R>(
        &mut self,
        f: impl FnOnce(&mut VulkanBackend, &mut Session) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        let mut s = self
            .session
            .take()
            .ok_or_else(|| misuse("no session: call begin_session first"))?;
        let result = f(self, &mut s);
        self.session = Some(s);
        result
    }

    /// A buffer of `elements` floats, from the pool or new.
    fn take_buffer(&mut self, s: &mut Session, elements: usize) -> Result<Buffer, BackendError> {
        let bytes = (elements.max(1) * 4) as u64;
        if let Some(b) = s.pool.get_mut(&bytes).and_then(Vec::pop) {
            return Ok(b);
        }
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::TRANSFER_DST
            | vk::BufferUsageFlags::TRANSFER_SRC;
        self.create_buffer(
            elements,
            storage,
            MemoryLocation::GpuOnly,
            "resident tensor",
        )
    }

    fn hold(&mut self, s: &mut Session, buffer: Buffer, shape: Vec<usize>) -> DeviceTensor {
        let id = s.next_id;
        s.next_id = s
            .next_id
            .checked_add(1)
            .expect("fewer than 2^32 tensors per session");
        s.live.insert(
            id,
            Held {
                buffer,
                shape,
                deferred: false,
            },
        );
        DeviceTensor::from_raw(id)
    }

    fn allocate_set(
        &self,
        sets: &mut Sets,
        layout: vk::DescriptorSetLayout,
    ) -> Result<vk::DescriptorSet, BackendError> {
        if sets.left == 0 {
            let sizes = [vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_BUFFER,
                descriptor_count: SETS_PER_POOL * 4,
            }];
            let info = vk::DescriptorPoolCreateInfo::default()
                .max_sets(SETS_PER_POOL)
                .pool_sizes(&sizes);
            // SAFETY: valid device; the pool is destroyed with its `Sets`.
            let pool = unsafe { self.device.create_descriptor_pool(&info, None) }
                .map_err(|r| vk_err("vkCreateDescriptorPool", "creating descriptor sets", r))?;
            sets.pools.push(pool);
            sets.left = SETS_PER_POOL;
        }
        let layouts = [layout];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(*sets.pools.last().expect("pushed above"))
            .set_layouts(&layouts);
        // SAFETY: the pool has room for one more set of at most 4 bindings.
        let set = unsafe { self.device.allocate_descriptor_sets(&info) }
            .map_err(|r| vk_err("vkAllocateDescriptorSets", "allocating a descriptor set", r))?[0];
        sets.left -= 1;
        Ok(set)
    }

    fn destroy_sets(&self, sets: &mut Sets) {
        for pool in sets.pools.drain(..) {
            // SAFETY: only called once the sets' command buffers have run.
            unsafe { self.device.destroy_descriptor_pool(pool, None) };
        }
        sets.left = 0;
    }

    /// The command buffer recording goes into now: the body's, or the
    /// batch's open one (begun here, zeroing the digest counter if it is
    /// the batch's first).
    fn target_cb(&mut self, s: &mut Session) -> Result<vk::CommandBuffer, BackendError> {
        if let Some(r) = &s.recording {
            return Ok(r.cb);
        }
        if let Some(cb) = s.open {
            return Ok(cb);
        }
        if s.batch_used == s.batch_cbs.len() {
            let info = vk::CommandBufferAllocateInfo::default()
                .command_pool(s.batch_pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: valid pool of this device.
            let cb = unsafe { self.device.allocate_command_buffers(&info) }
                .map_err(|r| vk_err("vkAllocateCommandBuffers", "recording a batch", r))?[0];
            s.batch_cbs.push(cb);
        }
        let cb = s.batch_cbs[s.batch_used];
        s.batch_used += 1;
        // SAFETY: the batch pool was reset after the last batch's fence, so
        // this command buffer is in the initial state.
        unsafe {
            self.device
                .begin_command_buffer(
                    cb,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )
                .map_err(|r| vk_err("vkBeginCommandBuffer", "recording a batch", r))?;
        }
        full_barrier(&self.device, cb);
        if s.submit.is_empty() {
            // SAFETY: the counter buffer is live and 4 bytes long.
            unsafe {
                self.device
                    .cmd_fill_buffer(cb, s.counter.raw, 0, vk::WHOLE_SIZE, 0)
            };
            full_barrier(&self.device, cb);
        }
        s.open = Some(cb);
        Ok(cb)
    }

    /// Ends the batch's open command buffer and queues it.
    fn close_open(&mut self, s: &mut Session) -> Result<(), BackendError> {
        if let Some(cb) = s.open.take() {
            // SAFETY: `cb` is in the recording state.
            unsafe { self.device.end_command_buffer(cb) }
                .map_err(|r| vk_err("vkEndCommandBuffer", "recording a batch", r))?;
            s.submit.push(cb);
        }
        Ok(())
    }

    /// Records one dispatch of `kernel` over `buffers` into `cb`.
    fn record_dispatch(
        &mut self,
        s: &mut Session,
        cb: vk::CommandBuffer,
        kernel: &'static str,
        buffers: &[vk::Buffer],
        push: &[u32],
        groups: [u32; 3],
    ) -> Result<(), BackendError> {
        self.ensure_pipeline(kernel)?;
        let kp = &self.pipelines[kernel];
        assert_eq!(
            buffers.len() as u32,
            kp.bindings,
            "plan and manifest agree on {kernel}"
        );
        let set_layout = kp.set_layout;
        let sets = match &mut s.recording {
            Some(r) => &mut r.sets,
            None => &mut s.batch_sets,
        };
        let set = self.allocate_set(sets, set_layout)?;
        // The set is fresh; it and the pipeline outlive the command buffer's
        // execution (sets live until the batch's fence or the body's drop).
        write_set(&self.device, set, buffers);
        let dev = &self.device;
        record_kernel(dev, cb, &self.pipelines[kernel], set, push, groups);
        full_barrier(dev, cb);
        Ok(())
    }

    /// Records the hashes of the messages in the arena: their table
    /// entries, shortest first (a workgroup's invocations then run equal
    /// loops), and one `sha256_npy_many` dispatch.
    fn hash_arena(&mut self, s: &mut Session, cb: vk::CommandBuffer) -> Result<(), BackendError> {
        if s.arena_messages.is_empty() {
            return Ok(());
        }
        let mut messages = std::mem::take(&mut s.arena_messages);
        messages.sort_by_key(|m| m.data_words);
        let first = s.table_used;
        assert!(
            first + messages.len() <= s.capacity,
            "a batch's messages fit the table (one per digest)"
        );
        let table = mapped(&mut s.table)?;
        for (i, m) in messages.iter().enumerate() {
            let at = (first + i) * sha256::TABLE_WORDS * 4;
            for (j, w) in m.to_words().iter().enumerate() {
                table[at + 4 * j..at + 4 * j + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        let count = messages.len() as u32;
        let push = sha256::many_push_constants(first as u32, count, 0);
        let buffers = [s.arena.raw, s.digests.raw, s.counter.raw, s.table.raw];
        let groups = count.div_ceil(sha256::MANY_WORKGROUP);
        self.record_dispatch(s, cb, HASH_MANY_KERNEL, &buffers, &push, [groups, 1, 1])?;
        s.table_used += messages.len();
        s.arena_used = 0;
        Ok(())
    }

    fn return_buffer(s: &mut Session, b: Buffer) {
        s.pool.entry(b.bytes).or_default().push(b);
    }
}

/// Everything written before, by shaders or transfers, is visible to
/// everything after.
fn full_barrier(dev: &ash::Device, cb: vk::CommandBuffer) {
    barrier(
        dev,
        cb,
        vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
        vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE,
        vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
        vk::AccessFlags::SHADER_READ
            | vk::AccessFlags::SHADER_WRITE
            | vk::AccessFlags::TRANSFER_READ
            | vk::AccessFlags::TRANSFER_WRITE,
    );
}

fn create_pool(b: &VulkanBackend, doing: &str) -> Result<vk::CommandPool, BackendError> {
    let info = vk::CommandPoolCreateInfo::default().queue_family_index(b.family);
    // SAFETY: valid device; destroyed in `end`.
    unsafe { b.device.create_command_pool(&info, None) }
        .map_err(|r| vk_err("vkCreateCommandPool", doing, r))
}

/// Ends the session, if any: waits for the device, then frees every buffer,
/// command pool and descriptor pool it made.
pub(crate) fn end(b: &mut VulkanBackend) {
    let Some(mut s) = b.session.take() else {
        return;
    };
    // SAFETY: waiting makes every buffer, set and command buffer idle.
    let _ = unsafe { b.device.device_wait_idle() };
    let mut batch_sets = std::mem::take(&mut s.batch_sets);
    b.destroy_sets(&mut batch_sets);
    for (_, mut body) in std::mem::take(&mut s.bodies) {
        b.destroy_sets(&mut body.sets);
    }
    if let Some(mut r) = s.recording.take() {
        b.destroy_sets(&mut r.sets);
    }
    // SAFETY: idle pools; destroying a pool frees its command buffers.
    unsafe {
        b.device.destroy_command_pool(s.batch_pool, None);
        b.device.destroy_command_pool(s.body_pool, None);
    }
    for (_, held) in std::mem::take(&mut s.live) {
        b.destroy_buffer(held.buffer);
    }
    for (_, buffers) in std::mem::take(&mut s.pool) {
        for buffer in buffers {
            b.destroy_buffer(buffer);
        }
    }
    b.destroy_buffer(s.digests);
    b.destroy_buffer(s.counter);
    b.destroy_buffer(s.arena);
    b.destroy_buffer(s.table);
}

impl Resident for VulkanBackend {
    fn begin_session(&mut self, digests_per_batch: usize) -> Result<(), BackendError> {
        end(self);
        self.ensure_pipeline(HASH_KERNEL)?;
        let capacity = digests_per_batch.max(1);
        let digests = self.create_buffer(
            capacity * 8,
            vk::BufferUsageFlags::STORAGE_BUFFER,
            MemoryLocation::GpuToCpu,
            "trace digests",
        )?;
        let counter = match self.create_buffer(
            1,
            vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_DST,
            MemoryLocation::GpuOnly,
            "digest counter",
        ) {
            Ok(c) => c,
            Err(e) => {
                self.destroy_buffer(digests);
                return Err(e);
            }
        };
        self.ensure_pipeline(HASH_MANY_KERNEL)?;
        let arena_words = (lockstep_limits::RESIDENT_HASH_ARENA_BYTES / 4) as usize;
        assert!(arena_words >= sha256::MANY_MESSAGE_MAX_WORDS as usize);
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_DST;
        let arena =
            match self.create_buffer(arena_words, storage, MemoryLocation::GpuOnly, "hash arena") {
                Ok(a) => a,
                Err(e) => {
                    self.destroy_buffer(digests);
                    self.destroy_buffer(counter);
                    return Err(e);
                }
            };
        let table = match self.create_buffer(
            capacity * sha256::TABLE_WORDS,
            vk::BufferUsageFlags::STORAGE_BUFFER,
            MemoryLocation::CpuToGpu,
            "hash table",
        ) {
            Ok(t) => t,
            Err(e) => {
                self.destroy_buffer(digests);
                self.destroy_buffer(counter);
                self.destroy_buffer(arena);
                return Err(e);
            }
        };
        let pools = create_pool(self, "starting a resident session").and_then(|batch| {
            match create_pool(self, "starting a resident session") {
                Ok(body) => Ok((batch, body)),
                Err(e) => {
                    // SAFETY: just created, unused.
                    unsafe { self.device.destroy_command_pool(batch, None) };
                    Err(e)
                }
            }
        });
        let (batch_pool, body_pool) = match pools {
            Ok(p) => p,
            Err(e) => {
                self.destroy_buffer(digests);
                self.destroy_buffer(counter);
                self.destroy_buffer(arena);
                self.destroy_buffer(table);
                return Err(e);
            }
        };
        self.session = Some(Session {
            arena,
            arena_words: arena_words as u32,
            table,
            arena_used: 0,
            arena_messages: Vec::new(),
            table_used: 0,
            next_id: 0,
            live: BTreeMap::new(),
            pool: BTreeMap::new(),
            digests,
            counter,
            capacity,
            batch_pool,
            batch_cbs: Vec::new(),
            batch_used: 0,
            submit: Vec::new(),
            open: None,
            batch_sets: Sets::default(),
            hashes: 0,
            body_pool,
            bodies: BTreeMap::new(),
            next_body: 0,
            recording: None,
        });
        Ok(())
    }

    fn upload(&mut self, t: &Tensor) -> Result<DeviceTensor, BackendError> {
        self.with_session(|b, s| {
            let buffer = b.take_buffer(s, t.len())?;
            if let Err(e) = VulkanBackend::upload(b, buffer.raw, t.data()) {
                VulkanBackend::return_buffer(s, buffer);
                return Err(e);
            }
            Ok(b.hold(s, buffer, t.shape().to_vec()))
        })
    }

    fn record(&mut self, op: &Op, inputs: &[DeviceTensor]) -> Result<DeviceTensor, BackendError> {
        self.with_session(|b, s| {
            let mut shapes = Vec::with_capacity(inputs.len());
            let mut operands = Vec::with_capacity(inputs.len());
            for t in inputs {
                let held = s
                    .live
                    .get(&t.raw())
                    .ok_or_else(|| misuse("an operand was released or never made"))?;
                shapes.push(held.shape.clone());
                operands.push(held.buffer.raw);
            }
            let shape_refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            let p = plan(op, &shape_refs, b.target)?;
            b.check_loops(&p)?;
            let out_len: usize = p.out_shape.iter().product();
            let cb = b.target_cb(s)?;
            let output = b.take_buffer(s, out_len)?;
            let mut temps = Vec::with_capacity(p.temps.len());
            let recorded = (|| {
                for &n in &p.temps {
                    temps.push(b.take_buffer(s, n)?);
                }
                if p.dispatches.is_empty() {
                    // An empty output, or one over an empty operand: all +0.0.
                    // SAFETY: the output buffer is live; the command buffer
                    // is recording.
                    unsafe {
                        b.device
                            .cmd_fill_buffer(cb, output.raw, 0, vk::WHOLE_SIZE, 0)
                    };
                    full_barrier(&b.device, cb);
                }
                for d in &p.dispatches {
                    let buffers: Vec<vk::Buffer> = d
                        .bindings
                        .iter()
                        .map(|&slot| match slot {
                            Slot::Input(i) => operands[i],
                            Slot::Output => output.raw,
                            Slot::Temp(j) => temps[j].raw,
                        })
                        .collect();
                    b.record_dispatch(s, cb, d.kernel, &buffers, &d.push, d.groups)?;
                }
                Ok(())
            })();
            // Temporaries die with the op: the barriers order any reuse.
            for t in temps {
                VulkanBackend::return_buffer(s, t);
            }
            if let Err(e) = recorded {
                VulkanBackend::return_buffer(s, output);
                return Err(e);
            }
            Ok(b.hold(s, output, p.out_shape))
        })
    }

    fn record_hash(&mut self, t: DeviceTensor) -> Result<(), BackendError> {
        self.with_session(|b, s| {
            let held = s
                .live
                .get(&t.raw())
                .ok_or_else(|| misuse("hashing a tensor that was released or never made"))?;
            let header = npy::header_bytes(&held.shape);
            let len: usize = held.shape.iter().product();
            let state = sha256::midstate(&header);
            let data = held.buffer.raw;
            let rel = match &s.recording {
                Some(r) => r.hashes,
                None => s.hashes,
            };
            if s.recording.is_none() && s.hashes >= s.capacity {
                return Err(misuse(
                    "more digests in one batch than the session was sized for",
                ));
            }
            let cb = b.target_cb(s)?;
            if len <= sha256::MANY_MESSAGE_MAX_WORDS as usize {
                // Copied into the arena now (the buffer may back another
                // tensor right after), hashed with its neighbours later.
                if s.arena_used as usize + len > s.arena_words as usize {
                    b.hash_arena(s, cb)?;
                }
                if len > 0 {
                    let region = vk::BufferCopy {
                        src_offset: 0,
                        dst_offset: u64::from(s.arena_used) * 4,
                        size: len as u64 * 4,
                    };
                    // SAFETY: both buffers are live; the region lies in both.
                    unsafe { b.device.cmd_copy_buffer(cb, data, s.arena.raw, &[region]) };
                    full_barrier(&b.device, cb);
                }
                s.arena_messages.push(sha256::Message {
                    offset_words: s.arena_used,
                    data_words: len as u32,
                    header_bytes: header.len() as u32,
                    rel: rel as u32,
                    state,
                });
                s.arena_used += len as u32;
            } else {
                // A long tensor: hashed where it lies, over several
                // dispatches (sha256.rs, BLOCKS_PER_DISPATCH).
                let buffers = [data, s.digests.raw, s.counter.raw];
                for d in sha256::dispatches(len as u32) {
                    let push = sha256::push_constants(
                        state,
                        header.len() as u32,
                        len as u32,
                        d,
                        rel as u32,
                    );
                    b.record_dispatch(s, cb, HASH_KERNEL, &buffers, &push, [1, 1, 1])?;
                }
            }
            match &mut s.recording {
                Some(r) => r.hashes += 1,
                None => s.hashes += 1,
            }
            Ok(())
        })
    }

    fn release(&mut self, t: DeviceTensor) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let outer = s.recording.as_ref().is_some_and(|r| t.raw() < r.first_id);
        if outer {
            if let Some(held) = s.live.get_mut(&t.raw()) {
                held.deferred = true;
            }
            return;
        }
        if let Some(held) = s.live.remove(&t.raw()) {
            VulkanBackend::return_buffer(s, held.buffer);
        }
    }

    fn begin_body(&mut self) -> Result<(), BackendError> {
        self.with_session(|b, s| {
            if s.recording.is_some() {
                return Err(misuse("a body is already being recorded"));
            }
            if s.open.is_some() || !s.submit.is_empty() || !s.arena_messages.is_empty() {
                return Err(misuse("begin_body before the recorded work was flushed"));
            }
            let info = vk::CommandBufferAllocateInfo::default()
                .command_pool(s.body_pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: valid pool of this device.
            let cb = unsafe { b.device.allocate_command_buffers(&info) }
                .map_err(|r| vk_err("vkAllocateCommandBuffers", "recording a repeat body", r))?[0];
            // SAFETY: a fresh command buffer. SIMULTANEOUS_USE: one batch
            // submits the body once per iteration.
            unsafe {
                b.device
                    .begin_command_buffer(
                        cb,
                        &vk::CommandBufferBeginInfo::default()
                            .flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE),
                    )
                    .map_err(|r| vk_err("vkBeginCommandBuffer", "recording a repeat body", r))?;
            }
            full_barrier(&b.device, cb);
            s.recording = Some(Recording {
                cb,
                sets: Sets::default(),
                hashes: 0,
                first_id: s.next_id,
            });
            Ok(())
        })
    }

    fn end_body(&mut self, carry: &[(DeviceTensor, DeviceTensor)]) -> Result<BodyId, BackendError> {
        self.with_session(|b, s| {
            let r = s
                .recording
                .as_ref()
                .ok_or_else(|| misuse("end_body without begin_body"))?;
            let (cb, hashes) = (r.cb, r.hashes);
            // This iteration's outputs in the arena are hashed before the
            // carried tensors move.
            b.hash_arena(s, cb)?;
            for (last, first) in carry {
                let (Some(src), Some(dst)) = (s.live.get(&last.raw()), s.live.get(&first.raw()))
                else {
                    return Err(misuse("a carried tensor was released or never made"));
                };
                let region = vk::BufferCopy {
                    src_offset: 0,
                    dst_offset: 0,
                    size: src.buffer.bytes.min(dst.buffer.bytes),
                };
                // SAFETY: both buffers are live and the region fits both.
                unsafe {
                    b.device
                        .cmd_copy_buffer(cb, src.buffer.raw, dst.buffer.raw, &[region])
                };
                full_barrier(&b.device, cb);
            }
            if hashes > 0 {
                // The next iteration's digests go after this one's.
                let push = sha256::many_push_constants(0, 0, hashes as u32);
                let buffers = [s.arena.raw, s.digests.raw, s.counter.raw, s.table.raw];
                b.record_dispatch(s, cb, HASH_MANY_KERNEL, &buffers, &push, [1, 1, 1])?;
            }
            // SAFETY: recording state.
            unsafe { b.device.end_command_buffer(cb) }
                .map_err(|r| vk_err("vkEndCommandBuffer", "recording a repeat body", r))?;
            let r = s.recording.take().expect("checked above");
            // The first buffers of carried tensors live on; other tensors
            // released in the body but made before it are free now.
            for (_, first) in carry {
                if let Some(held) = s.live.get_mut(&first.raw()) {
                    held.deferred = false;
                }
            }
            let freed: Vec<u32> = s
                .live
                .iter()
                .filter(|(_, h)| h.deferred)
                .map(|(&id, _)| id)
                .collect();
            for id in freed {
                let held = s.live.remove(&id).expect("listed above");
                VulkanBackend::return_buffer(s, held.buffer);
            }
            let id = s.next_body;
            s.next_body += 1;
            s.bodies.insert(
                id,
                Body {
                    cb: r.cb,
                    sets: r.sets,
                    hashes: r.hashes,
                },
            );
            Ok(BodyId(id))
        })
    }

    fn replay(&mut self, body: BodyId, times: u32) -> Result<(), BackendError> {
        self.with_session(|b, s| {
            let (cb, hashes) = match s.bodies.get(&body.0) {
                Some(body) => (body.cb, body.hashes),
                None => return Err(misuse("replaying a body that was dropped or never made")),
            };
            let adding = hashes.saturating_mul(times as usize);
            if s.hashes.saturating_add(adding) > s.capacity {
                return Err(misuse(
                    "more digests in one batch than the session was sized for",
                ));
            }
            // The batch's first command buffer zeroes the digest counter.
            b.target_cb(s)?;
            b.close_open(s)?;
            for _ in 0..times {
                s.submit.push(cb);
            }
            s.hashes += adding;
            Ok(())
        })
    }

    fn drop_body(&mut self, body: BodyId) {
        let Some(mut s) = self.session.take() else {
            return;
        };
        if let Some(mut dropped) = s.bodies.remove(&body.0) {
            self.destroy_sets(&mut dropped.sets);
            // SAFETY: the caller dropped it after the flush that ran it.
            unsafe { self.device.free_command_buffers(s.body_pool, &[dropped.cb]) };
        }
        self.session = Some(s);
    }

    fn flush(&mut self) -> Result<Vec<[u8; 32]>, BackendError> {
        self.with_session(|b, s| {
            if s.recording.is_some() {
                return Err(misuse("flush while a body is being recorded"));
            }
            if s.open.is_none() && s.submit.is_empty() {
                return Ok(Vec::new());
            }
            let cb = b.target_cb(s)?;
            b.hash_arena(s, cb)?;
            // The digests are read by the host after the fence.
            barrier(
                &b.device,
                cb,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::AccessFlags::SHADER_WRITE,
                vk::PipelineStageFlags::HOST,
                vk::AccessFlags::HOST_READ,
            );
            b.close_open(s)?;
            let submit = vk::SubmitInfo::default().command_buffers(&s.submit);
            let doing = "running a resident batch";
            b.count(|c| c.submits += 1);
            // SAFETY: every command buffer is executable; the fence is
            // unsignalled; all buffers and sets they use are live.
            let result = unsafe {
                b.device
                    .queue_submit(b.queue, &[submit], b.fence)
                    .map_err(|r| vk_err("vkQueueSubmit", doing, r))
                    .and_then(|()| {
                        b.count(|c| c.fence_waits += 1);
                        match b.device.wait_for_fences(
                            &[b.fence],
                            true,
                            lockstep_limits::DEVICE_WAIT_TIMEOUT_NS,
                        ) {
                            Err(vk::Result::TIMEOUT) => Err(BackendError::DeviceLost(format!(
                                "{doing}: the device did not finish within {} s",
                                lockstep_limits::DEVICE_WAIT_TIMEOUT_NS / 1_000_000_000
                            ))),
                            other => other.map_err(|r| vk_err("vkWaitForFences", doing, r)),
                        }
                    })
                    .and_then(|()| {
                        b.device
                            .reset_fences(&[b.fence])
                            .map_err(|r| vk_err("vkResetFences", doing, r))
                    })
            };
            let hashes = std::mem::take(&mut s.hashes);
            s.submit.clear();
            result?;
            // SAFETY: the fence signalled: the batch's command buffers and
            // sets are idle.
            unsafe {
                b.device
                    .reset_command_pool(s.batch_pool, vk::CommandPoolResetFlags::empty())
                    .map_err(|r| vk_err("vkResetCommandPool", doing, r))?;
            }
            s.batch_used = 0;
            s.table_used = 0;
            let mut sets = std::mem::take(&mut s.batch_sets);
            b.destroy_sets(&mut sets);
            let words = mapped(&mut s.digests)?;
            let digests: Vec<[u8; 32]> = words[..hashes * 32]
                .chunks_exact(32)
                .map(|d| {
                    let mut state = [0u32; 8];
                    for (w, b) in state.iter_mut().zip(d.chunks_exact(4)) {
                        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    sha256::digest_bytes(&state)
                })
                .collect();
            b.count(|c| c.bytes_from_device += hashes as u64 * 32);
            Ok(digests)
        })
    }

    fn download(&mut self, t: DeviceTensor) -> Result<Tensor, BackendError> {
        self.with_session(|b, s| {
            if s.open.is_some() || !s.submit.is_empty() || s.recording.is_some() {
                return Err(misuse("download before the recorded work was flushed"));
            }
            let held = s
                .live
                .get(&t.raw())
                .ok_or_else(|| misuse("downloading a tensor that was released or never made"))?;
            let (raw, shape) = (held.buffer.raw, held.shape.clone());
            let len: usize = shape.iter().product();
            let data = VulkanBackend::download(b, raw, len)?;
            Ok(
                Tensor::new(shape, data)
                    .expect("a resident tensor's shape passed Op::output_shape"),
            )
        })
    }

    fn end_session(&mut self) {
        end(self);
    }
}
