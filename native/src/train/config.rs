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
        student_maps::Aggregation,
    },
};
use serde::{Deserialize, Serialize};

use super::trainer::LORA_CHECKPOINT_FILTER;

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

/// Every resolved setting of a run: written to `config.toml`, read back by `--resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub vlm: PathBuf,
    pub data: String,
    pub teacher_maps: Option<PathBuf>,
    pub adapter: Option<PathBuf>,
    pub lambda: f64,
    pub full: bool,
    pub lora: LoraSettings,
    pub lr: f64,
    pub lr_gamma: f64,
    pub epochs: usize,
    pub max_steps: u64,
    pub batch: usize,
    pub clip_norm: f64,
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

    /// StepLR: `lr * gamma^epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_gamma.powi(epoch as i32)
    }

    pub fn checkpoint_filter(&self) -> Option<&'static str> {
        (!self.full).then_some(LORA_CHECKPOINT_FILTER)
    }

    pub fn optimizer(&self) -> ModuleOptimizer {
        let mut config = AdamWConfig::new().with_weight_decay(0.0);
        if self.clip_norm > 0.0 {
            config = config
                .with_grad_clipping(Some(GradientClippingConfig::Norm(self.clip_norm as f32)));
        }
        config.init()
    }
}
