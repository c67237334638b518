//! What the NVIDIA driver reports about this machine's GPUs, asked through cudarc before
//! Burn touches CUDA: Burn's runtime loads the driver lazily and panics when it is missing,
//! while here a missing driver becomes a sentence a person can act on.

use anyhow::{Context, bail};
use cudarc::driver::result;

use crate::panic_capture::catch_panic;

#[cfg(windows)]
const DRIVER_LIBRARY: &str = "nvcuda.dll";
#[cfg(not(windows))]
const DRIVER_LIBRARY: &str = "libcuda.so.1";

/// One CUDA device as the driver names it.
#[derive(Debug, Clone)]
pub struct CudaGpu {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
}

/// Lists the CUDA devices, or says why there are none.
pub fn list_gpus() -> anyhow::Result<Vec<CudaGpu>> {
    // SAFETY: loading the NVIDIA driver library runs only its own initialisers.
    if let Err(error) = unsafe { libloading::Library::new(DRIVER_LIBRARY) } {
        // libloading's own message is only "dlopen failed"; the loader's reason is its source.
        let reason = std::error::Error::source(&error)
            .map_or(error.to_string(), |source| source.to_string());
        bail!(
            "the NVIDIA driver library {DRIVER_LIBRARY} cannot be loaded ({reason}); \
             CUDA needs an NVIDIA GPU with its driver installed"
        );
    }
    let gpus = catch_panic(|| -> anyhow::Result<Vec<CudaGpu>> {
        result::init().context("cuInit failed")?;
        let count = result::device::get_count().context("cuDeviceGetCount failed")?;
        (0..count)
            .map(|ordinal| {
                let device = result::device::get(ordinal)
                    .with_context(|| format!("cuDeviceGet({ordinal}) failed"))?;
                let name = result::device::get_name(device)
                    .with_context(|| format!("cuDeviceGetName({ordinal}) failed"))?;
                // SAFETY: `device` was returned by cuDeviceGet above.
                let memory_bytes = unsafe { result::device::total_mem(device) }
                    .with_context(|| format!("cuDeviceTotalMem({ordinal}) failed"))?;
                Ok(CudaGpu {
                    ordinal: ordinal as usize,
                    name,
                    memory_bytes: memory_bytes as u64,
                })
            })
            .collect()
    })
    .map_err(|message| anyhow::anyhow!("the CUDA driver failed: {message}"))??;
    if gpus.is_empty() {
        bail!("the NVIDIA driver is installed but reports no CUDA device");
    }
    Ok(gpus)
}
