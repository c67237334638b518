//! `lavender devices`: what this machine can run on. Every backend compiled into the binary is
//! initialised for real and runs the attention probe of `lavender_core::probe`; a backend that
//! cannot start is reported with the reason, never as a crash.

use std::{io::Write, time::Instant};

use burn::tensor::Device;
use clap::Args;
use serde::Serialize;

use crate::{
    cuda,
    device::{DeviceSpec, run_probe, wgpu_adapters},
    panic_capture::catch_panic,
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender devices                   list and check every device
  lavender devices --device cuda:1   check one device (exit status 1 if it fails)
  lavender devices --json            machine-readable report")]
pub struct DevicesArgs {
    /// Check only this device: cuda[:N], wgpu[:N] or cpu.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The report, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct DevicesReport {
    /// Devices found, each checked with the attention probe.
    pub devices: Vec<DeviceCheck>,
    /// Backends compiled in that found nothing to run on, with the reason.
    pub unavailable: Vec<UnavailableBackend>,
}

#[derive(Debug, Serialize)]
pub struct DeviceCheck {
    /// The value to pass to `--device`.
    pub device: String,
    pub backend: &'static str,
    pub name: String,
    pub details: String,
    /// Whether the probe ran and matched the expected values.
    pub ok: bool,
    pub probe_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UnavailableBackend {
    pub backend: &'static str,
    pub reason: String,
}

pub fn run(args: DevicesArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let report = match args.device {
        Some(spec) => check_one(spec),
        None => check_all(),
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&report, out)?;
    }
    if let Some(spec) = args.device {
        let check = &report.devices[0];
        if !check.ok {
            anyhow::bail!(
                "{spec} failed its check: {}",
                check.error.as_deref().unwrap_or("unknown error")
            );
        }
    }
    Ok(())
}

fn check_all() -> DevicesReport {
    let mut report = DevicesReport {
        devices: Vec::new(),
        unavailable: Vec::new(),
    };

    match cuda::list_gpus() {
        Ok(gpus) => {
            for gpu in gpus {
                let spec = DeviceSpec::Cuda(gpu.ordinal);
                report.devices.push(check(
                    spec,
                    "cuda",
                    gpu.name,
                    format!("{:.1} GiB", gpu.memory_bytes as f64 / (1u64 << 30) as f64),
                    || Ok(Device::cuda(gpu.ordinal)),
                ));
            }
        }
        Err(error) => report.unavailable.push(UnavailableBackend {
            backend: "cuda",
            reason: format!("{error:#}"),
        }),
    }

    let adapters = catch_panic(wgpu_adapters).unwrap_or_default();
    if adapters.is_empty() {
        report.unavailable.push(UnavailableBackend {
            backend: "wgpu",
            reason: "wgpu found no Vulkan, Metal, DirectX 12 or OpenGL adapter \
                     (on Linux without a GPU, install Mesa's lavapipe: mesa-vulkan-drivers)"
                .to_string(),
        });
    }
    for (index, adapter) in adapters.iter().enumerate() {
        let info = &adapter.info;
        report.devices.push(check(
            DeviceSpec::Wgpu(Some(index)),
            "wgpu",
            info.name.clone(),
            adapter_details(info),
            || adapter.open(),
        ));
    }

    report.devices.push(cpu_check());
    report
}

fn check_one(spec: DeviceSpec) -> DevicesReport {
    let check = match spec {
        DeviceSpec::Cpu => cpu_check(),
        DeviceSpec::Cuda(ordinal) => {
            let gpu = cuda::list_gpus()
                .ok()
                .and_then(|gpus| gpus.into_iter().find(|gpu| gpu.ordinal == ordinal));
            let (name, details) = gpu
                .map(|gpu| {
                    let memory =
                        format!("{:.1} GiB", gpu.memory_bytes as f64 / (1u64 << 30) as f64);
                    (gpu.name, memory)
                })
                .unwrap_or_default();
            check(spec, "cuda", name, details, || spec.open())
        }
        DeviceSpec::Wgpu(index) => {
            let adapter =
                index.and_then(|index| catch_panic(wgpu_adapters).ok()?.get(index).cloned());
            let (name, details) = adapter
                .map(|adapter| (adapter.info.name.clone(), adapter_details(&adapter.info)))
                .unwrap_or_else(|| ("default adapter".to_string(), String::new()));
            check(spec, "wgpu", name, details, || spec.open())
        }
    };
    DevicesReport {
        devices: vec![check],
        unavailable: Vec::new(),
    }
}

fn cpu_check() -> DeviceCheck {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    check(
        DeviceSpec::Cpu,
        "flex",
        "Burn Flex (pure-Rust CPU backend)".to_string(),
        format!("{threads} hardware threads"),
        || Ok(Device::flex()),
    )
}

fn adapter_details(info: &burn::tensor::wgpu::wgpu::AdapterInfo) -> String {
    use burn::tensor::wgpu::wgpu::DeviceType;
    let device_type = match info.device_type {
        DeviceType::DiscreteGpu => "discrete GPU",
        DeviceType::IntegratedGpu => "integrated GPU",
        DeviceType::VirtualGpu => "virtual GPU",
        DeviceType::Cpu => "software rasteriser on the CPU",
        DeviceType::Other => "other device",
    };
    let mut details = format!("{:?}, {device_type}", info.backend);
    let driver = format!("{} {}", info.driver, info.driver_info);
    if !driver.trim().is_empty() {
        details.push_str(", driver ");
        details.push_str(driver.trim());
    }
    details
}

/// Opens the device and runs the attention probe on it, timing the whole round trip
/// (first use includes kernel compilation).
fn check(
    spec: DeviceSpec,
    backend: &'static str,
    name: String,
    details: String,
    open: impl FnOnce() -> anyhow::Result<Device>,
) -> DeviceCheck {
    let started = Instant::now();
    let outcome = open().and_then(|device| run_probe(&device));
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let (ok, probe_ms, error) = match outcome {
        Ok(()) => (true, Some(elapsed_ms), None),
        Err(error) => (false, None, Some(format!("{error:#}"))),
    };
    DeviceCheck {
        device: spec.to_string(),
        backend,
        name,
        details,
        ok,
        probe_ms,
        error,
    }
}

fn print_report(report: &DevicesReport, out: &mut impl Write) -> anyhow::Result<()> {
    for check in &report.devices {
        let status = match (&check.error, check.probe_ms) {
            (None, Some(ms)) => format!("ok (attention probe in {ms:.0} ms)"),
            (Some(error), _) => format!("FAILED: {error}"),
            (None, None) => "not checked".to_string(),
        };
        writeln!(
            out,
            "{:<8} {:<5} {}",
            check.device, check.backend, check.name
        )?;
        if !check.details.is_empty() {
            writeln!(out, "{:<14} {}", "", check.details)?;
        }
        writeln!(out, "{:<14} {}", "", status)?;
    }
    for backend in &report.unavailable {
        writeln!(
            out,
            "{:<8} {:<5} unavailable: {}",
            "-", backend.backend, backend.reason
        )?;
    }
    Ok(())
}
