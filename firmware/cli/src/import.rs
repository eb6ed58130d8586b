//! `lockstep import`: an ONNX model into a program and its weights
//! (docs/onnx.md).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use lockstep_limits::MAX_ONNX_MODEL_BYTES;
use lockstep_tensor::{npy, shape_string};

use crate::exec::write_atomic;
use crate::failure::Failure;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The ONNX model (float32, static shapes, opset 13 to 23).
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Where to write the program (JSON).
    #[arg(long, value_name = "PROGRAM.json")]
    out: PathBuf,
    /// Where to write the weights, one NAME.npy per constant the program
    /// declares as an input; default: PROGRAM.weights beside --out.
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

pub fn import(args: &ImportArgs) -> Result<(), Failure> {
    let model = &args.model;
    let named = |e: &dyn std::fmt::Display| Failure::Input(format!("{}: {e}", model.display()));
    let bytes = read_bounded(model).map_err(|e| named(&e))?;
    let imported = lockstep_onnx::import(&bytes).map_err(|e| named(&e))?;
    let weights = match &args.weights {
        Some(dir) => dir.clone(),
        None => args.out.with_extension("weights"),
    };
    fs::create_dir_all(&weights)
        .map_err(|e| Failure::Runtime(format!("{}: cannot create: {e}", weights.display())))?;
    let mut weight_bytes = 0u64;
    for (name, tensor) in &imported.constants {
        let path = weights.join(format!("{name}.npy"));
        npy::write_file(&path, tensor).map_err(|e| Failure::Runtime(e.to_string()))?;
        weight_bytes += npy::encoded_len(tensor);
    }
    let mut json = imported.program.to_json_pretty();
    json.push('\n');
    write_atomic(&args.out, json.as_bytes())?;
    if args.quiet {
        return Ok(());
    }
    let program = &imported.program;
    let constants: std::collections::BTreeSet<&str> =
        imported.constants.iter().map(|(n, _)| n.as_str()).collect();
    let ops = count_ops(&program.body);
    println!(
        "imported {}: {} nodes into {ops} ops",
        model.display(),
        imported.nodes
    );
    println!(
        "program  {} (sha256 {})",
        args.out.display(),
        program.sha256_hex()
    );
    let mut run = format!(
        "lockstep exec {} --inputs-dir {}",
        args.out.display(),
        weights.display()
    );
    for decl in program
        .inputs
        .iter()
        .filter(|d| !constants.contains(d.name.as_str()))
    {
        let shape: Vec<usize> = decl.shape.iter().map(|&d| d as usize).collect();
        println!("input    {} {}", decl.name, shape_string(&shape));
        run.push_str(&format!(" --input {}=FILE.npy", decl.name));
    }
    for name in &program.outputs {
        println!("output   {name}");
    }
    println!(
        "weights  {} tensors, {weight_bytes} bytes in {}",
        imported.constants.len(),
        weights.display()
    );
    for (from, to) in &imported.renamed {
        println!("renamed  '{from}' is '{to}' in the program");
    }
    println!("run      {run} --out-dir OUT");
    Ok(())
}

/// The file's bytes, refused before reading if over the bound.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if len > MAX_ONNX_MODEL_BYTES as u64 {
        return Err(format!(
            "the model is {len} bytes; the bound is {MAX_ONNX_MODEL_BYTES} (1 GiB)"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_ONNX_MODEL_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

fn count_ops(body: &[lockstep_program::Step]) -> usize {
    body.iter()
        .map(|s| match s {
            lockstep_program::Step::Op(_) => 1,
            lockstep_program::Step::Repeat(r) => count_ops(&r.body),
        })
        .sum()
}
