//! The node's registry: a fixed set of families, plain data with atomic
//! counters. Network tasks and the GPU worker thread bump them without
//! locks; only registering a device and writing the exposition take the
//! device list's lock, briefly.
//!
//! Counters only go up. Gauges that describe state the daemon already
//! holds elsewhere (queue depth, evidence retained, certification) are set
//! by the daemon just before it writes the exposition, from that state, so
//! they are exact at each scrape and cost nothing in between.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_limits::MAX_METRICS_DEVICES;

use crate::exposition::{encode, Family, Kind, Sample};

/// Upper bounds (seconds) of the job latency histogram's buckets, from a
/// tiny one-op job on the CPU reference to the longest job a node admits
/// by default; `+Inf` is implied.
pub const JOB_DURATION_BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How a job that reached a device's worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs and a signed receipt.
    Ok,
    /// The executor or the worker failed (an internal error, a panic).
    Failed,
    /// It ran past its time limit, or its submitter stopped waiting before
    /// the worker reached it.
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Failed, Outcome::Timeout];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Why a submitted job was refused before it reached a device's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The program failed validation.
    InvalidProgram,
    /// An input was missing, misnamed, the wrong shape, or failed its hash.
    BadInput,
    /// Over a bound of this node.
    TooLarge,
    /// Over a budget now (job slots, memory, the full queue).
    Busy,
    /// The node holds no passing certification.
    Uncertified,
    /// A referenced input was refused or could not be fetched.
    Reference,
    /// The upload stalled.
    Timeout,
    /// The node is shutting down, or a frame broke the protocol.
    Other,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::InvalidProgram,
        Refusal::BadInput,
        Refusal::TooLarge,
        Refusal::Busy,
        Refusal::Uncertified,
        Refusal::Reference,
        Refusal::Timeout,
        Refusal::Other,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::InvalidProgram => "invalid_program",
            Refusal::BadInput => "bad_input",
            Refusal::TooLarge => "too_large",
            Refusal::Busy => "busy",
            Refusal::Uncertified => "uncertified",
            Refusal::Reference => "reference",
            Refusal::Timeout => "timeout",
            Refusal::Other => "other",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every refusal is in ALL")
    }
}

/// A histogram with the fixed bounds of [`JOB_DURATION_BOUNDS_S`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): one per bound, then the
    /// overflow bucket (`+Inf` only).
    buckets: [AtomicU64; JOB_DURATION_BOUNDS_S.len() + 1],
    /// Sum of the observations, in microseconds (integer, so atomic).
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = JOB_DURATION_BOUNDS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(JOB_DURATION_BOUNDS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, then the total (`+Inf`), and the sum
    /// in seconds. The total is the last cumulative count, so `_count`
    /// always equals the `+Inf` bucket even while others observe.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0u64;
        for b in &self.buckets {
            total += b.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        cumulative.pop();
        let sum_s = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, total, sum_s)
    }
}

/// One device's part of the registry; its `device` label is fixed at
/// creation (the device UUID in hex).
#[derive(Debug)]
pub struct DeviceMetrics {
    device: String,
    jobs: [AtomicU64; Outcome::ALL.len()],
    duration: Histogram,
    queue_depth: AtomicU64,
    certified: AtomicBool,
    serving: AtomicBool,
}

impl DeviceMetrics {
    pub fn new(device: &str) -> DeviceMetrics {
        DeviceMetrics {
            device: device.to_string(),
            jobs: Default::default(),
            duration: Histogram::default(),
            queue_depth: AtomicU64::new(0),
            certified: AtomicBool::new(false),
            serving: AtomicBool::new(false),
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// A job this device's worker finished (or dropped unrun, as
    /// [`Outcome::Timeout`]), after `duration` on the worker.
    pub fn job_finished(&self, outcome: Outcome, duration: Duration) {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("every outcome is in ALL");
        self.jobs[i].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(duration);
    }

    /// A job that ended without running on this device (its submitter
    /// stopped waiting before the worker reached it, or the worker had
    /// failed): counted by outcome, but not in the latency histogram,
    /// whose `_count` is the jobs that ran.
    pub fn job_not_run(&self, outcome: Outcome) {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("every outcome is in ALL");
        self.jobs[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn jobs(&self, outcome: Outcome) -> u64 {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("every outcome is in ALL");
        self.jobs[i].load(Ordering::Relaxed)
    }

    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.store(n, Ordering::Relaxed);
    }

    /// Whether the device takes jobs now: certified (or the node serves
    /// uncertified) and not out of service (lost, or it failed a bundle's
    /// self-test).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub fn set_certified(&self, certified: bool) {
        self.certified.store(certified, Ordering::Relaxed);
    }
}

/// More devices than [`MAX_METRICS_DEVICES`] were registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyDevices {
    pub device: String,
}

impl std::fmt::Display for TooManyDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "device {} not in the metrics: a node's metrics keep at most {MAX_METRICS_DEVICES} devices",
            self.device
        )
    }
}

impl std::error::Error for TooManyDevices {}

/// The node's registry. One per process, shared as an `Arc`.
#[derive(Debug)]
pub struct NodeMetrics {
    version: String,
    busy_refusals: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    evidence_retained_bytes: AtomicU64,
    evidence_retained_jobs: AtomicU64,
    /// In registration order; at most `MAX_METRICS_DEVICES`.
    devices: Mutex<Vec<Arc<DeviceMetrics>>>,
}

impl NodeMetrics {
    /// `version` is the daemon's (`lockstep_build_info`).
    pub fn new(version: &str) -> NodeMetrics {
        NodeMetrics {
            version: version.to_string(),
            busy_refusals: AtomicU64::new(0),
            refused: Default::default(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            evidence_retained_bytes: AtomicU64::new(0),
            evidence_retained_jobs: AtomicU64::new(0),
            devices: Mutex::new(Vec::new()),
        }
    }

    /// The metrics of the device labelled `device`, registered on first
    /// use. The caller keeps the `Arc` and counts through it, lock-free.
    pub fn device(&self, device: &str) -> Result<Arc<DeviceMetrics>, TooManyDevices> {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = devices.iter().find(|d| d.device == device) {
            return Ok(d.clone());
        }
        if devices.len() >= MAX_METRICS_DEVICES {
            return Err(TooManyDevices {
                device: device.to_string(),
            });
        }
        let d = Arc::new(DeviceMetrics::new(device));
        devices.push(d.clone());
        Ok(d)
    }

    /// Every registered device, in registration order.
    pub fn devices(&self) -> Vec<Arc<DeviceMetrics>> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The node answered `Busy` (a full queue, a budget, a frame refused at
    /// admission).
    pub fn busy_refusal(&self) {
        self.busy_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// A submitted job was refused before it reached a device's queue.
    pub fn job_refused(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why.index()].load(Ordering::Relaxed)
    }

    /// Job data received: input chunks, referenced inputs fetched from
    /// peers.
    pub fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Job data sent: output chunks, evidence and outputs served to peers.
    pub fn sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_evidence_retained(&self, jobs: u64, bytes: u64) {
        self.evidence_retained_jobs.store(jobs, Ordering::Relaxed);
        self.evidence_retained_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The registry as families, in a fixed order; `bundle_id` is the
    /// active bundle's (it changes with a bundle switch).
    pub fn families(&self, bundle_id: &str) -> Vec<Family> {
        let devices = self.devices();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let plain = |name: &str, labels: Vec<(String, String)>, value: f64| Sample {
            name: name.to_string(),
            labels,
            value,
        };
        let device_label = |d: &DeviceMetrics| ("device".to_string(), d.device.clone());
        let family = |name: &str, help: &str, kind: Kind, samples: Vec<Sample>| Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples,
        };
        let per_device = |name: &str, value: &dyn Fn(&DeviceMetrics) -> f64| {
            devices
                .iter()
                .map(|d| plain(name, vec![device_label(d)], value(d)))
                .collect::<Vec<_>>()
        };

        let mut jobs = Vec::new();
        for d in &devices {
            for (i, o) in Outcome::ALL.iter().enumerate() {
                jobs.push(plain(
                    "lockstep_jobs_total",
                    vec![device_label(d), ("outcome".into(), o.label().into())],
                    load(&d.jobs[i]),
                ));
            }
        }
        let refused = Refusal::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| {
                plain(
                    "lockstep_jobs_refused_total",
                    vec![("reason".into(), r.label().into())],
                    load(&self.refused[i]),
                )
            })
            .collect();
        let mut histogram = Vec::new();
        for d in &devices {
            let (cumulative, total, sum_s) = d.duration.snapshot();
            let bucket = |le: String, n: u64| {
                plain(
                    "lockstep_job_duration_seconds_bucket",
                    vec![device_label(d), ("le".into(), le)],
                    n as f64,
                )
            };
            for (bound, n) in JOB_DURATION_BOUNDS_S.iter().zip(&cumulative) {
                histogram.push(bucket(crate::exposition::format_value(*bound), *n));
            }
            histogram.push(bucket("+Inf".into(), total));
            histogram.push(plain(
                "lockstep_job_duration_seconds_sum",
                vec![device_label(d)],
                sum_s,
            ));
            histogram.push(plain(
                "lockstep_job_duration_seconds_count",
                vec![device_label(d)],
                total as f64,
            ));
        }
        vec![
            family(
                "lockstep_build_info",
                "The daemon's version and the active kernel bundle; always 1.",
                Kind::Gauge,
                vec![plain(
                    "lockstep_build_info",
                    vec![
                        ("version".into(), self.version.clone()),
                        ("bundle_id".into(), bundle_id.to_string()),
                    ],
                    1.0,
                )],
            ),
            family(
                "lockstep_jobs_total",
                "Jobs a device's worker finished, by outcome (ok, failed, timeout).",
                Kind::Counter,
                jobs,
            ),
            family(
                "lockstep_jobs_refused_total",
                "Submitted jobs refused before they reached a device's queue, by reason.",
                Kind::Counter,
                refused,
            ),
            family(
                "lockstep_busy_refusals_total",
                "Busy answers: a full job queue, a job slot or memory budget, a frame refused at admission.",
                Kind::Counter,
                vec![plain(
                    "lockstep_busy_refusals_total",
                    vec![],
                    load(&self.busy_refusals),
                )],
            ),
            family(
                "lockstep_queue_depth",
                "Work waiting in a device's queue at the scrape.",
                Kind::Gauge,
                per_device("lockstep_queue_depth", &|d| load(&d.queue_depth)),
            ),
            family(
                "lockstep_job_duration_seconds",
                "Time a job spent on a device's worker, from pick-up to signed receipt.",
                Kind::Histogram,
                histogram,
            ),
            family(
                "lockstep_bytes_received_total",
                "Job data received: input chunks, and referenced inputs fetched from peers.",
                Kind::Counter,
                vec![plain(
                    "lockstep_bytes_received_total",
                    vec![],
                    load(&self.bytes_received),
                )],
            ),
            family(
                "lockstep_bytes_sent_total",
                "Job data sent: output chunks, and evidence and outputs served to verifiers and peers.",
                Kind::Counter,
                vec![plain(
                    "lockstep_bytes_sent_total",
                    vec![],
                    load(&self.bytes_sent),
                )],
            ),
            family(
                "lockstep_evidence_retained_bytes",
                "Bytes of retained job evidence on the state partition at the scrape.",
                Kind::Gauge,
                vec![plain(
                    "lockstep_evidence_retained_bytes",
                    vec![],
                    load(&self.evidence_retained_bytes),
                )],
            ),
            family(
                "lockstep_evidence_retained_jobs",
                "Jobs whose evidence is retained at the scrape.",
                Kind::Gauge,
                vec![plain(
                    "lockstep_evidence_retained_jobs",
                    vec![],
                    load(&self.evidence_retained_jobs),
                )],
            ),
            family(
                "lockstep_device_certified",
                "1 if the node holds a passing certification for the device and the active bundle, else 0.",
                Kind::Gauge,
                per_device("lockstep_device_certified", &|d| {
                    if d.certified.load(Ordering::Relaxed) {
                        1.0
                    } else {
                        0.0
                    }
                }),
            ),
            family(
                "lockstep_device_serving",
                "1 if the device takes jobs now, else 0 (uncertified, lost, or out of service; `lockstep status` says why).",
                Kind::Gauge,
                per_device("lockstep_device_serving", &|d| {
                    if d.serving.load(Ordering::Relaxed) {
                        1.0
                    } else {
                        0.0
                    }
                }),
            ),
        ]
    }

    /// The exposition text ([`families`](Self::families), encoded).
    pub fn exposition(&self, bundle_id: &str) -> String {
        encode(&self.families(bundle_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_with_count_equal_to_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_secs(2));
        h.observe(Duration::from_secs(1000));
        let (cumulative, total, sum) = h.snapshot();
        assert_eq!(cumulative.len(), JOB_DURATION_BOUNDS_S.len());
        // 0.005: the 3 ms job; 0.01: and the 10 ms one (bounds inclusive).
        assert_eq!(&cumulative[..3], &[1, 2, 2]);
        assert_eq!(cumulative[JOB_DURATION_BOUNDS_S.len() - 1], 3);
        assert_eq!(total, 4);
        assert!((sum - 1002.013).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn the_exposition_names_every_device_and_outcome() {
        let m = NodeMetrics::new("0.1.0");
        let d = m.device("00ff").unwrap();
        assert!(Arc::ptr_eq(&d, &m.device("00ff").unwrap()));
        d.job_finished(Outcome::Ok, Duration::from_millis(20));
        d.job_finished(Outcome::Ok, Duration::from_millis(30));
        d.job_finished(Outcome::Timeout, Duration::from_secs(61));
        d.job_not_run(Outcome::Timeout);
        d.set_queue_depth(2);
        d.set_certified(true);
        d.set_serving(true);
        m.busy_refusal();
        m.job_refused(Refusal::Busy);
        m.job_refused(Refusal::InvalidProgram);
        m.received(100);
        m.sent(40);
        m.set_evidence_retained(3, 4096);
        let text = m.exposition("abc");
        for line in [
            "lockstep_build_info{version=\"0.1.0\",bundle_id=\"abc\"} 1",
            "lockstep_jobs_total{device=\"00ff\",outcome=\"ok\"} 2",
            "lockstep_jobs_total{device=\"00ff\",outcome=\"failed\"} 0",
            "lockstep_jobs_total{device=\"00ff\",outcome=\"timeout\"} 2",
            "lockstep_jobs_refused_total{reason=\"busy\"} 1",
            "lockstep_jobs_refused_total{reason=\"invalid_program\"} 1",
            "lockstep_busy_refusals_total 1",
            "lockstep_queue_depth{device=\"00ff\"} 2",
            "lockstep_job_duration_seconds_bucket{device=\"00ff\",le=\"0.025\"} 1",
            "lockstep_job_duration_seconds_bucket{device=\"00ff\",le=\"60\"} 2",
            "lockstep_job_duration_seconds_bucket{device=\"00ff\",le=\"+Inf\"} 3",
            "lockstep_job_duration_seconds_sum{device=\"00ff\"} 61.05",
            "lockstep_job_duration_seconds_count{device=\"00ff\"} 3",
            "lockstep_bytes_received_total 100",
            "lockstep_bytes_sent_total 40",
            "lockstep_evidence_retained_bytes 4096",
            "lockstep_evidence_retained_jobs 3",
            "lockstep_device_certified{device=\"00ff\"} 1",
            "lockstep_device_serving{device=\"00ff\"} 1",
            "# TYPE lockstep_job_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // What the node writes, the fleet reads back unchanged.
        assert_eq!(crate::parse(&text).unwrap(), m.families("abc"));
    }

    #[test]
    fn devices_are_bounded() {
        let m = NodeMetrics::new("v");
        for i in 0..MAX_METRICS_DEVICES {
            m.device(&format!("{i:032x}")).unwrap();
        }
        assert_eq!(
            m.device("extra").unwrap_err(),
            TooManyDevices {
                device: "extra".into()
            }
        );
        // An existing one is still found.
        assert!(m.device(&format!("{:032x}", 0)).is_ok());
        let text = m.exposition("b");
        assert!(text.len() < lockstep_limits::MAX_METRICS_BYTES);
        assert!(crate::parse(&text).is_ok());
    }
}
