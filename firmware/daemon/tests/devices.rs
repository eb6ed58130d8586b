//! One node, several devices: three lavapipe devices (three copies of its
//! ICD manifest, which the Vulkan loader lists as three devices). Jobs
//! spread over the devices, each bit-identical to the CPU reference, and
//! receipts name the device that ran them; a named device runs the job or
//! refuses it; a lost device fails its job and leaves the others serving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod common;

use common::client::{ask, connect_from, one_op, submit_on};
use lockstep_backend::CpuBackend;
use lockstep_program::{execute, validate, ExecOptions, ValidateOptions};
use lockstep_protocol::{DeviceSelector, ErrorKind, Message, NodeStatus, Receipt};
use lockstep_tensor::{Fill, Tensor};

const DEVICES: usize = 3;

fn start(dir: &std::path::Path, extra: &[&str]) -> common::Node {
    let icds = common::lavapipe_icds(dir, DEVICES);
    let mut flags = vec!["--uncertified"];
    flags.extend_from_slice(extra);
    common::start_with_env(
        &dir.join("state"),
        "vulkan",
        &flags,
        &[("VK_ICD_FILENAMES", icds.as_os_str())],
    )
}

async fn status(node: &common::Node) -> NodeStatus {
    let conn = connect_from(node, "127.0.0.1").await.unwrap();
    match ask(&conn, &Message::StatusRequest, &[]).await.unwrap().0 {
        Message::Status(s) => s,
        other => panic!("status: {other:?}"),
    }
}

/// The job each test sends: an op with software transcendental twins (the
/// float model's hardest case) on its own input.
fn job(n: u64) -> (lockstep_program::Program, Tensor) {
    let op = ["softmax_rows", "gelu", "exp", "tanh"][n as usize % 4];
    let program = one_op(op, &[48, 257]);
    let x = Tensor::filled(vec![48, 257], 1000 + n, Fill::Uniform).unwrap();
    (program, x)
}

/// The receipt's output hash and trace root equal the CPU reference's.
fn check_against_reference(n: u64, receipt: &Receipt) {
    let (program, x) = job(n);
    let validated = validate(&program, &ValidateOptions::default()).unwrap();
    let inputs = BTreeMap::from([("x".to_string(), x)]);
    let report = execute(
        &validated,
        &mut CpuBackend::new(),
        inputs,
        ExecOptions::default(),
    )
    .unwrap();
    assert_eq!(
        receipt.outputs["y"],
        report.outputs["y"].sha256_hex(),
        "job {n}: output differs from the CPU reference"
    );
    assert_eq!(
        receipt.trace_root,
        hex::encode(report.trace.unwrap().root),
        "job {n}: trace root differs from the CPU reference"
    );
}

/// Submits job `n` (to `device`, if named) until it is not busy; the
/// node's verified receipt, or its refusal.
async fn run(
    node: &common::Node,
    source: &str,
    n: u64,
    device: Option<DeviceSelector>,
) -> Result<Receipt, lockstep_protocol::JobError> {
    let conn = connect_from(node, source).await.unwrap();
    let (program, x) = job(n);
    for _ in 0..100 {
        let id = common::client::job_id(7, n);
        match submit_on(&conn, id, &program, &x, device).await {
            Some(Message::Done(done)) => {
                return Ok(
                    Receipt::verify(&done.receipt, &done.signature, &node.node_id()).unwrap(),
                )
            }
            Some(Message::Busy { .. }) => smol::Timer::after(Duration::from_millis(100)).await,
            Some(Message::Rejected(e)) => return Err(e),
            other => panic!("job {n}: {other:?}"),
        };
    }
    panic!("job {n}: busy for 10 s");
}

#[test]
fn jobs_spread_over_every_device_and_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    smol::block_on(async {
        let before = status(&node).await;
        assert_eq!(before.devices.len(), DEVICES, "{before:?}");
        for (i, d) in before.devices.iter().enumerate() {
            assert_eq!(d.index as usize, i);
            assert!(d.serving && d.problem.is_none(), "{d:?}");
            assert_eq!(d.uuid.len(), 32);
        }

        // Six clients from three sources, four jobs each, all at once.
        let node = &node;
        let receipts: Vec<(u64, Receipt)> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..6u64)
                .map(|client| {
                    scope.spawn(move || {
                        let source = format!("127.0.0.{}", 1 + client % 3);
                        (0..4)
                            .map(|k| {
                                let n = client * 4 + k;
                                (n, smol::block_on(run(node, &source, n, None)).unwrap())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect()
        });
        let mut per_device: BTreeMap<u32, u64> = BTreeMap::new();
        for (n, receipt) in &receipts {
            check_against_reference(*n, receipt);
            let index = receipt.device.index.expect("format 5 names the device");
            assert_eq!(
                receipt.device.uuid.as_deref(),
                Some(before.devices[index as usize].uuid.as_str())
            );
            *per_device.entry(index).or_default() += 1;
        }
        let used: BTreeSet<u32> = per_device.keys().copied().collect();
        assert_eq!(used.len(), DEVICES, "jobs ran on {per_device:?}");

        // A named device runs the job; an unknown one refuses it.
        let on_two = run(node, "127.0.0.1", 100, Some(DeviceSelector::Index(2)))
            .await
            .unwrap();
        assert_eq!(on_two.device.index, Some(2));
        check_against_reference(100, &on_two);
        let e = run(
            node,
            "127.0.0.1",
            101,
            Some(DeviceSelector::Index(DEVICES as u32)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSuchDevice, "{}", e.message);

        let after = status(node).await;
        for d in &after.devices {
            let mine = per_device.get(&d.index).copied().unwrap_or(0) + u64::from(d.index == 2);
            assert_eq!(d.jobs_done, mine, "device {}: {after:?}", d.index);
        }
        assert_eq!(after.jobs_done, receipts.len() as u64 + 1);
    });
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_lost_device_fails_its_job_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, config) = operator_config(dir.path());
    let mut node = start(
        dir.path(),
        &["--inject-device-lost", "1", "--config", &config],
    );
    smol::block_on(async {
        let e = run(&node, "127.0.0.1", 0, Some(DeviceSelector::Index(1)))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost, "{}", e.message);
        assert!(e.message.contains("resubmit"), "{}", e.message);

        let s = status(&node).await;
        let lost = &s.devices[1];
        assert!(!lost.serving, "{lost:?}");
        assert!(
            lost.problem.as_deref().unwrap().contains("lost"),
            "{lost:?}"
        );
        assert_eq!(lost.jobs_failed, 1);
        assert!(s.devices[0].serving && s.devices[2].serving, "{s:?}");

        for n in 1..=6 {
            let r = run(&node, "127.0.0.1", n, None).await.unwrap();
            assert_ne!(r.device.index, Some(1), "job {n} went to the lost device");
            check_against_reference(n, &r);
        }
        let e = run(&node, "127.0.0.1", 7, Some(DeviceSelector::Index(1)))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSuchDevice, "{}", e.message);
        assert!(e.message.contains("out of service"), "{}", e.message);

        // Monitoring sees it too.
        let families = metrics(&node, &operator).await;
        let uuid = &s.devices[0].uuid;
        let serving = |d: &str| sample(&families, "lockstep_device_serving", d, &[]);
        assert_eq!(serving(uuid), 1.0);
        assert_eq!(serving(&format!("{uuid}/1")), 0.0);
        assert_eq!(serving(&format!("{uuid}/2")), 1.0);
        let failed = [("outcome", "failed")];
        let lost_failed = sample(
            &families,
            "lockstep_jobs_total",
            &format!("{uuid}/1"),
            &failed,
        );
        assert_eq!(lost_failed, 1.0);
    });
    assert!(node.alive(), "a lost device must not end the node");
}

/// A config file that makes the node trust a fresh operator key.
fn operator_config(dir: &std::path::Path) -> (lockstep_identity::SigningKey, String) {
    let operator = lockstep_identity::SigningKey::generate();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    (operator, config.to_str().unwrap().to_string())
}

/// The operator's reading of the node's metrics.
async fn metrics(
    node: &common::Node,
    operator: &lockstep_identity::SigningKey,
) -> Vec<lockstep_metrics::Family> {
    let action = Some(lockstep_protocol::admin::AdminAction::Metrics);
    let (_, reply) = common::client::admin(node, operator, action, None, vec![]).await;
    let reply = reply.unwrap();
    assert!(reply.ok, "{}", reply.message);
    lockstep_metrics::parse(&reply.metrics.unwrap()).unwrap()
}

/// The one sample `name` of device `device` whose labels include `labels`.
fn sample(
    families: &[lockstep_metrics::Family],
    name: &str,
    device: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let found: Vec<f64> = families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == name)
        .filter(|s| s.labels.iter().any(|(l, v)| l == "device" && v == device))
        .filter(|s| {
            labels
                .iter()
                .all(|(l, v)| s.labels.iter().any(|(sl, sv)| sl == l && sv == v))
        })
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {device} {labels:?}: {found:?}");
    found[0]
}

/// Each device has its own metrics: labelled with its UUID, or UUID/INDEX
/// for a second device with the same UUID; each counts the jobs it ran.
#[test]
fn each_device_counts_its_own_jobs_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, config) = operator_config(dir.path());
    let node = start(dir.path(), &["--config", &config]);
    smol::block_on(async {
        let uuid = status(&node).await.devices[0].uuid.clone();
        for (n, device) in [(0, 0), (1, 0), (2, 2)] {
            let r = run(&node, "127.0.0.1", n, Some(DeviceSelector::Index(device)))
                .await
                .unwrap();
            assert_eq!(r.device.index, Some(device));
        }
        let families = metrics(&node, &operator).await;
        let ok = [("outcome", "ok")];
        assert_eq!(sample(&families, "lockstep_jobs_total", &uuid, &ok), 2.0);
        let second = format!("{uuid}/1");
        let third = format!("{uuid}/2");
        assert_eq!(sample(&families, "lockstep_jobs_total", &second, &ok), 0.0);
        assert_eq!(sample(&families, "lockstep_jobs_total", &third, &ok), 1.0);
        for d in [&uuid, &second, &third] {
            assert_eq!(sample(&families, "lockstep_device_serving", d, &[]), 1.0);
        }
    });
}
