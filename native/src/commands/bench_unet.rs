//! `lavender bench-unet`: UNet evaluations per second with cross-attention capture, on random
//! weights of a real configuration (SD v1.4 by default): speed does not depend on the values.
//! The PyTorch side of the comparison is `bench/torch_reference.py sd`.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use clap::{Args, ValueEnum};
use lavender_core::{
    sd::{
        attention::AttentionCapture,
        unet::{PerBlock, UNet2DConditionModel, UNetConfig},
    },
    weights::Weights,
};

use crate::device::DeviceSpec;

/// `unet/config.json` of CompVis/stable-diffusion-v1-4.
const SD_V1_4_UNET: &str = r#"{
  "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16 => FloatDType::BF16,
            Self::F16 => FloatDType::F16,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender bench-unet --device cuda --batch 1,8 --precision bf16
  lavender bench-unet --device cpu --config tests/fixtures/sd-tiny/unet/config.json --latent 16")]
pub struct BenchUnetArgs {
    /// A diffusers unet/config.json (default: SD v1.4's).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    pub batch: Vec<usize>,

    /// Latent side (64 for 512 px images).
    #[arg(long, default_value_t = 64)]
    pub latent: usize,

    /// Record cross-attention maps of this side (0: no capture).
    #[arg(long, default_value_t = 16)]
    pub capture_res: usize,

    /// Timed evaluations per batch size.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,

    /// Untimed evaluations first (kernel compilation and autotuning).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,

    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: BenchUnetArgs) -> anyhow::Result<()> {
    let config: UNetConfig = match &args.config {
        Some(path) => UNetConfig::from_file(path)?,
        None => serde_json::from_str(SD_V1_4_UNET).context("the built-in SD v1.4 config")?,
    };
    let spec = args.device.unwrap_or_else(DeviceSpec::best_available);
    let dtype = args.precision.float_dtype();
    let device = spec.open_with_float(dtype)?;
    let started = Instant::now();
    let unet = UNet2DConditionModel::from_weights(&config, &Weights::random(0.02), &device)?;
    println!(
        "random-weight UNet built on {spec} in {:.1?}",
        started.elapsed()
    );

    for &batch in &args.batch {
        let per_second = measure(&unet, context_dim(&config), &device, &args, batch)?;
        println!(
            "{{\"bench\": \"unet\", \"device\": \"{spec}\", \"precision\": \"{:?}\", \"batch\": {batch}, \"latent\": {}, \"capture_res\": {}, \"evals_per_s\": {per_second:.2}}}",
            args.precision, args.latent, args.capture_res
        );
    }
    Ok(())
}

/// UNet evaluations (one per batch element) per second.
fn measure(
    unet: &UNet2DConditionModel,
    context_dim: usize,
    device: &Device,
    args: &BenchUnetArgs,
    batch: usize,
) -> anyhow::Result<f64> {
    let normal = Distribution::Normal(0.0, 1.0);
    let sample = Tensor::<4>::random([batch, 4, args.latent, args.latent], normal, device);
    let context = Tensor::<3>::random([batch, 77, context_dim], normal, device);
    let evaluate = || -> anyhow::Result<()> {
        let mut capture =
            (args.capture_res > 0).then(|| AttentionCapture::at_resolution(args.capture_res));
        let eps = unet.forward(sample.clone(), 500.0, context.clone(), capture.as_mut());
        // Reading one value waits for the whole evaluation, maps included.
        let mut check = eps.sum();
        if let Some(mean) = capture.as_ref().and_then(AttentionCapture::mean) {
            check = check + mean.sum();
        }
        let value: f32 = check.into_scalar();
        anyhow::ensure!(
            value.is_finite() || args.precision != Precision::F32,
            "non-finite output"
        );
        Ok(())
    };
    for _ in 0..args.warmup {
        evaluate()?;
    }
    let started = Instant::now();
    for _ in 0..args.iters {
        evaluate()?;
    }
    Ok((batch * args.iters) as f64 / started.elapsed().as_secs_f64())
}

/// The width of the text embeddings the UNet attends to.
fn context_dim(config: &UNetConfig) -> usize {
    match &config.cross_attention_dim {
        PerBlock::All(dim) => *dim,
        PerBlock::Each(dims) => dims.first().copied().unwrap_or(768),
    }
}
