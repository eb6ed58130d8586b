//! The node's metrics through the admin channel (protocol v7,
//! `AdminAction::Metrics`): a trusted operator reads counters that match
//! what the node did; anyone else is refused like for every admin action.

mod common;

use common::client::{admin, connect_from, job_id, one_op, submit};
use lockstep_identity::SigningKey;
use lockstep_metrics::{parse, Family};
use lockstep_protocol::admin::AdminAction;
use lockstep_protocol::Message;
use lockstep_tensor::{Fill, Tensor};

/// A config file that makes the node trust `operator`.
fn config(dir: &std::path::Path, operator: &SigningKey) -> String {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_string()
}

/// A node trusting `operator`, serving uncertified.
fn start(dir: &std::path::Path, operator: &SigningKey) -> common::Node {
    common::start(
        &dir.join("state"),
        "cpu",
        &["--config", &config(dir, operator)],
    )
}

/// A node trusting `operator`, with `extra` flags (without
/// `--uncertified` it refuses jobs: nobody certified it).
fn start_with(dir: &std::path::Path, operator: &SigningKey, extra: &[&str]) -> common::Node {
    let config = config(dir, operator);
    let mut flags = vec!["--config", config.as_str()];
    flags.extend_from_slice(extra);
    common::start_certified(&dir.join("state"), "cpu", &flags)
}

/// The operator's reading of the node's metrics.
async fn read(node: &common::Node, operator: &SigningKey) -> Vec<Family> {
    let (_, reply) = admin(node, operator, Some(AdminAction::Metrics), None, vec![]).await;
    let reply = reply.unwrap();
    assert!(reply.ok, "{}", reply.message);
    parse(&reply.metrics.unwrap()).unwrap()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(l, v)| s.labels.iter().any(|(sl, sv)| sl == l && sv == v))
        })
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

#[test]
fn an_operator_reads_counters_that_match_what_the_node_did() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    let node = start(dir.path(), &operator);
    smol::block_on(async {
        let conn = connect_from(&node, "127.0.0.1").await.unwrap();
        let x = Tensor::filled(vec![8], 7, Fill::Uniform).unwrap();
        for n in 0..2 {
            let reply = submit(&conn, job_id(0x3e, n), &one_op("relu", &[8]), &x)
                .await
                .unwrap();
            assert!(matches!(reply, Message::Done(_)), "{reply:?}");
        }
        // Announced with the wrong shape: refused before any data.
        let reply = submit(&conn, job_id(0x3e, 9), &one_op("relu", &[4]), &x)
            .await
            .unwrap();
        assert!(matches!(reply, Message::Rejected(_)), "{reply:?}");

        let (info, reply) = admin(&node, &operator, Some(AdminAction::Metrics), None, vec![]).await;
        let reply = reply.unwrap();
        assert!(reply.ok, "{}", reply.message);
        let text = reply
            .metrics
            .expect("a metrics reply carries the exposition");
        let m = parse(&text).unwrap();
        // The CPU backend's device UUID is all zeros.
        let device = ("device", "00000000000000000000000000000000");
        let jobs = |outcome| value(&m, "lockstep_jobs_total", &[device, ("outcome", outcome)]);
        assert_eq!(jobs("ok"), 2.0, "{text}");
        assert_eq!(jobs("failed"), 0.0);
        assert_eq!(jobs("timeout"), 0.0);
        assert_eq!(
            value(
                &m,
                "lockstep_jobs_refused_total",
                &[("reason", "bad_input")]
            ),
            1.0
        );
        assert_eq!(value(&m, "lockstep_busy_refusals_total", &[]), 0.0);
        assert_eq!(
            value(&m, "lockstep_job_duration_seconds_count", &[device]),
            2.0
        );
        assert_eq!(
            value(
                &m,
                "lockstep_job_duration_seconds_bucket",
                &[device, ("le", "+Inf")]
            ),
            2.0
        );
        // Two inputs in, two outputs out, 8 float32 values each.
        assert_eq!(value(&m, "lockstep_bytes_received_total", &[]), 64.0);
        assert_eq!(value(&m, "lockstep_bytes_sent_total", &[]), 64.0);
        assert_eq!(value(&m, "lockstep_evidence_retained_jobs", &[]), 2.0);
        assert!(value(&m, "lockstep_evidence_retained_bytes", &[]) > 64.0);
        assert_eq!(value(&m, "lockstep_queue_depth", &[device]), 0.0);
        // Served with --uncertified: no passing report.
        assert_eq!(value(&m, "lockstep_device_certified", &[device]), 0.0);
        assert_eq!(
            value(
                &m,
                "lockstep_build_info",
                &[("bundle_id", info.bundle_id.as_str())]
            ),
            1.0
        );
    });
}

#[test]
fn only_a_trusted_operator_reads_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    let node = start(dir.path(), &operator);
    let stranger = SigningKey::generate();
    let (_, reply) = smol::block_on(admin(
        &node,
        &stranger,
        Some(AdminAction::Metrics),
        None,
        vec![],
    ));
    let reply = reply.unwrap();
    assert!(!reply.ok);
    assert!(reply.metrics.is_none());
    assert!(reply.message.contains("not trusted"), "{}", reply.message);
    // The node keeps answering its operator.
    let (_, reply) = smol::block_on(admin(
        &node,
        &operator,
        Some(AdminAction::Metrics),
        None,
        vec![],
    ));
    assert!(reply.unwrap().metrics.is_some());
}

#[test]
fn a_job_past_its_time_limit_is_a_timeout_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    // No job can finish in 0 s: the node stops waiting at once, and the
    // worker drops the job when it reaches it.
    let node = start_with(
        dir.path(),
        &operator,
        &["--uncertified", "--job-timeout-s", "0"],
    );
    smol::block_on(async {
        let conn = connect_from(&node, "127.0.0.1").await.unwrap();
        let x = Tensor::filled(vec![8], 7, Fill::Uniform).unwrap();
        let reply = submit(&conn, job_id(0x3f, 1), &one_op("relu", &[8]), &x)
            .await
            .unwrap();
        assert!(
            matches!(&reply, Message::Rejected(e) if e.kind == lockstep_protocol::ErrorKind::Timeout),
            "{reply:?}"
        );
        let device = ("device", "00000000000000000000000000000000");
        // The worker counts the job when it reaches it, maybe after the
        // answer went out: wait for it, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let m = loop {
            let m = read(&node, &operator).await;
            let timeouts = value(&m, "lockstep_jobs_total", &[device, ("outcome", "timeout")]);
            if timeouts == 1.0 || std::time::Instant::now() > deadline {
                break m;
            }
            smol::Timer::after(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(
            value(&m, "lockstep_jobs_total", &[device, ("outcome", "timeout")]),
            1.0
        );
        assert_eq!(
            value(&m, "lockstep_jobs_total", &[device, ("outcome", "ok")]),
            0.0
        );
        // It reached the queue: not a refusal.
        for reason in ["timeout", "busy", "other"] {
            assert_eq!(
                value(&m, "lockstep_jobs_refused_total", &[("reason", reason)]),
                0.0,
                "{reason}"
            );
        }
    });
}

#[test]
fn an_uncertified_node_counts_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    let node = start_with(dir.path(), &operator, &[]);
    smol::block_on(async {
        let conn = connect_from(&node, "127.0.0.1").await.unwrap();
        let x = Tensor::filled(vec![8], 7, Fill::Uniform).unwrap();
        const REFUSED: u64 = 3;
        for n in 0..REFUSED {
            let reply = submit(&conn, job_id(0x40, n), &one_op("relu", &[8]), &x)
                .await
                .unwrap();
            assert!(
                matches!(&reply, Message::Rejected(e) if e.kind == lockstep_protocol::ErrorKind::Uncertified),
                "{reply:?}"
            );
        }
        let m = read(&node, &operator).await;
        let uncertified = ("reason", "uncertified");
        assert_eq!(
            value(&m, "lockstep_jobs_refused_total", &[uncertified]),
            REFUSED as f64
        );
        let device = ("device", "00000000000000000000000000000000");
        assert_eq!(value(&m, "lockstep_device_certified", &[device]), 0.0);
        assert_eq!(
            value(&m, "lockstep_jobs_total", &[device, ("outcome", "ok")]),
            0.0
        );
        assert_eq!(value(&m, "lockstep_bytes_received_total", &[]), 0.0);
    });
}
