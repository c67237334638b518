//! The one `--device` flag of every command: `cuda[:N]`, `wgpu[:N]` or `cpu`.
//!
//! Parsing lives here and nowhere else; commands take a [`DeviceSpec`] and call
//! [`DeviceSpec::open`], which turns a missing driver into an error instead of a panic.

use std::{fmt, str::FromStr};

use anyhow::{Context, bail};
use burn::tensor::{
    Device, DeviceKind,
    wgpu::{WgpuBackend, wgpu},
};

use lavender_core::probe::{attention_probe, check_attention_probe};

use crate::{commands::tensor_values, cuda, panic_capture::catch_panic};

/// Runs the core's attention probe on `device`. Backends start lazily, so this is where a
/// broken driver or kernel compiler shows up: as an error here, not a panic inside a model.
pub fn run_probe(device: &Device) -> anyhow::Result<()> {
    catch_panic(|| -> anyhow::Result<()> {
        let values = tensor_values(attention_probe(device), "the attention probe")?;
        check_attention_probe(&values)?;
        Ok(())
    })
    .map_err(|message| anyhow::anyhow!("the backend panicked: {message}"))?
}

/// Where tensors live and kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA GPU by driver ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    /// A wgpu adapter: `None` lets wgpu pick the best one, `Some(i)` is the i-th adapter
    /// listed by `lavender devices`.
    Wgpu(Option<usize>),
    /// Burn's pure-Rust CPU backend (Flex).
    Cpu,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lowered = text.trim().to_ascii_lowercase();
        let (name, index) = match lowered.split_once(':') {
            Some((name, index)) => {
                let index = index.parse::<usize>().map_err(|_| {
                    format!("device index in '{text}' must be a non-negative integer")
                })?;
                (name, Some(index))
            }
            None => (lowered.as_str(), None),
        };
        match (name, index) {
            ("cuda", index) => Ok(Self::Cuda(index.unwrap_or(0))),
            ("wgpu", index) => Ok(Self::Wgpu(index)),
            ("cpu", None) => Ok(Self::Cpu),
            ("cpu", Some(_)) => Err(format!("'{text}': the CPU device takes no index")),
            _ => Err(format!(
                "unknown device '{text}': expected cuda[:N], wgpu[:N] or cpu"
            )),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cuda(index) => write!(f, "cuda:{index}"),
            Self::Wgpu(None) => write!(f, "wgpu"),
            Self::Wgpu(Some(index)) => write!(f, "wgpu:{index}"),
            Self::Cpu => write!(f, "cpu"),
        }
    }
}

impl DeviceSpec {
    /// The first CUDA GPU when the machine has one, otherwise the CPU. wgpu is only used when
    /// asked for: on machines without a GPU its adapter is a software rasteriser.
    pub fn best_available() -> Self {
        if cuda::list_gpus().is_ok() {
            Self::Cuda(0)
        } else {
            Self::Cpu
        }
    }

    /// Initialises the backend behind this spec, checks it with the attention probe and
    /// returns its device.
    pub fn open(self) -> anyhow::Result<Device> {
        let device = self.open_unchecked()?;
        run_probe(&device).with_context(|| format!("{self} does not work"))?;
        Ok(device)
    }

    /// [`open`](Self::open) with `dtype` as the device's default float type. The type has to be
    /// set before the first tensor, the probe's included, so it cannot be changed afterwards.
    pub fn open_with_float(self, dtype: burn::tensor::FloatDType) -> anyhow::Result<Device> {
        let mut device = self.open_unchecked()?;
        device
            .configure(dtype)
            .map_err(|error| anyhow::anyhow!("{self} cannot compute in {dtype:?}: {error:?}"))?;
        run_probe(&device).with_context(|| format!("{self} does not work"))?;
        Ok(device)
    }

    fn open_unchecked(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Cuda(index) => {
                let gpus = cuda::list_gpus().context("CUDA is unavailable")?;
                if index >= gpus.len() {
                    bail!(
                        "cuda:{index} does not exist: this machine has {} CUDA device(s)",
                        gpus.len()
                    );
                }
                Ok(Device::cuda(index))
            }
            Self::Wgpu(None) => catch_panic(|| Device::wgpu_options().init())
                .map_err(anyhow::Error::msg)?
                .context("no usable wgpu adapter"),
            Self::Wgpu(Some(index)) => {
                let adapters = wgpu_adapters();
                let adapter = adapters.get(index).with_context(|| {
                    format!(
                        "wgpu:{index} does not exist: wgpu sees {} adapter(s) (see `lavender devices`)",
                        adapters.len()
                    )
                })?;
                adapter.open()
            }
        }
    }
}

/// A wgpu adapter as `lavender devices` lists it, and how Burn selects it.
#[derive(Debug, Clone)]
pub struct WgpuAdapter {
    pub info: wgpu::AdapterInfo,
    kind: DeviceKind,
    api: WgpuBackend,
}

impl WgpuAdapter {
    /// Initialises Burn's wgpu runtime on exactly this adapter and graphics API.
    pub fn open(&self) -> anyhow::Result<Device> {
        let (kind, api) = (self.kind.clone(), self.api);
        catch_panic(move || {
            Device::wgpu_options()
                .device_kind(kind)
                .graphics_api(api)
                .init()
        })
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("cannot initialise wgpu on '{}'", self.info.name))
    }
}

/// Every adapter wgpu sees on this machine's primary graphics APIs (Vulkan, Metal,
/// DirectX 12), or on OpenGL where none has any, in a stable order. The position in this list
/// is the `N` of `--device wgpu:N`.
///
/// OpenGL is only a fallback: Burn's kernels need atomics it lacks, and probing it through
/// EGL on a headless Linux machine fills stderr with driver complaints.
pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
    let infos = adapter_infos(wgpu::Backends::PRIMARY);
    let infos = if infos.is_empty() {
        adapter_infos(wgpu::Backends::GL)
    } else {
        infos
    };

    let mut adapters = Vec::new();
    for (position, info) in infos.iter().enumerate() {
        let Some(api) = graphics_api(info.backend) else {
            continue;
        };
        // Burn numbers adapters per graphics API and per device type.
        let same_kind_before = infos[..position]
            .iter()
            .filter(|other| other.backend == info.backend && other.device_type == info.device_type)
            .count();
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(same_kind_before),
            wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(same_kind_before),
            wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(same_kind_before),
            wgpu::DeviceType::Cpu => DeviceKind::Cpu,
            wgpu::DeviceType::Other => continue,
        };
        adapters.push(WgpuAdapter {
            info: info.clone(),
            kind,
            api,
        });
    }
    adapters
}

fn adapter_infos(backends: wgpu::Backends) -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|adapter| adapter.get_info())
        .collect()
}

fn graphics_api(backend: wgpu::Backend) -> Option<WgpuBackend> {
    match backend {
        wgpu::Backend::Vulkan => Some(WgpuBackend::Vulkan),
        wgpu::Backend::Metal => Some(WgpuBackend::Metal),
        wgpu::Backend::Dx12 => Some(WgpuBackend::Dx12),
        wgpu::Backend::Gl => Some(WgpuBackend::Gl),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("CUDA:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu(None)));
        assert_eq!("wgpu:2".parse(), Ok(DeviceSpec::Wgpu(Some(2))));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            DeviceSpec::Cuda(0),
            DeviceSpec::Cuda(7),
            DeviceSpec::Wgpu(None),
            DeviceSpec::Wgpu(Some(1)),
            DeviceSpec::Cpu,
        ] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        let err = "tpu".parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains("expected cuda[:N], wgpu[:N] or cpu"), "{err}");
        let err = "cuda:x".parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains("non-negative integer"), "{err}");
        let err = "cuda:-1".parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains("non-negative integer"), "{err}");
        let err = "cpu:0".parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains("takes no index"), "{err}");
    }
}
