//! Switching the worker's backend to a new kernel bundle: the new backend
//! is opened beside the old one and self-tested; only if it passes is the
//! switch recorded (`ACTIVE`, one atomic durable rename) and the backend,
//! the worker's bundle id and the node's shared view of the active bundle
//! replaced, all here, in that order. So what runs, what receipts and
//! certification name, and what a restart loads always agree. On any
//! failure the node keeps serving with the bundle it had.

use lockstep_backend::Backend;
use lockstep_kernels::Bundle;

use crate::bundle_store::ActiveRecord;
use crate::worker::WorkerContext;

/// Opens a backend of the node's kind and device with a bundle.
pub type Reopen = Box<dyn Fn(Bundle) -> Result<Box<dyn Backend>, String> + Send>;

/// A request to the worker (it owns the device).
pub struct BundleSwitch {
    pub bundle: Bundle,
    /// The verified release version of `bundle`.
    pub version: u64,
    /// Whether this device's switch records it (`ACTIVE`): the first
    /// device's does; the node's other devices follow it, each proving the
    /// new bundle with its own self-test (a device whose self-test fails is
    /// taken out of service, see `admin.rs`).
    pub record: bool,
    /// Where the outcome goes: the record now active, or why the node kept
    /// the old bundle.
    pub reply: smol::channel::Sender<Result<ActiveRecord, String>>,
}

pub fn switch(request: BundleSwitch, backend: &mut Box<dyn Backend>, ctx: &mut WorkerContext) {
    let id = request.bundle.id_hex();
    let previous = ctx.active.get();
    let record = ActiveRecord {
        bundle_id: id.clone(),
        version: request.version,
        floor: previous.floor.max(request.version),
    };
    let outcome = (ctx.reopen)(request.bundle)
        .map_err(|e| format!("cannot open the device with the new bundle: {e}"))
        .and_then(|mut candidate| {
            crate::self_test::run(candidate.as_mut())
                .map_err(|e| format!("the new bundle failed its self-test: {e}"))?;
            // Recorded before it takes effect: a crash after this line
            // restarts into the new bundle, before it into the old one.
            if request.record {
                ctx.store
                    .activate(&record, (previous.version > 0).then_some(&previous))
                    .map_err(|e| format!("cannot record the switch: {e}"))?;
            }
            Ok(candidate)
        });
    let reply = match outcome {
        Ok(candidate) => {
            // The old backend (and its device handles) is dropped here,
            // after the new one proved itself.
            *backend = candidate;
            ctx.bundle_id = id.clone();
            if request.record {
                ctx.active.set(record.clone());
            }
            tracing::info!(device = ctx.slot.index, bundle = %id, version = record.version, "switched to the new kernel bundle");
            Ok(record)
        }
        Err(e) => {
            tracing::warn!(device = ctx.slot.index, bundle = %id, error = %e, "new kernel bundle refused; keeping the old one");
            Err(e)
        }
    };
    let _ = request.reply.try_send(reply);
}
