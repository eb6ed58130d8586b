//! The node's devices: one worker thread and one bounded queue each, a
//! certification per device UUID, counters, and whether the device still
//! serves. Network tasks pick a device here; only that device's worker ever
//! touches its backend.
//!
//! Picking is fair and isolated: a job that names a device runs there or
//! is refused (`NoSuchDevice`, with the serving devices listed); a job that
//! names none goes to the serving device with the shortest queue, lowest
//! index first. A device out of service (lost, or it failed a new bundle's
//! self-test) is never picked again in this process: its worker fails what
//! was already queued on it with `DeviceLost`, and every other device keeps
//! serving.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lockstep_limits::{JOB_QUEUE_BOUND, MAX_NODE_DEVICES};
use lockstep_protocol::{DeviceSelector, DeviceStatus, ErrorKind, JobError};

use crate::certification::Certification;
use crate::worker::{Counters, JobQueue};

/// One queue per possible device, for the life of the process: workers
/// borrow theirs for `'static`.
pub static QUEUES: [JobQueue; MAX_NODE_DEVICES] = [const { JobQueue::new() }; MAX_NODE_DEVICES];

/// One device of the node.
pub struct DeviceSlot {
    /// Its index among the node's devices (the order they were opened in).
    pub index: u32,
    pub name: String,
    /// `deviceUUID` as 32 lower-case hex digits.
    pub uuid: String,
    /// SHA-256 (hex) of the canonical JSON of its device record.
    pub fingerprint: String,
    /// Device-local memory, if the device has its own: a job's live
    /// tensors must fit it (each device is its own memory budget).
    pub memory_bytes: Option<u64>,
    pub queue: &'static JobQueue,
    pub counters: Counters,
    /// Its part of the node's metrics (`device` label: its UUID, or
    /// `UUID/INDEX` when another device of the node has the same UUID).
    pub metrics: Arc<lockstep_metrics::DeviceMetrics>,
    /// Jobs queued on it or running there now.
    load: AtomicUsize,
    /// Jobs ever given to it: among equally loaded devices the one given
    /// fewest goes first, so light traffic spreads too.
    assigned: AtomicU64,
    /// Shared by the devices with this UUID (a report binds a UUID).
    pub certification: Arc<Certification>,
    /// Why it is out of service; `None` while it serves.
    problem: Mutex<Option<String>>,
}

impl DeviceSlot {
    pub fn new(
        index: u32,
        name: String,
        uuid: String,
        fingerprint: String,
        memory_bytes: Option<u64>,
        certification: Arc<Certification>,
        metrics: Arc<lockstep_metrics::DeviceMetrics>,
    ) -> DeviceSlot {
        assert!(
            (index as usize) < MAX_NODE_DEVICES,
            "device index past MAX_NODE_DEVICES"
        );
        DeviceSlot {
            index,
            name,
            uuid,
            fingerprint,
            memory_bytes,
            queue: &QUEUES[index as usize],
            counters: Counters::default(),
            metrics,
            load: AtomicUsize::new(0),
            assigned: AtomicU64::new(0),
            certification,
            problem: Mutex::new(None),
        }
    }

    /// Counts a job as on this device until the returned guard drops (the
    /// worker drops it with the job).
    pub fn take_job(self: &Arc<Self>) -> OnDevice {
        self.load.fetch_add(1, Ordering::SeqCst);
        self.assigned.fetch_add(1, Ordering::Relaxed);
        OnDevice(self.clone())
    }

    /// Why the device is out of service, if it is.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the device out of service for the rest of this process; the
    /// first reason stays.
    pub fn take_out_of_service(&self, why: String) {
        let mut problem = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if problem.is_none() {
            tracing::error!(device = self.index, uuid = %self.uuid, reason = %why, "device out of service; the node's other devices keep serving");
            *problem = Some(why);
        }
    }

    /// Why this device takes no jobs for `bundle_id` now, if it does not.
    pub fn refusal(&self, bundle_id: &str) -> Option<String> {
        if let Some(p) = self.problem() {
            return Some(format!("device {} is out of service: {p}", self.index));
        }
        self.certification.may_serve(bundle_id).err()
    }

    pub fn status(&self, bundle_id: &str) -> DeviceStatus {
        let problem = self.problem();
        DeviceStatus {
            index: self.index,
            name: self.name.clone(),
            uuid: self.uuid.clone(),
            serving: self.refusal(bundle_id).is_none(),
            certified: self.certification.receipts_certified(bundle_id),
            certification: self.certification.status_line(bundle_id),
            queue_depth: self.queue.len() as u32,
            queue_bound: JOB_QUEUE_BOUND as u32,
            jobs_done: self.counters.done.load(Ordering::Relaxed),
            jobs_failed: self.counters.failed.load(Ordering::Relaxed),
            problem,
        }
    }
}

impl std::fmt::Debug for DeviceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSlot")
            .field("index", &self.index)
            .field("uuid", &self.uuid)
            .field("problem", &self.problem())
            .finish_non_exhaustive()
    }
}

/// A job counted on a device (queued or running); uncounted on drop.
pub struct OnDevice(Arc<DeviceSlot>);

impl Drop for OnDevice {
    fn drop(&mut self) {
        self.0.load.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every device of the node, in index order.
pub struct Devices {
    slots: Vec<Arc<DeviceSlot>>,
}

impl Devices {
    pub fn new(slots: Vec<Arc<DeviceSlot>>) -> Devices {
        assert!(!slots.is_empty(), "a node has at least one device");
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(s.index as usize, i, "devices are held in index order");
        }
        Devices { slots }
    }

    pub fn all(&self) -> &[Arc<DeviceSlot>] {
        &self.slots
    }

    /// The distinct certifications, one per device UUID, in index order of
    /// their first device.
    pub fn certifications(&self) -> Vec<Arc<Certification>> {
        let mut out: Vec<Arc<Certification>> = Vec::new();
        for s in &self.slots {
            if !out.iter().any(|c| Arc::ptr_eq(c, &s.certification)) {
                out.push(s.certification.clone());
            }
        }
        out
    }

    /// The device a job whose live tensors peak at `peak_bytes` runs on
    /// (see the module docs): only a device whose memory holds that peak.
    pub fn pick(
        &self,
        selector: Option<DeviceSelector>,
        bundle_id: &str,
        peak_bytes: u64,
    ) -> Result<&Arc<DeviceSlot>, JobError> {
        let serving: Vec<&Arc<DeviceSlot>> = self
            .slots
            .iter()
            .filter(|s| s.refusal(bundle_id).is_none())
            .collect();
        let fits = |s: &DeviceSlot| s.memory_bytes.is_none_or(|m| peak_bytes <= m);
        let too_large = |s: &DeviceSlot| {
            JobError {
            kind: ErrorKind::TooLarge,
            message: format!(
                "the program's live tensors peak at {peak_bytes} bytes; device {} has {} bytes of memory",
                s.index,
                s.memory_bytes.unwrap_or(0)
            ),
        }
        };
        let Some(selector) = selector else {
            if let Some(biggest) = serving
                .iter()
                .filter(|s| s.memory_bytes.is_some())
                .max_by_key(|s| s.memory_bytes)
            {
                if !serving.iter().any(|s| fits(s)) {
                    return Err(too_large(biggest));
                }
            }
            return serving
                .iter()
                .filter(|s| fits(s))
                .min_by_key(|s| {
                    let load = s.load.load(Ordering::SeqCst);
                    (load, s.assigned.load(Ordering::Relaxed), s.index)
                })
                .copied()
                .ok_or_else(|| self.none_serving(bundle_id));
        };
        let named = self.slots.iter().find(|s| match selector {
            DeviceSelector::Index(i) => s.index == i,
            DeviceSelector::Uuid(u) => s.uuid == hex::encode(u) && s.refusal(bundle_id).is_none(),
        });
        let Some(named) = named else {
            return Err(JobError {
                kind: ErrorKind::NoSuchDevice,
                message: format!(
                    "this node has no serving {selector}; {}",
                    self.serving_line(&serving)
                ),
            });
        };
        match named.refusal(bundle_id) {
            None if !fits(named) => Err(too_large(named)),
            None => Ok(named),
            Some(why) => Err(JobError {
                kind: ErrorKind::NoSuchDevice,
                message: format!("{why}; {}", self.serving_line(&serving)),
            }),
        }
    }

    fn serving_line(&self, serving: &[&Arc<DeviceSlot>]) -> String {
        if serving.is_empty() {
            "no device serves now (see `lockstep status`)".into()
        } else {
            let list: Vec<String> = serving
                .iter()
                .map(|s| format!("{} ({})", s.index, s.uuid))
                .collect();
            format!("serving devices: {}", list.join(", "))
        }
    }

    /// Why a job that names no device is refused: the first device's
    /// refusal says it when the node has one device (the message tests and
    /// users of single-device nodes know), else each device's.
    fn none_serving(&self, bundle_id: &str) -> JobError {
        let reasons: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| s.refusal(bundle_id))
            .collect();
        let uncertified = self
            .slots
            .iter()
            .all(|s| s.problem().is_none() && s.certification.may_serve(bundle_id).is_err());
        JobError {
            kind: if uncertified {
                ErrorKind::Uncertified
            } else {
                ErrorKind::NoSuchDevice
            },
            message: reasons.join("; "),
        }
    }

    /// Whether receipts from any device say certified.
    pub fn any_certified(&self, bundle_id: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.certification.receipts_certified(bundle_id))
    }

    /// Jobs queued on every device.
    pub fn queue_depth(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }

    pub fn jobs_done(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.counters.done.load(Ordering::Relaxed))
            .sum()
    }

    pub fn jobs_failed(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.counters.failed.load(Ordering::Relaxed))
            .sum()
    }

    /// The devices' names, as one line (status, admin info).
    pub fn names(&self) -> String {
        if self.slots.len() == 1 {
            return self.slots[0].name.clone();
        }
        let names: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("{}: {}", s.index, s.name))
            .collect();
        format!("{} devices ({})", self.slots.len(), names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "bundle";

    /// Devices 0..n with the given UUIDs; `serving[i]` false makes device
    /// i uncertified (no report, no override).
    fn devices(uuids: &[&str], serving: &[bool]) -> (tempfile::TempDir, Devices) {
        let dir = tempfile::tempdir().unwrap();
        let slots = uuids
            .iter()
            .zip(serving)
            .enumerate()
            .map(|(i, (uuid, &serves))| {
                let c = Arc::new(Certification::new(
                    &dir.path().join(i.to_string()),
                    "node".into(),
                    vec![],
                    serves,
                    None,
                ));
                Arc::new(DeviceSlot::new(
                    i as u32,
                    format!("gpu {i}"),
                    uuid.to_string(),
                    "fp".into(),
                    Some(1 << 20 << i),
                    c,
                    Arc::new(lockstep_metrics::DeviceMetrics::new(uuid)),
                ))
            })
            .collect();
        (dir, Devices::new(slots))
    }

    fn uuid(byte: u8) -> String {
        hex::encode([byte; 16])
    }

    #[test]
    fn unnamed_jobs_go_to_the_least_loaded_then_least_given() {
        let (_d, devices) = devices(&[&uuid(1), &uuid(2), &uuid(3)], &[true, true, true]);
        // Light traffic: each job finishes before the next; all three
        // devices still get turns.
        let mut picked = Vec::new();
        for _ in 0..6 {
            let slot = devices.pick(None, BUNDLE, 0).unwrap().clone();
            picked.push(slot.index);
            drop(slot.take_job());
        }
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
        // Heavy traffic: jobs held on 0 and 1 send the next to 2.
        let a = devices.all()[0].take_job();
        let b = devices.all()[1].take_job();
        assert_eq!(devices.pick(None, BUNDLE, 0).unwrap().index, 2);
        drop((a, b));
    }

    #[test]
    fn named_devices_by_index_or_uuid() {
        let (_d, devices) = devices(&[&uuid(1), &uuid(2), &uuid(2)], &[true, true, true]);
        let by_index = devices
            .pick(Some(DeviceSelector::Index(2)), BUNDLE, 0)
            .unwrap();
        assert_eq!(by_index.index, 2);
        let by_uuid = devices
            .pick(Some(DeviceSelector::Uuid([2; 16])), BUNDLE, 0)
            .unwrap();
        assert_eq!(by_uuid.index, 1, "the first serving device with the UUID");
        let e = devices
            .pick(Some(DeviceSelector::Index(3)), BUNDLE, 0)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSuchDevice);
        assert!(e.message.contains("serving devices: 0"), "{}", e.message);
    }

    #[test]
    fn devices_out_of_service_or_uncertified_are_never_picked() {
        let (_d, devices) = devices(&[&uuid(1), &uuid(2), &uuid(3)], &[true, false, true]);
        devices.all()[0].take_out_of_service("lost".into());
        devices.all()[0].take_out_of_service("a later reason".into());
        assert_eq!(devices.all()[0].problem().as_deref(), Some("lost"));
        for _ in 0..4 {
            let slot = devices.pick(None, BUNDLE, 0).unwrap().clone();
            assert_eq!(slot.index, 2);
            drop(slot.take_job());
        }
        for i in [0, 1] {
            let e = devices
                .pick(Some(DeviceSelector::Index(i)), BUNDLE, 0)
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::NoSuchDevice, "{}", e.message);
        }
        let status = devices.all()[0].status(BUNDLE);
        assert!(!status.serving);
        assert_eq!(status.problem.as_deref(), Some("lost"));
        devices.all()[2].take_out_of_service("lost too".into());
        let e = devices.pick(None, BUNDLE, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSuchDevice, "{}", e.message);
    }

    #[test]
    fn a_job_goes_only_to_a_device_whose_memory_holds_it() {
        // Devices of 1, 2 and 4 MiB.
        let (_d, devices) = devices(&[&uuid(1), &uuid(2), &uuid(3)], &[true, true, true]);
        for _ in 0..3 {
            let slot = devices.pick(None, BUNDLE, 3 << 20).unwrap().clone();
            assert_eq!(slot.index, 2);
            drop(slot.take_job());
        }
        let e = devices
            .pick(Some(DeviceSelector::Index(0)), BUNDLE, 2 << 20)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge, "{}", e.message);
        let e = devices.pick(None, BUNDLE, 5 << 20).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge, "{}", e.message);
        assert!(e.message.contains("device 2 has 4194304"), "{}", e.message);
    }

    #[test]
    fn a_node_with_no_certified_device_says_uncertified() {
        let (_d, devices) = devices(&[&uuid(1), &uuid(2)], &[false, false]);
        let e = devices.pick(None, BUNDLE, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Uncertified, "{}", e.message);
    }

    #[test]
    fn certifications_are_listed_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(Certification::new(
            dir.path(),
            "node".into(),
            vec![],
            true,
            None,
        ));
        let own = Arc::new(Certification::new(
            dir.path(),
            "node".into(),
            vec![],
            true,
            None,
        ));
        let slot = |i: u32, c: &Arc<Certification>| {
            Arc::new(DeviceSlot::new(
                i,
                "gpu".into(),
                uuid(i as u8),
                "fp".into(),
                None,
                c.clone(),
                Arc::new(lockstep_metrics::DeviceMetrics::new("d")),
            ))
        };
        let devices = Devices::new(vec![slot(0, &shared), slot(1, &own), slot(2, &shared)]);
        let listed = devices.certifications();
        assert_eq!(listed.len(), 2);
        assert!(Arc::ptr_eq(&listed[0], &shared) && Arc::ptr_eq(&listed[1], &own));
    }
}
