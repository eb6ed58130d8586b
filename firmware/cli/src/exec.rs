//! `lockstep exec`: run a program, write its outputs and its trace.

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_limits::{DEFAULT_PROGRAM_MEMORY_BYTES, MAX_PROGRAM_BYTES};
use lockstep_program::{
    execute, validate, DecodeError, ExecError, ExecOptions, ExecReport, OpProfile, Program,
    ValidateOptions, ValidatedProgram,
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
    /// A directory holding NAME.npy for declared inputs not given with
    /// --input (the weights `lockstep import` writes).
    #[arg(long, value_name = "DIR")]
    inputs_dir: Option<PathBuf>,
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
    /// Time every op execution and print the ops that took longest, with
    /// their counts, after the summary.
    #[arg(long)]
    profile: bool,
    /// Run op by op (every operand uploaded, every output downloaded and
    /// hashed on the host) instead of resident on the device; for
    /// comparison. `--profile` implies it.
    #[arg(long)]
    per_op: bool,
}

/// Rows of the `--profile` table; the rest are summed in one line.
const PROFILE_ROWS: usize = 15;

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
    crate::api::program_from_bytes(&bytes, &path.display().to_string())
}

/// Validates `program` for a run within `memory_limit` bytes; `shown`
/// names it in the error, which hints at `--memory-limit` when memory is
/// what failed.
pub(crate) fn validated(
    program: &Program,
    memory_limit: u64,
    shown: &str,
) -> Result<ValidatedProgram, Failure> {
    let options = ValidateOptions { memory_limit };
    validate(program, &options).map_err(|e| {
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
        Failure::Input(format!("{shown}: {e}{hint}"))
    })
}

/// [`execute`], its errors sorted into bad input and machine problems.
pub(crate) fn execute_mapped(
    program: &ValidatedProgram,
    backend: &mut dyn lockstep_backend::Backend,
    inputs: BTreeMap<String, Tensor>,
    options: ExecOptions<'_>,
) -> Result<lockstep_program::ExecReport, Failure> {
    execute(program, backend, inputs, options).map_err(|e| match e {
        ExecError::Backend { ref error, .. } if !error.is_input_error() => {
            Failure::Runtime(e.to_string())
        }
        ExecError::Output { ref error, .. } if !error.is_input_error() => {
            Failure::Runtime(e.to_string())
        }
        ExecError::WrongShape { .. } => Failure::Runtime(e.to_string()),
        other => Failure::Input(other.to_string()),
    })
}

/// The trace.json document: the program, bundle and device, every op's
/// output hash, the root, and the outputs' hashes.
pub(crate) fn trace_document(
    program: &ValidatedProgram,
    trace: &lockstep_program::Trace,
    outputs: &BTreeMap<String, Tensor>,
    bundle_id: &str,
    backend: &dyn lockstep_backend::Backend,
) -> serde_json::Value {
    let fp = backend.fingerprint();
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
    let outputs: BTreeMap<&str, String> = outputs
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
    doc
}

/// Parses `--input NAME=FILE` flags and checks them against the declared
/// inputs before any file is read.
pub(crate) fn input_files(
    program_path: &Path,
    flags: &[String],
    inputs_dir: Option<&Path>,
    program: &ValidatedProgram,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    input_files_except(
        program_path,
        flags,
        inputs_dir,
        program,
        &Default::default(),
    )
}

/// [`input_files`] for a program whose inputs named in `referenced` are
/// given otherwise (`--ref`): those must not be given as files, and every
/// other declared input must.
pub(crate) fn input_files_except(
    program_path: &Path,
    flags: &[String],
    inputs_dir: Option<&Path>,
    program: &ValidatedProgram,
    referenced: &std::collections::BTreeSet<String>,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    let flags = &with_inputs_dir(flags, inputs_dir, program, referenced);
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

/// `flags` plus `NAME=DIR/NAME.npy` for each declared input that `flags`
/// does not name and whose file is in `dir`.
fn with_inputs_dir(
    flags: &[String],
    dir: Option<&Path>,
    program: &ValidatedProgram,
    referenced: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut all = flags.to_vec();
    let Some(dir) = dir else { return all };
    for decl in program.inputs() {
        let given = referenced.contains(&decl.name)
            || flags
                .iter()
                .any(|f| f.split_once('=').is_some_and(|(n, _)| n == decl.name));
        let file = dir.join(format!("{}.npy", decl.name));
        if !given && file.is_file() {
            all.push(format!("{}={}", decl.name, file.display()));
        }
    }
    all
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
    let program = validated(
        &program,
        args.memory_limit,
        &args.program.display().to_string(),
    )?;
    let files = input_files(
        &args.program,
        &args.inputs,
        args.inputs_dir.as_deref(),
        &program,
    )?;
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
        profile: args.profile,
        per_op: args.per_op,
        ..ExecOptions::default()
    };
    let report = execute_mapped(&program, backend.as_mut(), inputs, exec_options)?;

    let mut written = Vec::new();
    for (name, t) in &report.outputs {
        let path = args.out_dir.join(format!("{name}.npy"));
        npy::write_file(&path, t).map_err(|e| Failure::Runtime(e.to_string()))?;
        written.push(path);
    }
    let fp = backend.fingerprint();
    if let (Some(trace), Some(bundle_id)) = (&report.trace, &bundle_id) {
        let doc = trace_document(
            &program,
            trace,
            &report.outputs,
            bundle_id,
            backend.as_ref(),
        );
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
        if let Some(profile) = &report.profile {
            print!("{}", profile_table(profile, report.wall, PROFILE_ROWS));
        }
    }
    Ok(())
}

/// Writes through a temporary file and a rename, as `npy::write_file` does.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
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
    let moved = &report.transfers;
    println!(
        "moved   {} to the device, {} back; {} submits, {} fence waits ({})",
        human_bytes(moved.bytes_to_device),
        human_bytes(moved.bytes_from_device),
        moved.submits,
        moved.fence_waits,
        if report.resident {
            "resident: tensors stayed on the device, leaves hashed there"
        } else {
            "op by op"
        }
    );
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
        Some(t) if report.resident => println!(
            "trace   root {} over {} leaves (hashed on the device)",
            hex::encode(t.root),
            t.ops.len(),
        ),
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `--profile` table: the `rows` ops with the most total time (the
/// backend calls alone), then one line for the rest. `share` is of the time
/// in all backend calls.
fn profile_table(profile: &[OpProfile], wall: Duration, rows: usize) -> String {
    use std::fmt::Write as _;
    let timed: Duration = profile.iter().map(|r| r.total).sum();
    let executions: u64 = profile.iter().map(|r| r.count).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {executions} op executions: {:.3} ms in backend calls of {:.3} ms wall",
        ms(timed),
        ms(wall)
    );
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:>10} {:>9} {:>9} {:>6}",
        "op", "count", "total ms", "mean ms", "max ms", "share"
    );
    for r in profile.iter().take(rows) {
        let mean = r.total.as_secs_f64() * 1e3 / r.count.max(1) as f64;
        let share = if timed.is_zero() {
            0.0
        } else {
            100.0 * r.total.as_secs_f64() / timed.as_secs_f64()
        };
        let _ = writeln!(
            out,
            "{:<26} {:>7} {:>10.3} {:>9.3} {:>9.3} {:>5.1}%",
            r.op,
            r.count,
            ms(r.total),
            mean,
            ms(r.max),
            share
        );
    }
    let rest = profile.get(rows..).unwrap_or_default();
    if !rest.is_empty() {
        let total: Duration = rest.iter().map(|r| r.total).sum();
        let count: u64 = rest.iter().map(|r| r.count).sum();
        let _ = writeln!(
            out,
            "({} more ops: {:.3} ms in {count} executions)",
            rest.len(),
            ms(total)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, profile_table};
    use lockstep_program::OpProfile;
    use std::time::Duration;

    #[test]
    fn profile_table_shows_the_top_rows_and_sums_the_rest() {
        let row = |op: &str, count, total_ms| OpProfile {
            op: op.to_string(),
            count,
            total: Duration::from_millis(total_ms),
            max: Duration::from_millis(total_ms / count.max(1)),
        };
        let profile = vec![row("matmul", 4, 60), row("add", 10, 30), row("relu", 5, 10)];
        let t = profile_table(&profile, Duration::from_millis(120), 2);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "profile 19 op executions: 100.000 ms in backend calls of 120.000 ms wall"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["op", "count", "total", "ms", "mean", "ms", "max", "ms", "share"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["matmul", "4", "60.000", "15.000", "15.000", "60.0%"]
        );
        assert!(lines[3].starts_with("add "), "{t}");
        assert_eq!(lines[4], "(1 more ops: 10.000 ms in 5 executions)");
        assert_eq!(lines.len(), 5);
        // Everything fits: no line for the rest.
        assert_eq!(
            profile_table(&profile, Duration::ZERO, 15).lines().count(),
            5
        );
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
    }
}
