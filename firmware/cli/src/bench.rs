//! `lockstep bench`: matmul throughput per backend, with NumPy's sgemm
//! measured in the same run as the yardstick.

use std::process::Command;
use std::time::Duration;

use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_kernels::reference::matmul::Transpose;
use lockstep_tensor::{Fill, Tensor};
use lockstep_vulkan::VulkanBackend;

use crate::commands::load_bundle;
use crate::failure::Failure;
use crate::BackendKind;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gflops(n: usize, t: Duration) -> f64 {
    2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e9
}

pub fn bench(
    sizes: &[usize],
    repeats: usize,
    backends: &[BackendKind],
    device: Option<usize>,
    python: &str,
) -> Result<(), Failure> {
    let repeats = repeats.max(1);
    let op = Op::Matmul(Transpose::None);
    println!("matmul C = A·B, square n×n float32, median of {repeats} runs (GFLOP/s = 2n³ / time)");
    let mut vulkan = if backends.contains(&BackendKind::Vulkan) {
        let b = VulkanBackend::new(load_bundle(None)?, device)?;
        println!(
            "vulkan: {} ({} binaries, {:?} matmul kernels)",
            b.device_info().name,
            b.variant().as_str(),
            b.matmul_kernels()
        );
        Some(b)
    } else {
        None
    };
    let mut cpu = backends.contains(&BackendKind::Cpu).then(CpuBackend::new);
    if cpu.is_some() {
        println!(
            "cpu reference: {}-lane matmul blocking, {} threads",
            lockstep_kernels::reference::matmul::Lanes::widest().count(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    let numpy = python != "none";
    println!(
        "{:>6}  {:>22}  {:>22}  {:>14}  {:>9}",
        "n", "vulkan kernel (GFLOP/s)", "vulkan w/ transfers", "cpu reference", "numpy"
    );
    for &n in sizes {
        let a = Tensor::filled(vec![n, n], 1, Fill::Uniform)
            .map_err(|e| Failure::Input(e.to_string()))?;
        let b = Tensor::filled(vec![n, n], 2, Fill::Uniform)
            .map_err(|e| Failure::Input(e.to_string()))?;
        let mut cols = vec![format!("{n:>6}")];
        let mut outputs: Vec<Tensor> = Vec::new();
        if let Some(v) = vulkan.as_mut() {
            // One warm-up run builds the pipeline.
            v.run_timed(&op, &[&a, &b], 1)?;
            let (c, times) = v.run_timed(&op, &[&a, &b], repeats)?;
            let start = std::time::Instant::now();
            v.run(&op, &[&a, &b])?;
            let whole = start.elapsed();
            cols.push(format!("{:>22.2}", gflops(n, median(times))));
            cols.push(format!("{:>22.2}", gflops(n, whole)));
            outputs.push(c);
        } else {
            cols.push(format!("{:>22}", "-"));
            cols.push(format!("{:>22}", "-"));
        }
        if let Some(c) = cpu.as_mut() {
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..repeats.min(3) {
                let start = std::time::Instant::now();
                last = Some(c.run(&op, &[&a, &b])?);
                times.push(start.elapsed());
            }
            cols.push(format!("{:>14.2}", gflops(n, median(times))));
            outputs.extend(last);
        } else {
            cols.push(format!("{:>14}", "-"));
        }
        cols.push(
            match numpy.then(|| numpy_gflops(python, n, repeats)).flatten() {
                Some(g) => format!("{g:>9.2}"),
                None => format!("{:>9}", "n/a"),
            },
        );
        println!("{}", cols.join("  "));
        if outputs.len() == 2 && !outputs[0].bit_eq(&outputs[1]) {
            return Err(Failure::Runtime(format!(
                "vulkan and cpu results differ at n={n}: this device breaks the float model"
            )));
        }
    }
    if vulkan.is_some() && cpu.is_some() {
        println!("vulkan and cpu outputs were bit-identical at every size");
    }
    Ok(())
}

/// NumPy's float32 matmul (OpenBLAS sgemm where NumPy links it), timed in a
/// child process; None when Python or NumPy is missing.
fn numpy_gflops(python: &str, n: usize, repeats: usize) -> Option<f64> {
    let script = format!(
        "import numpy as np, time\n\
         a = np.random.default_rng(1).random(({n}, {n}), dtype=np.float32)\n\
         b = np.random.default_rng(2).random(({n}, {n}), dtype=np.float32)\n\
         a @ b\n\
         ts = []\n\
         for _ in range({repeats}):\n\
         \x20   t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)\n\
         ts.sort(); print(2 * {n}**3 / ts[len(ts) // 2] / 1e9)\n"
    );
    let out = Command::new(python).arg("-c").arg(script).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
