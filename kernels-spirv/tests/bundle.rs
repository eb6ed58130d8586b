//! The pinned bundle: fresh builds equal the committed binaries, and any
//! binary that does not match its manifest, or breaks the float model, is
//! refused.

use std::collections::BTreeMap;

use lockstep_kernels::manifest::Variant;
use lockstep_kernels::rebuild::committed_dir;
use lockstep_kernels::spirv::{self, SpirvError};
use lockstep_kernels::{Bundle, BundleError};

fn committed_files() -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let dir = committed_dir();
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "spv") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
    (manifest, files)
}

fn from_files(manifest: &[u8], files: &BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
    Bundle::from_parts(manifest, |f| {
        files.get(f).cloned().ok_or_else(|| "missing".to_string())
    })
}

#[test]
fn fresh_build_equals_committed_binaries() {
    // Needs glslangValidator 12.0.0 and spirv-val (make test installs them).
    lockstep_kernels::rebuild::check(&committed_dir()).unwrap();
}

#[test]
fn embedded_bundle_is_the_committed_one() {
    let embedded = Bundle::embedded().unwrap();
    let on_disk = Bundle::from_dir(&committed_dir()).unwrap();
    assert_eq!(embedded.id(), on_disk.id());
    assert!(embedded.kernels().count() >= 11);
}

#[test]
fn bundle_id_is_the_hash_of_the_canonical_manifest() {
    use sha2::{Digest, Sha256};
    let (manifest, files) = committed_files();
    let bundle = from_files(&manifest, &files).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let canonical = lockstep_canonical_json::to_vec(&value).unwrap();
    assert_eq!(bundle.id(), <[u8; 32]>::from(Sha256::digest(&canonical)));
    // Whitespace does not change the id; content does.
    let compact = serde_json::to_vec(&value).unwrap();
    assert_eq!(from_files(&compact, &files).unwrap().id(), bundle.id());
    let bumped = String::from_utf8(manifest.clone()).unwrap().replacen(
        "\"version\": 1",
        "\"version\": 2",
        1,
    );
    assert_ne!(
        from_files(bumped.as_bytes(), &files).unwrap().id(),
        bundle.id()
    );
}

#[test]
fn a_tampered_binary_is_refused() {
    let (manifest, mut files) = committed_files();
    let spv = files.get_mut("matmul.spv").unwrap();
    let mid = spv.len() / 2;
    spv[mid] ^= 0x01;
    match from_files(&manifest, &files) {
        Err(BundleError::HashMismatch { kernel, file, .. }) => {
            assert_eq!(kernel, "matmul");
            assert_eq!(file, "matmul.spv");
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

#[test]
fn a_manifest_hash_that_does_not_match_is_refused() {
    let (manifest, files) = committed_files();
    let text = String::from_utf8(manifest).unwrap();
    let bundle = from_files(text.as_bytes(), &files).unwrap();
    let hash = &bundle.kernel("add").unwrap().spec.binaries[&Variant::Base].sha256;
    let forged = text.replace(hash.as_str(), &"ab".repeat(32));
    assert!(matches!(
        from_files(forged.as_bytes(), &files),
        Err(BundleError::HashMismatch { .. })
    ));
}

#[test]
fn a_missing_binary_is_refused() {
    let (manifest, mut files) = committed_files();
    files.remove("relu.denorm.spv");
    assert!(matches!(
        from_files(&manifest, &files),
        Err(BundleError::Read { .. })
    ));
}

#[test]
fn manifest_structure_is_validated() {
    let (manifest, files) = committed_files();
    let text = String::from_utf8(manifest).unwrap();
    let unknown = text.replacen("\"format\": 1", "\"format\": 1, \"extra\": 0", 1);
    assert!(matches!(
        from_files(unknown.as_bytes(), &files),
        Err(BundleError::Manifest(_))
    ));
    let future = text.replacen("\"format\": 1", "\"format\": 9", 1);
    assert!(matches!(
        from_files(future.as_bytes(), &files),
        Err(BundleError::Manifest(_))
    ));
    let escape = text.replacen("\"file\": \"add.spv\"", "\"file\": \"../add.spv\"", 1);
    assert!(matches!(
        from_files(escape.as_bytes(), &files),
        Err(BundleError::Manifest(_))
    ));
}

#[test]
fn every_committed_binary_keeps_the_float_model() {
    let bundle = Bundle::from_dir(&committed_dir()).unwrap();
    for k in bundle.kernels() {
        for v in Variant::ALL {
            let facts = spirv::check(k.spirv(v), v).unwrap();
            assert_eq!(facts.local_size, k.spec.workgroup_size, "{}", k.spec.name);
        }
    }
}

/// Rewrites the first instruction matching `pred` with `edit`.
fn edit_first(words: &mut [u32], pred: impl Fn(u32, &[u32]) -> bool, edit: impl Fn(&mut [u32])) {
    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        let opcode = words[at] & 0xffff;
        if pred(opcode, &words[at + 1..at + count]) {
            edit(&mut words[at..at + count]);
            return;
        }
        at += count;
    }
    panic!("no matching instruction");
}

#[test]
fn float_model_check_rejects_what_the_model_forbids() {
    let bundle = Bundle::embedded().unwrap();
    let base = bundle.kernel("add").unwrap().spirv(Variant::Base).to_vec();

    // An add without NoContraction (decoration 42 turned into RelaxedPrecision).
    let mut w = base.clone();
    edit_first(&mut w, |op, ops| op == 71 && ops[1] == 42, |ins| ins[2] = 0);
    assert!(matches!(
        spirv::check(&w, Variant::Base),
        Err(SpirvError::Contractible { .. })
    ));

    // The add turned into a division.
    let mut w = base.clone();
    edit_first(
        &mut w,
        |op, _| op == 129,
        |ins| ins[0] = (ins[0] & 0xffff_0000) | 136,
    );
    assert!(matches!(
        spirv::check(&w, Variant::Base),
        Err(SpirvError::Forbidden(_))
    ));

    // RoundingModeRTE dropped (execution mode 4462 turned into 4463, RTZ).
    let mut w = base.clone();
    edit_first(
        &mut w,
        |op, ops| op == 16 && ops.get(1) == Some(&4462),
        |ins| ins[2] = 4463,
    );
    assert!(matches!(
        spirv::check(&w, Variant::Base),
        Err(SpirvError::MissingMode(_))
    ));

    // The base variant may not declare DenormPreserve, and the other must.
    let denorm = bundle.kernel("add").unwrap().spirv(Variant::DenormPreserve);
    assert!(spirv::check(denorm, Variant::Base).is_err());
    assert!(spirv::check(&base, Variant::DenormPreserve).is_err());

    // Not SPIR-V at all.
    assert!(spirv::words(b"not spir-v, just text").is_err());
}

#[test]
fn the_portable_bundle_is_test_only_and_mirrors_the_conforming_one() {
    use lockstep_kernels::BundleKind;
    let conforming = Bundle::embedded().unwrap();
    let portable = Bundle::embedded_portable().unwrap();
    assert_eq!(conforming.kind(), BundleKind::Conforming);
    assert_eq!(portable.kind(), BundleKind::Portable);
    assert_ne!(portable.id(), conforming.id());
    let on_disk = Bundle::from_dir(&committed_dir().join("portable")).unwrap();
    assert_eq!(on_disk.id(), portable.id());
    // The same kernels with the same interfaces; only the binaries differ.
    assert_eq!(portable.kernels().count(), conforming.kernels().count());
    for (p, c) in portable.kernels().zip(conforming.kernels()) {
        let (mut ps, mut cs) = (p.spec.clone(), c.spec.clone());
        ps.binaries.clear();
        cs.binaries.clear();
        assert_eq!(ps, cs);
        let facts = spirv::check(p.spirv(Variant::Portable), Variant::Portable).unwrap();
        assert_eq!(facts.local_size, p.spec.workgroup_size, "{}", p.spec.name);
        // A conforming binary declares RTE, so it is no portable binary,
        // and a portable binary lacks RTE, so it is no conforming one.
        assert!(matches!(
            spirv::check(c.spirv(Variant::Base), Variant::Portable),
            Err(SpirvError::UnexpectedRte)
        ));
        assert!(matches!(
            spirv::check(p.spirv(Variant::Portable), Variant::Base),
            Err(SpirvError::MissingMode("RoundingModeRTE"))
        ));
    }
    // Each kind is refused where the other is required.
    assert!(matches!(
        portable.require(BundleKind::Conforming),
        Err(BundleError::WrongKind { .. })
    ));
    assert!(conforming.require(BundleKind::Portable).is_err());
}

#[test]
fn a_manifest_mixing_kinds_is_refused() {
    let (manifest, files) = committed_files();
    let mut value: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    value["kernels"][1]["binaries"]["portable"] =
        serde_json::json!({"file": "add.portable.spv", "sha256": "0".repeat(64)});
    let bytes = serde_json::to_vec(&value).unwrap();
    assert!(matches!(
        from_files(&bytes, &files),
        Err(BundleError::Manifest(m)) if m.contains("exactly")
    ));
}

#[test]
fn the_hash_kernels_use_no_atomics_and_an_atomic_is_refused() {
    let bundle = Bundle::embedded().unwrap();
    for name in ["sha256_npy", "sha256_npy_many"] {
        let sha = bundle.kernel(name).unwrap().spirv(Variant::Base).to_vec();
        // Digest slots come from the counter plus each message's place,
        // ordered by barriers: no atomics.
        assert!(spirv::check(&sha, Variant::Base).is_ok(), "{name}");
        // Any atomic is refused: the first integer add (OpIAdd, 128) turned
        // into OpAtomicIAdd (234), OpAtomicISub (235) or the float add
        // OpAtomicFAddEXT (6035).
        for atomic in [234, 235, 6035] {
            let mut w = sha.clone();
            edit_first(
                &mut w,
                |op, _| op == 128,
                |ins| ins[0] = (ins[0] & 0xffff_0000) | atomic,
            );
            assert!(
                matches!(
                    spirv::check(&w, Variant::Base),
                    Err(SpirvError::Forbidden(_))
                ),
                "{name}: opcode {atomic}"
            );
        }
    }
}
