//! Certified-only serving: whether this node holds a passing certification
//! report for itself (its node id), its exact physical device and its
//! bundle, unexpired, signed by a certifier it trusts; installing such a
//! report; and running the suite for a remote certifier.
//!
//! The installed report and its certifier signature live together in one
//! file, `STATE/certification/installed.json` (`{"report": ..., "signature":
//! ...}`), replaced by one rename: a reader sees the old pair or the new
//! one, never a report with another report's signature. Installs are
//! serialized by the same lock the verdict cache is under, so two racing
//! installs cannot both pass the freshness check, and no evaluation can
//! cache the verdict of a pair an install just replaced.
//!
//! The verdict is cached per bundle id until the report expires, so a
//! bundle switch or the expiry is re-evaluated on the next look.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockstep_backend::{Backend, BackendError};
use lockstep_certify::{DeviceIdentity, Golden, LoadFactory, Report, SuiteOptions};
use lockstep_identity::NodeId;
use lockstep_protocol::{CertifyReply, ErrorKind, JobError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::worker::WorkerContext;

const DIR: &str = "certification";
/// The report and its certifier signature, in one file.
const INSTALLED: &str = "installed.json";
/// Where format-1 nodes kept the report (and `.minisig` beside it); read
/// only to say why it no longer counts.
const LEGACY_REPORT: &str = "report.json";

/// The installed pair, as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// The report's canonical JSON, exactly the signed bytes.
    report: String,
    /// The certifier's minisign signature file of `report`.
    signature: String,
}

/// Opens a second backend on this node's device, for the stability load.
pub type SharedLoad = Arc<dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

/// The verdict for one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// A passing, trusted, unexpired report for this node, device and
    /// bundle is installed.
    pub certified: bool,
    /// One line: who certified it, or why not and what to do.
    pub reason: String,
    /// SHA-256 hex of the installed report's bytes, when certified.
    pub report_sha256: Option<String>,
    /// When a certified verdict lapses (the report's expiry, Unix seconds).
    pub expires_unix: Option<u64>,
}

fn not(reason: String) -> Verdict {
    Verdict {
        certified: false,
        reason,
        report_sha256: None,
        expires_unix: None,
    }
}

/// Seconds since the Unix epoch: the clock every check is given.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the installed pair: `Ok(None)` when there is none.
fn read_installed(state: &Path) -> Result<Option<(Vec<u8>, String)>, String> {
    let path = state.join(DIR).join(INSTALLED);
    let Some(bytes) = read_bounded(&path, lockstep_limits::MAX_INSTALLED_REPORT_FILE_BYTES)? else {
        return Ok(None);
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is damaged ({e}); install the report again",
            path.display()
        )
    })?;
    Ok(Some((stored.report.into_bytes(), stored.signature)))
}

/// Evaluates the report in `state` for node `node` with `device` running
/// `bundle_id`, at `now_unix_s`.
pub fn evaluate(
    state: &Path,
    node: &str,
    device: &DeviceIdentity,
    bundle_id: &str,
    trusted: &[NodeId],
    now_unix_s: u64,
) -> Verdict {
    let dir = state.join(DIR);
    let (bytes, signature) = match read_installed(state) {
        Ok(Some(pair)) => pair,
        Ok(None) if dir.join(LEGACY_REPORT).exists() => {
            return not(format!(
                "{} is a report of the old format, which binds no node, device or expiry; certify this node again and install the new report",
                dir.join(LEGACY_REPORT).display()
            ))
        }
        Ok(None) => {
            return not(format!(
                "no certification report in {}: run lockstep-certify on this node and install its report",
                dir.display()
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
    match report.certifies(node, device, bundle_id, now_unix_s) {
        Ok(()) => Verdict {
            certified: true,
            reason: format!(
                "certified by {} on {} until {} (suite {})",
                by.key_id_hex(),
                report.finished_at,
                report.expires_at,
                report.suite_version
            ),
            report_sha256: Some(hex::encode(Sha256::digest(&bytes))),
            expires_unix: report.expires_unix().ok(),
        },
        Err(why) => not(format!("the installed report does not count: {why}")),
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

/// The cached verdict: for which bundle, and what.
type Cached = Option<(String, Verdict)>;

/// The node's certification: its identity, trust, device, and the cached
/// verdict.
pub struct Certification {
    state: PathBuf,
    /// This node's id (base64): reports must name it.
    node_id: String,
    trusted: Vec<NodeId>,
    /// Set by the worker once it has opened the device.
    device: OnceLock<DeviceIdentity>,
    /// `--uncertified`: serve anyway, and say so in every receipt.
    pub uncertified_override: bool,
    /// (bundle id, verdict) of the last evaluation. Installs hold this lock
    /// from their freshness check to the rename (see the module docs).
    cached: Mutex<Cached>,
    /// Opens the load backend for remote suite runs.
    pub load: Option<SharedLoad>,
    /// Set while a suite run is queued or running (see [`CertifyTurn`]).
    certifying: AtomicBool,
}

/// The one suite run a node queues or runs at a time. The flag clears when
/// this is dropped: with the [`CertifyJob`] that holds it, when the worker
/// has finished the run or dropped it unrun (or the queue refused it), not
/// when the requester stops waiting.
pub struct CertifyTurn(Arc<Certification>);

impl Drop for CertifyTurn {
    fn drop(&mut self) {
        self.0.certifying.store(false, Ordering::SeqCst);
    }
}

impl Certification {
    pub fn new(
        state: &Path,
        node_id: String,
        trusted: Vec<NodeId>,
        uncertified_override: bool,
        load: Option<SharedLoad>,
    ) -> Certification {
        Certification {
            state: state.to_path_buf(),
            node_id,
            trusted,
            device: OnceLock::new(),
            uncertified_override,
            cached: Mutex::new(None),
            load,
            certifying: AtomicBool::new(false),
        }
    }

    /// The certifier keys whose reports (and requests) this node trusts.
    pub fn trusted(&self) -> &[NodeId] {
        &self.trusted
    }

    /// The turn to run the suite, unless a run is queued or running.
    pub fn try_turn(self: &Arc<Self>) -> Option<CertifyTurn> {
        if self.certifying.swap(true, Ordering::SeqCst) {
            None
        } else {
            Some(CertifyTurn(self.clone()))
        }
    }

    /// The device reports are checked against; set once, by the worker.
    pub fn set_device(&self, device: DeviceIdentity) {
        let _ = self.device.set(device);
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict for `bundle_id` now.
    pub fn verdict(&self, bundle_id: &str) -> Verdict {
        self.verdict_at(bundle_id, now_unix())
    }

    /// The verdict for `bundle_id` at `now_unix_s`, evaluated again if the
    /// bundle changed or the cached certification expired.
    pub fn verdict_at(&self, bundle_id: &str, now_unix_s: u64) -> Verdict {
        let mut cached = self.lock();
        self.verdict_locked(&mut cached, bundle_id, now_unix_s)
    }

    fn verdict_locked(&self, cached: &mut Cached, bundle_id: &str, now_unix_s: u64) -> Verdict {
        let Some(device) = self.device.get() else {
            return not("the device is not open yet".into());
        };
        if let Some((id, v)) = cached.as_ref() {
            let lapsed = v.expires_unix.is_some_and(|e| now_unix_s >= e);
            if id == bundle_id && !lapsed {
                return v.clone();
            }
        }
        let v = evaluate(
            &self.state,
            &self.node_id,
            device,
            bundle_id,
            &self.trusted,
            now_unix_s,
        );
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
    /// trust, node id, device and bundle, that it has not expired and
    /// finished after the installed one, and stores both in one rename;
    /// returns the new verdict. A failing report that passes these checks
    /// is stored too: a newer failing report revokes the certification.
    /// Nothing is stored when a check fails.
    pub fn install(
        &self,
        report: &[u8],
        signature: &str,
        bundle_id: &str,
        now_unix_s: u64,
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
        let refused = |e: lockstep_certify::NotCertified| format!("report refused: {e}");
        parsed
            .binds(&self.node_id, device, bundle_id)
            .map_err(refused)?;
        parsed.valid_at(now_unix_s).map_err(refused)?;
        // From here to the rename, one install at a time.
        let mut cached = self.lock();
        // The held report orders installs whatever its signature: only its
        // time matters here. An unreadable one is replaced.
        let held = read_installed(&self.state)
            .ok()
            .flatten()
            .and_then(|(bytes, _)| Report::parse(&bytes).ok());
        parsed
            .may_replace(held.as_ref(), now_unix_s)
            .map_err(refused)?;
        let text = String::from_utf8(report.to_vec())
            .map_err(|_| "report refused: it is not UTF-8 text".to_string())?;
        let stored = serde_json::to_vec(&Stored {
            report: text,
            signature: signature.to_string(),
        })
        .map_err(|e| format!("encoding the installed report: {e}"))?;
        let dir = self.state.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write_atomic(&dir.join(INSTALLED), &stored)?;
        *cached = None;
        let v = self.verdict_locked(&mut cached, bundle_id, now_unix_s);
        drop(cached);
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
    // The rename itself must survive a power cut.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)?;
    Ok(())
}

/// A remote certifier's request, queued for the worker.
pub struct CertifyJob {
    pub repeats: u32,
    /// Days the report is valid after the run.
    pub valid_days: u32,
    pub reply: smol::channel::Sender<Result<CertifyReply, JobError>>,
    /// When the requester stops waiting; picked up later, it is dropped.
    pub deadline: Instant,
    /// Held until the job is done or dropped: no other run starts before.
    pub turn: CertifyTurn,
}

/// Runs the suite on the worker's backend and signs the report with the
/// device key.
pub fn run_remote(
    job: CertifyJob,
    backend: &mut dyn Backend,
    ctx: &WorkerContext,
    load: Option<&SharedLoad>,
) {
    // Dropped unrun past its deadline: the turn goes with it.
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
            valid_days: job.valid_days,
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
    // The run is over: free the turn before answering, so a requester that
    // asks again right after the answer is not told "busy".
    let CertifyJob { reply, turn, .. } = job;
    drop(turn);
    let _ = reply.try_send(outcome);
}

/// How long the network side waits for a remote suite run.
pub fn timeout() -> Duration {
    Duration::from_secs(lockstep_limits::CERTIFY_TIMEOUT_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_certify::report::{format_rfc3339, Performance, REPORT_FORMAT};
    use lockstep_certify::Check;
    use lockstep_identity::SigningKey;

    const NODE: &str = "RWQthisnode";
    const DAY: u64 = 86_400;
    /// 2026-11-24T00:00:00Z.
    const T0: u64 = 1_795_478_400;
    const NOW: u64 = T0 + DAY;

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
            device_uuid: "11".repeat(16),
        }
    }

    /// A report that finished at `T0 + at` seconds, valid 90 days.
    fn report_at(passed: bool, at: u64) -> Report {
        Report {
            format: REPORT_FORMAT,
            suite_version: lockstep_certify::SUITE_VERSION.into(),
            bundle_id: "aa".repeat(32),
            device: device(),
            node: Some(NODE.into()),
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
            started_at: format_rfc3339(T0 + at),
            finished_at: format_rfc3339(T0 + at),
            expires_at: format_rfc3339(T0 + at + 90 * DAY),
        }
    }

    fn report(passed: bool) -> Report {
        report_at(passed, 0)
    }

    fn cert(state: &Path, trusted: &SigningKey) -> Certification {
        let c = Certification::new(
            state,
            NODE.into(),
            vec![trusted.public().clone()],
            false,
            None,
        );
        c.set_device(device());
        c
    }

    fn signed(r: &Report, key: &SigningKey) -> (Vec<u8>, String) {
        let bytes = r.canonical_bytes();
        let sig = key.sign_minisign(&bytes, "t").to_file();
        (bytes, sig)
    }

    fn bundle() -> String {
        "aa".repeat(32)
    }

    #[test]
    fn no_report_means_not_certified_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let v = cert(dir.path(), &SigningKey::generate()).verdict_at(&bundle(), NOW);
        assert!(!v.certified);
        assert!(v.reason.contains("run lockstep-certify"), "{}", v.reason);
    }

    #[test]
    fn install_checks_trust_node_device_bundle_and_expiry_before_storing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = cert(dir.path(), &key);
        let install = |r: &Report, by: &SigningKey, b: &str| {
            let (bytes, sig) = signed(r, by);
            c.install(&bytes, &sig, b, NOW)
        };

        let e = install(&report(true), &SigningKey::generate(), &bundle()).unwrap_err();
        assert!(e.contains("not a trusted certifier"), "{e}");
        let mut other_node = report(true);
        other_node.node = Some("RWQothernode".into());
        let e = install(&other_node, &key, &bundle()).unwrap_err();
        assert!(e.contains("for node"), "{e}");
        let mut nodeless = report(true);
        nodeless.node = None;
        let e = install(&nodeless, &key, &bundle()).unwrap_err();
        assert!(e.contains("names no node"), "{e}");
        let mut twin = report(true);
        twin.device.device_uuid = "22".repeat(16);
        let e = install(&twin, &key, &bundle()).unwrap_err();
        assert!(e.contains("this device"), "{e}");
        let e = install(&report(true), &key, &"bb".repeat(32)).unwrap_err();
        assert!(e.contains("bundle"), "{e}");
        let (bytes, sig) = signed(&report(true), &key);
        let e = c
            .install(&bytes, &sig, &bundle(), T0 + 91 * DAY)
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        assert!(
            !dir.path().join(DIR).join(INSTALLED).exists(),
            "nothing stored yet"
        );

        let v = install(&report(true), &key, &bundle()).unwrap();
        assert!(v.certified && v.report_sha256.is_some(), "{}", v.reason);
        assert!(c.verdict_at(&bundle(), NOW).certified);
        // Another bundle (after a switch) is evaluated again: not certified.
        assert!(!c.verdict_at(&"bb".repeat(32), NOW).certified);
    }

    #[test]
    fn only_a_newer_report_replaces_the_installed_one_and_a_failing_one_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = cert(dir.path(), &key);
        let install = |r: &Report| {
            let (bytes, sig) = signed(r, &key);
            c.install(&bytes, &sig, &bundle(), NOW)
        };
        assert!(install(&report_at(true, 100)).unwrap().certified);
        // The same report again, or an older one: refused, nothing changes.
        for at in [100, 50] {
            let e = install(&report_at(true, at)).unwrap_err();
            assert!(e.contains("not after the installed one"), "{e}");
        }
        // A newer failing report is installed and revokes.
        let v = install(&report_at(false, 200)).unwrap();
        assert!(!v.certified);
        assert!(v.reason.contains("failing"), "{}", v.reason);
        // The older passing one cannot come back.
        let e = install(&report_at(true, 150)).unwrap_err();
        assert!(e.contains("newer report"), "{e}");
        assert!(!c.verdict_at(&bundle(), NOW).certified);
        // A newer passing one certifies again.
        assert!(install(&report_at(true, 300)).unwrap().certified);
        // A report from the future (beyond the clock skew) is refused.
        let e = install(&report_at(true, 2 * DAY)).unwrap_err();
        assert!(e.contains("ahead of this node's clock"), "{e}");
    }

    #[test]
    fn the_cached_verdict_lapses_at_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = cert(dir.path(), &key);
        let (bytes, sig) = signed(&report(true), &key);
        c.install(&bytes, &sig, &bundle(), NOW).unwrap();
        assert!(c.verdict_at(&bundle(), T0 + 90 * DAY - 1).certified);
        let v = c.verdict_at(&bundle(), T0 + 90 * DAY);
        assert!(!v.certified);
        assert!(v.reason.contains("expired"), "{}", v.reason);
    }

    #[test]
    fn concurrent_installs_leave_one_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = Arc::new(cert(dir.path(), &key));
        let threads: Vec<_> = (1..=8u64)
            .map(|i| {
                let c = c.clone();
                let (bytes, sig) = signed(&report_at(true, i), &key);
                std::thread::spawn(move || c.install(&bytes, &sig, &bundle(), NOW).is_ok())
            })
            .collect();
        let ok = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert!(ok >= 1);
        // Whatever order they ran in, the stored pair matches and the
        // verdict read afresh from disk says certified.
        let (bytes, sig) = read_installed(dir.path()).unwrap().unwrap();
        Report::verify(&bytes, &sig, &[key.public().clone()]).unwrap();
        let fresh = cert(dir.path(), &key);
        assert!(fresh.verdict_at(&bundle(), NOW).certified);
    }

    #[test]
    fn the_turn_is_held_until_dropped() {
        let c = Arc::new(cert(Path::new("/nonexistent"), &SigningKey::generate()));
        let turn = c.try_turn().unwrap();
        assert!(c.try_turn().is_none());
        drop(turn);
        assert!(c.try_turn().is_some());
    }

    #[test]
    fn the_override_serves_but_never_marks_receipts_certified() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let c = Certification::new(
            dir.path(),
            NODE.into(),
            vec![key.public().clone()],
            true,
            None,
        );
        c.set_device(device());
        // may_serve reads the real clock: a report that finished just now.
        let now = now_unix();
        let (bytes, sig) = signed(&report_at(true, now.saturating_sub(T0)), &key);
        c.install(&bytes, &sig, &bundle(), now).unwrap();
        assert!(c.may_serve(&bundle()).is_ok());
        assert!(!c.receipts_certified(&bundle()));
        assert!(c.status_line(&bundle()).contains("--uncertified"));
    }
}
