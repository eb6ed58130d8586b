//! `run`, `devices`, `kernels`, `random`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lockstep_backend::{Backend, CpuBackend, Op, OpError};
use lockstep_kernels::{Bundle, Variant};
use lockstep_tensor::{npy, Fill, Tensor};
use lockstep_vulkan::{Instance, VulkanBackend};

use crate::failure::Failure;
use crate::{BackendKind, Target};

pub fn load_bundle(dir: Option<&Path>) -> Result<Bundle, Failure> {
    Ok(match dir {
        Some(d) => Bundle::from_dir(d)?,
        None => Bundle::embedded()?,
    })
}

pub fn open_backend(target: &Target) -> Result<Box<dyn Backend>, Failure> {
    if target.backend == BackendKind::Cpu {
        if target.cross_implementation_test {
            return Err(Failure::Input(
                "--cross-implementation-test opens a Vulkan device; it does not apply to --backend cpu".into(),
            ));
        }
        if target.device.is_some() {
            return Err(Failure::Input(
                "--device selects a Vulkan device; it does not apply to --backend cpu".into(),
            ));
        }
        // The CPU reference needs no binaries, but a --bundle that does not
        // verify is still refused rather than ignored.
        if let Some(dir) = &target.bundle {
            Bundle::from_dir(dir)?;
        }
        return Ok(Box::new(CpuBackend::new()));
    }
    if target.cross_implementation_test {
        if target.bundle.is_some() {
            return Err(Failure::Input(
                "--cross-implementation-test runs the built-in portable bundle; drop --bundle"
                    .into(),
            ));
        }
        let backend = VulkanBackend::new_cross_implementation_test(target.device)?;
        if let Some(why) = backend.non_conforming() {
            eprintln!("lockstep: {why}");
        }
        return Ok(Box::new(backend));
    }
    let bundle = load_bundle(target.bundle.as_deref())?;
    Ok(Box::new(VulkanBackend::new(bundle, target.device)?))
}

/// The id of the bundle a target runs: the portable bundle's for a
/// cross-implementation test, else the given or built-in one's.
pub fn bundle_id(target: &Target) -> Result<String, Failure> {
    if target.cross_implementation_test {
        return Ok(Bundle::embedded_portable()?.id_hex());
    }
    Ok(load_bundle(target.bundle.as_deref())?.id_hex())
}

fn parse_attrs(attrs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for a in attrs {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Failure::Input(format!("--attr {a:?} is not KEY=VALUE")));
        };
        if map
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(Failure::Input(format!("--attr {k} given twice")));
        }
    }
    Ok(map)
}

pub fn run(
    op_name: &str,
    inputs: &[PathBuf],
    out: &Path,
    attrs: &[String],
    target: &Target,
    quiet: bool,
) -> Result<(), Failure> {
    let op = Op::parse(op_name, &parse_attrs(attrs)?).map_err(|e| Failure::Input(e.to_string()))?;
    if inputs.len() != op.arity() {
        return Err(Failure::Input(
            OpError::Arity {
                op: op.name(),
                expected: op.arity(),
                got: inputs.len(),
            }
            .to_string(),
        ));
    }
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|p| npy::read_file(p).map_err(|e| Failure::Input(e.to_string())))
        .collect::<Result<_, _>>()?;
    let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
    // Shapes are checked before a device is opened: bad input costs nothing.
    op.output_shape(&shapes).map_err(|e| match e {
        OpError::Shape {
            input, ref detail, ..
        } => Failure::Input(format!(
            "{}: {}: {detail}",
            inputs[input].display(),
            op.name()
        )),
        other => Failure::Input(other.to_string()),
    })?;
    let mut backend = open_backend(target)?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let start = Instant::now();
    let result = backend.run(&op, &refs)?;
    let elapsed = start.elapsed();
    npy::write_file(out, &result).map_err(|e| Failure::Runtime(e.to_string()))?;
    if !quiet {
        let fp = backend.fingerprint();
        let ins: Vec<String> = tensors.iter().map(|t| t.shape_string()).collect();
        let flops = op.flops(&shapes) as f64;
        let secs = elapsed.as_secs_f64();
        println!(
            "op      {} {} -> {}",
            op.name(),
            ins.join(" · "),
            result.shape_string()
        );
        println!("device  {}: {} ({})", fp.backend, fp.name, fp.driver_info);
        if let Some(why) = backend.non_conforming() {
            println!("NOTE    {why}");
        }
        if flops > 0.0 && secs > 0.0 {
            println!(
                "time    {:.3} s, {:.2} GFLOP/s including transfers",
                secs,
                flops / secs / 1e9
            );
        } else {
            println!("time    {secs:.3} s");
        }
        println!("sha256  {}", result.sha256_hex());
        println!("wrote   {}", out.display());
    }
    Ok(())
}

/// `lockstep devices --json`: one object per Vulkan device.
pub fn device_list() -> Result<Vec<serde_json::Value>, Failure> {
    let instance = Instance::new()?;
    let devices = instance.devices()?;
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "index": d.index,
                "name": d.name,
                "type": d.device_type,
                "vendor_id": d.vendor_id,
                "device_id": d.device_id,
                "driver_id": d.driver_id,
                "driver_name": d.driver_name,
                "driver_info": d.driver_info,
                "driver_version": d.driver_version,
                "api_version": d.api_version_string(),
                "device_uuid": hex::encode(d.device_uuid),
                "float32": {
                    "rounding_mode_rte": d.float_controls.rounding_mode_rte,
                    "denorm_preserve": d.float_controls.denorm_preserve,
                    "denorm_flush_to_zero": d.float_controls.denorm_flush_to_zero,
                    "signed_zero_inf_nan_preserve": d.float_controls.signed_zero_inf_nan_preserve,
                },
                "max_workgroup_count": d.limits.max_workgroup_count,
                "max_storage_buffer_range": d.limits.max_storage_buffer_range,
                "device_local_bytes": d.device_local_bytes,
                "usable": d.unsupported().is_none(),
                "cross_implementation_test_only": d.unsupported().is_some()
                    && d.unsupported_for_cross_implementation_test().is_none(),
            })
        })
        .collect();
    Ok(list)
}

pub fn devices(json: bool) -> Result<(), Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&device_list()?).unwrap_or_default()
        );
        return Ok(());
    }
    let instance = Instance::new()?;
    let devices = instance.devices()?;
    if devices.is_empty() {
        println!("no Vulkan devices (install a driver; mesa-vulkan-drivers gives lavapipe)");
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    for d in &devices {
        println!("[{}] {} ({})", d.index, d.name, d.device_type);
        println!(
            "    vendor 0x{:04x}  device 0x{:04x}  driver id {}  driver version 0x{:08x}  API {}",
            d.vendor_id,
            d.device_id,
            d.driver_id,
            d.driver_version,
            d.api_version_string()
        );
        println!("    driver: {} {}", d.driver_name, d.driver_info);
        // Certification reports bind to this UUID: it tells apart two
        // devices of the same model.
        println!("    device UUID: {}", hex::encode(d.device_uuid));
        let fc = d.float_controls;
        println!(
            "    float32 controls: RTE {}  DenormPreserve {}  SignedZeroInfNanPreserve {}  (DenormFlushToZero {})",
            yes(fc.rounding_mode_rte),
            yes(fc.denorm_preserve),
            yes(fc.signed_zero_inf_nan_preserve),
            yes(fc.denorm_flush_to_zero)
        );
        println!(
            "    limits: workgroups {:?}, storage buffer range {} B, device-local memory {} MiB",
            d.limits.max_workgroup_count,
            d.limits.max_storage_buffer_range,
            d.device_local_bytes >> 20
        );
        match d.unsupported() {
            None => println!(
                "    usable: yes (loads the {} binaries)",
                if fc.denorm_preserve {
                    Variant::DenormPreserve.as_str()
                } else {
                    Variant::Base.as_str()
                }
            ),
            Some(e) => {
                println!("    usable: no: {e}");
                match d.unsupported_for_cross_implementation_test() {
                    None => println!(
                        "    cross-implementation tests only: --cross-implementation-test opens it \
                         with the test-only portable bundle (non-conforming, never certifies or serves)"
                    ),
                    Some(e) => println!("    not even for cross-implementation tests: {e}"),
                }
            }
        }
    }
    Ok(())
}

pub fn kernels(bundle: Option<&Path>, json: bool) -> Result<(), Failure> {
    let bundle = load_bundle(bundle)?;
    if json {
        let kernels: Vec<serde_json::Value> = bundle
            .kernels()
            .map(|k| {
                let hashes: BTreeMap<&str, &str> = k
                    .spec
                    .binaries
                    .iter()
                    .map(|(v, b)| (v.as_str(), b.sha256.as_str()))
                    .collect();
                serde_json::json!({"name": k.spec.name, "sha256": hashes})
            })
            .collect();
        let doc = serde_json::json!({
            "bundle_id": bundle.id_hex(),
            "version": bundle.manifest().version,
            "kernels": kernels,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!(
        "bundle {} (version {}, {})",
        bundle.id_hex(),
        bundle.manifest().version,
        bundle.kind().as_str()
    );
    for k in bundle.kernels() {
        let mut binaries = k.spec.binaries.iter();
        if let Some((_, first)) = binaries.next() {
            let rest: Vec<String> = binaries
                .map(|(v, b)| format!("{} {}", v.as_str(), b.sha256))
                .collect();
            if rest.is_empty() {
                println!("  {:<14} {}", k.spec.name, first.sha256);
            } else {
                println!(
                    "  {:<14} {}  ({})",
                    k.spec.name,
                    first.sha256,
                    rest.join(", ")
                );
            }
        }
    }
    Ok(())
}

pub fn random(shape: Vec<usize>, seed: u64, fill: &str, out: &Path) -> Result<(), Failure> {
    let fill = match fill {
        "uniform" => Fill::Uniform,
        "edgy" => Fill::Edgy {
            edge_per_mille: 100,
        },
        other => {
            return Err(Failure::Input(format!(
                "--fill {other:?}: use uniform or edgy"
            )))
        }
    };
    let t = Tensor::filled(shape, seed, fill).map_err(|e| Failure::Input(e.to_string()))?;
    npy::write_file(out, &t).map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(())
}

pub fn show(file: &Path, limit: usize) -> Result<(), Failure> {
    let t = npy::read_file(file).map_err(|e| Failure::Input(e.to_string()))?;
    println!("shape   {}", t.shape_string());
    println!("sha256  {}", t.sha256_hex());
    // Shortest decimal that reads back to the same float (Rust's Display).
    let shown: Vec<String> = t
        .data()
        .iter()
        .take(limit)
        .map(|v| format!("{v}"))
        .collect();
    let more = t.len().saturating_sub(limit);
    let tail = if more > 0 {
        format!(" … ({more} more)")
    } else {
        String::new()
    };
    println!("values  [{}]{tail}", shown.join(", "));
    Ok(())
}

/// Prints the node id. It only reads the key: creating one is lockstepd's
/// job on first start, so a typo in --state cannot mint a new identity.
pub fn identity(state: &Path) -> Result<(), Failure> {
    let key = lockstep_identity::DeviceKey::load(state).map_err(|e| match e {
        lockstep_identity::KeyError::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Failure::Input(format!(
                "{}: no device key file here; lockstepd --file-key creates it on first start (a node on a TPM-sealed identity keeps none: ask it with `lockstep status`)",
                state.display()
            ))
        }
        other => Failure::Runtime(other.to_string()),
    })?;
    print!("{}", key.node_id().to_public_key_file());
    Ok(())
}
