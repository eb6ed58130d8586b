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

fn start(dir: &std::path::Path, operator: &SigningKey) -> common::Node {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    common::start(
        &dir.join("state"),
        "cpu",
        &["--config", config.to_str().unwrap()],
    )
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
