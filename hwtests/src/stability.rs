//! Stability: the same job repeated gives the same bits, alone and while
//! another backend on the same device keeps it busy.

use std::sync::atomic::{AtomicBool, Ordering};

use lockstep_backend::{Backend, BackendError, Op};
use lockstep_tensor::{Fill, Tensor};

use crate::conformance::{run_example, EXAMPLES};
use crate::report::{Check, Mismatch};

/// Opens a second backend on the same device, inside the load thread (a
/// Vulkan backend stays on the thread that made it).
pub type LoadFactory = Box<dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

/// The repeated job: the attention example (36 ops, every kind of kernel
/// but the optimisers), identified by its trace root.
const JOB: &str = "attention";

/// Side of the matmul the load thread repeats.
const LOAD_MATMUL: usize = 192;

/// How many progress steps [`run`] reports.
pub fn progress_steps(repeats: u32) -> usize {
    2 * repeats as usize
}

/// Runs the job `repeats` times alone, then `repeats` times with the load
/// running (when `load` is given); every trace root must equal the first,
/// and every load matmul its first output.
pub fn run(
    backend: &mut dyn Backend,
    repeats: u32,
    load: Option<&LoadFactory>,
    progress: &mut dyn FnMut(&str),
) -> Check {
    let json = EXAMPLES
        .iter()
        .find(|(n, _)| *n == JOB)
        .map(|(_, j)| *j)
        .expect("the stability job is one of the examples");
    let mut first: Option<String> = None;
    let mut failed = 0u64;
    let mut mismatch = None;
    let mut cases = 0u64;
    let mut one = |backend: &mut dyn Backend, label: String, progress: &mut dyn FnMut(&str)| {
        progress(&label);
        cases += 1;
        let got = match run_example(backend, JOB, json) {
            Ok((root, _, _)) => root,
            Err(e) => format!("error: {e}"),
        };
        let expected = first.get_or_insert_with(|| got.clone()).clone();
        if got != expected || got.starts_with("error") {
            failed += 1;
            mismatch.get_or_insert_with(|| Mismatch {
                kernel: JOB.to_string(),
                case: label,
                expected,
                got,
            });
        }
    };
    for i in 0..repeats {
        one(backend, format!("{JOB} run {} alone", i + 1), progress);
    }
    let mut load_result = Ok(0u64);
    if let Some(factory) = load {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handle = s.spawn(|| load_loop(factory, &stop));
            for i in 0..repeats {
                one(backend, format!("{JOB} run {} under load", i + 1), progress);
            }
            stop.store(true, Ordering::SeqCst);
            load_result = handle
                .join()
                .unwrap_or_else(|_| Err("the load thread panicked".to_string()));
        });
    } else {
        for i in 0..repeats {
            one(
                backend,
                format!("{JOB} run {} (no load backend)", i + 1),
                progress,
            );
        }
    }
    match load_result {
        Ok(n) => cases += n,
        Err(e) => {
            failed += 1;
            mismatch.get_or_insert_with(|| Mismatch {
                kernel: "matmul".into(),
                case: format!("load {LOAD_MATMUL}x{LOAD_MATMUL}x{LOAD_MATMUL}"),
                expected: "the same output every time".into(),
                got: e,
            });
        }
    }
    Check::new("stability", cases, failed, mismatch)
}

/// Repeats one matmul on a second backend until told to stop; every output
/// must equal the first. Returns how many ran.
fn load_loop(factory: &LoadFactory, stop: &AtomicBool) -> Result<u64, String> {
    let mut backend = factory().map_err(|e| format!("opening the load backend: {e}"))?;
    let shape = vec![LOAD_MATMUL, LOAD_MATMUL];
    let a = Tensor::filled(shape.clone(), 11, Fill::Uniform).map_err(|e| e.to_string())?;
    let b = Tensor::filled(shape, 12, Fill::Uniform).map_err(|e| e.to_string())?;
    let op = Op::Matmul(lockstep_kernels::reference::matmul::Transpose::None);
    let mut first: Option<String> = None;
    let mut runs = 0;
    // At least one run, so a stop that comes early still loads the device.
    while runs == 0 || !stop.load(Ordering::SeqCst) {
        let out = backend.run(&op, &[&a, &b]).map_err(|e| e.to_string())?;
        let h = out.sha256_hex();
        if *first.get_or_insert_with(|| h.clone()) != h {
            return Err(format!("load matmul run {} gave {h}", runs + 1));
        }
        runs += 1;
    }
    Ok(runs)
}
