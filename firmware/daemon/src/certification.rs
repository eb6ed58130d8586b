//! Certified-only serving: whether this node holds a passing certification
//! report for its exact device and bundle, signed by a certifier it trusts;
//! installing such a report; and running the suite for a remote certifier.
//!
//! The report lives in `STATE/certification/report.json` with the
//! certifier's `report.json.minisig` beside it. The verdict is cached per
//! bundle id, so a bundle switch is re-evaluated on the next look.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lockstep_backend::{Backend, BackendError};
use lockstep_certify::{DeviceIdentity, Golden, LoadFactory, Report, SuiteOptions};
use lockstep_identity::NodeId;
use lockstep_protocol::{CertifyReply, ErrorKind, JobError};
use sha2::{Digest, Sha256};

use crate::worker::WorkerContext;

const DIR: &str = "certification";
const REPORT: &str = "report.json";
const SIGNATURE: &str = "report.json.minisig";

/// Opens a second backend on this node's device, for the stability load.
pub type SharedLoad = Arc<dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

/// The verdict for one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// A passing, trusted report for this device and bundle is installed.
    pub certified: bool,
    /// One line: who certified it, or why not and what to do.
    pub reason: String,
    /// SHA-256 hex of the installed report's bytes, when certified.
    pub report_sha256: Option<String>,
}

/// Evaluates the report in `state` for `device` running `bundle_id`.
pub fn evaluate(
    state: &Path,
    device: &DeviceIdentity,
    bundle_id: &str,
    trusted: &[NodeId],
) -> Verdict {
    let not = |reason: String| Verdict {
        certified: false,
        reason,
        report_sha256: None,
    };
    let dir = state.join(DIR);
    let bytes = match read_bounded(&dir.join(REPORT), lockstep_limits::MAX_REPORT_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return not(format!(
                "no certification report in {}: run lockstep-certify on this node and install its report",
                dir.display()
            ))
        }
        Err(e) => return not(e),
    };
    let signature = match read_bounded(
        &dir.join(SIGNATURE),
        lockstep_limits::MAX_SIGNATURE_FILE_BYTES,
    ) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(None) => {
            return not(format!(
            "{} has no certifier signature ({SIGNATURE}); install the report with its signature",
            dir.join(REPORT).display()
        ))
        }
        Err(e) => return not(e),
    };
    if trusted.is_empty() {
        return not(
            "no trusted certifier keys: set trusted_certifiers in the config or pass --trust-certifier KEY"
                .into(),
        );
    }
    let (report, by) = match Report::verify(&bytes, &signature, trusted) {
        Ok(v) => v,
        Err(e) => return not(format!("the installed report is refused: {e}")),
    };
    match report.certifies(device, bundle_id) {
        Ok(()) => Verdict {
            certified: true,
            reason: format!(
                "certified by {} on {} (suite {})",
                by.key_id_hex(),
                report.finished_at,
                report.suite_version
            ),
            report_sha256: Some(hex::encode(Sha256::digest(&bytes))),
        },
        Err(why) => not(why),
    }
}

fn read_bounded(path: &Path, bound: usize) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > bound as u64 => {
            return Err(format!(
                "{} is {} bytes, over the {bound}-byte bound: install a real report",
                path.display(),
                m.len()
            ))
        }
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The node's certification: its trust, its device, and the cached verdict.
pub struct Certification {
    state: PathBuf,
    trusted: Vec<NodeId>,
    /// Set by the worker once it has opened the device.
    device: OnceLock<DeviceIdentity>,
    /// `--uncertified`: serve anyway, and say so in every receipt.
    pub uncertified_override: bool,
    /// (bundle id, verdict) of the last evaluation.
    cached: Mutex<Option<(String, Verdict)>>,
    /// Opens the load backend for remote suite runs.
    pub load: Option<SharedLoad>,
}

impl Certification {
    pub fn new(
        state: &Path,
        trusted: Vec<NodeId>,
        uncertified_override: bool,
        load: Option<SharedLoad>,
    ) -> Certification {
        Certification {
            state: state.to_path_buf(),
            trusted,
            device: OnceLock::new(),
            uncertified_override,
            cached: Mutex::new(None),
            load,
        }
    }

    /// The device reports are checked against; set once, by the worker.
    pub fn set_device(&self, device: DeviceIdentity) {
        let _ = self.device.set(device);
    }

    /// The verdict for `bundle_id`, evaluated again if the bundle changed.
    pub fn verdict(&self, bundle_id: &str) -> Verdict {
        let Some(device) = self.device.get() else {
            return Verdict {
                certified: false,
                reason: "the device is not open yet".into(),
                report_sha256: None,
            };
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, v)) = cached.as_ref() {
            if id == bundle_id {
                return v.clone();
            }
        }
        let v = evaluate(&self.state, device, bundle_id, &self.trusted);
        *cached = Some((bundle_id.to_string(), v.clone()));
        v
    }

    /// Whether receipts may say `"certified": true`: never under the
    /// override (a development node says so).
    pub fn receipts_certified(&self, bundle_id: &str) -> bool {
        !self.uncertified_override && self.verdict(bundle_id).certified
    }

    /// `Err` with the one-line refusal when jobs must be refused.
    pub fn may_serve(&self, bundle_id: &str) -> Result<(), String> {
        if self.uncertified_override {
            return Ok(());
        }
        let v = self.verdict(bundle_id);
        if v.certified {
            Ok(())
        } else {
            Err(format!(
                "this node is not certified ({}); it serves no jobs until then",
                v.reason
            ))
        }
    }

    /// What `lockstep status` shows.
    pub fn status_line(&self, bundle_id: &str) -> String {
        let v = self.verdict(bundle_id);
        if self.uncertified_override {
            format!(
                "serving uncertified (--uncertified, receipts say certified: false); {}",
                v.reason
            )
        } else {
            v.reason
        }
    }

    /// Checks a report and its certifier signature against this node's
    /// trust, device and bundle, and stores both atomically; returns the
    /// new verdict. Nothing is stored when it would not certify this node.
    pub fn install(
        &self,
        report: &[u8],
        signature: &str,
        bundle_id: &str,
    ) -> Result<Verdict, String> {
        if self.trusted.is_empty() {
            return Err("this node trusts no certifier key: set trusted_certifiers or --trust-certifier, then install again".into());
        }
        let (parsed, _) = Report::verify(report, signature, &self.trusted)
            .map_err(|e| format!("report refused: {e}"))?;
        let device = self
            .device
            .get()
            .ok_or_else(|| "the device is not open yet; retry in a moment".to_string())?;
        parsed.certifies(device, bundle_id).map_err(|why| {
            format!(
                "report refused: {}",
                why.replacen("the installed report", "the report", 1)
            )
        })?;
        let dir = self.state.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The signature first: a crash in between leaves the old report with
        // a signature that does not match it, which evaluates as refused,
        // never as a wrong "certified".
        write_atomic(&dir.join(SIGNATURE), signature.as_bytes())?;
        write_atomic(&dir.join(REPORT), report)?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        *cached = None;
        drop(cached);
        let v = self.verdict(bundle_id);
        tracing::info!(certified = v.certified, reason = %v.reason, "certification report installed");
        Ok(v)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// A remote certifier's request, queued for the worker.
pub struct CertifyJob {
    pub repeats: u32,
    pub reply: smol::channel::Sender<Result<CertifyReply, JobError>>,
    /// When the requester stops waiting; picked up later, it is dropped.
    pub deadline: Instant,
}

/// Runs the suite on the worker's backend and signs the report with the
/// device key.
pub fn run_remote(
    job: CertifyJob,
    backend: &mut dyn Backend,
    ctx: &WorkerContext,
    load: Option<&SharedLoad>,
) {
    if Instant::now() > job.deadline {
        return;
    }
    let outcome = (|| {
        let golden = Golden::committed().map_err(|e| JobError {
            kind: ErrorKind::Internal,
            message: e.to_string(),
        })?;
        let load: Option<LoadFactory> = load.map(|l| {
            let l = l.clone();
            Box::new(move || l()) as LoadFactory
        });
        let node = ctx.key.node_id().to_base64();
        let options = SuiteOptions {
            bundle_id: ctx.bundle_id.clone(),
            repeats: job.repeats,
            load,
            node: Some(node.clone()),
            golden,
        };
        let started = Instant::now();
        let report = lockstep_certify::run_suite(backend, &options, &mut |_| {});
        tracing::info!(
            passed = report.passed,
            seconds = started.elapsed().as_secs(),
            "certification suite run for a remote certifier"
        );
        let bytes = report.canonical_bytes();
        let comment = report.trusted_comment(&format!("node {}", ctx.key.node_id().key_id_hex()));
        let signature = ctx.key.sign_minisign(&bytes, &comment).to_file();
        Ok(CertifyReply {
            report: bytes,
            signature,
        })
    })();
    let _ = job.reply.try_send(outcome);
}

/// How long the network side waits for a remote suite run.
pub fn timeout() -> Duration {
    Duration::from_secs(lockstep_limits::CERTIFY_TIMEOUT_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_certify::report::{Performance, REPORT_FORMAT};
    use lockstep_certify::Check;
    use lockstep_identity::SigningKey;

    fn device() -> DeviceIdentity {
        DeviceIdentity {
            backend: "vulkan".into(),
            name: "GPU".into(),
            vendor_id: 0x10de,
            device_id: 0x2330,
            driver_id: 4,
            driver_version: 7,
            driver_info: "driver".into(),
            api_version: 0x403000,
        }
    }

    fn report(passed: bool) -> Report {
        Report {
            format: REPORT_FORMAT,
            suite_version: lockstep_certify::SUITE_VERSION.into(),
            bundle_id: "aa".repeat(32),
            device: device(),
            node: None,
            checks: lockstep_certify::REQUIRED_CHECKS
                .iter()
                .map(|name| Check::new(name, 1, u64::from(!passed), None))
                .collect(),
            limits: Vec::new(),
            performance: Performance {
                matmul_gflops: "1".into(),
                matmul_shape: "1".into(),
                mlp_steps_per_s: "1".into(),
                device_memory_bytes: None,
                peak_device_bytes: None,
                suite_seconds: "1".into(),
            },
            passed,
            diagnosis: Vec::new(),
            non_conforming: None,
            started_at: "2026-11-24T00:00:00Z".into(),
            finished_at: "2026-11-24T00:00:01Z".into(),
        }
    }

    fn cert(state: &Path, trusted: &SigningKey) -> Certification {
        let c = Certification::new(state, vec![trusted.public().clone()], false, None);
        c.set_device(device());
        c
    }

    fn signed(r: &Report, key: &SigningKey) -> (Vec<u8>, String) {
        let bytes = r.canonical_bytes();
        let sig = key.sign_minisign(&bytes, "t").to_file();
        (bytes, sig)
    }

    #[test]
    fn no_report_means_not_certified_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let v = cert(dir.path(), &SigningKey::generate()).verdict(&"aa".repeat(32));
        assert!(!v.certified);
        assert!(v.reason.contains("run lockstep-certify"), "{}", v.reason);
    }

    #[test]
    fn install_checks_trust_device_bundle_and_outcome_before_storing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = cert(dir.path(), &key);
        let bundle = "aa".repeat(32);

        let (bytes, sig) = signed(&report(true), &SigningKey::generate());
        assert!(c
            .install(&bytes, &sig, &bundle)
            .unwrap_err()
            .contains("not a trusted certifier"));
        let (bytes, sig) = signed(&report(false), &key);
        assert!(c
            .install(&bytes, &sig, &bundle)
            .unwrap_err()
            .contains("failing"));
        let mut other = report(true);
        other.device.driver_version = 8;
        let (bytes, sig) = signed(&other, &key);
        assert!(c
            .install(&bytes, &sig, &bundle)
            .unwrap_err()
            .contains("this device"));
        let (bytes, sig) = signed(&report(true), &key);
        assert!(c
            .install(&bytes, &sig, &"bb".repeat(32))
            .unwrap_err()
            .contains("bundle"));
        assert!(
            !dir.path().join(DIR).join(REPORT).exists(),
            "nothing stored yet"
        );

        let v = c.install(&bytes, &sig, &bundle).unwrap();
        assert!(v.certified && v.report_sha256.is_some());
        assert!(c.may_serve(&bundle).is_ok());
        assert!(c.receipts_certified(&bundle));
        // Another bundle (after a switch) is evaluated again: not certified.
        assert!(c.may_serve(&"bb".repeat(32)).is_err());
    }

    #[test]
    fn the_override_serves_but_never_marks_receipts_certified() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = Certification::new(dir.path(), vec![key.public().clone()], true, None);
        c.set_device(device());
        let (bytes, sig) = signed(&report(true), &key);
        c.install(&bytes, &sig, &"aa".repeat(32)).unwrap();
        assert!(c.may_serve(&"aa".repeat(32)).is_ok());
        assert!(!c.receipts_certified(&"aa".repeat(32)));
        assert!(c.status_line(&"aa".repeat(32)).contains("--uncertified"));
    }
}
