//! Resident execution: tensors that stay in device memory from the op that
//! produces them to their last use, ops recorded into batches that the
//! device runs with one fence wait each, repeat bodies recorded once and
//! replayed, and every output hashed where it lies.
//!
//! The executor (`lockstep-program`) decides what to record and when to
//! flush; a backend that has device memory of its own implements
//! [`Resident`] and hands it out through [`crate::Backend::resident`].
//!
//! The contract, which the executor keeps and implementations may assert:
//! - Work runs in the order it was recorded; a tensor released after its
//!   last use may back the next tensor recorded, because everything
//!   recorded later runs later.
//! - Between [`Resident::begin_body`] and [`Resident::end_body`] nothing
//!   runs: ops are recorded into the body. Tensors that existed before the
//!   body and are released inside it are not reused until the body ends,
//!   so a carried tensor's first buffer can take its last value back.
//!   After `end_body`, the body is replayed ([`Resident::replay`], possibly
//!   in several chunks with flushes between) before anything else is
//!   recorded.
//! - [`Resident::flush`] submits what was recorded, waits once, and returns
//!   the digests recorded since the last flush, in execution order.

use lockstep_tensor::Tensor;

use crate::{BackendError, Op};

/// A tensor in a resident session's device memory. Only the session that
/// made it can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceTensor(u32);

impl DeviceTensor {
    /// For implementations: a handle from the session's own numbering.
    pub fn from_raw(id: u32) -> DeviceTensor {
        DeviceTensor(id)
    }

    pub fn raw(self) -> u32 {
        self.0
    }
}

/// A repeat body recorded once, replayable until the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyId(pub u32);

/// A backend's device-resident mode (see the module docs for the contract).
pub trait Resident {
    /// Starts a session. `digests_per_batch` is the most hashes the caller
    /// will record between two flushes (replays included).
    fn begin_session(&mut self, digests_per_batch: usize) -> Result<(), BackendError>;

    /// Copies a host tensor into device memory (a program input).
    fn upload(&mut self, t: &Tensor) -> Result<DeviceTensor, BackendError>;

    /// Records `op` over resident operands; the output is allocated now and
    /// holds its value once the recorded work has run.
    fn record(&mut self, op: &Op, inputs: &[DeviceTensor]) -> Result<DeviceTensor, BackendError>;

    /// Records the SHA-256 of `t`'s canonical `.npy` bytes (a trace leaf),
    /// computed on the device.
    fn record_hash(&mut self, t: DeviceTensor) -> Result<(), BackendError>;

    /// The tensor is no longer needed by anything recorded after this call.
    fn release(&mut self, t: DeviceTensor);

    /// Starts recording a repeat body.
    fn begin_body(&mut self) -> Result<(), BackendError>;

    /// Ends the body. For each `(last, first)` pair, the body's last value
    /// of a carried tensor (`last`) is copied into the buffer the body reads
    /// it from (`first`, a tensor from before the body), so the next
    /// iteration reads it there.
    fn end_body(&mut self, carry: &[(DeviceTensor, DeviceTensor)]) -> Result<BodyId, BackendError>;

    /// Queues `times` more iterations of `body` after what was recorded.
    fn replay(&mut self, body: BodyId, times: u32) -> Result<(), BackendError>;

    /// Frees a body's command buffer and sets; only after the flush that ran
    /// its last replay.
    fn drop_body(&mut self, body: BodyId);

    /// Runs everything queued since the last flush (one submission, one
    /// fence wait) and returns the digests it computed, in order.
    fn flush(&mut self) -> Result<Vec<[u8; 32]>, BackendError>;

    /// Copies a resident tensor back to the host (after a flush).
    fn download(&mut self, t: DeviceTensor) -> Result<Tensor, BackendError>;

    /// Ends the session, freeing every buffer, body and set it made. Also
    /// called after an error; safe to call twice.
    fn end_session(&mut self);
}
