//! The flags every student command shares (`generate`, `attend`, `eval`): the model and its
//! adapter (or a web bundle) and the device; for one image, the image and where the attention
//! lands; and loading them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use image::RgbImage;
use lavender_core::vlm::mllama::student::Mllama;

use crate::{
    commands::{GridArg, export_web::load_bundle, open_image},
    device::DeviceSpec,
};

/// Which student to load and where: a model folder (and adapter) or a web bundle, and the
/// device. Shared by every command that runs the student (`generate`, `attend`, `eval`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A Hugging Face Mllama folder (config.json, safetensors shards, tokenizer.json, chat template).
    #[arg(long, value_name = "DIR", required_unless_present = "bundle")]
    pub vlm: Option<PathBuf>,

    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), merged in.
    #[arg(long, value_name = "DIR", requires = "vlm")]
    pub adapter: Option<PathBuf>,

    /// A web bundle written by `lavender export-web` (instead of --vlm/--adapter); its files'
    /// sizes and SHA-256 are checked against its manifest.json first.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["vlm", "adapter"])]
    pub bundle: Option<PathBuf>,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

impl ModelArgs {
    /// Opens the device and loads the student.
    pub fn load(&self) -> anyhow::Result<Mllama> {
        load_student(
            self.vlm.as_deref(),
            self.adapter.as_deref(),
            self.bundle.as_deref(),
            self.device,
        )
    }
}

/// The flags of the commands that look at one image: the student, the image, and where the
/// attention lands.
#[derive(Debug, Args)]
pub struct StudentArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The image (PNG, JPEG).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// Side of the attention maps.
    #[arg(long, default_value_t = 32)]
    pub map_size: usize,

    /// How attention is placed on the image.
    #[arg(long, value_enum, default_value_t = GridArg::Corrected)]
    pub grid: GridArg,
}

impl StudentArgs {
    /// Checks the flags, opens the device, decodes the image and loads the model.
    pub fn load(&self) -> anyhow::Result<(Mllama, RgbImage)> {
        anyhow::ensure!(
            (1..=1024).contains(&self.map_size),
            "--map-size must be 1 to 1024 (Lavender: 32)"
        );
        let image = open_image(&self.image)?;
        Ok((self.model.load()?, image))
    }
}

/// Opens `device` (default: the best available) and loads the student from a web `bundle`, or
/// from the Mllama folder `vlm` with an optional PEFT `adapter` merged in.
fn load_student(
    vlm: Option<&Path>,
    adapter: Option<&Path>,
    bundle: Option<&Path>,
    device: Option<DeviceSpec>,
) -> anyhow::Result<Mllama> {
    let spec = device.unwrap_or_else(DeviceSpec::best_available);
    let device = spec.open()?;
    match (bundle, vlm) {
        (Some(bundle), _) => load_bundle(bundle, &device, matches!(spec, DeviceSpec::Wgpu(_)))
            .with_context(|| format!("cannot load the bundle {}", bundle.display())),
        (None, Some(vlm)) => Mllama::load(vlm, adapter, &device)
            .with_context(|| format!("cannot load the model from {}", vlm.display())),
        (None, None) => anyhow::bail!("give --vlm DIR or --bundle DIR"),
    }
}
