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
}

/// A completed job: outputs and the signed receipt.
pub struct Finished {
    pub outputs: BTreeMap<String, Tensor>,
    pub receipt: Vec<u8>,
    pub signature: String,
}

/// What the worker does next. Everything that needs the device goes through
/// this one queue, so the backend has a single owner.
pub enum Work {
    /// Run a client's program and sign its receipt.
    Run(Job),
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
    pub bundle_id: String,
    pub certified: bool,
    pub counters: Arc<Counters>,
}

/// Runs jobs until the process ends.
pub fn run(queue: &'static JobQueue, mut backend: Box<dyn Backend>, ctx: WorkerContext) {
    let device = device_record(backend.fingerprint());
    loop {
        match smol::block_on(queue.receive()) {
            Work::Run(job) => run_one(job, backend.as_mut(), &device, &ctx),
        }
    }
}

fn run_one(job: Job, backend: &mut dyn Backend, device: &DeviceRecord, ctx: &WorkerContext) {
    if Instant::now() > job.deadline {
        ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let outcome = run_job(&job, backend, device, ctx);
    let counter = if outcome.is_ok() {
        &ctx.counters.done
    } else {
        &ctx.counters.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // The client may have gone: nothing to do then, the job's memory is
    // freed with it.
    let _ = job.reply.try_send(outcome);
}

fn run_job(
    job: &Job,
    backend: &mut dyn Backend,
    device: &DeviceRecord,
    ctx: &WorkerContext,
) -> Result<Finished, JobError> {
    let started = SystemTime::now();
    let inputs_hashes: BTreeMap<String, String> = job
        .inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.sha256_hex()))
        .collect();
    // The deadline stops the run between ops, so a job past its time limit
    // frees the worker instead of finishing for nobody.
    let options = ExecOptions {
        deadline: Some(job.deadline),
        ..ExecOptions::default()
    };
    let report = execute(&job.program, backend, job.inputs.clone(), options).map_err(|e| {
        let kind = match e {
            lockstep_program::ExecError::Deadline { .. } => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        };
        JobError {
            kind,
            message: e.to_string(),
        }
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
        certified: ctx.certified,
    };
    let (bytes, signature) = receipt.sign(&ctx.key);
    Ok(Finished {
        outputs: report.outputs,
        receipt: bytes,
        signature: signature.to_file(),
    })
}

pub fn device_record(fp: &DeviceFingerprint) -> DeviceRecord {
    DeviceRecord {
        backend: fp.backend.to_string(),
        name: fp.name.clone(),
        vendor_id: fp.vendor_id,
        device_id: fp.device_id,
        driver_id: fp.driver_id,
        driver_version: fp.driver_version,
        api_version: fp.api_version,
    }
}
