//! A benchmark, not a test (ignored; performance is never asserted): the
//! inventory's side of `lockstep-fleet list` and `bundle push --all` with
//! 1,000 nodes, on SQLite and on PostgreSQL (a throw-away local server,
//! tests/support/pg.rs). Figures: docs/benchmarks.md.
//!
//! ```sh
//! LOCKSTEP_PG_DURABLE=1 cargo test -p lockstep-fleet --test inventory_bench -- --ignored --nocapture
//! ```
//!
//! `LOCKSTEP_PG_DURABLE=1` runs the PostgreSQL server with its default
//! durability (fsync on every commit), as SQLite's commits are; without it
//! the test server's fsync is off and PostgreSQL's figures flatter it.
//!
//! What is timed, per database (median of `RUNS`):
//! - enrol: 1,000 `upsert_node` calls, one write transaction each (what
//!   1,000 `enroll` commands write), in one process;
//! - `list` and `list --json`: the whole `lockstep-fleet` process (start,
//!   open and migrate check, read 1,000 rows, print), output discarded;
//! - push, inventory side: what `bundle push --all` does around the
//!   network part, through the library: open, latest release, read the
//!   targets (every node), close; open again and record 1,000 outcomes
//!   (`set_bundle`, one transaction each). Pushing to 1,000 real nodes is
//!   not possible here; the network part is measured in "Fleet enrollment
//!   and bundle push on loopback".

#[path = "support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_fleet::inventory::{Backend, Inventory, NodeRecord, Release};
use lockstep_identity::KeyProtection;
use lockstep_protocol::admin::AdminReply;

const NODES: usize = 1_000;
const RUNS: usize = 5;

fn node(i: usize) -> NodeRecord {
    NodeRecord {
        node_id: format!("RWQbench{i:05}{}", "x".repeat(40)),
        address: format!("10.0.{}.{}:4433", i / 250, i % 250),
        device_fingerprint: "f".repeat(64),
        device: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
        bundle_id: "b".repeat(64),
        bundle_version: 1,
        image_version: "lockstepd 0.1.0".into(),
        certified: false,
        certification_report_sha256: None,
        key_protection: KeyProtection::TpmSealed,
        enrolled_at: format!("2026-12-03T12:{:02}:{:02}Z", i / 60 % 60, i % 60),
        revoked_at: None,
        attestation_sha256: Some("a".repeat(64)),
        attested_release: Some("lockstep-0.1.0".into()),
        slot: Some("a".into()),
        image_variant: Some("lavapipe".into()),
        update_floor: Some(1),
        rolled_back_from: None,
        last_update: None,
        last_update_version: None,
        last_update_at: None,
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn cli(dir: &Path, db: Option<&str>, args: &[&str]) -> Duration {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep-fleet"));
    cmd.arg("--dir")
        .arg(dir)
        .env_remove("LOCKSTEP_FLEET_DB")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(db) = db {
        cmd.args(["--db", db]);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn bench(name: &str, db: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let backend = Backend::parse(db).unwrap();
    cli(dir, db, &["init", "--unencrypted"]);

    let mut enrol = Vec::new();
    for run in 0..RUNS {
        let mut inv = Inventory::open_in(dir, &backend).unwrap();
        let start = Instant::now();
        for i in 0..NODES {
            let mut n = node(i);
            n.bundle_version = run as u64;
            inv.upsert_node(&n).unwrap();
        }
        enrol.push(start.elapsed());
    }
    Inventory::open_in(dir, &backend)
        .unwrap()
        .add_release(&Release {
            version: 2,
            bundle_id: "c".repeat(64),
            dir: "/fleet/bundle".into(),
            signed_at: "2026-12-03T13:00:00Z".into(),
        })
        .unwrap();

    let list: Vec<_> = (0..RUNS).map(|_| cli(dir, db, &["list"])).collect();
    let json: Vec<_> = (0..RUNS)
        .map(|_| cli(dir, db, &["list", "--json"]))
        .collect();

    let (mut select, mut record) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let inv = Inventory::open_in(dir, &backend).unwrap();
        let release = inv.latest_release().unwrap().unwrap();
        let targets: Vec<NodeRecord> = inv
            .nodes()
            .unwrap()
            .into_iter()
            .filter(|n| n.revoked_at.is_none())
            .collect();
        drop(inv);
        select.push(start.elapsed());
        assert_eq!(targets.len(), NODES);
        let start = Instant::now();
        let mut inv = Inventory::open_in(dir, &backend).unwrap();
        for t in &targets {
            let reply = AdminReply {
                ok: true,
                message: "switched".into(),
                bundle_id: release.bundle_id.clone(),
                bundle_version: release.version,
                certified: false,
                certification_report_sha256: None,
                registration: None,
                metrics: None,
            };
            inv.set_bundle(&t.node_id, &reply, "2026-12-03T13:01:00Z")
                .unwrap();
        }
        record.push(start.elapsed());
    }
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        ms(median(enrol)),
        ms(median(list)),
        ms(median(json)),
        ms(median(select)),
        ms(median(record)),
    );
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture (docs/benchmarks.md)"]
fn list_and_push_with_1000_nodes() {
    println!(
        "| database | enrol 1,000 (1,000 transactions) | `list` (process) | `list --json` (process) | push: read targets | push: record 1,000 outcomes |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    bench("SQLite (file in the fleet directory)", None);
    let url = pg::database_url();
    let durable = std::env::var_os("LOCKSTEP_PG_DURABLE").is_some();
    bench(
        if durable {
            "PostgreSQL (local, TCP loopback)"
        } else {
            "PostgreSQL (local, TCP loopback, fsync OFF)"
        },
        Some(&url),
    );
}
