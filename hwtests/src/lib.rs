//! `lockstep-certify`: the certification suite that proves a GPU + driver
//! pair keeps the float model before it serves (docs/certification.md).
//!
//! - [`probes`]: one dedicated probe kernel per float-model rule, with
//!   known IEEE-754 answers.
//! - [`cases`] and [`conformance`]: every op over fixed seeded inputs and
//!   the example programs, against golden SHA-256 hashes from the CPU
//!   reference (`hwtests/golden.json`).
//! - [`stability`]: repeated runs, alone and under load, give the same bits.
//! - [`diagnosis`]: every failure put down to a float-model property
//!   (subnormals flushed, rounding, contraction, signed zero, inf/NaN).
//! - [`suite`]: all of it, plus limits and performance, into a [`Report`].
//! - [`report`]: the report's canonical JSON, its signatures, and the checks
//!   a node makes before trusting one.
//!
//! The library does no I/O of its own but the backend's; the binary
//! (`src/main.rs`) opens devices, files and connections.

#![forbid(unsafe_code)]

pub mod cases;
pub mod conformance;
pub mod diagnosis;
mod probe_cases;
pub mod probes;
pub mod report;
pub mod stability;
pub mod suite;

pub use conformance::Golden;
pub use report::{
    format_rfc3339, parse_rfc3339, Check, DeviceIdentity, Mismatch, NotCertified, Report,
    ReportError, REPORT_FORMAT, REQUIRED_CHECKS, SUITE_VERSION,
};
pub use stability::LoadFactory;
pub use suite::{run as run_suite, Progress, SuiteOptions, DEFAULT_REPEATS};
