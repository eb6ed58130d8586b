#![no_main]
//! Arbitrary bytes as a certification report and as its signature file (a
//! node reads both from the network and from its state directory): parsing
//! and verifying may refuse them, never panic.

use libfuzzer_sys::fuzz_target;
use lockstep_certify::{DeviceIdentity, Report};
use lockstep_identity::NodeId;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let (sig, report) = data.split_at(split);
    let sig = String::from_utf8_lossy(sig);
    let key = NodeId::parse("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3").ok();
    let trusted: Vec<NodeId> = key.into_iter().collect();
    let _ = Report::verify(report, &sig, &trusted);
    let _ = lockstep_certify::parse_rfc3339(&String::from_utf8_lossy(report));
    if let Ok(r) = Report::parse(report) {
        let device = r.device.clone();
        let node = r.node.clone().unwrap_or_default();
        let _ = r.certifies(&node, &device, &r.bundle_id, 0);
        let _ = r.certifies(
            &node,
            &DeviceIdentity {
                vendor_id: 1,
                ..device
            },
            "",
            u64::MAX,
        );
        let _ = r.may_replace(Some(&r), u64::MAX);
        let _ = r.may_replace(None, 0);
        let _ = r.summary();
    }
});
