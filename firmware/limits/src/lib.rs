//! Every bound Lockstep enforces, named in one place.
//!
//! A bound that is not here does not exist: code that allocates, queues or
//! accepts something sized by an outside party checks it against a constant
//! from this crate, so an operator can read the appliance's whole envelope on
//! one page and a reviewer can grep for the checks.

/// Largest number of dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Largest number of elements in one tensor (2^30 float32 values = 4 GiB).
///
/// It keeps every element index inside a `u32`, which is what the kernels'
/// push constants and index arithmetic use, and keeps a single tensor well
/// inside the storage-buffer range of every device we certify.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 30;

/// Largest `.npy` header we parse. NumPy itself refuses headers over 10 KiB
/// unless asked; ours are a few dozen bytes.
pub const MAX_NPY_HEADER_BYTES: usize = 64 * 1024;

/// Largest length of any single dimension (it must fit the kernels' `u32`
/// index arithmetic together with the element bound above).
pub const MAX_DIM: usize = MAX_TENSOR_ELEMENTS;

/// Largest kernel bundle manifest we parse.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Largest single SPIR-V binary in a bundle.
pub const MAX_SPIRV_BYTES: usize = 4 * 1024 * 1024;

/// Largest number of kernels in one bundle.
pub const MAX_KERNELS: usize = 256;

/// Bytes of host-visible staging memory one upload or download copy uses at a
/// time. Larger tensors are streamed through it in chunks, which bounds the
/// host memory a job needs beyond its own operands.
pub const STAGING_CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// How long the host waits for one submission before declaring the device
/// lost (10 minutes: far above any single op we run, far below "forever").
pub const DEVICE_WAIT_TIMEOUT_NS: u64 = 600 * 1_000_000_000;

/// Largest encoded program (JSON or postcard) the program decoders accept.
pub const MAX_PROGRAM_BYTES: usize = 4 * 1024 * 1024;

/// Largest number of op executions one program may ask for, counting every
/// iteration of every repeat block (each one is a trace leaf).
pub const MAX_PROGRAM_OPS: u64 = 1 << 20;

/// Largest iteration count of one repeat block.
pub const MAX_REPEAT: u32 = 1 << 20;

/// Deepest nesting of repeat blocks inside repeat blocks (a top-level repeat
/// is depth 1).
pub const MAX_PROGRAM_NESTING: usize = 8;

/// Longest tensor name in a program, in bytes.
pub const MAX_TENSOR_NAME_BYTES: usize = 64;

/// Default bound on the bytes of tensors a program holds live at once
/// (`lockstep exec --memory-limit` overrides it).
pub const DEFAULT_PROGRAM_MEMORY_BYTES: u64 = 16 << 30;

/// Largest control frame of the wire protocol (requests, replies, headers:
/// everything but tensor data, which travels in data chunks).
pub const MAX_FRAME_BYTES: usize = MAX_PROGRAM_BYTES + 64 * 1024;

/// Bytes of tensor data in one wire chunk: the most a peer buffers of a
/// tensor before handing it on.
pub const WIRE_CHUNK_BYTES: usize = 1024 * 1024;

/// Most named tensors one job may send or receive.
pub const MAX_JOB_TENSORS: usize = 256;

/// Most bidirectional QUIC streams (one per job) a peer may have open at once
/// on one connection. A peer that wants more waits for one to finish: QUIC
/// flow control holds the open, so nothing queues without bound.
pub const MAX_CONCURRENT_STREAMS_PER_CONNECTION: u32 = 16;

/// A QUIC connection that hears nothing from its peer for this long is
/// closed. It also bounds the handshake: a node that never answers costs a
/// client at most this long.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How often an otherwise silent QUIC peer sends a keep-alive, so a
/// connection waiting on a long job does not reach `IDLE_TIMEOUT_MS`.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 10_000;

/// Bytes a QUIC peer may send on one stream beyond what the application has
/// read (the per-stream receive window).
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// Bytes a QUIC peer may send on one connection, all streams together,
/// beyond what the application has read: the most received data the
/// transport buffers for one connection.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Bytes of unacknowledged data one QUIC connection buffers for sending.
pub const CONNECTION_SEND_WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// Jobs waiting for the GPU worker. When the queue is full a new job is
/// answered "busy, retry after" at once instead of waiting unboundedly.
pub const JOB_QUEUE_BOUND: usize = 8;

/// How long a job may run on the worker before the client is told it timed
/// out (default; `lockstepd --job-timeout-s` overrides).
pub const DEFAULT_JOB_TIMEOUT_S: u64 = 600;

/// How long lockstepd waits for in-flight jobs after SIGTERM before it
/// exits anyway.
pub const SHUTDOWN_GRACE_S: u64 = 60;
