//! A run's settings: every resolved flag of `lavender train`, written to the run folder's
//! `config.toml` and read back by `--resume`, and what follows from them (the loss, the
//! learning rate of an epoch, the optimiser, the checkpoint filter).

use std::path::PathBuf;

use burn::{
    grad_clipping::GradientClippingConfig,
    optim::{AdamWConfig, ModuleOptimizer},
};
use clap::ValueEnum;
use lavender_core::{
    adapters::lora::LoraSettings,
    align::{
        grid::GridMode,
        loss::{LossConfig, Positions},
        student::Supervision,
        student_maps::Aggregation,
    },
};
use serde::{Deserialize, Serialize};

use super::trainer::{LORA_CHECKPOINT_FILTER, SampleSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggregationArg {
    /// The Aligner on every layer's heads, then the mean over layers (the reference default).
    Aligner,
    /// The mean over layers first, then the Aligner.
    MeanFirst,
    /// Max over heads, then max over layers; no Aligner.
    MaxMax,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositionsArg {
    /// Supervised answer tokens, keyed by the ground-truth next token, lower-cased whole words.
    Answer,
    /// The reference's: every position keyed by the predicted token, exact token strings.
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DepthArg {
    Light,
    Sim,
    Deep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PrecisionArg {
    #[default]
    F32,
    Bf16,
}

/// Which tokens of a conversation the cross-entropy learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SuperviseArg {
    /// The assistant's answers and their end tokens (what the authors' collators intend).
    #[default]
    Answers,
    /// Every token but the assistant headers, padding and `<|image|>`: what the authors'
    /// Flickr30k and RLAIF-V collators actually did (their prompt mask never fires).
    All,
}

/// How a training image meets the student's processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFitArg {
    /// Squashed to one tile first, aspect ratio not kept: what the reference's Flickr30k and
    /// RLAIF-V datasets do (`--image-fit`'s default).
    Squash,
    /// The processor's own fit: aspect ratio kept, up to `max_image_tiles` tiles (what
    /// inference, bundles and the explorer use). Runs written before `--image-fit` had it.
    #[default]
    Tiles,
}

/// The micro-batch of runs that did not record it: they computed one sample at a time.
fn one_sample_at_a_time() -> usize {
    1
}

/// AdamW's epsilon of runs that did not record it (Burn's default).
fn burn_adam_epsilon() -> f64 {
    1e-5
}

/// Every resolved setting of a run: written to `config.toml`, read back by `--resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub vlm: PathBuf,
    pub data: String,
    pub teacher_maps: Option<PathBuf>,
    pub adapter: Option<PathBuf>,
    pub lambda: f64,
    pub full: bool,
    /// A `full` run's weights start at random from the config instead of the folder's.
    #[serde(default)]
    pub from_scratch: bool,
    pub lora: LoraSettings,
    pub lr: f64,
    pub lr_gamma: f64,
    pub epochs: usize,
    pub max_steps: u64,
    pub batch: usize,
    /// Samples per forward and backward pass on a device (0: the device's whole share of
    /// `batch`). Runs written before it computed one sample at a time, and keep doing so.
    #[serde(default = "one_sample_at_a_time")]
    pub micro_batch: usize,
    /// Order each epoch in batches of similar text length (llama-recipes'
    /// `LengthBasedBatchSampler`) instead of a plain shuffle.
    #[serde(default)]
    pub group_by_length: bool,
    /// Stop at an unreadable training image instead of skipping it.
    #[serde(default)]
    pub strict: bool,
    /// Burn's per-parameter clipping (each gradient tensor to this L2 norm); 0: off.
    pub clip_norm: f64,
    /// PyTorch's `clip_grad_norm_`: all gradients together to this L2 norm; 0: off. Absent
    /// from runs written before it existed.
    #[serde(default)]
    pub clip_grad_norm: f64,
    /// AdamW's epsilon: PyTorch's 1e-8 for new runs; runs written before it was recorded used
    /// Burn's default, 1e-5, and keep it on `--resume`.
    #[serde(default = "burn_adam_epsilon")]
    pub adam_epsilon: f64,
    /// Which tokens the cross-entropy learns.
    #[serde(default)]
    pub supervise: SuperviseArg,
    /// How images meet the processor.
    #[serde(default)]
    pub image_fit: ImageFitArg,
    pub eval_fraction: f64,
    pub eval_every: u64,
    pub eval_samples: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub seed: u64,
    pub map_size: usize,
    pub grid: String,
    pub positions: PositionsArg,
    pub aggregation: AggregationArg,
    pub aligner_depth: DepthArg,
    #[serde(default)]
    pub precision: PrecisionArg,
    pub device: String,
    pub train_samples: usize,
    pub eval_samples_held_out: usize,
}

impl TrainConfig {
    pub fn loss(&self) -> LossConfig {
        LossConfig {
            lambda: if self.teacher_maps.is_some() {
                self.lambda
            } else {
                0.0
            },
            map_size: self.map_size,
            grid: if self.grid == "legacy" {
                GridMode::Legacy
            } else {
                GridMode::Corrected
            },
            aggregation: match self.aggregation {
                AggregationArg::Aligner => Aggregation::AlignerPerLayer,
                AggregationArg::MeanFirst => Aggregation::MeanFirst,
                AggregationArg::MaxMax => Aggregation::MaxMax,
            },
            positions: match self.positions {
                PositionsArg::Answer => Positions::Answer,
                PositionsArg::Reference => Positions::Reference,
            },
        }
    }

    /// How a sample becomes the student's input.
    pub fn sample_settings(&self) -> SampleSettings {
        SampleSettings {
            supervision: match self.supervise {
                SuperviseArg::Answers => Supervision::Answers,
                SuperviseArg::All => Supervision::All,
            },
            squash: self.image_fit == ImageFitArg::Squash,
        }
    }

    /// StepLR: `lr * gamma^epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_gamma.powi(epoch as i32)
    }

    pub fn checkpoint_filter(&self) -> Option<&'static str> {
        (!self.full).then_some(LORA_CHECKPOINT_FILTER)
    }

    pub fn optimizer(&self) -> ModuleOptimizer {
        adamw(self.adam_epsilon, self.clip_norm)
    }
}

/// The run's optimiser: AdamW without weight decay (betas 0.9 / 0.999) with `epsilon`, and
/// Burn's per-parameter clipping at `clip_norm` when it is positive. (The global clipping of
/// `clip_grad_norm` happens before the step: `train::clip`.)
pub fn adamw(epsilon: f64, clip_norm: f64) -> ModuleOptimizer {
    let mut config = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_epsilon(epsilon as f32);
    if clip_norm > 0.0 {
        config = config.with_grad_clipping(Some(GradientClippingConfig::Norm(clip_norm as f32)));
    }
    config.init()
}
