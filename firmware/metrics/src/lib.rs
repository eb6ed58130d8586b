//! Lockstep's metrics, without I/O.
//!
//! - [`node`]: the node's fixed registry ([`NodeMetrics`], one
//!   [`DeviceMetrics`] per device): atomic counters and gauges, so the
//!   daemon's network tasks and its worker thread bump them without locks,
//!   and a job latency [`Histogram`] with fixed bucket bounds.
//! - [`exposition`]: the data model of the Prometheus text exposition
//!   format 0.0.4 ([`Family`], [`Sample`]) and its encoder.
//! - [`parse`]: the fleet's strict, bounded parser of exactly what the
//!   encoder writes ([`parse()`](parse::parse)).
//! - [`fleet`]: a node's families relabelled with `node="<id>"` and many
//!   nodes merged into one exposition (one HELP and TYPE per family).
//!
//! **Architecture Invariant:** this crate knows nothing of QUIC, Vulkan or
//! files: it counts, encodes and parses text. The daemon decides when to
//! count; the fleet decides where the text goes.

#![forbid(unsafe_code)]

pub mod exposition;
pub mod fleet;
pub mod node;
pub mod parse;

pub use exposition::{encode, Family, Kind, Sample};
pub use fleet::{MergeError, Merged};
pub use node::{
    DeviceMetrics, Histogram, NodeMetrics, Outcome, Refusal, TooManyDevices, JOB_DURATION_BOUNDS_S,
};
pub use parse::{parse, ParseError};
