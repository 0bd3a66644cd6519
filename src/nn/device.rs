//! `--device cpu|cuda:N|auto`.

use candle_core::Device;

/// Parses a device name. `auto` is the first CUDA GPU when this build has the `cuda` feature and a GPU
/// answers, else the CPU. `cuda:N` on a build without the feature is an error that says how to get one.
pub fn parse_device(name: &str) -> anyhow::Result<Device> {
    let name = name.trim();
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        _ => {
            let ordinal = name
                .strip_prefix("cuda:")
                .or_else(|| (name == "cuda").then_some("0"))
                .ok_or_else(|| anyhow::anyhow!("unknown device {name:?}: use cpu, cuda:N or auto"))?;
            let n: usize = ordinal
                .parse()
                .map_err(|_| anyhow::anyhow!("device {name:?}: {ordinal:?} is not a GPU number"))?;
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!(
                    "device {name:?}: this mammoflow was built without CUDA; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit)"
                );
            }
            Device::new_cuda(n).map_err(|e| anyhow::anyhow!("device {name:?}: {e}"))
        }
    }
}

/// A short name for logs and JSON: `cpu` or `cuda:N`.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("auto").is_ok());
        let e = parse_device("gpu7").unwrap_err().to_string();
        assert!(e.contains("cpu, cuda:N or auto"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a GPU number"), "{e}");
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
