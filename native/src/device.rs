//! The one `--device` flag of every command: `cuda[:N]`, `wgpu[:N]` or `cpu`; and the
//! `--devices` list of data-parallel training.
//!
//! Parsing lives here and nowhere else; commands take a [`DeviceSpec`] (or a [`DeviceList`])
//! and call [`DeviceSpec::open`], which turns a missing driver into an error instead of a panic.

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
    /// The backend, as errors name it.
    fn backend_name(&self) -> &'static str {
        match self {
            Self::Cuda(_) => "CUDA",
            Self::Wgpu(_) => "wgpu",
            Self::Cpu => "the CPU",
        }
    }

    /// The value of `BURN_DEVICE` that makes Burn's default device this backend's.
    ///
    /// burn-optim 0.22.1's `ModuleOptimizer::load_record` creates the loaded optimizer state on
    /// `Device::default()` (moving it to each parameter's device at the next step), and the
    /// default is CUDA whenever CUDA is compiled in: resuming on a machine without a CUDA
    /// driver would panic. A resuming `train` therefore sets `BURN_DEVICE` to this value in
    /// `main`, before any thread starts (`std::env::set_var` is unsafe otherwise).
    pub fn burn_device_env(self) -> &'static str {
        match self {
            Self::Cuda(_) => "cuda",
            Self::Wgpu(_) => "wgpu",
            Self::Cpu => "flex",
        }
    }

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

/// Several devices of one backend, the main one first: `--devices cuda:0,cuda:1` and a run's
/// `config.toml` `device` (written with [`fmt::Display`], read with [`FromStr`]).
///
/// One backend for every device (the optimiser state's default device, `BURN_DEVICE`, is per
/// backend, and mixing backends would mix numerics), and no GPU twice (a second copy of the
/// model on the same GPU only costs memory). `cpu` may repeat: that is how the data-parallel
/// path is tested without GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(Vec<DeviceSpec>);

impl DeviceList {
    /// `specs`, checked as above.
    pub fn new(specs: Vec<DeviceSpec>) -> anyhow::Result<Self> {
        anyhow::ensure!(!specs.is_empty(), "--devices needs at least one device");
        let list = Self(specs);
        let main = list.0[0].backend_name();
        for (position, spec) in list.0.iter().enumerate() {
            anyhow::ensure!(
                spec.backend_name() == main,
                "--devices {list}: every device must use the first one's backend ({main}), {spec} does not",
            );
            anyhow::ensure!(
                *spec == DeviceSpec::Cpu || !list.0[..position].contains(spec),
                "--devices {list}: {spec} is listed twice",
            );
        }
        Ok(list)
    }

    pub fn specs(&self) -> &[DeviceSpec] {
        &self.0
    }

    /// The first device: the optimiser's, where gradients are summed.
    pub fn main(&self) -> DeviceSpec {
        self.0[0]
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, spec) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{spec}")?;
        }
        Ok(())
    }
}

impl FromStr for DeviceList {
    type Err = String;

    /// Specs separated by commas, checked as [`DeviceList::new`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let specs = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<DeviceSpec>, String>>()?;
        Self::new(specs).map_err(|error| error.to_string())
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
    fn device_lists_round_trip_and_are_checked() {
        let list = "cuda:0,cuda:1".parse::<DeviceList>().unwrap();
        assert_eq!(list.specs(), [DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]);
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!(list.main(), DeviceSpec::Cuda(0));
        assert_eq!(
            "cpu".parse::<DeviceList>().unwrap().specs(),
            [DeviceSpec::Cpu]
        );
        assert!("cpu,gpu".parse::<DeviceList>().is_err());
        assert!("cuda:0,cpu".parse::<DeviceList>().is_err());

        DeviceList::new(vec![DeviceSpec::Cpu, DeviceSpec::Cpu]).unwrap();
        let error = DeviceList::new(vec![DeviceSpec::Cuda(1), DeviceSpec::Cuda(1)]).unwrap_err();
        assert!(
            error.to_string().contains("cuda:1 is listed twice"),
            "{error}"
        );
        let error = DeviceList::new(vec![DeviceSpec::Cuda(0), DeviceSpec::Cpu]).unwrap_err();
        assert!(
            error.to_string().contains("backend (CUDA), cpu does not"),
            "{error}"
        );
        assert!(DeviceList::new(vec![]).is_err());
    }

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
