//! Every bound Lockstep enforces, named in one place.
//!
//! A bound that is not here does not exist: code that allocates, queues or
//! accepts something sized by an outside party checks it against a constant
//! from this crate, so an operator can read the appliance's whole envelope on
//! one page and a reviewer can grep for the checks.

#![forbid(unsafe_code)]

/// Largest number of dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Largest rank `permute` reorders: its kernel indexes four axes.
pub const MAX_PERMUTE_RANK: usize = 4;

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

/// Most op executions one resident batch records before the executor
/// submits it and waits (a repeat body longer than this is one batch per
/// iteration). One fence wait per batch instead of one per op; small enough
/// that a job's time limit, checked between batches, still stops a run
/// within a few batches' time.
pub const RESIDENT_BATCH_OPS: usize = 256;

/// Bytes of the device buffer a resident run copies op outputs into so that
/// their trace hashes run side by side (one invocation per output, many at
/// once): fixed device memory, like the staging buffers. Outputs over
/// 1 MiB are hashed where they lie instead.
pub const RESIDENT_HASH_ARENA_BYTES: u64 = 8 * 1024 * 1024;

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
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// Bytes a QUIC peer may send on one connection, all streams together,
/// beyond what the application has read: the most received data the
/// transport buffers for one connection.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// Bytes of unacknowledged data one QUIC connection buffers for sending.
pub const CONNECTION_SEND_WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// Jobs waiting for the GPU worker. When the queue is full a new job is
/// answered "busy, retry after" at once instead of waiting unboundedly.
/// One such queue per device.
pub const JOB_QUEUE_BOUND: usize = 8;

/// Devices one node serves on, each with its own worker thread and queue
/// (an HGX-class server has 8 GPUs; twice that leaves room). Past this,
/// `lockstepd --devices` names which.
pub const MAX_NODE_DEVICES: usize = 16;

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
/// each streams one retained tensor from disk a wire chunk at a time, so
/// this bounds that memory and the disk reads; further requests wait their
/// turn (at most `EVIDENCE_QUEUE_WAIT_MS`).
pub const MAX_CONCURRENT_EVIDENCE: usize = 8;

/// Evidence requests served at once for one source address (an IPv4
/// address or an IPv6 /64): one requester cannot take every node-wide turn.
pub const MAX_CONCURRENT_EVIDENCE_PER_SOURCE: usize = 2;

/// How long an evidence request waits for a node-wide turn before it is
/// answered `Busy`.
pub const EVIDENCE_QUEUE_WAIT_MS: u64 = 10_000;

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

/// Most failures one check of a certification report lists (each put down
/// to a float-model property); its `failed` count still counts them all.
/// About 250 bytes each: two checks' lists stay well inside
/// `MAX_REPORT_BYTES`.
pub const MAX_LISTED_FAILURES: usize = 96;

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

/// How long a certification report is valid when the certifier does not
/// say: long enough to outlast a maintenance cycle, short enough that a
/// driver update or a degrading device is certified again.
pub const DEFAULT_CERTIFICATION_VALIDITY_DAYS: u32 = 90;

/// The longest validity a certification report may claim; a node refuses
/// a report whose `expires_at` is further from its `finished_at`.
pub const MAX_CERTIFICATION_VALIDITY_DAYS: u32 = 365;

/// How far in the future a report's `finished_at` may lie by the node's
/// clock: a report from further ahead would make every honest report after
/// it look older, so it is refused.
pub const MAX_CERTIFICATION_CLOCK_SKEW_S: u64 = 300;

/// Largest signed statement authorizing a certification run or install
/// (canonical JSON; a few hundred bytes in practice).
pub const MAX_CERTIFY_STATEMENT_BYTES: usize = 4096;

/// Largest minisign public key (text) naming the signer of a certification
/// request; a key file is about 100 bytes.
pub const MAX_PUBLIC_KEY_TEXT_BYTES: usize = 1024;

/// Largest file holding an installed report together with its certifier
/// signature (JSON-escaped, which can at most double each).
pub const MAX_INSTALLED_REPORT_FILE_BYTES: usize =
    2 * (MAX_REPORT_BYTES + MAX_SIGNATURE_FILE_BYTES) + 1024;

// ---------------------------------------------------------------------------
// Admission: what a node lets strangers hold before it has admitted them.
// The node's whole envelope is the sum of these (docs/protocol.md,
// "Admission"), and the service unit's MemoryMax= is sized from it.
// ---------------------------------------------------------------------------

/// QUIC connections a node holds at once, from everyone together; more are
/// refused at the first packet (CONNECTION_REFUSED), before any handshake
/// state is kept.
pub const MAX_CONNECTIONS: usize = 256;

/// QUIC connections a node holds at once from one source (an IPv4 address,
/// or an IPv6 /64, which one party usually holds whole). Source addresses
/// are validated with a QUIC Retry before they are counted, so a spoofed
/// address costs the node nothing.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 16;

/// A connection with no open stream for this long is closed by the node:
/// client keep-alives keep QUIC's idle timer from ever firing, so without
/// this a silent peer would hold its connection slot for ever.
pub const CONNECTION_IDLE_NO_STREAM_MS_MAX: u64 = 60_000;

/// Bytes of frames being assembled (control messages and data chunks
/// received but not yet handed on) that one connection may hold, all its
/// streams together, beyond QUIC's own receive window. A frame whose
/// header announces more than is left is refused `Busy` before any of its
/// payload is buffered.
pub const CONNECTION_FRAME_BUFFER_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Default node-wide memory budget, in bytes, for everything strangers make
/// the node hold on the host: frames being assembled, and every admitted
/// job's program, inputs and outputs from the moment it is admitted until
/// its outputs are sent (`lockstepd --memory-budget-bytes`). A job reserves
/// its share *before* any input byte is accepted; a job that does not fit
/// now is answered `Busy`, one that could never fit `TooLarge`.
pub const DEFAULT_NODE_MEMORY_BUDGET_BYTES: u64 = 8 << 30;

/// Jobs admitted at once (receiving inputs, queued, or running): the queue
/// plus the one on the device. A job beyond this is answered `Busy` before
/// its inputs are sent.
pub const MAX_ADMITTED_JOBS: usize = JOB_QUEUE_BOUND + 1;

/// Jobs one source may have admitted at once: always one fewer than the
/// node's, so one source never holds every slot.
pub const MAX_ADMITTED_JOBS_PER_SOURCE: usize = MAX_ADMITTED_JOBS - 1;

/// One source's jobs together may reserve at most 1/this of the node's job
/// memory, so one source never holds all of it.
pub const JOB_MEMORY_SOURCES_MIN: u64 = 2;

/// Frames being assembled, all connections together, may hold at most
/// 1/this of the node memory budget (`--memory-budget-bytes`); jobs get
/// the rest. Separate shares: admitted jobs can never make the node refuse
/// the control frames of other requests (status, evidence, admin).
pub const FRAME_BUDGET_SHARE_DIV: u64 = 8;

/// One source's frames being assembled may hold at most 1/this of the
/// node's frame budget (with the defaults, 256 MiB: every connection it may
/// hold with a full frame buffer), so one source never holds all of it.
pub const FRAME_BUDGET_SOURCES_MIN: u64 = 4;

/// The slowest a peer may move data and still be served, in bytes per
/// second: an upload, an evidence response and the acknowledgement of a
/// reply each get `FRAME_READ_TIMEOUT_MS` (or `WRITE_STALL_TIMEOUT_MS`)
/// plus their size at this rate, in all, so a trickling peer cannot hold a
/// job slot, a memory reservation or an evidence turn for hours.
pub const PEER_RATE_MIN_BYTES_PER_S: u64 = 1024 * 1024;

/// How long a node waits for the next frame a stream owes it (the first
/// request, the next input chunk, the admin command) before it resets the
/// stream: a half-sent frame cannot hold its buffer for ever.
pub const FRAME_READ_TIMEOUT_MS: u64 = 30_000;

/// How long one frame write to a peer may stall (the peer not reading, so
/// QUIC flow control holds it) before the node resets the stream and frees
/// what the stream held (an evidence turn, a job's outputs).
pub const WRITE_STALL_TIMEOUT_MS: u64 = 10_000;

/// Largest receipt (canonical JSON) a node accepts back as proof that a
/// requester may read a job's evidence; a real one is about 1 KiB.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;

/// Most jobs whose evidence a node retains for one source (IPv4 address or
/// IPv6 /64); that source's oldest jobs are evicted first, so a flood of
/// tiny jobs from one client never evicts another client's evidence.
pub const RETAINED_JOBS_PER_SOURCE_MAX: usize = 256;

/// Default share of the retention byte budget one source may hold
/// (`retention_bytes` / this).
pub const RETENTION_SOURCES_MIN: u64 = 8;

/// Free space, in bytes, that evidence never takes from the filesystem it
/// is written to (checked before every write): the device key, the trust
/// files, certification reports and pushed bundles (at most
/// `MAX_STORED_BUNDLES` of `MAX_BUNDLE_UPLOAD_BYTES`) keep room to be
/// written even if evidence shares their partition
/// (`lockstepd --state-free-floor-bytes`).
pub const DEFAULT_STATE_FREE_FLOOR_BYTES: u64 = 512 << 20;

/// Free bytes the state directory keeps after an image update's UKI is
/// staged there (`STATE/update/uki.efi`, at most `MAX_UPDATE_UKI_BYTES`):
/// the device key, the trust files and the operator chain keep room to be
/// written (`lockstepd --update-free-floor-bytes`). Smaller than
/// `DEFAULT_STATE_FREE_FLOOR_BYTES`, which guards retained evidence: the
/// appliance keeps evidence on its own partition, and its state partition
/// (512 MiB) could never hold a UKI above that floor.
pub const DEFAULT_UPDATE_FREE_FLOOR_BYTES: u64 = 64 << 20;

/// Bytes the service unit allows lockstepd beyond the budgets above, for
/// the binary, the GPU driver and its shader compiler, and thread stacks
/// (image/overlay/.../lockstepd.service `MemoryMax=`).
pub const PROCESS_BASE_BYTES: u64 = 2 << 30;

/// Threads of the blocking pool (disk reads of evidence, file writes);
/// the service unit sets BLOCKING_MAX_THREADS to this and TasksMax= above
/// it.
pub const BLOCKING_THREADS_MAX: usize = 16;

/// The most host memory lockstepd may use with the default budgets: the
/// node-wide budget, every connection's QUIC receive window full, and the
/// base (`MemoryMax=` in the service unit is this, rounded up to GiB).
pub const fn node_memory_envelope_bytes(node_budget_bytes: u64) -> u64 {
    node_budget_bytes
        + MAX_CONNECTIONS as u64 * CONNECTION_RECEIVE_WINDOW_BYTES as u64
        + PROCESS_BASE_BYTES
}

/// The PCRs (SHA-256 bank) a node quotes when it attests: firmware and
/// boot-loader measurements (0–7), the unified kernel image (11, which
/// the image build predicts as the manifest's `tpm_pcr11_sha256`) and the
/// kernel command line and initrd as systemd-stub measures them (12).
pub const ATTEST_PCRS: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 11, 12];

/// Most PCRs one quote may cover (the whole SHA-256 bank of a PC TPM).
pub const MAX_QUOTED_PCRS: usize = 24;

/// Largest TPM2B_PUBLIC (EK or AK public area) in an attestation: an RSA
/// 4096 EK is about 600 bytes.
pub const MAX_TPM_PUBLIC_BYTES: usize = 1024;

/// Largest EK certificate (DER) a node sends: real ones are 1–2 KiB.
pub const MAX_EK_CERTIFICATE_BYTES: usize = 4096;

/// Largest quote (TPMS_ATTEST) or quote signature (TPMT_SIGNATURE).
pub const MAX_QUOTE_BYTES: usize = 1024;

/// Largest credential blob part (TPM2B_ID_OBJECT or
/// TPM2B_ENCRYPTED_SECRET; an RSA 4096 EK's secret is 514 bytes).
pub const MAX_CREDENTIAL_PART_BYTES: usize = 1024;

/// Largest secret a credential may carry (TPM2B_DIGEST of SHA-512).
pub const MAX_ACTIVATED_SECRET_BYTES: usize = 64;

/// Attestations a node runs at once: the TPM is one device, and its
/// transient object slots are few; another is answered `Busy`.
pub const MAX_ATTESTATIONS_IN_FLIGHT: usize = 1;

/// How long one whole attestation exchange may take on a node (hello to
/// evidence, TPM work included) before it is abandoned.
pub const ATTEST_TIMEOUT_S: u64 = 120;

/// How long one tpm2-tools command may run before it is killed (creating
/// an RSA EK takes seconds on slow TPMs).
pub const TPM_COMMAND_TIMEOUT_S: u64 = 60;

/// Most bytes of a tpm2-tools command's stdout or stderr that are kept
/// (the rest is read and dropped), and of any file it writes that is read
/// back.
pub const MAX_TPM_TOOL_OUTPUT_BYTES: usize = 64 * 1024;

/// Largest signed image update metadata (`lockstep-update/1`, canonical
/// JSON) a node reads; real ones are well under 1 KiB.
pub const MAX_UPDATE_METADATA_BYTES: usize = 16 * 1024;

/// Largest unified kernel image an update may announce (kernel, initramfs
/// and command line; the NVIDIA variant's initramfs is the big part).
pub const MAX_UPDATE_UKI_BYTES: u64 = 256 << 20;

/// Largest squashfs root an update may announce.
pub const MAX_UPDATE_ROOT_BYTES: u64 = 4 << 30;

/// Largest dm-verity hash tree an update may announce (SHA-256 over 4 KiB
/// blocks is about 1/128 of the root, plus the upper levels).
pub const MAX_UPDATE_VERITY_BYTES: u64 = 64 << 20;

/// Longest an update may stay valid from the moment a node checks it
/// (`expires_at - now`): a signed update held back by whoever carries it
/// is useless after this (the freeze defence, docs/updates.md).
pub const MAX_UPDATE_VALIDITY_S: u64 = 30 * 24 * 60 * 60;

/// Largest minisign signature file of update metadata a node reads (four
/// lines: about 300 bytes and the trusted comment).
pub const MAX_UPDATE_SIGNATURE_BYTES: usize = 4096;

/// Largest boot-info file (`lockstepd --boot-info`: the slot, variant and
/// image version the image writes at boot) a node reads; a real one is
/// about 150 bytes.
pub const MAX_BOOT_INFO_BYTES: usize = 4096;

/// Largest `STATE/update/floor` a node reads: one decimal `u64` (at most
/// 20 digits) and a newline.
pub const MAX_UPDATE_FLOOR_FILE_BYTES: usize = 64;

/// Longest slot, variant or image version named in a boot-info file or in
/// `STATE/update/pending.env` (bytes of `[A-Za-z0-9._+-]`).
pub const MAX_SLOT_TEXT_BYTES: usize = 128;

/// Largest V3 keystore file (Web3 Secret Storage JSON) the chain client
/// reads; a real one is about 500 bytes.
pub const MAX_KEYSTORE_BYTES: usize = 16 * 1024;

/// Largest scrypt cost exponent a keystore may ask for (N = 2^20).
pub const MAX_KEYSTORE_SCRYPT_LOG_N: u8 = 20;

/// Largest scrypt block size `r` a keystore may ask for.
pub const MAX_KEYSTORE_SCRYPT_R: u32 = 16;

/// Largest scrypt parallelism `p` a keystore may ask for (scrypt runs
/// the lanes one after the other: time grows with it, memory does not).
pub const MAX_KEYSTORE_SCRYPT_P: u32 = 16;

/// Most memory a keystore's scrypt may take (128 × N × r bytes): geth's
/// standard N = 2^18, r = 8 is exactly this.
pub const MAX_KEYSTORE_SCRYPT_MEMORY_BYTES: u64 = 256 << 20;

/// Most PBKDF2-HMAC-SHA256 iterations a keystore may ask for (about ten
/// seconds on a slow core).
pub const MAX_KEYSTORE_PBKDF2_ROUNDS: u32 = 10_000_000;

/// Largest JSON-RPC response body the chain client reads (a receipt with
/// its logs, or a contract's return data, is a few KiB).
pub const MAX_RPC_RESPONSE_BYTES: usize = 4 << 20;

/// Largest HTTP status line and headers of a JSON-RPC response.
pub const MAX_RPC_HTTP_HEADER_BYTES: usize = 16 * 1024;

/// How long the chain client waits for a TCP connection to its JSON-RPC
/// endpoint.
pub const RPC_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How long one JSON-RPC exchange (request written, whole response read)
/// may take.
pub const RPC_TIMEOUT_MS: u64 = 30_000;

/// How long the chain client sleeps between two polls for a sent
/// transaction's receipt.
pub const TX_RECEIPT_POLL_INTERVAL_MS: u64 = 1_000;

/// How many times the chain client polls for a sent transaction's
/// receipt before it gives up (with the interval above: three minutes,
/// about fifteen blocks on mainnet).
pub const TX_RECEIPT_POLL_ATTEMPTS: u32 = 180;

// --- Peer-to-peer tensor references (docs/protocol.md, "References") ---

/// Most consumer nodes one fetch permission may name.
pub const MAX_PERMISSION_CONSUMERS: usize = 16;

/// Largest fetch permission statement (canonical JSON); one naming
/// `MAX_PERMISSION_CONSUMERS` nodes is under 2 KiB.
pub const MAX_PERMISSION_BYTES: usize = 4096;

/// Longest producer address text in a reference (`[v6 address]:port`).
pub const MAX_PEER_ADDRESS_BYTES: usize = 64;

/// Longest validity a submitter may give a fetch permission: a capability
/// that outlives any retention window is a standing grant, not a permission.
pub const MAX_PERMISSION_VALIDITY_S: u64 = 7 * 24 * 3600;

/// Fetches of referenced inputs one node runs at once, for all its jobs
/// together; a job whose fetch finds them taken waits at most
/// `PEER_FETCH_QUEUE_WAIT_MS`, then fails `Busy`.
pub const MAX_PEER_FETCHES_IN_FLIGHT: usize = 8;

/// Jobs of one source (IPv4 address or IPv6 prefix) fetching referenced
/// inputs at once; a further job of that source is answered
/// `Reference(Busy)` at once, and other sources' jobs keep their turns.
pub const MAX_PEER_FETCHES_PER_SOURCE: usize = 2;

/// How long a job waits for one of the node's fetch turns.
pub const PEER_FETCH_QUEUE_WAIT_MS: u64 = 10_000;

/// How long a consuming node waits for the QUIC handshake with a producer.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How long a consuming node waits for the producer's next frame (its
/// answer, or the next data chunk) before it gives the fetch up as stalled.
pub const PEER_FETCH_STALL_TIMEOUT_MS: u64 = 10_000;

/// Attempts at one referenced input when the producer is unreachable or
/// busy (a definite refusal is never retried).
pub const PEER_FETCH_ATTEMPTS: u32 = 3;

/// Pause before the second attempt; doubled before each further one.
pub const PEER_FETCH_RETRY_BACKOFF_MS: u64 = 250;

/// Most steps (distinct source receipts, the root included) that
/// `lockstep lineage` walks back through: a lineage is a DAG of jobs, each
/// visited once, and a longer one is refused rather than followed without
/// end.
pub const MAX_LINEAGE_STEPS: usize = 4096;

/// Most bytes of one node's metrics exposition (Prometheus text format),
/// in an `AdminReply` and in what the fleet parses back. A node's
/// exposition is a few KiB per device (fixed families, a 14-bucket
/// histogram); the bound keeps a hostile or broken node from making the
/// fleet hold more than this per scrape.
pub const MAX_METRICS_BYTES: usize = 256 * 1024;

/// Most lines of one exposition the fleet's parser accepts (and so the
/// most samples plus two lines per family): far above the ~25 lines per
/// device a node writes, far below what `MAX_METRICS_BYTES` could hold.
pub const MAX_METRICS_LINES: usize = 4096;

/// Longest line of an exposition: a sample's name, at most
/// `MAX_METRICS_LABELS` labels and its value, or a family's help text.
pub const MAX_METRICS_LINE_BYTES: usize = 1024;

/// Most labels on one sample: a node writes at most three (device,
/// outcome or le); the fleet adds `node`.
pub const MAX_METRICS_LABELS: usize = 8;

/// Most devices one node's metrics registry keeps: the exposition stays
/// far inside `MAX_METRICS_BYTES` whatever the node opens.
pub const MAX_METRICS_DEVICES: usize = 16;

/// How long `lockstep-fleet metrics` waits for one node's metrics (QUIC
/// handshake, challenge, signed command and reply) before it reports the
/// node down for that scrape: one dead node never stalls the others, and a
/// scrape stays under Prometheus's default 10 s scrape timeout.
pub const FLEET_METRICS_NODE_TIMEOUT_MS: u64 = 5_000;

/// Most bytes of one HTTP request `lockstep-fleet metrics --listen` reads
/// (request line and headers); a bigger one is answered 431 and closed.
pub const FLEET_METRICS_HTTP_REQUEST_BYTES: usize = 8 * 1024;

/// How long `lockstep-fleet metrics --listen` waits for a client's request
/// (and for a client to take the answer): it serves one connection at a
/// time, so a silent client holds it at most this long.
pub const FLEET_METRICS_HTTP_TIMEOUT_MS: u64 = 5_000;

/// Largest ONNX model file `lockstep import` reads (1 GiB). Protobuf itself
/// stops at 2 GiB; weights larger than this belong in external data, which
/// the importer refuses anyway.
pub const MAX_ONNX_MODEL_BYTES: usize = 1 << 30;

/// Largest number of nodes in an imported ONNX graph. Each node becomes at
/// most a few program ops, well inside [`MAX_PROGRAM_OPS`].
pub const MAX_ONNX_NODES: usize = 100_000;

/// Largest tensor (in elements, 256 MiB of float32) the ONNX importer makes
/// by repeating a broadcast constant to the shape it is used at.
pub const MAX_ONNX_EXPANDED_ELEMENTS: usize = 1 << 26;
