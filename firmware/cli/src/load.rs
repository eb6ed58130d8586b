//! `lockstep bench-node --clients N`: the load test. N clients, each on its
//! own connection and thread, submit the same mid-sized job (`softmax_rows`,
//! whose exp and division are the float model's software twins) one after
//! another, retrying when the node says busy; the figure is jobs per
//! second over the whole run, and how many receipts each device signed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockstep_protocol::{header, DeviceSelector, JobRequest, Receipt};
use lockstep_tensor::Tensor;
use rand_core::RngCore;

use crate::failure::Failure;
use crate::submit::{exchange_on, node_id, one_op_program, NodeArgs, BUSY};

/// Waits between tries when the node is busy; each job gives up after
/// `BUSY_TRIES_MAX` (a minute of busy answers).
const BUSY_RETRY_MS: u64 = 50;
const BUSY_TRIES_MAX: usize = 1200;

pub struct LoadArgs {
    pub clients: usize,
    pub jobs: usize,
    /// `[rows, cols]` of the job's input.
    pub shape: [usize; 2],
    pub device: Option<DeviceSelector>,
}

impl LoadArgs {
    pub fn parse(
        clients: usize,
        jobs: usize,
        shape: &str,
        device: Option<&str>,
    ) -> Result<LoadArgs, Failure> {
        let dims: Vec<usize> = shape
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| Failure::Input(format!("--shape {shape:?} is not ROWS,COLS")))?;
        let [rows, cols] = dims[..] else {
            return Err(Failure::Input(format!(
                "--shape {shape:?} is not ROWS,COLS"
            )));
        };
        Ok(LoadArgs {
            clients,
            jobs,
            shape: [rows, cols],
            device: device
                .map(DeviceSelector::parse)
                .transpose()
                .map_err(Failure::Input)?,
        })
    }
}

pub fn load(node: &NodeArgs, args: &LoadArgs) -> Result<(), Failure> {
    if args.clients == 0 || args.jobs == 0 {
        return Err(Failure::Input(
            "--clients and --jobs must be at least 1".into(),
        ));
    }
    let pinned = node_id(node)?;
    let x = Tensor::filled(args.shape.to_vec(), 3, lockstep_tensor::Fill::Uniform)
        .map_err(|e| Failure::Input(e.to_string()))?;
    let program = one_op_program("softmax_rows", std::slice::from_ref(&x), BTreeMap::new());
    let inputs = BTreeMap::from([("in0".to_string(), x.clone())]);
    let started = Instant::now();
    let per_client: Vec<Result<Vec<(Duration, Receipt)>, Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|_| {
                let (pinned, program, inputs, x) = (&pinned, &program, &inputs, &x);
                s.spawn(move || {
                    smol::block_on(async {
                        let connection = lockstep_transport::connect(node.node, pinned)
                            .await
                            .map_err(|e| Failure::Runtime(e.to_string()))?;
                        let mut done = Vec::with_capacity(args.jobs);
                        for _ in 0..args.jobs {
                            let t0 = Instant::now();
                            let mut tries = 0;
                            let receipt = loop {
                                let mut job_id = [0u8; 16];
                                rand_core::OsRng.fill_bytes(&mut job_id);
                                let request = JobRequest {
                                    job_id,
                                    program: program.to_postcard(),
                                    inputs: vec![header("in0", x)],
                                    references: vec![],
                                    submitter: None,
                                    device: args.device,
                                };
                                match exchange_on(&connection, node.node, request, inputs).await {
                                    Ok((d, _)) => {
                                        break Receipt::verify(&d.receipt, &d.signature, pinned)
                                            .map_err(|e| {
                                                Failure::Runtime(format!(
                                                    "the node's receipt does not verify: {e}"
                                                ))
                                            })?
                                    }
                                    Err(Failure::Runtime(m))
                                        if m.contains(BUSY) && tries < BUSY_TRIES_MAX =>
                                    {
                                        tries += 1;
                                        smol::Timer::after(Duration::from_millis(BUSY_RETRY_MS))
                                            .await;
                                    }
                                    Err(e) => return Err(e),
                                }
                            };
                            done.push((t0.elapsed(), receipt));
                        }
                        connection.close(0u32.into(), b"done");
                        Ok(done)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::Runtime("a client panicked".into())))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut times = Vec::new();
    let mut per_device: BTreeMap<String, usize> = BTreeMap::new();
    for client in per_client {
        for (t, r) in client? {
            times.push(t);
            let device = match (r.device.index, &r.device.uuid) {
                (Some(i), Some(u)) => format!("{i} ({u})"),
                _ => r.device.name.clone(),
            };
            *per_device.entry(device).or_default() += 1;
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "load: {} clients x {} jobs of softmax_rows on {}x{}: {} jobs in {:.2} s, {:.1} jobs/s; latency p50 {:.1} ms, p99 {:.1} ms (busy retries included)",
        args.clients,
        args.jobs,
        args.shape[0],
        args.shape[1],
        times.len(),
        wall.as_secs_f64(),
        times.len() as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    for (device, n) in &per_device {
        println!("  device {device}: {n} jobs");
    }
    Ok(())
}
