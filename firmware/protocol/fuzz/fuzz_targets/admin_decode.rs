#![no_main]
//! Untrusted admin input on a node: a decoded admin command (bounds
//! checked by `Message::decode`) whose bundle's files are then reassembled
//! from arbitrary chunks, and statements parsed and checked as the daemon
//! does. Nothing may panic or hold more than the announced (bounded) bytes.

use libfuzzer_sys::fuzz_target;
use lockstep_protocol::admin::{verify_release, AdminStatement, UploadReceiver};
use lockstep_protocol::Message;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(data.first().copied().unwrap_or(0) as usize * 16);
    let (head, rest) = data.split_at(split);
    if let Ok(Message::AdminCommand(c)) = Message::decode(head) {
        let _ = serde_json::from_slice::<AdminStatement>(&c.statement);
        if let Some(b) = c.bundle {
            let _ = verify_release(&b.release, &b.release_signature, &[], "");
            let mut r = UploadReceiver::new(b.files);
            for chunk in rest.chunks(97) {
                if r.push(chunk).is_err() {
                    break;
                }
            }
            let _ = r.is_done();
        }
    }
    let _ = serde_json::from_slice::<AdminStatement>(data);
});
