//! Admission: what strangers may make this node hold, as budgets.
//!
//! Nothing from the network is kept before it is admitted. Every connection
//! takes a slot (node-wide and per source), every frame being assembled
//! reserves its bytes from its connection's buffer budget and the node-wide
//! memory budget at its header, and every job reserves its program, inputs
//! and outputs from the node-wide budget before its first input byte is
//! accepted. A reservation is released when its guard is dropped, however
//! the work ends. A refusal is immediate (`Busy`, or `TooLarge` for what
//! could never fit), so the node answers the next honest request instead of
//! queueing behind an attacker. The figures are in `lockstep-limits`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lockstep_protocol::{FrameError, FrameKind};

/// Who a request is from, as far as the node can tell without client
/// certificates: an IPv4 address, or an IPv6 /56 (the block one customer
/// usually holds whole, so counting single IPv6 addresses, or /64s, would
/// count nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    pub fn of(addr: SocketAddr) -> Source {
        match addr.ip() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix: [u8; 8] = o[..8].try_into().expect("8 of 16 bytes");
                    prefix[7] = 0;
                    Source::V6Prefix(prefix)
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(o) => write!(f, "{}.{}.{}.{}", o[0], o[1], o[2], o[3]),
            Source::V6Prefix(o) => {
                for (i, pair) in o.chunks(2).enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
                }
                f.write_str("::/56")
            }
        }
    }
}

/// A counted resource (bytes, jobs) with a hard limit.
#[derive(Debug)]
pub struct Budget {
    name: &'static str,
    limit: u64,
    used: AtomicU64,
    /// The most ever reserved at once, for the figures in benchmarks.
    peak: AtomicU64,
}

/// A share of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    amount: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.amount, Ordering::AcqRel);
        debug_assert!(
            before >= self.amount,
            "budget {} underflow",
            self.budget.name
        );
    }
}

impl Budget {
    pub fn new(name: &'static str, limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            name,
            limit,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// Reserves `amount` if it fits now; never waits.
    pub fn try_reserve(self: &Arc<Self>, amount: u64) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let next = used.checked_add(amount).filter(|&n| n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::AcqRel);
                    return Some(Reservation {
                        budget: self.clone(),
                        amount,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// One line for a refusal: what is full and how full.
    pub fn refusal(&self, amount: u64) -> String {
        format!(
            "the node's {} budget is full ({} of {} in use, {} asked); retry later",
            self.name,
            self.used(),
            self.limit,
            amount
        )
    }
}

/// Why a [`SourceGate`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateFull {
    /// Every slot node-wide is taken.
    Total { limit: usize },
    /// This source holds all the slots it may.
    Source { source: Source, limit: usize },
}

impl fmt::Display for GateFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateFull::Total { limit } => write!(f, "all {limit} slots of the node are taken"),
            GateFull::Source { source, limit } => {
                write!(f, "{source} already holds its {limit} slots")
            }
        }
    }
}

/// Slots counted node-wide and per source (connections, evidence turns).
#[derive(Debug)]
pub struct SourceGate {
    total_max: usize,
    per_source_max: usize,
    /// (slots taken, per source). The map only holds sources with a slot,
    /// so it is bounded by `total_max` entries.
    state: Mutex<(usize, HashMap<Source, usize>)>,
}

/// A slot of a [`SourceGate`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<SourceGate>,
    source: Source,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if let Some(n) = state.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                state.1.remove(&self.source);
            }
        }
    }
}

impl SourceGate {
    pub fn new(total_max: usize, per_source_max: usize) -> Arc<SourceGate> {
        assert!(
            per_source_max <= total_max,
            "a source cannot get more than all"
        );
        Arc::new(SourceGate {
            total_max,
            per_source_max,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for `source` if one is free for it now.
    pub fn try_enter(self: &Arc<Self>, source: Source) -> Result<Slot, GateFull> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= self.total_max {
            return Err(GateFull::Total {
                limit: self.total_max,
            });
        }
        let mine = state.1.get(&source).copied().unwrap_or(0);
        if mine >= self.per_source_max {
            return Err(GateFull::Source {
                source,
                limit: self.per_source_max,
            });
        }
        state.0 += 1;
        state.1.insert(source, mine + 1);
        debug_assert!(state.1.len() <= self.total_max);
        Ok(Slot {
            gate: self.clone(),
            source,
        })
    }

    /// Slots taken now.
    #[cfg(test)]
    pub fn taken(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// Bytes counted per source against a per-source maximum (one source's
/// share of a node-wide budget).
#[derive(Debug)]
pub struct SourceBytes {
    name: &'static str,
    per_source_max: u64,
    /// Only sources holding bytes; bounded by the connections that can
    /// hold them.
    held: Mutex<HashMap<Source, u64>>,
}

/// A source's share, given back when dropped.
#[derive(Debug)]
pub struct SourceShare {
    bytes: Arc<SourceBytes>,
    source: Source,
    amount: u64,
}

impl Drop for SourceShare {
    fn drop(&mut self) {
        let mut held = self.bytes.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.source) {
            *n -= self.amount;
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

impl SourceBytes {
    pub fn new(name: &'static str, per_source_max: u64) -> Arc<SourceBytes> {
        Arc::new(SourceBytes {
            name,
            per_source_max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The most one source may hold.
    pub fn limit(&self) -> u64 {
        self.per_source_max
    }

    pub fn try_reserve(
        self: &Arc<Self>,
        source: Source,
        amount: u64,
    ) -> Result<SourceShare, String> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(&source).copied().unwrap_or(0);
        match mine.checked_add(amount).filter(|&n| n <= self.per_source_max) {
            Some(n) => {
                held.insert(source, n);
                Ok(SourceShare {
                    bytes: self.clone(),
                    source,
                    amount,
                })
            }
            None => Err(format!(
                "{source} already holds {mine} bytes of the node's {} (at most {} per source); retry when its jobs finish",
                self.name, self.per_source_max
            )),
        }
    }
}

/// The node-wide budgets, shared by every connection.
#[derive(Debug)]
pub struct NodeBudgets {
    /// Host bytes admitted jobs hold (program, live tensors, outputs).
    pub memory: Arc<Budget>,
    /// One source's share of `memory`.
    pub memory_per_source: Arc<SourceBytes>,
    /// Host bytes of frames being assembled, all connections together: a
    /// separate share, so jobs never crowd out control frames.
    pub frames: Arc<Budget>,
    /// One source's share of `frames`.
    pub frames_per_source: Arc<SourceBytes>,
    /// Jobs receiving inputs, queued, or running, per source and in all.
    pub jobs: Arc<SourceGate>,
    pub connections: Arc<SourceGate>,
    /// Evidence turns per source (the node-wide turns are a semaphore in
    /// evidence.rs, so requests wait their turn rather than fail).
    pub evidence: Arc<SourceGate>,
    /// Jobs fetching referenced inputs from other nodes, per source and in
    /// all (each fetch also takes one of the node-wide fetch turns in
    /// peer_fetch.rs).
    pub fetches: Arc<SourceGate>,
    /// Attestations running (the TPM is one device): at most
    /// `MAX_ATTESTATIONS_IN_FLIGHT`, node-wide.
    pub attestations: Arc<Budget>,
}

impl NodeBudgets {
    /// `devices`: the node's devices; each adds a queue and a running job
    /// to the job slots.
    pub fn new(
        memory_bytes: u64,
        connections_max: usize,
        per_source_max: usize,
        devices: usize,
    ) -> NodeBudgets {
        assert!(devices >= 1, "a node has at least one device");
        let jobs_max = lockstep_limits::MAX_ADMITTED_JOBS * devices;
        let frames = memory_bytes / lockstep_limits::FRAME_BUDGET_SHARE_DIV;
        let jobs = memory_bytes - frames;
        NodeBudgets {
            memory: Budget::new("job memory", jobs),
            memory_per_source: SourceBytes::new(
                "job memory",
                jobs / lockstep_limits::JOB_MEMORY_SOURCES_MIN,
            ),
            frames: Budget::new("frame buffer", frames),
            frames_per_source: SourceBytes::new(
                "frame buffer",
                frames / lockstep_limits::FRAME_BUDGET_SOURCES_MIN,
            ),
            // One source never holds every slot (with one device, exactly
            // MAX_ADMITTED_JOBS_PER_SOURCE).
            jobs: SourceGate::new(jobs_max, jobs_max - 1),
            connections: SourceGate::new(connections_max, per_source_max.min(connections_max)),
            evidence: SourceGate::new(
                lockstep_limits::MAX_CONCURRENT_EVIDENCE,
                lockstep_limits::MAX_CONCURRENT_EVIDENCE_PER_SOURCE,
            ),
            fetches: SourceGate::new(
                lockstep_limits::MAX_ADMITTED_JOBS,
                lockstep_limits::MAX_PEER_FETCHES_PER_SOURCE,
            ),
            attestations: Budget::new(
                "attestation",
                lockstep_limits::MAX_ATTESTATIONS_IN_FLIGHT as u64,
            ),
        }
    }
}

/// One connection's view: who it is, and its own frame buffer budget.
#[derive(Debug, Clone)]
pub struct Peer {
    pub source: Source,
    pub frames: Arc<Budget>,
    /// The node-wide frame budget, and this source's share of it.
    pub memory: Arc<Budget>,
    pub source_frames: Arc<SourceBytes>,
    /// The connection's TLS exporter value under `FETCH_EXPORTER_LABEL`:
    /// what a peer fetch's proof is bound to (peer_serve.rs). `None` when
    /// it could not be derived (then no fetch is served on it).
    pub exporter: Option<[u8; 32]>,
}

impl Peer {
    pub fn new(source: Source, node: &NodeBudgets) -> Peer {
        Peer {
            source,
            frames: Budget::new(
                "connection frame buffer",
                lockstep_limits::CONNECTION_FRAME_BUFFER_BYTES_MAX,
            ),
            memory: node.frames.clone(),
            source_frames: node.frames_per_source.clone(),
            exporter: None,
        }
    }

    /// The admission check a stream's frame reader runs at every header:
    /// the frame's bytes are reserved from this connection's buffer budget
    /// and the node's memory budget until the next frame's header (by then
    /// the frame has been handed on: decoded, or counted into a job's own
    /// reservation).
    pub fn frame_admission(&self) -> lockstep_transport::frames::Admission {
        let peer = self.clone();
        let mut held: Option<(Reservation, SourceShare, Reservation)> = None;
        Box::new(move |_kind: FrameKind, len: usize| {
            drop(held.take());
            let len = len as u64;
            let conn = peer
                .frames
                .try_reserve(len)
                .ok_or_else(|| FrameError::Refused(peer.frames.refusal(len)))?;
            let source = peer
                .source_frames
                .try_reserve(peer.source, len)
                .map_err(FrameError::Refused)?;
            let node = peer
                .memory
                .try_reserve(len)
                .ok_or_else(|| FrameError::Refused(peer.memory.refusal(len)))?;
            let _previous = held.replace((conn, source, node));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::of(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn the_service_unit_is_sized_from_the_budgets() {
        let unit = include_str!("../../../image/overlay/etc/systemd/system/lockstepd.service");
        let value = |key: &str| -> &str {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in lockstepd.service"))
        };
        let envelope = lockstep_limits::node_memory_envelope_bytes(
            lockstep_limits::DEFAULT_NODE_MEMORY_BUDGET_BYTES,
        );
        let gib = envelope.div_ceil(1 << 30);
        assert_eq!(value("MemoryMax="), format!("{gib}G"));
        assert_eq!(
            value("Environment=BLOCKING_MAX_THREADS="),
            lockstep_limits::BLOCKING_THREADS_MAX.to_string()
        );
        let tasks: usize = value("TasksMax=").parse().unwrap();
        assert!(tasks > lockstep_limits::BLOCKING_THREADS_MAX + 64);
    }

    #[test]
    fn sources_are_ipv4_addresses_or_ipv6_slash_64s() {
        assert_eq!(src("10.0.0.1:5"), src("10.0.0.1:6"));
        assert_ne!(src("10.0.0.1:5"), src("10.0.0.2:5"));
        assert_eq!(src("[2001:db8::1]:5"), src("[2001:db8::ffff:1]:9"));
        assert_eq!(src("[2001:db8::1]:5"), src("[2001:db8:0:ff::1]:5"));
        assert_ne!(src("[2001:db8::1]:5"), src("[2001:db8:0:100::1]:5"));
        assert_eq!(src("[::ffff:10.0.0.1]:5"), src("10.0.0.1:7"));
        assert_eq!(src("[2001:db8::1]:5").to_string(), "2001:db8:0:0::/56");
    }

    #[test]
    fn budgets_refuse_what_does_not_fit_and_take_back_on_drop() {
        let b = Budget::new("memory", 100);
        let a = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let c = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        assert!(b.try_reserve(1).is_none());
        assert!(b.try_reserve(u64::MAX).is_none());
        drop(a);
        assert_eq!(b.used(), 40);
        drop(c);
        assert_eq!((b.used(), b.peak()), (0, 100));
        assert!(b.refusal(7).contains("memory budget is full"));
    }

    #[test]
    fn gates_count_per_source_and_in_all() {
        let g = SourceGate::new(3, 2);
        let a1 = g.try_enter(src("10.0.0.1:1")).unwrap();
        let _a2 = g.try_enter(src("10.0.0.1:2")).unwrap();
        assert!(matches!(
            g.try_enter(src("10.0.0.1:3")),
            Err(GateFull::Source { limit: 2, .. })
        ));
        let _b1 = g.try_enter(src("10.0.0.2:1")).unwrap();
        assert_eq!(
            g.try_enter(src("10.0.0.3:1")).unwrap_err(),
            GateFull::Total { limit: 3 }
        );
        drop(a1);
        assert_eq!(g.taken(), 2);
        let _c = g.try_enter(src("10.0.0.3:1")).unwrap();
        assert_eq!(g.state.lock().unwrap().1.len(), 3);
    }

    #[test]
    fn frame_admission_holds_one_frame_per_stream_against_both_budgets() {
        let node = NodeBudgets::new(8 << 20, 4, 4, 1);
        let peer = Peer::new(src("10.0.0.1:1"), &node);
        let mut admit = peer.frame_admission();
        admit(FrameKind::Control, 1000).unwrap();
        assert_eq!((peer.frames.used(), node.frames.used()), (1000, 1000));
        // Frames never draw on the jobs' memory.
        assert_eq!(node.memory.used(), 0);
        // The next header releases the previous frame's share first.
        admit(FrameKind::Data, 10).unwrap();
        assert_eq!(node.frames.used(), 10);
        let err = admit(FrameKind::Control, 2 << 20).unwrap_err();
        assert!(matches!(err, FrameError::Refused(_)), "{err}");
        drop(admit);
        assert_eq!((peer.frames.used(), node.frames.used()), (0, 0));
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_job_memory() {
        let node = NodeBudgets::new(800, 4, 4, 1);
        let limit = node.memory.limit();
        assert_eq!(limit, 700);
        let a = src("10.0.0.1:1");
        let first = node.memory_per_source.try_reserve(a, 300).unwrap();
        assert!(node.memory_per_source.try_reserve(a, 51).is_err());
        let _b = node
            .memory_per_source
            .try_reserve(src("10.0.0.2:1"), 350)
            .unwrap();
        drop(first);
        assert!(node.memory_per_source.try_reserve(a, 350).is_ok());
    }
}
