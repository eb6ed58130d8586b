//! The certification report: what the suite found, as canonical JSON (the
//! exact bytes that are signed, so `minisign -Vm REPORT.json` verifies the
//! file), and the checks a node makes before it trusts one.

use lockstep_backend::DeviceFingerprint;
use lockstep_identity::{NodeId, Signature, SignatureError};
use serde::{Deserialize, Serialize};

/// Version of the report's own layout.
pub const REPORT_FORMAT: u32 = 1;

/// Version of the suite (its probes, cases and golden hashes). A report
/// from another suite version is still a report; whether it is accepted is
/// the node's trust decision, which looks at the device and bundle.
pub const SUITE_VERSION: &str = "1";

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
    /// The node that ran the suite (its id), for the remote form.
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
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
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
            "lockstep certification report suite {} bundle {} device {} {} signed by {signer}",
            self.suite_version,
            &self.bundle_id.get(..16).unwrap_or(&self.bundle_id),
            self.device.short(),
            if self.passed { "PASSED" } else { "FAILED" },
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

    /// Why this report does not certify `device` running `bundle_id`, if it
    /// does not: one line saying what to do.
    pub fn certifies(&self, device: &DeviceIdentity, bundle_id: &str) -> Result<(), String> {
        if self.non_conforming.is_some() {
            return Err(
                "the installed report is from a non-conforming cross-implementation test run, which never certifies; certify the device as it is opened for serving".into(),
            );
        }
        if !self.passed {
            let failed: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            return Err(format!(
                "the installed report is a failing one (failed: {}); fix the device or driver and certify again",
                failed.join(", ")
            ));
        }
        if self.bundle_id != bundle_id {
            return Err(format!(
                "the installed report is for bundle {}, this node runs bundle {}; certify this bundle",
                short_id(&self.bundle_id),
                short_id(bundle_id)
            ));
        }
        let d = &self.device;
        let same = d.backend == device.backend
            && d.vendor_id == device.vendor_id
            && d.device_id == device.device_id
            && d.driver_id == device.driver_id
            && d.driver_version == device.driver_version
            && d.api_version == device.api_version;
        if !same {
            return Err(format!(
                "the installed report is for {}, this node has {}; certify this device and driver",
                d.short(),
                device.short()
            ));
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
        if let Some(node) = &self.node {
            line(&mut s, format!("node     {node}"));
        }
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
                "{} ({} .. {})",
                if self.passed {
                    "CERTIFIED: every check passed"
                } else if self.non_conforming.is_some() {
                    "NOT CERTIFIED: a non-conforming cross-implementation test run never certifies"
                } else {
                    "NOT CERTIFIED: a check failed"
                },
                self.started_at,
                self.finished_at
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
