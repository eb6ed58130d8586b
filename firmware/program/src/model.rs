//! The program data model and its two encodings: JSON for people, postcard
//! for the wire and for hashing.
//!
//! Both decoders are bounded ([`MAX_PROGRAM_BYTES`], nesting up to
//! [`MAX_PROGRAM_NESTING`] repeat blocks) and return typed errors on any
//! input; neither panics.

use std::cell::Cell;
use std::collections::BTreeMap;

use lockstep_limits::{MAX_PROGRAM_BYTES, MAX_PROGRAM_NESTING};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The only program format version this build reads and writes.
pub const PROGRAM_VERSION: u32 = 1;

/// A program: named inputs, a body of steps that define named tensors, and
/// the names of the tensors it returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Format version; [`PROGRAM_VERSION`].
    pub version: u32,
    pub inputs: Vec<TensorDecl>,
    pub outputs: Vec<String>,
    pub body: Vec<Step>,
}

/// A declared input: its name and the shape the caller must supply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorDecl {
    pub name: String,
    pub shape: Vec<u64>,
}

/// One step of a body: an op, or a block repeated a fixed number of times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Step {
    Op(OpStep),
    Repeat(RepeatStep),
}

/// One op: reads the named tensors, writes (or overwrites) `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStep {
    pub op: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub attrs: BTreeMap<String, String>,
}

/// A body run `times` times in a row. Names defined in it stay defined after
/// it; a name it reads before writing carries a value from one iteration to
/// the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatStep {
    pub times: u32,
    pub body: Vec<Step>,
}

/// Why bytes are not a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the program is {size} bytes; the bound is {MAX_PROGRAM_BYTES}")]
    TooLarge { size: usize },
    #[error("not a program in JSON form: {0}")]
    Json(String),
    #[error("not a program in postcard form: {0}")]
    Postcard(String),
    #[error("not a program in postcard form: {extra} bytes follow the program")]
    TrailingBytes { extra: usize },
    #[error(
        "not a program in postcard form: the bytes are not the canonical encoding \
         (an overlong integer or unsorted, repeated attribute keys)"
    )]
    NonCanonical,
    #[error("repeat blocks nested deeper than {MAX_PROGRAM_NESTING}")]
    TooDeep,
}

impl Program {
    /// The canonical postcard bytes: what travels on the wire and what
    /// [`Program::sha256`] hashes.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard serialises strings, integers and sequences")
    }

    /// SHA-256 of [`Program::to_postcard`]: the program's identity.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.to_postcard()).into()
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256())
    }

    /// Decodes postcard bytes. Only the canonical encoding is accepted (the
    /// bytes [`Program::to_postcard`] gives back), so the bytes received are
    /// exactly the bytes hashed.
    pub fn from_postcard(bytes: &[u8]) -> Result<Program, DecodeError> {
        if bytes.len() > MAX_PROGRAM_BYTES {
            return Err(DecodeError::TooLarge { size: bytes.len() });
        }
        DEPTH.with(|d| d.set(DepthState::default()));
        let result = postcard::take_from_bytes::<Program>(bytes);
        let too_deep = DEPTH.with(|d| d.replace(DepthState::default()).exceeded);
        let (program, rest) = match result {
            Ok(ok) => ok,
            Err(_) if too_deep => return Err(DecodeError::TooDeep),
            Err(e) => return Err(DecodeError::Postcard(e.to_string())),
        };
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { extra: rest.len() });
        }
        if program.to_postcard() != bytes {
            return Err(DecodeError::NonCanonical);
        }
        Ok(program)
    }

    /// Decodes the JSON form (see docs/protocol.md). Attribute values may
    /// be strings, numbers (kept as their JSON text) or arrays of numbers
    /// (joined with commas); they are strings from here on.
    pub fn from_json(bytes: &[u8]) -> Result<Program, DecodeError> {
        if bytes.len() > MAX_PROGRAM_BYTES {
            return Err(DecodeError::TooLarge { size: bytes.len() });
        }
        // serde_json bounds its own recursion (128 levels), so a deeply
        // nested document is an error here, not a stack overflow.
        let doc: JsonProgram =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
        let body = json_body(doc.body, &[])?;
        Ok(Program {
            version: doc.version,
            inputs: doc.inputs,
            outputs: doc.outputs,
            body,
        })
    }

    /// The JSON form, pretty-printed, with every attribute as a string.
    pub fn to_json_pretty(&self) -> String {
        let mut out = serde_json::to_string_pretty(&JsonOut(self))
            .expect("JSON serialises strings, integers and sequences");
        out.push('\n');
        out
    }
}

// ---------------------------------------------------------------- postcard

/// Repeat nesting seen so far by the postcard decoder on this thread: the
/// derived decoder recurses once per level, so the level is bounded here
/// rather than left to the stack.
#[derive(Default, Clone, Copy)]
struct DepthState {
    depth: usize,
    exceeded: bool,
}

thread_local! {
    static DEPTH: Cell<DepthState> = const { Cell::new(DepthState { depth: 0, exceeded: false }) };
}

struct DepthGuard;

impl DepthGuard {
    fn enter() -> Option<DepthGuard> {
        DEPTH.with(|d| {
            let mut s = d.get();
            // Top-level steps are depth 1; an op inside N repeat blocks is
            // depth N + 1.
            if s.depth > MAX_PROGRAM_NESTING {
                s.exceeded = true;
                d.set(s);
                return None;
            }
            s.depth += 1;
            d.set(s);
            Some(DepthGuard)
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| {
            let mut s = d.get();
            s.depth = s.depth.saturating_sub(1);
            d.set(s);
        });
    }
}

#[derive(Deserialize)]
#[serde(rename = "Step")]
enum StepRepr {
    Op(OpStep),
    Repeat(RepeatStep),
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let Some(_guard) = DepthGuard::enter() else {
            return Err(serde::de::Error::custom(format_args!(
                "repeat blocks nested deeper than {MAX_PROGRAM_NESTING}"
            )));
        };
        Ok(match StepRepr::deserialize(d)? {
            StepRepr::Op(op) => Step::Op(op),
            StepRepr::Repeat(r) => Step::Repeat(r),
        })
    }
}

// -------------------------------------------------------------------- JSON

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonProgram {
    version: u32,
    inputs: Vec<TensorDecl>,
    outputs: Vec<String>,
    body: Vec<JsonStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonStep {
    op: Option<String>,
    inputs: Option<Vec<String>>,
    output: Option<String>,
    attrs: Option<BTreeMap<String, Box<RawValue>>>,
    repeat: Option<u32>,
    body: Option<Vec<JsonStep>>,
}

fn step_name(path: &[usize]) -> String {
    let parts: Vec<String> = path.iter().map(usize::to_string).collect();
    format!("step {}", parts.join("."))
}

fn json_body(steps: Vec<JsonStep>, parent: &[usize]) -> Result<Vec<Step>, DecodeError> {
    if parent.len() > MAX_PROGRAM_NESTING {
        return Err(DecodeError::TooDeep);
    }
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.into_iter().enumerate() {
        let mut path = parent.to_vec();
        path.push(i);
        let err = |why: &str| DecodeError::Json(format!("{}: {why}", step_name(&path)));
        let step = match (s.op, s.repeat) {
            (Some(op), None) => {
                if s.body.is_some() {
                    return Err(err("an op step has no \"body\" (only repeat steps do)"));
                }
                let output = s
                    .output
                    .ok_or_else(|| err("the op step has no \"output\""))?;
                let mut attrs = BTreeMap::new();
                for (k, v) in s.attrs.unwrap_or_default() {
                    let text =
                        attr_text(&v).map_err(|why| err(&format!("attribute {k}: {why}")))?;
                    attrs.insert(k, text);
                }
                Step::Op(OpStep {
                    op,
                    inputs: s.inputs.unwrap_or_default(),
                    output,
                    attrs,
                })
            }
            (None, Some(times)) => {
                if s.inputs.is_some() || s.output.is_some() || s.attrs.is_some() {
                    return Err(err(
                        "a repeat step has only \"repeat\" and \"body\" (inputs, output and attrs belong to op steps)",
                    ));
                }
                let body = s
                    .body
                    .ok_or_else(|| err("the repeat step has no \"body\""))?;
                Step::Repeat(RepeatStep {
                    times,
                    body: json_body(body, &path)?,
                })
            }
            (Some(_), Some(_)) => return Err(err("a step is an \"op\" or a \"repeat\", not both")),
            (None, None) => return Err(err("a step needs \"op\" or \"repeat\"")),
        };
        out.push(step);
    }
    Ok(out)
}

/// A JSON attribute value as the string the op parser reads: a string as
/// is, a number as its JSON text, an array of numbers joined with commas.
fn attr_text(raw: &RawValue) -> Result<String, String> {
    let text = raw.get().trim();
    let number = |t: &str| -> Result<String, String> {
        let t = t.trim();
        serde_json::from_str::<serde_json::Number>(t)
            .map(|_| t.to_string())
            .map_err(|_| format!("{t} is not a number"))
    };
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_err(|e| e.to_string()),
        Some(b'[') => {
            let items: Vec<Box<RawValue>> =
                serde_json::from_str(text).map_err(|e| e.to_string())?;
            let items: Vec<String> = items
                .iter()
                .map(|v| number(v.get()))
                .collect::<Result<_, _>>()?;
            Ok(items.join(","))
        }
        Some(b'-' | b'0'..=b'9') => number(text),
        _ => Err(format!(
            "{text} is not a string, a number or an array of numbers"
        )),
    }
}

/// The JSON form of a program, written with string attributes.
struct JsonOut<'a>(&'a Program);

impl Serialize for JsonOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.0;
        let mut st = s.serialize_struct("Program", 4)?;
        st.serialize_field("version", &p.version)?;
        st.serialize_field("inputs", &p.inputs)?;
        st.serialize_field("outputs", &p.outputs)?;
        let body: Vec<JsonStepOut> = p.body.iter().map(JsonStepOut).collect();
        st.serialize_field("body", &body)?;
        st.end()
    }
}

struct JsonStepOut<'a>(&'a Step);

impl Serialize for JsonStepOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self.0 {
            Step::Op(op) => {
                m.serialize_entry("op", &op.op)?;
                m.serialize_entry("inputs", &op.inputs)?;
                m.serialize_entry("output", &op.output)?;
                if !op.attrs.is_empty() {
                    m.serialize_entry("attrs", &op.attrs)?;
                }
            }
            Step::Repeat(r) => {
                m.serialize_entry("repeat", &r.times)?;
                let body: Vec<JsonStepOut> = r.body.iter().map(JsonStepOut).collect();
                m.serialize_entry("body", &body)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
        "version": 1,
        "inputs": [{"name": "x", "shape": [4, 8]}, {"name": "w", "shape": [8, 2]}],
        "outputs": ["y"],
        "body": [
            {"op": "matmul", "inputs": ["x", "w"], "output": "y"},
            {"repeat": 3, "body": [
                {"op": "scale", "inputs": ["y"], "output": "y", "attrs": {"alpha": 0.5}},
                {"op": "rand_uniform", "output": "r", "attrs": {"shape": [256, 128], "seed": "7", "lo": -1e-3}}
            ]}
        ]
    }"#;

    #[test]
    fn json_attrs_are_normalised_to_strings() {
        let p = Program::from_json(EXAMPLE.as_bytes()).unwrap();
        let Step::Repeat(r) = &p.body[1] else {
            panic!("step 1 is a repeat")
        };
        assert_eq!(r.times, 3);
        let Step::Op(scale) = &r.body[0] else {
            panic!("an op")
        };
        assert_eq!(scale.attrs["alpha"], "0.5");
        let Step::Op(rand) = &r.body[1] else {
            panic!("an op")
        };
        assert!(rand.inputs.is_empty());
        assert_eq!(rand.attrs["shape"], "256,128");
        assert_eq!(rand.attrs["seed"], "7");
        assert_eq!(rand.attrs["lo"], "-1e-3");
    }

    #[test]
    fn encodings_round_trip() {
        let p = Program::from_json(EXAMPLE.as_bytes()).unwrap();
        let bytes = p.to_postcard();
        assert_eq!(Program::from_postcard(&bytes).unwrap(), p);
        let json = p.to_json_pretty();
        assert_eq!(Program::from_json(json.as_bytes()).unwrap(), p);
        assert_eq!(p.sha256(), <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn postcard_refuses_trailing_and_overlong_bytes() {
        let p = Program::from_json(EXAMPLE.as_bytes()).unwrap();
        let mut bytes = p.to_postcard();
        bytes.push(0);
        assert!(matches!(
            Program::from_postcard(&bytes),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
        // version 1 as an overlong varint: 0x81 0x00.
        let mut bytes = p.to_postcard();
        assert_eq!(bytes[0], 1);
        bytes.splice(0..1, [0x81, 0x00]);
        assert_eq!(
            Program::from_postcard(&bytes),
            Err(DecodeError::NonCanonical)
        );
    }

    fn nested(depth: usize) -> Program {
        let mut body = vec![Step::Op(OpStep {
            op: "relu".into(),
            inputs: vec!["x".into()],
            output: "x".into(),
            attrs: BTreeMap::new(),
        })];
        for _ in 0..depth {
            body = vec![Step::Repeat(RepeatStep { times: 1, body })];
        }
        Program {
            version: 1,
            inputs: vec![],
            outputs: vec![],
            body,
        }
    }

    #[test]
    fn nesting_is_bounded_in_both_decoders() {
        let ok = nested(MAX_PROGRAM_NESTING);
        assert_eq!(Program::from_postcard(&ok.to_postcard()).unwrap(), ok);
        assert_eq!(
            Program::from_json(ok.to_json_pretty().as_bytes()).unwrap(),
            ok
        );
        let deep = nested(MAX_PROGRAM_NESTING + 1);
        assert_eq!(
            Program::from_postcard(&deep.to_postcard()),
            Err(DecodeError::TooDeep)
        );
        assert_eq!(
            Program::from_json(deep.to_json_pretty().as_bytes()),
            Err(DecodeError::TooDeep)
        );
        // Far deeper than the stack would survive without the bound:
        // variant 1 (Repeat), times 1, one step; over and over.
        let mut bytes = vec![1, 0, 0, 1];
        for _ in 0..200_000 {
            bytes.extend_from_slice(&[1, 1, 1]);
        }
        assert_eq!(Program::from_postcard(&bytes), Err(DecodeError::TooDeep));
        // The failure left no depth behind for the next decode.
        assert_eq!(Program::from_postcard(&ok.to_postcard()).unwrap(), ok);
    }

    #[test]
    fn json_errors_name_the_step() {
        let bad = r#"{"version":1,"inputs":[],"outputs":[],"body":[
            {"repeat":2,"body":[{"op":"relu","inputs":["x"],"output":"y"},{"op":"relu","inputs":["x"]}]}]}"#;
        let e = Program::from_json(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("step 0.1") && e.contains("no \"output\""), "{e}");
        let bad = r#"{"version":1,"inputs":[],"outputs":[],"body":[{"op":"scale","inputs":["x"],"output":"y","attrs":{"alpha":true}}]}"#;
        let e = Program::from_json(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("step 0: attribute alpha"), "{e}");
        let bad = r#"{"version":1,"inputs":[],"outputs":[],"body":[{"op":"relu","inputs":["x"],"output":"y","colour":1}]}"#;
        let e = Program::from_json(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }
}
