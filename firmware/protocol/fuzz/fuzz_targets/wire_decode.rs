#![no_main]
//! Arbitrary bytes through the frame decoder and every control frame
//! through the message decoder: neither may panic or allocate past its
//! bound.

use libfuzzer_sys::fuzz_target;
use lockstep_protocol::{Frame, FrameDecoder, Message};

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    if let Ok(frames) = decoder.push(data) {
        for frame in frames {
            if let Frame::Control(payload) = frame {
                let _ = Message::decode(&payload);
            }
        }
    }
    let _ = Message::decode(data);
});
