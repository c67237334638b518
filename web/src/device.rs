//! The backend every part of the page runs on, chosen once: the CPU when asked
//! (`?backend=cpu` on the page, or an explorer's `backend: "cpu"` option), WebGPU when the
//! browser has an adapter, the CPU otherwise (with the reason kept to show it). WebGPU is
//! initialised once per page and shared, since a page may hold several explorers and the
//! backend check.

use std::cell::RefCell;

use burn::tensor::Device;

use crate::js;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    WebGpu,
    Cpu,
}

impl Backend {
    pub fn id(self) -> &'static str {
        match self {
            Self::WebGpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::WebGpu => "WebGPU",
            Self::Cpu => "CPU (Burn Flex, WebAssembly)",
        }
    }
}

/// A chosen backend, its device and why it is the CPU (when it is).
#[derive(Clone, Debug)]
pub struct Chosen {
    pub backend: Backend,
    pub device: Device,
    pub fallback_reason: Option<String>,
}

enum WebGpuState {
    Untried,
    Starting,
    Done(Result<Device, String>),
}

thread_local! {
    static WEBGPU: RefCell<WebGpuState> = const { RefCell::new(WebGpuState::Untried) };
}

/// The backend for `force_cpu` (an explicit request) or else the page's `?backend=`.
pub async fn choose_device(force_cpu: bool) -> Chosen {
    if force_cpu || js::query_param("backend").as_deref() == Some("cpu") {
        return Chosen {
            backend: Backend::Cpu,
            device: Device::flex(),
            fallback_reason: Some("CPU requested with ?backend=cpu".to_string()),
        };
    }
    match webgpu().await {
        Ok(device) => Chosen {
            backend: Backend::WebGpu,
            device,
            fallback_reason: None,
        },
        Err(error) => Chosen {
            backend: Backend::Cpu,
            device: Device::flex(),
            fallback_reason: Some(format!("WebGPU is unavailable in this browser ({error})")),
        },
    }
}

/// The page's WebGPU device; concurrent callers wait for the first one's initialisation.
async fn webgpu() -> Result<Device, String> {
    loop {
        let start = WEBGPU.with_borrow_mut(|state| match state {
            WebGpuState::Untried => {
                *state = WebGpuState::Starting;
                Some(true)
            }
            WebGpuState::Starting => Some(false),
            WebGpuState::Done(_) => None,
        });
        match start {
            Some(true) => {
                let result = Device::wgpu_options()
                    .init_async()
                    .await
                    .map_err(|error| error.to_string());
                WEBGPU.set(WebGpuState::Done(result.clone()));
                return result;
            }
            Some(false) => js::sleep_ms(20).await,
            None => {
                return WEBGPU.with_borrow(|state| match state {
                    WebGpuState::Done(result) => result.clone(),
                    _ => unreachable!("checked above"),
                });
            }
        }
    }
}
