//! Device choice (`--device cpu|cuda[:N]|auto`) and the CPU thread budget.

use std::str::FromStr;

use candle_core::Device;

use super::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// CUDA device 0 when this binary has CUDA and a GPU answers, else CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device '{s}': use cpu, cuda, cuda:N or auto")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => write!(f, "auto"),
        }
    }
}

/// Opens the chosen device. Asking for CUDA from a CPU-only build is an error that says how to
/// get a CUDA build; `auto` quietly falls back to the CPU.
pub fn select_device(choice: DeviceChoice) -> Result<Device, EngineError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => cuda(n),
        DeviceChoice::Auto => Ok(cuda(0).unwrap_or(Device::Cpu)),
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device, EngineError> {
    Device::new_cuda(n).map_err(|e| {
        EngineError::Device(format!(
            "CUDA device {n} is not usable ({e}); check the NVIDIA driver and that the GPU is \
             visible to this process (nvidia-smi), or run with --device cpu"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device, EngineError> {
    Err(EngineError::Device(format!(
        "--device cuda:{n} was requested but this binary was built without CUDA support; \
         rebuild with `cargo build --release --features cuda` (see Dockerfile.cuda) or run \
         with --device cpu"
    )))
}

/// Caps candle's and rayon's CPU thread pools. Must run before the first tensor operation:
/// both read these variables once, when their pools start.
pub fn set_cpu_threads(threads: usize) {
    let n = threads.max(1).to_string();
    // SAFETY-relevant only in edition 2024: called at start-up, before worker threads exist.
    std::env::set_var("RAYON_NUM_THREADS", &n);
    std::env::set_var("CANDLE_NUM_THREADS", &n);
    // candle's element-wise ops run on its own barrier pool, whose workers spin 25,000 rounds
    // after each job before parking: on a machine with as many threads as cores they spin
    // against our rayon workers (and anyone else's process). Parking at once measured +11%
    // prefill on SmolLM2 at 2 threads (kernels-notes.md). A value set by the user wins.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

/// glibc returns every freed block above 128 KB-32 MB (its adaptive mmap threshold) to the
/// kernel and trims the heap's top beyond 128 KB; a forward pass allocates and frees
/// megabytes of activations per matrix, so each is paid again in page faults and page zeroing
/// (~1 M faults, ~18% of CPU time in system calls for a 512-token prefill at the 1B shape).
/// Raising the thresholds keeps those pages in the process: ~+10% prefill measured
/// (kernels-notes.md). Call once at start-up; a no-op outside glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Gives the heap's free pages back to the kernel. `keep_freed_memory` keeps up to 1 GB of
/// them for the next forward pass; after a one-off burst (a large embedding batch) that would
/// pin the process at its peak, so the worker calls this when such a task ends.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Physical cores available to this process (the default thread count: SMT siblings only
/// fight over the same FMA units in matmul-bound code).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(physical_cores().unwrap_or(usize::MAX))
        .max(1)
}

fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let (k, v) = line.split_once(':')?;
        match k.trim() {
            "physical id" => phys = Some(v.trim().to_owned()),
            "core id" => core = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceChoice::Cuda(1)));
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        let err = select_device(DeviceChoice::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert!(select_device(DeviceChoice::Auto).unwrap().is_cpu());
    }
}
