//! Switching the worker's backend to a new kernel bundle: the new backend
//! is opened beside the old one and self-tested; only if it passes does it
//! replace the old one. On any failure the node keeps serving with the
//! bundle it had.

use lockstep_backend::Backend;
use lockstep_kernels::Bundle;

use crate::worker::WorkerContext;

/// Opens a backend of the node's kind and device with a bundle.
pub type Reopen = Box<dyn Fn(Bundle) -> Result<Box<dyn Backend>, String> + Send>;

/// A request to the worker (it owns the device).
pub struct BundleSwitch {
    pub bundle: Bundle,
    /// Where the outcome goes: the new bundle id, or why the node kept the
    /// old one.
    pub reply: smol::channel::Sender<Result<String, String>>,
}

pub fn switch(request: BundleSwitch, backend: &mut Box<dyn Backend>, ctx: &mut WorkerContext) {
    let id = request.bundle.id_hex();
    let outcome = (ctx.reopen)(request.bundle)
        .map_err(|e| format!("cannot open the device with the new bundle: {e}"))
        .and_then(|mut candidate| {
            crate::self_test::run(candidate.as_mut())?;
            Ok(candidate)
        });
    let reply = match outcome {
        Ok(candidate) => {
            // The old backend (and its device handles) is dropped here,
            // after the new one proved itself.
            *backend = candidate;
            tracing::info!(bundle = %id, "switched to the new kernel bundle");
            ctx.bundle_id = id.clone();
            Ok(id)
        }
        Err(e) => {
            tracing::warn!(bundle = %id, error = %e, "new kernel bundle refused; keeping the old one");
            Err(e)
        }
    };
    let _ = request.reply.try_send(reply);
}
