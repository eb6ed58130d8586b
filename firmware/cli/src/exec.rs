//! `lockstep exec`: run a program, write its outputs and its trace.

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_limits::{DEFAULT_PROGRAM_MEMORY_BYTES, MAX_PROGRAM_BYTES};
use lockstep_program::{
    execute, validate, DecodeError, ExecError, ExecOptions, ExecReport, Program, ValidateOptions,
    ValidatedProgram,
};
use lockstep_tensor::{npy, shape_string, Tensor};

use crate::commands::open_backend;
use crate::failure::Failure;
use crate::Target;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The program: JSON (docs/protocol.md), or its postcard encoding.
    #[arg(value_name = "PROGRAM.json")]
    program: PathBuf,
    /// A declared input and the .npy file that holds it; once per input.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Where to write every output as NAME.npy, and trace.json.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    #[command(flatten)]
    target: Target,
    /// Refuse the program if its live tensors would ever take more bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_PROGRAM_MEMORY_BYTES)]
    memory_limit: u64,
    /// Do not hash outputs into a trace (and write no trace.json).
    #[arg(long)]
    no_trace: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

/// Reads and decodes a program file: JSON if its first non-blank byte is
/// `{`, postcard otherwise.
pub fn load_program(path: &Path) -> Result<Program, Failure> {
    let named = |e: &dyn std::fmt::Display| Failure::Input(format!("{}: {e}", path.display()));
    let file = fs::File::open(path).map_err(|e| named(&format!("cannot read: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| named(&format!("cannot read: {e}")))?
        .len();
    if size > MAX_PROGRAM_BYTES as u64 {
        return Err(named(&DecodeError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
        }));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROGRAM_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| named(&format!("cannot read: {e}")))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let program = if first == Some(&b'{') {
        Program::from_json(&bytes)
    } else {
        Program::from_postcard(&bytes)
    };
    program.map_err(|e| named(&e))
}

/// Parses `--input NAME=FILE` flags and checks them against the declared
/// inputs before any file is read.
pub(crate) fn input_files(
    program_path: &Path,
    flags: &[String],
    program: &ValidatedProgram,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    input_files_except(program_path, flags, program, &Default::default())
}

/// [`input_files`] for a program whose inputs named in `referenced` are
/// given otherwise (`--ref`): those must not be given as files, and every
/// other declared input must.
pub(crate) fn input_files_except(
    program_path: &Path,
    flags: &[String],
    program: &ValidatedProgram,
    referenced: &std::collections::BTreeSet<String>,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    for name in referenced {
        if !program.inputs().iter().any(|d| &d.name == name) {
            return Err(Failure::Input(format!(
                "--ref {name}: {} declares no input '{name}'",
                program_path.display()
            )));
        }
    }
    let mut files = BTreeMap::new();
    for flag in flags {
        let Some((name, file)) = flag.split_once('=') else {
            return Err(Failure::Input(format!(
                "--input {flag:?} is not NAME=FILE.npy"
            )));
        };
        if !program.inputs().iter().any(|d| d.name == name) {
            let declared: Vec<&str> = program.inputs().iter().map(|d| d.name.as_str()).collect();
            let declared = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            };
            return Err(Failure::Input(format!(
                "--input {flag}: {} declares no input '{name}' (its inputs: {declared})",
                program_path.display()
            )));
        }
        if referenced.contains(name) {
            return Err(Failure::Input(format!(
                "input '{name}' is given both as --input and as --ref"
            )));
        }
        if files
            .insert(name.to_string(), PathBuf::from(file))
            .is_some()
        {
            return Err(Failure::Input(format!("--input {name} is given twice")));
        }
    }
    for decl in program.inputs() {
        if !files.contains_key(&decl.name) && !referenced.contains(&decl.name) {
            return Err(Failure::Input(format!(
                "{}: input '{}' ({}) is declared but no --input {}=FILE.npy was given",
                program_path.display(),
                decl.name,
                shape_string(&decl.shape),
                decl.name
            )));
        }
    }
    Ok(files)
}

pub(crate) fn read_inputs(
    program_path: &Path,
    program: &ValidatedProgram,
    files: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, Tensor>, Failure> {
    let mut tensors = BTreeMap::new();
    for decl in program.inputs() {
        // Inputs given as references are not read here.
        let Some(path) = files.get(&decl.name) else {
            continue;
        };
        let t = npy::read_file(path).map_err(|e| Failure::Input(e.to_string()))?;
        if t.shape() != decl.shape.as_slice() {
            return Err(Failure::Input(format!(
                "{}: shape {} differs from the shape {} that {} declares for input '{}'",
                path.display(),
                t.shape_string(),
                shape_string(&decl.shape),
                program_path.display(),
                decl.name
            )));
        }
        tensors.insert(decl.name.clone(), t);
    }
    Ok(tensors)
}

pub fn exec(args: &ExecArgs) -> Result<(), Failure> {
    let program = load_program(&args.program)?;
    let options = ValidateOptions {
        memory_limit: args.memory_limit,
    };
    let program = validate(&program, &options).map_err(|e| {
        let hint = if matches!(
            e,
            lockstep_program::ProgramError::Step {
                problem: lockstep_program::StepProblem::Memory { .. },
                ..
            } | lockstep_program::ProgramError::InputsOverMemory { .. }
        ) {
            " (--memory-limit)"
        } else {
            ""
        };
        Failure::Input(format!("{}: {e}{hint}", args.program.display()))
    })?;
    let files = input_files(&args.program, &args.inputs, &program)?;
    let inputs = read_inputs(&args.program, &program, &files)?;
    // Everything about the input is checked: only now open a device.
    let mut backend = open_backend(&args.target)?;
    fs::create_dir_all(&args.out_dir)
        .map_err(|e| Failure::Runtime(format!("{}: cannot create: {e}", args.out_dir.display())))?;
    let trace_path = args.out_dir.join("trace.json");
    let bundle_id = if args.no_trace {
        // A stale trace from an earlier run would not describe these outputs.
        match fs::remove_file(&trace_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Failure::Runtime(format!(
                    "{}: cannot remove: {e}",
                    trace_path.display()
                )))
            }
            _ => {}
        }
        None
    } else {
        Some(crate::commands::bundle_id(&args.target)?)
    };

    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if last_shown.elapsed() >= Duration::from_millis(100) || done == total {
            last_shown = Instant::now();
            eprint!("\rlockstep: op {done}/{total}");
            if done == total {
                eprint!("\r\x1b[K");
            }
            let _ = std::io::stderr().flush();
        }
    };
    let exec_options = ExecOptions {
        trace: !args.no_trace,
        progress: if show_progress {
            Some(&mut progress)
        } else {
            None
        },
        deadline: None,
        ..ExecOptions::default()
    };
    let report =
        execute(&program, backend.as_mut(), inputs, exec_options).map_err(|e| match e {
            ExecError::Backend { ref error, .. } if !error.is_input_error() => {
                Failure::Runtime(e.to_string())
            }
            ExecError::WrongShape { .. } => Failure::Runtime(e.to_string()),
            other => Failure::Input(other.to_string()),
        })?;

    let mut written = Vec::new();
    for (name, t) in &report.outputs {
        let path = args.out_dir.join(format!("{name}.npy"));
        npy::write_file(&path, t).map_err(|e| Failure::Runtime(e.to_string()))?;
        written.push(path);
    }
    let fp = backend.fingerprint();
    if let (Some(trace), Some(bundle_id)) = (&report.trace, &bundle_id) {
        let ops: Vec<serde_json::Value> = trace
            .ops
            .iter()
            .map(|e| {
                serde_json::json!({
                    "index": e.index,
                    "path": e.path.to_string(),
                    "op": e.op,
                    "output_sha256": hex::encode(e.output_sha256),
                })
            })
            .collect();
        let outputs: BTreeMap<&str, String> = report
            .outputs
            .iter()
            .map(|(k, t)| (k.as_str(), t.sha256_hex()))
            .collect();
        let mut doc = serde_json::json!({
            "program_sha256": hex::encode(program.sha256()),
            "bundle_id": bundle_id,
            "backend": fp.backend,
            "device": {
                "name": fp.name,
                "vendor_id": fp.vendor_id,
                "device_id": fp.device_id,
                "driver_id": fp.driver_id,
                "driver_version": fp.driver_version,
                "driver_info": fp.driver_info,
                "api_version": fp.api_version,
            },
            "ops": ops,
            "leaf_count": trace.ops.len(),
            "root": hex::encode(trace.root),
            "outputs": outputs,
        });
        if let Some(why) = backend.non_conforming() {
            doc["non_conforming"] = serde_json::Value::String(why.to_string());
        }
        let bytes = lockstep_canonical_json::to_pretty_vec(&doc)
            .map_err(|e| Failure::Runtime(format!("trace.json: {e}")))?;
        write_atomic(&trace_path, &bytes)?;
        written.push(trace_path);
    }
    if !args.quiet {
        summary(
            args,
            &program,
            &report,
            fp,
            backend.peak_device_bytes(),
            &written,
        );
        if let Some(why) = backend.non_conforming() {
            println!("NOTE    {why}");
        }
    }
    Ok(())
}

/// Writes through a temporary file and a rename, as `npy::write_file` does.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fail =
        |e: std::io::Error| Failure::Runtime(format!("{}: cannot write: {e}", path.display()));
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn summary(
    args: &ExecArgs,
    program: &ValidatedProgram,
    report: &ExecReport,
    fp: &lockstep_backend::DeviceFingerprint,
    device_peak: Option<u64>,
    written: &[PathBuf],
) {
    let secs = report.wall.as_secs_f64();
    println!(
        "program {} (sha256 {})",
        args.program.display(),
        hex::encode(program.sha256())
    );
    println!("device  {}: {} ({})", fp.backend, fp.name, fp.driver_info);
    if secs > 0.0 {
        println!(
            "ops     {} executed in {secs:.3} s ({:.0} ops/s)",
            report.op_count,
            report.op_count as f64 / secs
        );
    } else {
        println!("ops     {} executed", report.op_count);
    }
    // Training programs are a top-level repeat: report its rate too.
    let steps: u64 = program
        .program()
        .body
        .iter()
        .filter_map(|s| match s {
            lockstep_program::model::Step::Repeat(r) => Some(u64::from(r.times)),
            _ => None,
        })
        .sum();
    if steps > 0 && secs > 0.0 {
        println!(
            "steps   {steps} repeat iterations, {:.1} steps/s (whole program)",
            steps as f64 / secs
        );
    }
    let device = match device_peak {
        Some(b) => format!("; device memory peak {}", human_bytes(b)),
        None => String::new(),
    };
    println!(
        "memory  peak {} of live tensors (limit {}){device}",
        human_bytes(report.peak_bytes),
        human_bytes(program.memory_limit())
    );
    match &report.trace {
        Some(t) => println!(
            "trace   root {} over {} leaves (hashing {:.3} s)",
            hex::encode(t.root),
            t.ops.len(),
            report.hashing.as_secs_f64()
        ),
        None => println!("trace   off (--no-trace)"),
    }
    for p in written {
        println!("wrote   {}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
    }
}
