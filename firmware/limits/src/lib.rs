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

/// Most hashes in one RFC 6962 audit path a verifier accepts. A trace has at
/// most `MAX_PROGRAM_OPS` = 2^20 leaves, so an honest path has at most 20;
/// 64 covers any tree a u64 can count.
pub const MAX_AUDIT_PATH_HASHES: usize = 64;

/// Largest operand a dispute record embeds (its `.npy` bytes), so a checker
/// can re-execute the disputed op from the record alone; larger operands are
/// carried by hash and proof only. Keeps a record small enough to mail.
pub const MAX_DISPUTE_OPERAND_BYTES: usize = 16 * 1024 * 1024;

/// Default age after which a node deletes a job's retained evidence (every
/// intermediate tensor, its inputs, program and receipt): one day, long
/// enough for a submitter to spot-check or dispute a result.
pub const DEFAULT_RETENTION_WINDOW_S: u64 = 24 * 3600;

/// Default disk budget for retained evidence, all jobs together; the oldest
/// jobs are evicted first to stay under it (`lockstepd --retention-bytes`).
pub const DEFAULT_RETENTION_BYTES: u64 = 8 << 30;

/// Most jobs whose evidence a node retains at once, whatever their size:
/// bounds the retention index and the directory.
pub const MAX_RETAINED_JOBS: usize = 4096;

/// Evidence requests (leaves, inputs) a node serves at once, node-wide:
/// each may hold one retained tensor in memory while it is sent, so this
/// bounds that memory and the disk reads; further requests wait their turn.
pub const MAX_CONCURRENT_EVIDENCE: usize = 4;

/// Most bytes of kernel binaries one bundle push carries: a full bundle
/// (`MAX_KERNELS` kernels, two variants, `MAX_SPIRV_BYTES` each) is far more
/// than any real one (ours is well under 2 MiB), so this is what a node
/// buffers before verifying.
pub const MAX_BUNDLE_UPLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// Bundles a node keeps in its state directory: the active one, the one it
/// replaced (for a manual roll-forward), and one being installed. Older
/// ones are deleted after a switch so pushes cannot fill the disk.
pub const MAX_STORED_BUNDLES: usize = 3;

/// Most operator keys a node trusts (its pinned operator set).
pub const MAX_TRUSTED_OPERATORS: usize = 64;

/// Longest first-enrolment window `lockstepd --enroll-window-s` may open:
/// an unprovisioned node trusts the first enrolling operator only this
/// long after it starts, and never without the flag.
pub const MAX_ENROLL_WINDOW_S: u64 = 24 * 3600;

/// Largest `STATE/operators` file (the pinned operator set) a node reads:
/// `MAX_TRUSTED_OPERATORS` minisign public keys with comments fit.
pub const MAX_OPERATORS_FILE_BYTES: usize = 64 * 1024;

/// Largest `STATE/bundles/ACTIVE` record (bundle id, version, floor) a node
/// reads.
pub const MAX_ACTIVE_RECORD_BYTES: usize = 4096;

/// After a panic in the GPU worker, how long lockstepd lets network tasks
/// deliver the failed jobs' errors before it exits non-zero (so systemd
/// restarts it).
pub const WORKER_PANIC_EXIT_GRACE_S: u64 = 5;

/// Nodes one `lockstep-fleet bundle push --all` works on at once: enough to
/// overlap network waits, few enough not to flood the operator's uplink.
pub const FLEET_PUSH_PARALLELISM: usize = 8;

/// How long an SQLite writer waits for another `lockstep-fleet` process
/// holding the inventory lock before giving up with a clear error.
pub const INVENTORY_BUSY_TIMEOUT_MS: u64 = 10_000;

/// Most bytes of one certification report (JSON): a passing report is about
/// 3 KiB; a failing one adds one first mismatch per check. A node reads an
/// installed report before it serves, so it must not be able to be huge.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Most repetitions of the stability job one certification run may ask
/// for: each costs about one attention block on the device, and a remote
/// run holds the node's worker for all of them.
pub const MAX_STABILITY_REPEATS: u32 = 64;

/// Most trusted certifier keys a node holds (config plus flags).
pub const MAX_TRUSTED_CERTIFIERS: usize = 64;

/// How long a remote certification run may hold a node's worker before the
/// requester is told it timed out (the suite takes ~20 s on lavapipe and
/// less on a GPU; a driver that hangs must not hold the node for ever).
pub const CERTIFY_TIMEOUT_S: u64 = 600;

/// Largest dispute record file `lockstep verify-dispute` reads: two
/// receipts, audit paths and the embedded operands
/// (`MAX_DISPUTE_OPERAND_BYTES` each, base64, at most a few operands).
pub const MAX_DISPUTE_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Most bytes of a minisign signature file a node reads (from a message or
/// its state directory): one is about 300 bytes.
pub const MAX_SIGNATURE_FILE_BYTES: usize = 4096;
