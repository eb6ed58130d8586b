//! The two encodings of one data model, and the program hash.

mod common;

use common::{gradient_descent, program};
use lockstep_program::{DecodeError, Program, Step};
use serde_json::json;
use sha2::{Digest, Sha256};

#[test]
fn json_and_postcard_round_trip() {
    let p = program(gradient_descent(16, 4, 50));
    let wire = p.to_postcard();
    let back = Program::from_postcard(&wire).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.to_postcard(), wire);
    let text = p.to_json_pretty();
    assert_eq!(Program::from_json(text.as_bytes()).unwrap(), p);
    assert_eq!(back.to_json_pretty(), text);
}

#[test]
fn hash_is_sha256_of_the_postcard_bytes_and_stable() {
    let p = program(json!({
        "version": 1,
        "inputs": [{"name": "x", "shape": [2, 3]}],
        "outputs": ["y"],
        "body": [
            {"op": "relu", "inputs": ["x"], "output": "h"},
            {"repeat": 2, "body": [
                {"op": "scale", "inputs": ["h"], "output": "h", "attrs": {"alpha": 0.5}}
            ]},
            {"op": "sum_rows", "inputs": ["h"], "output": "y"}
        ]
    }));
    let wire = p.to_postcard();
    // The layout, byte by byte (docs/protocol.md): version, inputs, outputs,
    // body; varint lengths; Step::Op = 0, Step::Repeat = 1.
    let mut expected: Vec<u8> = vec![1, 1, 1, b'x', 2, 2, 3, 1, 1, b'y', 3];
    expected.extend([0, 4]);
    expected.extend(b"relu");
    expected.extend([1, 1, b'x', 1, b'h', 0]);
    expected.extend([1, 2, 1, 0, 5]);
    expected.extend(b"scale");
    expected.extend([1, 1, b'h', 1, b'h', 1, 5]);
    expected.extend(b"alpha");
    expected.extend([3]);
    expected.extend(b"0.5");
    expected.extend([0, 8]);
    expected.extend(b"sum_rows");
    expected.extend([1, 1, b'h', 1, b'y', 0]);
    assert_eq!(wire, expected);
    let digest: [u8; 32] = Sha256::digest(&wire).into();
    assert_eq!(p.sha256(), digest);
    assert_eq!(p.sha256_hex(), hex::encode(digest));

    // Spelling in JSON that normalises to the same strings hashes the same;
    // a different spelling of the same number does not (the text is kept).
    let same = program(json!({
        "outputs": ["y"], "version": 1,
        "inputs": [{"shape": [2, 3], "name": "x"}],
        "body": [
            {"output": "h", "op": "relu", "inputs": ["x"]},
            {"body": [{"op": "scale", "inputs": ["h"], "output": "h", "attrs": {"alpha": "0.5"}}], "repeat": 2},
            {"op": "sum_rows", "inputs": ["h"], "output": "y", "attrs": {}}
        ]
    }));
    assert_eq!(same.sha256(), p.sha256());
    let other = Program::from_json(
        br#"{"version":1,"inputs":[{"name":"x","shape":[2,3]}],"outputs":["y"],"body":[
            {"op":"relu","inputs":["x"],"output":"h"},
            {"repeat":2,"body":[{"op":"scale","inputs":["h"],"output":"h","attrs":{"alpha":5e-1}}]},
            {"op":"sum_rows","inputs":["h"],"output":"y"}]}"#,
    )
    .unwrap();
    assert_ne!(other.sha256(), p.sha256());
}

#[test]
fn json_attribute_forms() {
    let p = program(json!({
        "version": 1, "inputs": [], "outputs": [],
        "body": [{"op": "rand_normal", "output": "r",
                  "attrs": {"shape": [256, 128], "seed": 42, "lr": 0.001, "name": "adam", "neg": -3}}]
    }));
    let Step::Op(op) = &p.body[0] else {
        panic!("an op step")
    };
    assert!(op.inputs.is_empty());
    let attrs: Vec<(&str, &str)> = op
        .attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attrs,
        [
            ("lr", "0.001"),
            ("name", "adam"),
            ("neg", "-3"),
            ("seed", "42"),
            ("shape", "256,128")
        ]
    );
    for bad in [r#"true"#, r#"null"#, r#"{"a":1}"#, r#"["a"]"#, r#"[[1]]"#] {
        let doc = format!(
            r#"{{"version":1,"inputs":[],"outputs":[],"body":[{{"op":"relu","inputs":["x"],"output":"y","attrs":{{"k":{bad}}}}}]}}"#
        );
        let e = Program::from_json(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, DecodeError::Json(m) if m.contains("step 0: attribute k")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn decoders_are_bounded() {
    let big = vec![b' '; lockstep_limits::MAX_PROGRAM_BYTES + 1];
    assert!(matches!(
        Program::from_json(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        Program::from_postcard(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    // A length prefix far beyond the bytes that follow.
    let e = Program::from_postcard(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
    assert!(matches!(e, DecodeError::Postcard(_)), "{e}");
    // JSON nested past serde_json's own recursion limit.
    let deep = "[".repeat(100_000);
    assert!(matches!(
        Program::from_json(deep.as_bytes()),
        Err(DecodeError::Json(_))
    ));
}
