//! GPU state from NVML, sampled off the request path. A machine without the NVIDIA driver is a
//! normal state ("unavailable: why"), reported once, never an error per request.
//!
//! The sampler sits behind the `GpuSource` trait so the rest (the monitor, /api/gpu, the
//! `gpu` command, the metrics) is the same code with or without a GPU, and testable here.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One GPU at one moment. Optional fields are those a driver may not report (e.g. power on
/// some consumer boards).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_free_bytes: u64,
    /// GPU memory held by this process (its entry among the running compute processes).
    pub process_memory_bytes: Option<u64>,
    pub utilization_gpu_percent: Option<u32>,
    pub utilization_memory_percent: Option<u32>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
}

/// What the monitor last saw.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GpuState {
    /// Not sampled yet.
    Starting,
    Available {
        gpus: Vec<GpuSample>,
        sampled_at: String,
    },
    Unavailable {
        reason: String,
    },
}

/// Why there are no samples.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No driver library (a CPU machine), or one NVML cannot use.
    #[error("NVML not available: {0}")]
    Unavailable(nvml_wrapper::error::NvmlError),
    #[error("NVML: {0}")]
    Query(nvml_wrapper::error::NvmlError),
    /// A source other than NVML (tests, replays).
    #[error("{0}")]
    Other(String),
}

/// Where samples come from: NVML on a GPU machine, anything else in tests.
pub trait GpuSource: Send {
    fn sample(&mut self) -> Result<Vec<GpuSample>, GpuError>;
}

/// Opens NVML (the driver's libnvidia-ml, loaded at run time, so a CPU build links fine).
pub fn open_nvml() -> Result<Box<dyn GpuSource>, GpuError> {
    nvml::NvmlSource::open().map(|s| Box::new(s) as Box<dyn GpuSource>)
}

/// Shared latest state, refreshed by a background thread.
#[derive(Clone)]
pub struct GpuMonitor {
    state: Arc<RwLock<GpuState>>,
}

impl GpuMonitor {
    /// A monitor that samples `source` every `every` on its own thread; `source` None means
    /// unavailable for `reason`, and no thread is started.
    pub fn start(source: Result<Box<dyn GpuSource>, GpuError>, every: Duration) -> GpuMonitor {
        let monitor = GpuMonitor {
            state: Arc::new(RwLock::new(GpuState::Starting)),
        };
        match source {
            Err(e) => {
                let reason = e.to_string();
                tracing::info!(%reason, "GPU metrics unavailable");
                monitor.set(GpuState::Unavailable { reason });
            }
            Ok(mut source) => {
                monitor.refresh(source.as_mut());
                let m = monitor.clone();
                std::thread::Builder::new()
                    .name("gpu-sampler".into())
                    .spawn(move || loop {
                        std::thread::sleep(every);
                        m.refresh(source.as_mut());
                    })
                    .ok();
            }
        }
        monitor
    }

    /// Samples once; a failure after a success is reported once, not every interval.
    pub fn refresh(&self, source: &mut dyn GpuSource) {
        let next = match source.sample() {
            Ok(gpus) => GpuState::Available {
                gpus,
                sampled_at: chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
            Err(e) => GpuState::Unavailable {
                reason: e.to_string(),
            },
        };
        let was_unavailable = matches!(self.get(), GpuState::Unavailable { .. });
        if let (GpuState::Unavailable { reason }, false) = (&next, was_unavailable) {
            tracing::warn!(%reason, "GPU sampling failed");
        }
        self.set(next);
    }

    pub fn get(&self) -> GpuState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, s: GpuState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

/// An nvidia-smi-like table.
pub fn table(state: &GpuState) -> String {
    let gpus = match state {
        GpuState::Starting => return "GPU: not sampled yet\n".into(),
        GpuState::Unavailable { reason } => return format!("GPU: unavailable ({reason})\n"),
        GpuState::Available { gpus, .. } => gpus,
    };
    let mib = |b: u64| b / (1024 * 1024);
    let opt = |v: Option<u32>, unit: &str| v.map(|v| format!("{v}{unit}")).unwrap_or("-".into());
    let mut out = format!(
        "{:<3} {:<28} {:>17} {:>10} {:>5} {:>5} {:>6} {:>8} {:>9}\n",
        "GPU", "Name", "Memory used/total", "This proc", "Util", "Mem", "Temp", "Power", "SM clock"
    );
    for g in gpus {
        out.push_str(&format!(
            "{:<3} {:<28} {:>17} {:>10} {:>5} {:>5} {:>6} {:>8} {:>9}\n",
            g.index,
            g.name.chars().take(28).collect::<String>(),
            format!(
                "{}/{} MiB",
                mib(g.memory_used_bytes),
                mib(g.memory_total_bytes)
            ),
            g.process_memory_bytes
                .map(|b| format!("{} MiB", mib(b)))
                .unwrap_or("-".into()),
            opt(g.utilization_gpu_percent, "%"),
            opt(g.utilization_memory_percent, "%"),
            opt(g.temperature_celsius, "C"),
            g.power_watts
                .map(|w| format!("{w:.0} W"))
                .unwrap_or("-".into()),
            opt(g.sm_clock_mhz, " MHz"),
        ));
    }
    out
}

mod nvml {
    use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
    use nvml_wrapper::enums::device::UsedGpuMemory;
    use nvml_wrapper::Nvml;

    use super::{GpuError, GpuSample, GpuSource};

    pub struct NvmlSource {
        nvml: Nvml,
        pid: u32,
    }

    impl NvmlSource {
        pub fn open() -> Result<Self, GpuError> {
            let nvml = Nvml::init().map_err(GpuError::Unavailable)?;
            Ok(NvmlSource {
                nvml,
                pid: std::process::id(),
            })
        }
    }

    impl GpuSource for NvmlSource {
        fn sample(&mut self) -> Result<Vec<GpuSample>, GpuError> {
            let n = self.nvml.device_count().map_err(GpuError::Query)?;
            let mut out = Vec::new();
            for index in 0..n {
                let d = self.nvml.device_by_index(index).map_err(GpuError::Query)?;
                let mem = d.memory_info().map_err(GpuError::Query)?;
                let util = d.utilization_rates().ok();
                let process_memory_bytes = d.running_compute_processes().ok().map(|ps| {
                    ps.iter()
                        .filter(|p| p.pid == self.pid)
                        .map(|p| match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => b,
                            UsedGpuMemory::Unavailable => 0,
                        })
                        .sum()
                });
                out.push(GpuSample {
                    index,
                    name: d.name().unwrap_or_default(),
                    uuid: d.uuid().unwrap_or_default(),
                    memory_total_bytes: mem.total,
                    memory_used_bytes: mem.used,
                    memory_free_bytes: mem.free,
                    process_memory_bytes,
                    utilization_gpu_percent: util.as_ref().map(|u| u.gpu),
                    utilization_memory_percent: util.as_ref().map(|u| u.memory),
                    temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok(),
                    // NVML reports milliwatts.
                    power_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                    sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Vec<Result<Vec<GpuSample>, String>>);

    impl GpuSource for Scripted {
        fn sample(&mut self) -> Result<Vec<GpuSample>, GpuError> {
            self.0.remove(0).map_err(GpuError::Other)
        }
    }

    fn rtx3060() -> GpuSample {
        GpuSample {
            index: 0,
            name: "NVIDIA GeForce RTX 3060".into(),
            uuid: "GPU-0f6c".into(),
            memory_total_bytes: 12 * 1024 * 1024 * 1024,
            memory_used_bytes: 1536 * 1024 * 1024,
            memory_free_bytes: (12 * 1024 - 1536) * 1024 * 1024,
            process_memory_bytes: Some(1200 * 1024 * 1024),
            utilization_gpu_percent: Some(87),
            utilization_memory_percent: Some(40),
            temperature_celsius: Some(61),
            power_watts: Some(142.4),
            sm_clock_mhz: Some(1837),
        }
    }

    #[test]
    fn no_driver_is_a_state_not_an_error() {
        let m = GpuMonitor::start(
            Err(GpuError::Other("NVML not available: no driver".into())),
            Duration::MAX,
        );
        assert_eq!(
            m.get(),
            GpuState::Unavailable {
                reason: "NVML not available: no driver".into()
            }
        );
        assert!(table(&m.get()).contains("unavailable"));
        // On this machine (no GPU) the real NVML path must say the same, not panic.
        if let Err(reason) = open_nvml() {
            assert!(reason.to_string().contains("NVML"), "{reason}");
        }
    }

    #[test]
    fn samples_replace_each_other_and_failures_are_states() {
        let m = GpuMonitor {
            state: Arc::new(RwLock::new(GpuState::Starting)),
        };
        let mut src = Scripted(vec![Ok(vec![rtx3060()]), Err("GPU lost".into())]);
        m.refresh(&mut src);
        let GpuState::Available { gpus, .. } = m.get() else {
            panic!("{:?}", m.get())
        };
        assert_eq!(gpus, vec![rtx3060()]);
        let t = table(&m.get());
        assert!(t.contains("1536/12288 MiB"), "{t}");
        assert!(
            t.contains("1200 MiB") && t.contains("87%") && t.contains("142 W"),
            "{t}"
        );
        m.refresh(&mut src);
        assert_eq!(
            m.get(),
            GpuState::Unavailable {
                reason: "GPU lost".into()
            }
        );
    }
}
