//! `verify_update` end to end: signed by `UpdateSigner`, every refusal.

use lockstep_identity::{NodeId, SigningKey};

use crate::*;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
const TARGET: &str = "lavapipe";

const UKI: &[u8] = b"MZ a unified kernel image";
const ROOT: &[u8] = b"hsqs a squashfs root";
const VERITY: &[u8] = b"verity hash tree";

fn metadata(version: u64, expires_at: u64) -> UpdateMetadata {
    UpdateMetadata {
        format: UPDATE_FORMAT.into(),
        name: "lockstep-0.2.0-abc".into(),
        image_version: "0.2.0-abc".into(),
        version,
        expires_at,
        target: TARGET.into(),
        uki: Artifact::of(UKI),
        root: Artifact::of(ROOT),
        verity: Artifact::of(VERITY),
        root_hash: "c".repeat(64),
        tpm_pcr11_sha256: "d".repeat(64),
    }
}

fn signed(key: &SigningKey, m: &UpdateMetadata) -> SignedUpdate {
    UpdateSigner::new(key).sign(m).unwrap()
}

fn verify(s: &SignedUpdate, trusted: &[NodeId], floor: u64) -> Result<VerifiedUpdate, UpdateError> {
    verify_update(&s.bytes, &s.signature, trusted, floor, NOW, TARGET)
}

#[test]
fn a_signed_update_verifies_and_its_artifacts_check() {
    let key = SigningKey::generate();
    let other = SigningKey::generate();
    let s = signed(&key, &metadata(5, NOW + DAY));
    let trusted = [other.public().clone(), key.public().clone()];
    let v = verify(&s, &trusted, 4).unwrap();
    assert_eq!(v.metadata(), &s.metadata);
    assert_eq!(v.signer(), key.public());
    assert_eq!(v.version(), 5);
    for (slot, data) in [(Slot::Uki, UKI), (Slot::Root, ROOT), (Slot::Verity, VERITY)] {
        let mut check = v.artifact_check(slot);
        for chunk in data.chunks(3) {
            check.update(chunk).unwrap();
        }
        check.finish().unwrap();
    }
    // Mix-and-match inside one update: another slot's bytes are refused.
    let mut check = v.artifact_check(Slot::Uki);
    let _ = check.update(ROOT);
    assert!(check.finish().is_err());
    // The signed bytes parse back to the same document.
    assert_eq!(UpdateMetadata::parse(&s.bytes).unwrap(), s.metadata);
}

#[test]
fn the_stock_minisign_tool_verifies_the_signature() {
    if std::process::Command::new("minisign")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("minisign not installed: skipping");
        return;
    }
    let key = SigningKey::generate();
    let s = signed(&key, &metadata(5, NOW + DAY));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(UPDATE_FILE);
    std::fs::write(&file, &s.bytes).unwrap();
    std::fs::write(dir.path().join(UPDATE_SIGNATURE_FILE), &s.signature).unwrap();
    let out = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&file)
        .arg("-P")
        .arg(key.public().to_base64())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_tampered_byte_is_refused() {
    let key = SigningKey::generate();
    let s = signed(&key, &metadata(5, NOW + DAY));
    let trusted = [key.public().clone()];
    for i in 0..s.bytes.len() {
        let mut bytes = s.bytes.clone();
        bytes[i] ^= 0x01;
        assert!(
            matches!(
                verify_update(&bytes, &s.signature, &trusted, 0, NOW, TARGET),
                Err(UpdateError::BadSignature { .. })
            ),
            "byte {i}"
        );
    }
}

#[test]
fn re_encoded_json_is_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let s = signed(&key, &metadata(5, NOW + DAY));
    let value: serde_json::Value = serde_json::from_slice(&s.bytes).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    // With the original signature: the bytes are not the signed ones.
    assert!(matches!(
        verify_update(&pretty, &s.signature, &trusted, 0, NOW, TARGET),
        Err(UpdateError::BadSignature { .. })
    ));
    // Even signed as re-encoded (a foreign tool), the node wants the
    // canonical bytes.
    let sig = key.sign_minisign(&pretty, "re-encoded").to_file();
    assert_eq!(
        verify_update(&pretty, &sig, &trusted, 0, NOW, TARGET).unwrap_err(),
        UpdateError::NotCanonical
    );
}

#[test]
fn a_key_the_node_does_not_trust_is_refused() {
    let key = SigningKey::generate();
    let intruder = SigningKey::generate();
    let s = signed(&intruder, &metadata(5, NOW + DAY));
    let err = verify(&s, &[key.public().clone()], 0).unwrap_err();
    assert!(
        matches!(&err, UpdateError::Untrusted { found, trusted }
            if *found == intruder.public().key_id_hex() && *trusted == key.public().key_id_hex()),
        "{err}"
    );
    assert!(matches!(
        verify(&s, &[], 0),
        Err(UpdateError::Untrusted { .. })
    ));
}

#[test]
fn an_unsigned_or_garbled_signature_is_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let s = signed(&key, &metadata(5, NOW + DAY));
    for sig in ["", " \n"] {
        assert_eq!(
            verify_update(&s.bytes, sig, &trusted, 0, NOW, TARGET).unwrap_err(),
            UpdateError::Unsigned
        );
    }
    assert!(matches!(
        verify_update(
            &s.bytes,
            "untrusted comment: x\nnot base64",
            &trusted,
            0,
            NOW,
            TARGET
        ),
        Err(UpdateError::BadSignature { .. })
    ));
    // The trusted comment edited.
    let edited = s.signature.replace(
        "trusted comment: lockstep update 5",
        "trusted comment: lockstep update 9",
    );
    assert_ne!(edited, s.signature);
    assert!(matches!(
        verify_update(&s.bytes, &edited, &trusted, 0, NOW, TARGET),
        Err(UpdateError::BadSignature { .. })
    ));
}

#[test]
fn expired_updates_are_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    for expires_at in [NOW - DAY, NOW - 1, NOW] {
        let s = signed(&key, &metadata(5, expires_at));
        assert_eq!(
            verify(&s, &trusted, 0).unwrap_err(),
            UpdateError::Expired {
                expires_at,
                now: NOW
            }
        );
    }
    let s = signed(&key, &metadata(5, NOW + 1));
    verify(&s, &trusted, 0).unwrap();
}

#[test]
fn an_update_valid_for_too_long_is_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let max = lockstep_limits::MAX_UPDATE_VALIDITY_S;
    verify(&signed(&key, &metadata(5, NOW + max)), &trusted, 0).unwrap();
    for expires_at in [NOW + max + 1, u64::MAX] {
        let s = signed(&key, &metadata(5, expires_at));
        assert_eq!(
            verify(&s, &trusted, 0).unwrap_err(),
            UpdateError::ValidityTooLong {
                expires_at,
                now: NOW,
                max_s: max
            }
        );
    }
    // A node with a shorter window.
    let s = signed(&key, &metadata(5, NOW + 2 * DAY));
    let short = UpdateLimits {
        max_validity_s: DAY,
        ..UpdateLimits::default()
    };
    assert!(matches!(
        verify_update_with_limits(&s.bytes, &s.signature, &trusted, 0, NOW, TARGET, &short),
        Err(UpdateError::ValidityTooLong { .. })
    ));
}

#[test]
fn equal_or_lower_versions_are_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let s = signed(&key, &metadata(5, NOW + DAY));
    for floor in [5, 6, u64::MAX] {
        assert_eq!(
            verify(&s, &trusted, floor).unwrap_err(),
            UpdateError::NotNewer { version: 5, floor }
        );
    }
    verify(&s, &trusted, 4).unwrap();
}

#[test]
fn another_variant_is_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let mut m = metadata(5, NOW + DAY);
    m.target = "nvidia".into();
    let s = signed(&key, &m);
    assert_eq!(
        verify(&s, &trusted, 0).unwrap_err(),
        UpdateError::WrongTarget {
            signed: "nvidia".into(),
            node: TARGET.into()
        }
    );
    assert!(verify_update(&s.bytes, &s.signature, &trusted, 0, NOW, "nvidia").is_ok());
}

#[test]
fn oversize_inputs_are_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let s = signed(&key, &metadata(5, NOW + DAY));
    let big = vec![b'{'; lockstep_limits::MAX_UPDATE_METADATA_BYTES + 1];
    let sig = key.sign_minisign(&big, "big").to_file();
    assert!(matches!(
        verify_update(&big, &sig, &trusted, 0, NOW, TARGET),
        Err(UpdateError::MetadataTooLarge { .. })
    ));
    let long_sig = format!(
        "{}{}",
        s.signature,
        " ".repeat(lockstep_limits::MAX_UPDATE_SIGNATURE_BYTES)
    );
    assert!(matches!(
        verify_update(&s.bytes, &long_sig, &trusted, 0, NOW, TARGET),
        Err(UpdateError::SignatureTooLarge { .. })
    ));
    // An artifact over the node's limits, though signed.
    let mut m = metadata(5, NOW + DAY);
    m.root.bytes = lockstep_limits::MAX_UPDATE_ROOT_BYTES + 1;
    let bytes = m.to_canonical();
    let sig = key.sign_minisign(&bytes, "oversize root").to_file();
    assert_eq!(
        verify_update(&bytes, &sig, &trusted, 0, NOW, TARGET).unwrap_err(),
        UpdateError::ArtifactTooLarge {
            slot: "root",
            bytes: lockstep_limits::MAX_UPDATE_ROOT_BYTES + 1,
            max: lockstep_limits::MAX_UPDATE_ROOT_BYTES
        }
    );
    let small = UpdateLimits {
        max_uki_bytes: 4,
        ..UpdateLimits::default()
    };
    assert!(matches!(
        verify_update_with_limits(&s.bytes, &s.signature, &trusted, 0, NOW, TARGET, &small),
        Err(UpdateError::ArtifactTooLarge { slot: "uki", .. })
    ));
}

#[test]
fn a_signed_but_malformed_document_is_refused() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    for bytes in [
        &b"{}"[..],
        b"not json",
        br#"{"format":"lockstep-release/1","bundle_id":"x","version":9}"#,
    ] {
        let sig = key.sign_minisign(bytes, "x").to_file();
        assert!(
            matches!(
                verify_update(bytes, &sig, &trusted, 0, NOW, TARGET),
                Err(UpdateError::Malformed { .. })
            ),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let key = SigningKey::generate();
    let trusted = [key.public().clone()];
    let s = signed(&key, &metadata(5, NOW + DAY));
    for len in 0..s.bytes.len() {
        assert!(verify(
            &SignedUpdate {
                bytes: s.bytes[..len].to_vec(),
                ..s.clone()
            },
            &trusted,
            0
        )
        .is_err());
        // Signed as truncated: then the parser sees it.
        let sig = key.sign_minisign(&s.bytes[..len], "cut").to_file();
        assert!(verify_update(&s.bytes[..len], &sig, &trusted, 0, NOW, TARGET).is_err());
    }
    // Only the final newline may go: the four lines are all there.
    let whole = s.signature.trim_end().len();
    assert!(verify_update(&s.bytes, &s.signature[..whole], &trusted, 0, NOW, TARGET).is_ok());
    for len in 0..whole {
        if !s.signature.is_char_boundary(len) {
            continue;
        }
        assert!(verify_update(&s.bytes, &s.signature[..len], &trusted, 0, NOW, TARGET).is_err());
    }
}

#[test]
fn every_error_says_what_to_do_next() {
    let errors = [
        UpdateError::Unsigned,
        UpdateError::NotCanonical,
        UpdateError::NotNewer {
            version: 1,
            floor: 2,
        },
        UpdateError::Expired {
            expires_at: 1,
            now: 2,
        },
        UpdateError::WrongTarget {
            signed: "nvidia".into(),
            node: "lavapipe".into(),
        },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            ["sign", "push", "use"].iter().any(|w| text.contains(w)),
            "{text}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic_the_verifier(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
        sig in ".{0,400}",
    ) {
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let _ = verify_update(&bytes, &sig, &trusted, 0, NOW, TARGET);
        // And signed by the trusted key, so the parser sees them too.
        let sig = key.sign_minisign(&bytes, "fuzz").to_file();
        proptest::prop_assert!(verify_update(&bytes, &sig, &trusted, 0, NOW, TARGET).is_err());
    }
}
