#![no_main]
//! Arbitrary bytes as update metadata: parsed alone, verified with a
//! garbled signature, and verified signed by the trusted key (so the
//! parser behind the signature check sees them too), and as an image
//! manifest. None may panic; each is Ok or a typed error.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lockstep_identity::SigningKey;
use lockstep_update::{verify_update, ArtifactCheck, ImageManifest, Slot, UpdateMetadata};

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

fuzz_target!(|data: &[u8]| {
    let _ = UpdateMetadata::parse(data);
    let _ = ImageManifest::parse(data);
    let trusted = [key().public().clone()];
    let garbled = String::from_utf8_lossy(data);
    let _ = verify_update(data, &garbled, &trusted, 0, 1_800_000_000, "lavapipe");
    let signature = key().sign_minisign(data, "fuzz").to_file();
    if let Ok(update) = verify_update(data, &signature, &trusted, 0, 1_800_000_000, "lavapipe") {
        // Whatever it announces, the artifact check stays bounded.
        let mut check: ArtifactCheck = update.artifact_check(Slot::Uki);
        let _ = check.update(data);
        let _ = check.finish();
    }
});
