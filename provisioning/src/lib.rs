//! `lockstep-fleet`: the fleet manager's tool.
//!
//! - [`attest`]: node attestation (the exchange, the fleet's EK roots and
//!   accepted images, transcripts).
//! - [`operator`]: the operator's minisign key pair in the fleet directory.
//! - [`inventory`]: the inventory, SQLite by default or PostgreSQL
//!   (migrations, transactions, busy timeout; docs/operations.md).
//! - [`session`]: an admin session with one node: challenge, proof of key
//!   possession, one signed command.
//! - [`release`]: signing a kernel bundle's release, reading a bundle for
//!   a push.
//! - [`push`]: a push across many nodes, every outcome reported.
//! - [`metrics`]: the fleet's metrics for Prometheus: every node's read
//!   over the admin channel, labelled, merged, served on a local HTTP port.
//! - [`image`]: the provisioning file written into an appliance image's
//!   ESP before flashing.
//! - [`update`]: in-place A/B image updates: reading and measuring an
//!   image's slot parts, update versions, rollout waves, one node's
//!   update until it is back healthy or rolled back.
//! - [`registry`]: signed identity records for a registry contract
//!   (docs/identity.md).
//! - [`chain`]: the on-chain NodeRegistry: the operator's chain key, the
//!   pinned bytecode and its check, a node's signed registration checked
//!   before any gas is spent.

#![forbid(unsafe_code)]

pub mod attest;
pub mod chain;
mod fanout;
pub mod image;
pub mod inventory;
pub mod metrics;
pub mod operator;
pub mod push;
pub mod registry;
pub mod release;
pub mod session;
pub mod update;

/// The throw-away PostgreSQL server of the inventory's tests.
#[cfg(test)]
#[path = "../tests/support/pg.rs"]
mod pg_test_server;

/// The current time as RFC 3339 UTC (what the inventory stores).
pub fn now() -> String {
    lockstep_protocol::rfc3339(std::time::SystemTime::now())
}
