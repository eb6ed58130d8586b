//! Verification of a node's claims, as plain data and functions (no I/O):
//! the CLI and referees drive these with what they fetch.
//!
//! - [`dataflow`]: for every trace leaf (op execution) of a validated
//!   program, its op and where each of its inputs comes from.
//! - [`compare`]: a local re-execution against a receipt.
//! - [`sample`]: seeded spot-check sampling and the probability that a
//!   cheating node escapes it.
//! - [`proof`]: one leaf's hash with its audit path, checked against a root.
//! - [`bisect`]: the dispute search over two parties' traces.
//! - [`dispute`]: the dispute record a referee signs, and its checker.
//!
//! The three levels of assurance and their costs: docs/verification.md.

#![forbid(unsafe_code)]

pub mod bisect;
pub mod compare;
pub mod dataflow;
pub mod dispute;
pub mod proof;
pub mod sample;

pub use bisect::{BisectError, Bisection, Party, Step};
pub use compare::{compare, CompareError, Comparison};
pub use dataflow::{Dataflow, LeafFlow, Source};
pub use dispute::{
    DisputeError, DisputeRecord, DisputedOp, OpInput, PartyClaim, RefereeResult, Verdict,
    DISPUTE_FORMAT,
};
pub use proof::{LeafProof, ProofError};
pub use sample::{escape_bound, escape_probability, sample, sample_size};
