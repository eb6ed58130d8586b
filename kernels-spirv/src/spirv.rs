//! A static check of a SPIR-V binary against the float model.
//!
//! Hashes pin *which* binary runs; this check says the binary is one the
//! float model allows. It runs on every bundle load (so an operator's bundle
//! that slipped an `fma()` past review is refused) and in the tests.

use crate::manifest::Variant;

const MAGIC: u32 = 0x0723_0203;

// Opcodes (SPIR-V spec, section 3.52).
const OP_EXT_INST_IMPORT: u32 = 11;
const OP_EXT_INST: u32 = 12;
const OP_ENTRY_POINT: u32 = 15;
const OP_EXECUTION_MODE: u32 = 16;
const OP_CAPABILITY: u32 = 17;
const OP_DECORATE: u32 = 71;
const OP_F_ADD: u32 = 129;
const OP_F_SUB: u32 = 131;
const OP_F_MUL: u32 = 133;
const OP_F_DIV: u32 = 136;
const OP_F_REM: u32 = 140;
const OP_F_MOD: u32 = 141;
// OpVectorTimesScalar ..= OpOuterProduct: products whose internal order and
// rounding are the device's choice.
const OPS_VECTOR_MATRIX: std::ops::RangeInclusive<u32> = 142..=147;
const OP_DOT: u32 = 148;

const DECORATION_NO_CONTRACTION: u32 = 42;

const EXEC_MODE_LOCAL_SIZE: u32 = 17;
const EXEC_MODE_DENORM_PRESERVE: u32 = 4459;
const EXEC_MODE_SIGNED_ZERO_INF_NAN_PRESERVE: u32 = 4461;
const EXEC_MODE_ROUNDING_MODE_RTE: u32 = 4462;
const CAPABILITY_ROUNDING_MODE_RTE: u32 = 4467;

// GLSL.std.450 instructions a kernel may use: integer min/max and clamps.
// Every float function in that set (Fma, Sqrt, Exp, FMin with its
// unspecified NaN rule, ...) is device-dependent.
const GLSL_STD_450_ALLOWED: &[u32] = &[
    38, // UMin
    39, // SMin
    41, // UMax
    42, // SMax
    44, // UClamp
    45, // SClamp
];

/// What the check learned about a binary that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpirvFacts {
    pub entry_point: String,
    pub local_size: [u32; 3],
}

/// Why a binary breaks the float model (or is not SPIR-V at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpirvError {
    #[error("not a SPIR-V module: {0}")]
    Malformed(String),
    #[error("uses {0}, which the float model forbids (its result differs between devices)")]
    Forbidden(String),
    #[error("float {op} (result id {id}) lacks NoContraction; mark it `precise` in the GLSL")]
    Contractible { op: &'static str, id: u32 },
    #[error("does not declare execution mode {0} for 32-bit floats")]
    MissingMode(&'static str),
    #[error("declares DenormPreserve in the {0} variant; only the denorm_preserve variant may")]
    UnexpectedDenormPreserve(&'static str),
    #[error("declares RoundingModeRTE in the portable variant, which is loaded on devices that do not support it")]
    UnexpectedRte,
    #[error("has {0} entry points; a kernel has exactly one GLCompute entry point")]
    EntryPoints(usize),
}

/// Decodes little-endian SPIR-V bytes into words.
pub fn words(bytes: &[u8]) -> Result<Vec<u32>, SpirvError> {
    if !bytes.len().is_multiple_of(4) || bytes.len() < 20 {
        return Err(SpirvError::Malformed(format!(
            "{} bytes is not a whole number of words with a header",
            bytes.len()
        )));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if words[0] != MAGIC {
        return Err(SpirvError::Malformed(format!(
            "magic number {:#010x}, expected {MAGIC:#010x}",
            words[0]
        )));
    }
    Ok(words)
}

/// Checks a module against the float model for the given variant.
pub fn check(words: &[u32], variant: Variant) -> Result<SpirvFacts, SpirvError> {
    let mut glsl_std_450 = None;
    let mut no_contraction = std::collections::BTreeSet::new();
    let mut float_ops: Vec<(&'static str, u32)> = Vec::new();
    let mut modes = Vec::new();
    let mut entry_points = Vec::new();
    let mut local_size = None;
    let mut rte_capability = false;

    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        let opcode = words[at] & 0xffff;
        if count == 0 || at + count > words.len() {
            return Err(SpirvError::Malformed(format!(
                "instruction at word {at} has length {count}"
            )));
        }
        let ops = &words[at + 1..at + count];
        match opcode {
            OP_EXT_INST_IMPORT => {
                if string_operand(&ops[1..]) == "GLSL.std.450" {
                    glsl_std_450 = Some(ops[0]);
                } else {
                    return Err(SpirvError::Forbidden(format!(
                        "extended instruction set {:?}",
                        string_operand(&ops[1..])
                    )));
                }
            }
            OP_EXT_INST => {
                let (set, inst) = (ops[2], ops[3]);
                if Some(set) != glsl_std_450 || !GLSL_STD_450_ALLOWED.contains(&inst) {
                    return Err(SpirvError::Forbidden(format!(
                        "GLSL.std.450 instruction {inst}"
                    )));
                }
            }
            OP_CAPABILITY if ops.first() == Some(&CAPABILITY_ROUNDING_MODE_RTE) => {
                rte_capability = true;
            }
            OP_ENTRY_POINT => {
                entry_points.push(string_operand(&ops[2..]));
            }
            OP_EXECUTION_MODE if ops.len() >= 2 => {
                if ops[1] == EXEC_MODE_LOCAL_SIZE && ops.len() == 5 {
                    local_size = Some([ops[2], ops[3], ops[4]]);
                } else if ops.len() == 3 && ops[2] == 32 {
                    modes.push(ops[1]);
                }
            }
            OP_DECORATE if ops.len() >= 2 && ops[1] == DECORATION_NO_CONTRACTION => {
                no_contraction.insert(ops[0]);
            }
            OP_F_ADD => float_ops.push(("OpFAdd", ops[1])),
            OP_F_SUB => float_ops.push(("OpFSub", ops[1])),
            OP_F_MUL => float_ops.push(("OpFMul", ops[1])),
            OP_F_DIV => return Err(SpirvError::Forbidden("OpFDiv".into())),
            OP_F_REM | OP_F_MOD => return Err(SpirvError::Forbidden("OpFRem/OpFMod".into())),
            op if OPS_VECTOR_MATRIX.contains(&op) => {
                return Err(SpirvError::Forbidden(format!(
                    "vector/matrix product opcode {opcode}"
                )))
            }
            OP_DOT => return Err(SpirvError::Forbidden("OpDot".into())),
            // Atomics (core, flag and float-atomic extensions), group,
            // subgroup and AMD group operations, cooperative matrices (KHR, NV).
            227..=242
            | 318
            | 319
            | 5614
            | 5615
            | 6035
            | 261..=277
            | 333..=366
            | 4421..=4432
            | 5000..=5007
            | 4456..=4460
            | 5358..=5362 => return Err(SpirvError::Forbidden(format!("opcode {opcode}"))),
            _ => {}
        }
        at += count;
    }
    for (op, id) in float_ops {
        if !no_contraction.contains(&id) {
            return Err(SpirvError::Contractible { op, id });
        }
    }
    let rte = modes.contains(&EXEC_MODE_ROUNDING_MODE_RTE);
    match variant {
        // The portable variant runs where RTE is not advertised: it may not
        // declare the mode nor its capability.
        Variant::Portable if rte || rte_capability => return Err(SpirvError::UnexpectedRte),
        Variant::Portable => {}
        _ if !rte => return Err(SpirvError::MissingMode("RoundingModeRTE")),
        _ => {}
    }
    if !modes.contains(&EXEC_MODE_SIGNED_ZERO_INF_NAN_PRESERVE) {
        return Err(SpirvError::MissingMode("SignedZeroInfNanPreserve"));
    }
    let denorm = modes.contains(&EXEC_MODE_DENORM_PRESERVE);
    match variant {
        Variant::DenormPreserve if !denorm => {
            return Err(SpirvError::MissingMode("DenormPreserve"))
        }
        Variant::Base | Variant::Portable if denorm => {
            return Err(SpirvError::UnexpectedDenormPreserve(variant.as_str()))
        }
        _ => {}
    }
    if entry_points.len() != 1 {
        return Err(SpirvError::EntryPoints(entry_points.len()));
    }
    let local_size =
        local_size.ok_or_else(|| SpirvError::Malformed("no LocalSize execution mode".into()))?;
    Ok(SpirvFacts {
        entry_point: entry_points.remove(0),
        local_size,
    })
}

/// A literal string operand: UTF-8, NUL-terminated, packed little-endian.
fn string_operand(words: &[u32]) -> String {
    let mut bytes = Vec::new();
    'outer: for w in words {
        for b in w.to_le_bytes() {
            if b == 0 {
                break 'outer;
            }
            bytes.push(b);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
