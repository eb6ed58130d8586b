//! The certification report: what the suite found, as canonical JSON (the
//! exact bytes that are signed, so `minisign -Vm REPORT.json` verifies the
//! file), and the checks a node makes before it trusts one.
//!
//! A report binds to one node (its id, the device key), one physical device
//! (model, driver and `deviceUUID`), one bundle, and a validity period
//! (`finished_at` to `expires_at`). Every check that needs the time takes
//! it as an argument (seconds since the Unix epoch): this module reads no
//! clock.

use lockstep_backend::DeviceFingerprint;
use lockstep_identity::{NodeId, Signature, SignatureError};
use serde::{Deserialize, Serialize};

/// Version of the report's own layout.
/// 2: `node` is required for a report a node installs, the device carries
/// its `device_uuid`, and the report has `expires_at`.
pub const REPORT_FORMAT: u32 = 2;

/// Version of the suite (its probes, cases and golden hashes). A report
/// from another suite version is still a report; whether it is accepted is
/// the node's trust decision, which looks at the device and bundle.
pub const SUITE_VERSION: &str = "3";

/// The device and driver a report is about. A node accepts a report only
/// for exactly its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceIdentity {
    /// "vulkan" or "cpu".
    pub backend: String,
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    /// VkDriverId.
    pub driver_id: u32,
    pub driver_version: u32,
    pub driver_info: String,
    pub api_version: u32,
    /// VkPhysicalDeviceIDProperties::deviceUUID, 32 lowercase hex digits:
    /// which physical device of its model. The CPU backend has none and
    /// says all zeros ([`lockstep_backend::CPU_DEVICE_UUID`]).
    pub device_uuid: String,
}

impl DeviceIdentity {
    pub fn of(fp: &DeviceFingerprint) -> DeviceIdentity {
        DeviceIdentity {
            backend: fp.backend.to_string(),
            name: fp.name.clone(),
            vendor_id: fp.vendor_id,
            device_id: fp.device_id,
            driver_id: fp.driver_id,
            driver_version: fp.driver_version,
            driver_info: fp.driver_info.clone(),
            api_version: fp.api_version,
            device_uuid: hex::encode(fp.device_uuid),
        }
    }

    /// `vendor:device driver D version V api A`, for messages.
    pub fn short(&self) -> String {
        format!(
            "{} {:04x}:{:04x} driver {} version {:#x} api {:#x}",
            self.backend,
            self.vendor_id,
            self.device_id,
            self.driver_id,
            self.driver_version,
            self.api_version
        )
    }
}

/// The first disagreement a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mismatch {
    /// The kernel or op (or example program) that disagreed.
    pub kernel: String,
    /// Which case or record.
    pub case: String,
    /// Expected and obtained: SHA-256 hex, or words for probes.
    pub expected: String,
    pub got: String,
}

/// The checks every passing report holds (issue 5: probes, conformance,
/// stability, limits and performance).
pub const REQUIRED_CHECKS: [&str; 4] = ["probes", "conformance", "stability", "limits"];

/// One check of the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Cases (records, jobs, limits) checked and how many failed.
    pub cases: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_mismatch: Option<Mismatch>,
    /// Every failing record or case (at most `MAX_LISTED_FAILURES`), each
    /// put down to a float-model property (docs/certification.md,
    /// "Diagnosis").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<crate::diagnosis::Failure>,
}

impl Check {
    pub fn new(name: &str, cases: u64, failed: u64, first_mismatch: Option<Mismatch>) -> Check {
        Check {
            name: name.to_string(),
            passed: failed == 0 && first_mismatch.is_none(),
            cases,
            failed,
            first_mismatch,
            failures: Vec::new(),
        }
    }

    /// The check with its failures listed (the first
    /// `MAX_LISTED_FAILURES`; `failed` still counts them all).
    pub fn with_failures(mut self, mut failures: Vec<crate::diagnosis::Failure>) -> Check {
        failures.truncate(lockstep_limits::MAX_LISTED_FAILURES);
        self.failures = failures;
        self
    }
}

/// A device limit the kernels need, with the device's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRecord {
    pub name: String,
    pub needed: u64,
    pub device: u64,
}

/// Performance figures. Floats are strings: canonical JSON carries no
/// floats (their text is not unique).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// Best of three `matmul` runs of `matmul_shape`, host to host
    /// (uploads and downloads included), in GFLOP/s (2mnk flops).
    pub matmul_gflops: String,
    pub matmul_shape: String,
    /// Training steps per second of examples/mlp-train.json (tracing on).
    pub mlp_steps_per_s: String,
    /// Device-local memory, where the backend has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_memory_bytes: Option<u64>,
    /// The most device memory the suite held at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
    /// Wall time of the whole suite.
    pub suite_seconds: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub format: u32,
    pub suite_version: String,
    /// SHA-256 of the kernel bundle's canonical manifest: the kernels that ran.
    pub bundle_id: String,
    pub device: DeviceIdentity,
    /// The node the report is for (its id: the device key, minisign
    /// base64). Nodes refuse a report without one, or for another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub checks: Vec<Check>,
    pub limits: Vec<LimitRecord>,
    pub performance: Performance,
    /// True only if every check passed.
    pub passed: bool,
    /// The failures of every check, counted by the float-model property
    /// they are put down to (empty when every check passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnosis: Vec<crate::diagnosis::PropertyCount>,
    /// Set only on a non-conforming cross-implementation test run (a device
    /// opened without the float controls the model needs): why. Such a
    /// report never passes and never certifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_conforming: Option<String>,
    /// RFC 3339 UTC, second precision. `finished_at` also orders reports:
    /// a node installs only a report that finished after the one it holds.
    pub started_at: String,
    pub finished_at: String,
    /// RFC 3339 UTC: the report certifies nothing from this instant on.
    /// At most `MAX_CERTIFICATION_VALIDITY_DAYS` after `finished_at`.
    pub expires_at: String,
}

/// Why a report does not certify this node (or may not replace the one it
/// holds): one line each, saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCertified {
    #[error("the report is a failing one (failed: {failed}); fix the device or driver and certify again")]
    Failing { failed: String },
    #[error("the report names no node; certify through the node (lockstep-certify --node) or give --node-key NODE_ID to the local run")]
    NoNode,
    #[error("the report is for node {report}, this is node {node}; certify this node")]
    OtherNode { report: String, node: String },
    #[error(
        "the report is for bundle {report}, this node runs bundle {node}; certify this bundle"
    )]
    OtherBundle { report: String, node: String },
    #[error("the report is for {report}, this node has {node}; certify this device and driver")]
    OtherDevice { report: String, node: String },
    #[error("the report expired at {expires_at}; certify this node again")]
    Expired { expires_at: String },
    #[error("the report's {field} {value:?} is not an RFC 3339 UTC time; certify again")]
    BadTime { field: &'static str, value: String },
    #[error("the report finished at {finished_at}, ahead of this node's clock ({now}); check the clocks of the certifier and the node")]
    FromTheFuture { finished_at: String, now: String },
    #[error("the report finished at {offered}, not after the installed one ({held}); install only a newer report")]
    NotNewer { offered: String, held: String },
    #[error("the report is from a non-conforming cross-implementation test run, which never certifies; certify the device as it is opened for serving")]
    NonConforming,
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time of the form the
/// reports use (`YYYY-MM-DDTHH:MM:SSZ`); `None` for anything else. The
/// receipts' parser, shared.
pub use lockstep_protocol::receipt::parse_rfc3339;

/// The RFC 3339 UTC form of `unix_s` seconds since the epoch.
pub fn format_rfc3339(unix_s: u64) -> String {
    lockstep_protocol::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_s))
}

/// Why a report is not one to trust.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a certification report: {0}")]
    Malformed(String),
    #[error("the report is not in canonical form (it was re-encoded or edited after signing)")]
    NotCanonical,
    #[error("report signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("the report is signed by key {found}, which is not a trusted certifier; add its public key to trusted_certifiers (or --trust-certifier)")]
    Untrusted { found: String },
}

impl Report {
    /// The exact bytes that are signed and written as REPORT.json.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        lockstep_canonical_json::to_vec(self)
            .expect("reports hold only strings, integers, booleans and nulls")
    }

    /// The trusted comment a signature of this report carries.
    pub fn trusted_comment(&self, signer: &str) -> String {
        format!(
            "lockstep certification report suite {} bundle {} device {} {} until {} signed by {signer}",
            self.suite_version,
            &self.bundle_id.get(..16).unwrap_or(&self.bundle_id),
            self.device.short(),
            if self.passed { "PASSED" } else { "FAILED" },
            self.expires_at,
        )
    }

    /// Parses report bytes, refusing anything but the canonical form.
    pub fn parse(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() > lockstep_limits::MAX_REPORT_BYTES {
            return Err(ReportError::Malformed(format!(
                "{} bytes exceeds the {}-byte bound",
                bytes.len(),
                lockstep_limits::MAX_REPORT_BYTES
            )));
        }
        let report: Report =
            serde_json::from_slice(bytes).map_err(|e| ReportError::Malformed(e.to_string()))?;
        if report.format != REPORT_FORMAT {
            return Err(ReportError::Malformed(format!(
                "format {} is not {REPORT_FORMAT}",
                report.format
            )));
        }
        if report.canonical_bytes() != bytes {
            return Err(ReportError::NotCanonical);
        }
        report.check_consistent()?;
        Ok(report)
    }

    /// A report's verdicts must follow from its own figures: a signer (or a
    /// node, in the remote form) cannot call failed checks a pass.
    fn check_consistent(&self) -> Result<(), ReportError> {
        for c in &self.checks {
            let follows = c.failed == 0 && c.first_mismatch.is_none();
            if c.passed != follows {
                return Err(ReportError::Malformed(format!(
                    "check '{}' says passed={} but lists {} failed case(s){}",
                    c.name,
                    c.passed,
                    c.failed,
                    if c.first_mismatch.is_some() {
                        " and a mismatch"
                    } else {
                        ""
                    }
                )));
            }
        }
        let all = !self.checks.is_empty() && self.checks.iter().all(|c| c.passed);
        let complete = REQUIRED_CHECKS
            .iter()
            .all(|name| self.checks.iter().any(|c| c.name == *name));
        if self.passed && self.non_conforming.is_some() {
            return Err(ReportError::Malformed(
                "the report says passed, but it is from a non-conforming cross-implementation test run".into(),
            ));
        }
        if self.passed && !(all && complete) {
            return Err(ReportError::Malformed(format!(
                "the report says passed, but not every one of the checks {} is present and passing",
                REQUIRED_CHECKS.join(", ")
            )));
        }
        let time = |field: &str, value: &str| {
            parse_rfc3339(value).ok_or_else(|| {
                ReportError::Malformed(format!("{field} {value:?} is not an RFC 3339 UTC time"))
            })
        };
        let started = time("started_at", &self.started_at)?;
        let finished = time("finished_at", &self.finished_at)?;
        let expires = time("expires_at", &self.expires_at)?;
        if finished < started {
            return Err(ReportError::Malformed(
                "finished_at is before started_at".into(),
            ));
        }
        // A signer cannot make a report valid for longer than the bound:
        // a certification must be renewed.
        let max = u64::from(lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS) * 86_400;
        if expires <= finished || expires - finished > max {
            return Err(ReportError::Malformed(format!(
                "expires_at {} must be after finished_at {} and at most {} days later",
                self.expires_at,
                self.finished_at,
                lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS
            )));
        }
        Ok(())
    }

    /// Parses `bytes` and checks `signature` (a `.minisig` file) against the
    /// trusted keys; returns the report and the key that signed it.
    pub fn verify(
        bytes: &[u8],
        signature: &str,
        trusted: &[NodeId],
    ) -> Result<(Report, NodeId), ReportError> {
        let report = Report::parse(bytes)?;
        let sig = Signature::parse(signature)?;
        let mut found = String::from("(none)");
        for key in trusted {
            match sig.verify(key, bytes) {
                Ok(()) => return Ok((report, key.clone())),
                Err(SignatureError::WrongKey { found: f, .. }) => found = f,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReportError::Untrusted { found })
    }

    /// Whether the report is about node `node` (base64 id), this physical
    /// `device` and driver, and `bundle_id`, whatever its outcome.
    pub fn binds(
        &self,
        node: &str,
        device: &DeviceIdentity,
        bundle_id: &str,
    ) -> Result<(), NotCertified> {
        match &self.node {
            None => return Err(NotCertified::NoNode),
            Some(n) if n != node => {
                return Err(NotCertified::OtherNode {
                    report: short_id(n).to_string(),
                    node: short_id(node).to_string(),
                })
            }
            Some(_) => {}
        }
        let d = &self.device;
        let same = d.backend == device.backend
            && d.vendor_id == device.vendor_id
            && d.device_id == device.device_id
            && d.driver_id == device.driver_id
            && d.driver_version == device.driver_version
            && d.api_version == device.api_version
            && d.device_uuid == device.device_uuid;
        if !same {
            return Err(NotCertified::OtherDevice {
                report: format!("{} uuid {}", d.short(), d.device_uuid),
                node: format!("{} uuid {}", device.short(), device.device_uuid),
            });
        }
        if self.bundle_id != bundle_id {
            return Err(NotCertified::OtherBundle {
                report: short_id(&self.bundle_id).to_string(),
                node: short_id(bundle_id).to_string(),
            });
        }
        Ok(())
    }

    fn time(&self, field: &'static str, value: &str) -> Result<u64, NotCertified> {
        parse_rfc3339(value).ok_or_else(|| NotCertified::BadTime {
            field,
            value: value.to_string(),
        })
    }

    /// `expires_at` in seconds since the Unix epoch.
    pub fn expires_unix(&self) -> Result<u64, NotCertified> {
        self.time("expires_at", &self.expires_at)
    }

    /// `finished_at` in seconds since the Unix epoch.
    pub fn finished_unix(&self) -> Result<u64, NotCertified> {
        self.time("finished_at", &self.finished_at)
    }

    /// Whether the report is still valid at `now_unix_s`.
    pub fn valid_at(&self, now_unix_s: u64) -> Result<(), NotCertified> {
        if now_unix_s >= self.expires_unix()? {
            return Err(NotCertified::Expired {
                expires_at: self.expires_at.clone(),
            });
        }
        Ok(())
    }

    /// Why this report does not certify node `node` with `device` running
    /// `bundle_id` at `now_unix_s`, if it does not: bound to exactly these,
    /// passing, and not expired.
    pub fn certifies(
        &self,
        node: &str,
        device: &DeviceIdentity,
        bundle_id: &str,
        now_unix_s: u64,
    ) -> Result<(), NotCertified> {
        if self.non_conforming.is_some() {
            return Err(NotCertified::NonConforming);
        }
        self.binds(node, device, bundle_id)?;
        if !self.passed {
            let failed: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            return Err(NotCertified::Failing {
                failed: failed.join(", "),
            });
        }
        self.valid_at(now_unix_s)
    }

    /// Whether this report may replace `held` (the installed one, if any)
    /// at `now_unix_s`: it finished strictly after `held`, so an old report
    /// can never displace a newer verdict (a newer failing report revokes),
    /// and not ahead of the clock by more than the allowed skew, so one
    /// report from the future cannot block every honest one after it.
    pub fn may_replace(&self, held: Option<&Report>, now_unix_s: u64) -> Result<(), NotCertified> {
        let finished = self.finished_unix()?;
        if finished > now_unix_s.saturating_add(lockstep_limits::MAX_CERTIFICATION_CLOCK_SKEW_S) {
            return Err(NotCertified::FromTheFuture {
                finished_at: self.finished_at.clone(),
                now: format_rfc3339(now_unix_s),
            });
        }
        if let Some(held) = held {
            // A held report whose time does not parse is ordered first: any
            // well-formed report replaces it.
            if held.finished_unix().is_ok_and(|h| finished <= h) {
                return Err(NotCertified::NotNewer {
                    offered: self.finished_at.clone(),
                    held: held.finished_at.clone(),
                });
            }
        }
        Ok(())
    }

    /// The readable summary printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, t: String| {
            s.push_str(&t);
            s.push('\n');
        };
        line(
            &mut s,
            format!(
                "lockstep-certify suite {} on {} ({})",
                self.suite_version,
                self.device.name,
                self.device.short()
            ),
        );
        line(&mut s, format!("bundle   {}", self.bundle_id));
        if let Some(why) = &self.non_conforming {
            line(&mut s, format!("NOTE     {why}"));
        }
        match &self.node {
            Some(node) => line(&mut s, format!("node     {node}")),
            None => line(
                &mut s,
                "node     (none: no node installs this report; give --node-key)".into(),
            ),
        }
        line(
            &mut s,
            format!("uuid     {} (the physical device)", self.device.device_uuid),
        );
        for c in &self.checks {
            line(
                &mut s,
                format!(
                    "{:<5} {:<12} {} cases, {} failed",
                    if c.passed { "PASS" } else { "FAIL" },
                    c.name,
                    c.cases,
                    c.failed
                ),
            );
            if let Some(m) = &c.first_mismatch {
                line(
                    &mut s,
                    format!(
                        "      first mismatch: {} {}: expected {} got {}",
                        m.kernel, m.case, m.expected, m.got
                    ),
                );
            }
            for f in &c.failures {
                line(
                    &mut s,
                    format!(
                        "      [{}] {} {}: {}",
                        f.property, f.kernel, f.case, f.detail
                    ),
                );
            }
            let listed = c.failures.len() as u64;
            if listed > 0 && listed < c.failed {
                line(
                    &mut s,
                    format!("      ... {} more failures not listed", c.failed - listed),
                );
            }
        }
        if !self.diagnosis.is_empty() {
            line(
                &mut s,
                "diagnosis (failures by float-model property):".into(),
            );
            for d in &self.diagnosis {
                line(
                    &mut s,
                    format!("  {:>5}  {:<36} {}", d.count, d.property, d.meaning),
                );
            }
        }
        let p = &self.performance;
        line(
            &mut s,
            format!(
                "perf  matmul {}: {} GFLOP/s; mlp-train: {} steps/s; suite {} s",
                p.matmul_shape, p.matmul_gflops, p.mlp_steps_per_s, p.suite_seconds
            ),
        );
        if let Some(m) = p.device_memory_bytes {
            line(&mut s, format!("      device memory {} MiB", m >> 20));
        }
        line(
            &mut s,
            format!(
                "{} ({} .. {}, valid until {})",
                if self.passed {
                    "CERTIFIED: every check passed"
                } else if self.non_conforming.is_some() {
                    "NOT CERTIFIED: a non-conforming cross-implementation test run never certifies"
                } else {
                    "NOT CERTIFIED: a check failed"
                },
                self.started_at,
                self.finished_at,
                self.expires_at
            ),
        );
        s
    }
}

fn short_id(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

#[cfg(test)]
mod consistency_tests {
    use super::*;

    const LAVAPIPE: &[u8] = include_bytes!("../reports/lavapipe.json");

    /// The committed report with `edit` applied, in canonical form (as a
    /// signer would produce it).
    fn edited(edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(LAVAPIPE).unwrap();
        edit(&mut v);
        lockstep_canonical_json::to_vec(&v).unwrap()
    }

    #[test]
    fn the_committed_report_is_consistent() {
        assert!(Report::parse(LAVAPIPE).unwrap().passed);
    }

    #[test]
    fn a_pass_over_failed_cases_is_refused() {
        let bytes = edited(|v| v["checks"][1]["failed"] = 3.into());
        let err = Report::parse(&bytes).unwrap_err();
        assert!(matches!(err, ReportError::Malformed(_)), "{err}");
    }

    #[test]
    fn a_pass_over_a_failed_check_is_refused() {
        let bytes = edited(|v| {
            v["checks"][0]["failed"] = 1.into();
            v["checks"][0]["passed"] = false.into();
        });
        let err = Report::parse(&bytes).unwrap_err();
        assert!(err.to_string().contains("not every one"), "{err}");
    }

    #[test]
    fn a_pass_without_every_check_is_refused() {
        let bytes = edited(|v| {
            v["checks"].as_array_mut().unwrap().remove(2);
        });
        assert!(Report::parse(&bytes).is_err());
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    const NODE: &str = "RWQnodeA";
    const DAY: u64 = 86_400;
    /// 2026-11-24T00:00:01Z, when the sample report finished.
    const FINISHED: u64 = 1_795_478_401;

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

    fn sample() -> Report {
        Report {
            format: REPORT_FORMAT,
            suite_version: SUITE_VERSION.into(),
            bundle_id: "aa".repeat(32),
            device: device(),
            node: Some(NODE.into()),
            checks: REQUIRED_CHECKS
                .iter()
                .map(|name| Check::new(name, 1, 0, None))
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
            passed: true,
            diagnosis: Vec::new(),
            non_conforming: None,
            started_at: "2026-11-24T00:00:00Z".into(),
            finished_at: "2026-11-24T00:00:01Z".into(),
            expires_at: format_rfc3339(FINISHED + 90 * DAY),
        }
    }

    #[test]
    fn rfc3339_parses_what_the_reports_write_and_nothing_else() {
        for t in [0, 951_782_400, FINISHED, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-11-24T00:00:01Z"), Some(FINISHED));
        for bad in [
            "",
            "2026-11-24 00:00:01Z",
            "2026-11-24T00:00:01+00:00",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "+026-11-24T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T23:59:59Z").is_some());
    }

    #[test]
    fn a_report_certifies_only_its_node_device_and_bundle() {
        let r = sample();
        let bundle = "aa".repeat(32);
        let now = FINISHED + DAY;
        r.certifies(NODE, &device(), &bundle, now).unwrap();
        assert!(matches!(
            r.certifies("RWQnodeB", &device(), &bundle, now),
            Err(NotCertified::OtherNode { .. })
        ));
        // Same model and driver, another physical device.
        let mut twin = device();
        twin.device_uuid = "22".repeat(16);
        let e = r.certifies(NODE, &twin, &bundle, now).unwrap_err();
        assert!(matches!(e, NotCertified::OtherDevice { .. }), "{e}");
        assert!(e.to_string().contains(&"22".repeat(16)), "{e}");
        let mut newer_driver = device();
        newer_driver.driver_version = 8;
        assert!(r.certifies(NODE, &newer_driver, &bundle, now).is_err());
        assert!(matches!(
            r.certifies(NODE, &device(), &"bb".repeat(32), now),
            Err(NotCertified::OtherBundle { .. })
        ));
        let mut nodeless = sample();
        nodeless.node = None;
        assert_eq!(
            nodeless.certifies(NODE, &device(), &bundle, now),
            Err(NotCertified::NoNode)
        );
        let mut failing = sample();
        failing.passed = false;
        failing.checks[0] = Check::new("probes", 1, 1, None);
        let e = failing
            .certifies(NODE, &device(), &bundle, now)
            .unwrap_err();
        assert!(
            e.to_string().contains("failing one (failed: probes)"),
            "{e}"
        );
        // A failing report still binds: it may be installed to revoke.
        failing.binds(NODE, &device(), &bundle).unwrap();
    }

    #[test]
    fn a_report_expires_at_its_expiry_by_the_clock_it_is_given() {
        let r = sample();
        let bundle = "aa".repeat(32);
        let expires = FINISHED + 90 * DAY;
        r.certifies(NODE, &device(), &bundle, expires - 1).unwrap();
        for now in [expires, expires + 365 * DAY] {
            let e = r.certifies(NODE, &device(), &bundle, now).unwrap_err();
            assert!(matches!(e, NotCertified::Expired { .. }), "{e}");
            assert!(e.to_string().contains("certify this node again"), "{e}");
        }
    }

    #[test]
    fn only_a_strictly_newer_report_replaces_the_held_one() {
        let held = sample();
        let now = FINISHED + DAY;
        let same = sample();
        assert!(matches!(
            same.may_replace(Some(&held), now),
            Err(NotCertified::NotNewer { .. })
        ));
        let mut older = sample();
        older.started_at = "2026-11-23T00:00:00Z".into();
        older.finished_at = "2026-11-23T00:00:01Z".into();
        let e = older.may_replace(Some(&held), now).unwrap_err();
        assert!(e.to_string().contains("install only a newer report"), "{e}");
        let mut newer = sample();
        newer.finished_at = "2026-11-24T00:00:02Z".into();
        newer.may_replace(Some(&held), now).unwrap();
        newer.may_replace(None, now).unwrap();
        // From further ahead than the skew allows: refused, whatever is held.
        let e = newer.may_replace(None, FINISHED - 3600).unwrap_err();
        assert!(matches!(e, NotCertified::FromTheFuture { .. }), "{e}");
    }

    #[test]
    fn validity_must_follow_the_run_and_stay_within_the_bound() {
        let bytes = |r: &Report| r.canonical_bytes();
        Report::parse(&bytes(&sample())).unwrap();
        let max = u64::from(lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS);
        for expires in [FINISHED, FINISHED - 1, FINISHED + max * DAY + 1] {
            let mut r = sample();
            r.expires_at = format_rfc3339(expires);
            assert!(
                matches!(Report::parse(&bytes(&r)), Err(ReportError::Malformed(_))),
                "{}",
                r.expires_at
            );
        }
        let mut r = sample();
        r.expires_at = format_rfc3339(FINISHED + max * DAY);
        Report::parse(&bytes(&r)).unwrap();
        let mut r = sample();
        r.finished_at = "yesterday".into();
        assert!(Report::parse(&bytes(&r)).is_err());
    }
}
