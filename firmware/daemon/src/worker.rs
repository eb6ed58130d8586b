//! The GPU worker: one thread that owns the backend (and so the Vulkan
//! device) and runs jobs one at a time from a bounded queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use lockstep_backend::{Backend, DeviceFingerprint};
use lockstep_identity::DeviceKey;
use lockstep_limits::JOB_QUEUE_BOUND;
use lockstep_metrics::Outcome;
use lockstep_program::{execute, ExecOptions, ValidatedProgram};
use lockstep_protocol::{rfc3339, DeviceRecord, ErrorKind, JobError, Receipt, RECEIPT_FORMAT};
use lockstep_tensor::Tensor;

/// A job the network side has fully received and validated.
pub struct Job {
    pub job_id: [u8; 16],
    pub program: ValidatedProgram,
    pub inputs: BTreeMap<String, Tensor>,
    /// Where the outcome goes; the network task waits on the other end.
    pub reply: smol::channel::Sender<Result<Finished, JobError>>,
    /// When the network task stops waiting; a job picked up later is
    /// dropped unrun.
    pub deadline: Instant,
    /// The job's slot and memory reservation (admission.rs), held until
    /// its outputs have been sent.
    pub admitted: Admitted,
    /// Who submitted it: retention quotas are per source.
    pub source: crate::admission::Source,
    /// The submitter's key, which the receipt records.
    pub submitter: Option<String>,
    /// The inputs that were fetched from other nodes (already in `inputs`,
    /// checked against these): the receipt records each one's source.
    pub references: Vec<lockstep_protocol::TensorReference>,
    /// Counts the job on its device until it is done or dropped (devices.rs
    /// picks the least loaded device).
    pub _on_device: crate::devices::OnDevice,
}

/// What an admitted job holds of the node's budgets; released on drop.
pub struct Admitted {
    pub _slot: crate::admission::Slot,
    pub _share: crate::admission::SourceShare,
    pub _memory: crate::admission::Reservation,
}

/// A completed job: outputs and the signed receipt.
pub struct Finished {
    pub outputs: BTreeMap<String, Tensor>,
    pub receipt: Vec<u8>,
    pub signature: String,
    /// The chain key's EIP-712 signature of the receipt.
    pub chain_signature: String,
    /// Still held while the outputs are sent.
    pub _admitted: Admitted,
}

/// What the worker does next. Everything that needs the device goes through
/// this one queue, so the backend has a single owner.
// The queue holds JOB_QUEUE_BOUND slots of the largest variant (a job, a
// few hundred bytes): boxing it would cost an allocation per job to save
// a few KiB in total.
#[allow(clippy::large_enum_variant)]
pub enum Work {
    /// Run a client's program and sign its receipt.
    Run(Job),
    /// Open a backend with a new kernel bundle, self-test it, and switch to
    /// it only if it passes (fleet bundle push).
    SwitchBundle(crate::bundle_switch::BundleSwitch),
    /// Run the certification suite for a remote certifier.
    Certify(crate::certification::CertifyJob),
}

/// The queue between network tasks and the worker: bounded, so a full
/// node answers "busy" instead of growing.
pub type JobQueue = Channel<CriticalSectionRawMutex, Work, JOB_QUEUE_BOUND>;

/// Counters the status reply reports.
#[derive(Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// What the worker needs besides the queue.
pub struct WorkerContext {
    pub key: Arc<DeviceKey>,
    /// Signs every receipt a second time (EIP-712), and names its address.
    pub chain: Arc<crate::chain_identity::NodeChain>,
    /// Stated in every receipt.
    pub key_protection: lockstep_identity::KeyProtection,
    pub bundle_id: String,
    /// The device this worker owns: its queue, counters, certification
    /// (whether receipts say certified, for the current bundle) and
    /// whether it still serves.
    pub slot: Arc<crate::devices::DeviceSlot>,
    /// Where each job's intermediate tensors are kept as evidence.
    pub retention: Arc<crate::retention::Retention>,
    /// Test builds only: corrupt op outputs on purpose (`--inject-fault`).
    pub fault: Option<lockstep_program::fault::Fault>,
    /// Opens a backend of this node's kind and device with a given bundle
    /// (a bundle switch).
    pub reopen: crate::bundle_switch::Reopen,
    /// Where a bundle switch is recorded (`ACTIVE`).
    pub store: crate::bundle_store::BundleStore,
    /// The node's shared view of the active bundle; only a switch on this
    /// thread changes it (bundle_switch.rs).
    pub active: Arc<crate::bundle_store::ActiveBundle>,
    /// Test builds only (`--inject-worker-panic`): the next job panics.
    pub inject_panic: bool,
    /// Test builds only (`--inject-device-lost INDEX`): this device is
    /// lost under its next job (its backend answers `DeviceLost`).
    pub inject_device_lost: bool,
    /// Called once if the worker panics: the process must end non-zero so
    /// that systemd restarts it with a fresh device.
    pub on_panic: Option<Box<dyn FnOnce(String) + Send>>,
}

/// What a job is told when the worker panicked under it or before it.
fn worker_failed(what: &str) -> JobError {
    JobError {
        kind: ErrorKind::Internal,
        message: format!(
            "the node's GPU worker failed ({what}); the node restarts: resubmit the job in a few seconds"
        ),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Runs jobs until the process ends. A panic while running one fails that
/// job with a typed `Internal` error, reports the panic (`on_panic`: the
/// process then exits non-zero), and from then on every queued request is
/// refused the same way without touching the backend, whose state the
/// panic may have left half-changed.
///
/// A lost device (`VK_ERROR_DEVICE_LOST`) fails the job that found it with
/// `DeviceLost`, takes the device out of service, and from then on the
/// same happens to whatever was queued on it; the process and the node's
/// other devices carry on.
pub fn run(mut backend: Box<dyn Backend>, mut ctx: WorkerContext) {
    let queue = ctx.slot.queue;
    let device = device_record(backend.fingerprint(), ctx.slot.index);
    let why_stopped = loop {
        let work = smol::block_on(queue.receive());
        let job_reply = match &work {
            Work::Run(job) => Some(job.reply.clone()),
            _ => None,
        };
        let picked_up = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
            Work::Run(job) => run_one(job, backend.as_mut(), &device, &ctx),
            Work::SwitchBundle(switch) => {
                crate::bundle_switch::switch(switch, &mut backend, &mut ctx);
                Ok(())
            }
            Work::Certify(job) => {
                let load = ctx.slot.certification.load.clone();
                crate::certification::run_remote(job, backend.as_mut(), &ctx, load.as_ref());
                Ok(())
            }
        }));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(Lost(why))) => break Stopped::Lost(why),
            Err(payload) => {
                let what = panic_text(payload.as_ref());
                if let Some(reply) = job_reply {
                    ctx.slot.counters.failed.fetch_add(1, Ordering::Relaxed);
                    ctx.slot
                        .metrics
                        .job_finished(Outcome::Failed, picked_up.elapsed());
                    let _ = reply.try_send(Err(worker_failed(&format!("panic: {what}"))));
                }
                break Stopped::Panicked(what);
            }
        }
    };
    let refusal = match why_stopped {
        Stopped::Panicked(failure) => {
            tracing::error!(panic = %failure, "the GPU worker panicked: failing queued work and exiting so the node restarts");
            if let Some(report) = ctx.on_panic.take() {
                report(failure.clone());
            }
            worker_failed("an earlier job panicked")
        }
        Stopped::Lost(why) => {
            ctx.slot.take_out_of_service(why.clone());
            device_lost(ctx.slot.index, &why)
        }
    };
    drop(backend);
    loop {
        match smol::block_on(queue.receive()) {
            Work::Run(job) => {
                ctx.slot.counters.failed.fetch_add(1, Ordering::Relaxed);
                ctx.slot.metrics.job_not_run(Outcome::Failed);
                let _ = job.reply.try_send(Err(refusal.clone()));
            }
            Work::SwitchBundle(switch) => {
                let _ = switch.reply.try_send(Err(format!(
                    "device {} cannot switch: {}",
                    ctx.slot.index, refusal.message
                )));
            }
            Work::Certify(job) => {
                let _ = job.reply.try_send(Err(refusal.clone()));
            }
        }
    }
}

/// Why a worker stopped running work.
enum Stopped {
    Panicked(String),
    Lost(String),
}

/// The device was lost under a job (the message says while doing what).
struct Lost(String);

/// What a job is told when its device was lost under it or before it.
fn device_lost(index: u32, why: &str) -> JobError {
    JobError {
        kind: ErrorKind::DeviceLost,
        message: format!(
            "device {index} was lost ({why}) and is out of service; the node's other devices still serve: resubmit the job"
        ),
    }
}

/// A backend whose device is gone: how `--inject-device-lost` makes the
/// executor meet `VK_ERROR_DEVICE_LOST` (test builds only).
struct LostBackend<'a>(&'a mut dyn Backend);

impl Backend for LostBackend<'_> {
    fn fingerprint(&self) -> &DeviceFingerprint {
        self.0.fingerprint()
    }

    fn run(
        &mut self,
        _op: &lockstep_backend::Op,
        _inputs: &[&Tensor],
    ) -> Result<Tensor, lockstep_backend::BackendError> {
        Err(lockstep_backend::BackendError::DeviceLost(
            "waiting for a dispatch (injected: --inject-device-lost)".into(),
        ))
    }
}

fn run_one(
    job: Job,
    backend: &mut dyn Backend,
    device: &DeviceRecord,
    ctx: &WorkerContext,
) -> Result<(), Lost> {
    if Instant::now() > job.deadline {
        ctx.slot.counters.failed.fetch_add(1, Ordering::Relaxed);
        ctx.slot.metrics.job_not_run(Outcome::Timeout);
        return Ok(());
    }
    // Test builds only: how a driver or executor bug would surface.
    if cfg!(feature = "fault-injection") && ctx.inject_panic {
        panic!("injected worker panic (--inject-worker-panic)");
    }
    let reply = job.reply.clone();
    let mut lost_backend;
    let backend: &mut dyn Backend = if cfg!(feature = "fault-injection") && ctx.inject_device_lost {
        lost_backend = LostBackend(backend);
        &mut lost_backend
    } else {
        backend
    };
    let started = Instant::now();
    let (outcome, lost) = match run_job(job, backend, device, ctx) {
        Err(Failure::Lost(why)) => (Err(device_lost(ctx.slot.index, &why)), Some(why)),
        Err(Failure::Job(e)) => (Err(e), None),
        Ok(finished) => (Ok(finished), None),
    };
    ctx.slot.metrics.job_finished(
        match &outcome {
            Ok(_) => Outcome::Ok,
            Err(e) if e.kind == ErrorKind::Timeout => Outcome::Timeout,
            Err(_) => Outcome::Failed,
        },
        started.elapsed(),
    );
    let counter = if outcome.is_ok() {
        &ctx.slot.counters.done
    } else {
        &ctx.slot.counters.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // Out of service before anyone hears of the loss: a client told
    // `DeviceLost` never finds the device still listed as serving.
    if let Some(why) = &lost {
        ctx.slot.take_out_of_service(why.clone());
    }
    // The client may have gone: nothing to do then, the job's memory (and
    // its reservation) is freed with it.
    let _ = reply.try_send(outcome);
    match lost {
        Some(why) => Err(Lost(why)),
        None => Ok(()),
    }
}

/// How a job failed: on its own, or because the device is gone.
enum Failure {
    Job(JobError),
    Lost(String),
}

/// Runs a job, consuming it: its inputs move into the executor (no copy),
/// and its reservation moves into the outcome.
fn run_job(
    job: Job,
    backend: &mut dyn Backend,
    device: &DeviceRecord,
    ctx: &WorkerContext,
) -> Result<Finished, Failure> {
    let started = SystemTime::now();
    let inputs_hashes: BTreeMap<String, String> = job
        .inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.sha256_hex()))
        .collect();
    // The deadline stops the run between ops, so a job past its time limit
    // frees the worker instead of finishing for nobody.
    let mut pending = ctx.retention.begin(
        &job.job_id,
        job.source,
        &job.program.program().to_postcard(),
        &job.inputs,
        &job.references,
    );
    // Without retention nothing needs the intermediate tensors on the host,
    // so the job may run resident on the device (lockstep-program's
    // resident executor); retaining them takes the per-op path.
    let retaining = pending.is_some();
    let mut retain = |entry: &lockstep_program::TraceEntry, t: &Tensor| {
        if let Some(p) = &mut pending {
            p.push(&entry.output_sha256, t);
        }
    };
    let options = ExecOptions {
        deadline: Some(job.deadline),
        observer: if retaining { Some(&mut retain) } else { None },
        fault: ctx.fault,
        ..ExecOptions::default()
    };
    let report = execute(&job.program, backend, job.inputs, options);
    let report = report.map_err(|e| {
        if let Some(p) = pending.take() {
            p.abandon();
        }
        use lockstep_program::ExecError;
        let kind = match &e {
            ExecError::Deadline { .. } => ErrorKind::Timeout,
            ExecError::Backend { error, .. } | ExecError::Output { error, .. }
                if matches!(**error, lockstep_backend::BackendError::DeviceLost(_)) =>
            {
                return Failure::Lost(error.to_string());
            }
            _ => ErrorKind::Internal,
        };
        Failure::Job(JobError {
            kind,
            message: e.to_string(),
        })
    })?;
    let trace = report.trace.as_ref().expect("tracing is on by default");
    let receipt = Receipt {
        format: RECEIPT_FORMAT,
        node: ctx.key.node_id().to_base64(),
        job_id: hex::encode(job.job_id),
        bundle_id: ctx.bundle_id.clone(),
        device: device.clone(),
        program_sha256: hex::encode(job.program.sha256()),
        inputs: inputs_hashes,
        outputs: report
            .outputs
            .iter()
            .map(|(n, t)| (n.clone(), t.sha256_hex()))
            .collect(),
        trace_root: hex::encode(trace.root),
        started_at: rfc3339(started),
        finished_at: rfc3339(SystemTime::now()),
        certified: ctx.slot.certification.receipts_certified(&ctx.bundle_id),
        key_protection: Some(ctx.key_protection),
        chain_address: Some(ctx.chain.address()),
        submitter: job.submitter.clone(),
        references: Some(
            job.references
                .iter()
                .map(|r| (r.input.clone(), r.record()))
                .collect(),
        ),
    };
    let (bytes, signature) = receipt.sign(&ctx.key);
    let signature = signature.to_file();
    let chain_signature = ctx.chain.sign_receipt(&receipt);
    if let Some(p) = pending {
        ctx.retention.commit(p, &bytes, &signature);
    }
    Ok(Finished {
        outputs: report.outputs,
        receipt: bytes,
        signature,
        chain_signature,
        _admitted: job.admitted,
    })
}

pub fn device_record(fp: &DeviceFingerprint, index: u32) -> DeviceRecord {
    DeviceRecord {
        uuid: Some(hex::encode(fp.device_uuid)),
        index: Some(index),
        backend: fp.backend.to_string(),
        name: fp.name.clone(),
        vendor_id: fp.vendor_id,
        device_id: fp.device_id,
        driver_id: fp.driver_id,
        driver_version: fp.driver_version,
        api_version: fp.api_version,
    }
}
