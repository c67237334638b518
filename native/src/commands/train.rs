//! `lavender train`: Lavender fine-tuning (or plain SFT with `--lambda 0`, the same code path)
//! of the Mllama student against teacher attention maps. This file holds the flags and their
//! resolution into a [`TrainConfig`]; the run itself is `crate::train::run`.
//!
//! Run folder: `config.toml` (every resolved setting), `metrics.jsonl`, `loss.png`,
//! `checkpoints/step-NNNNNN/` (atomic; LoRA runs keep only the factors and the Aligner), and at
//! the end `adapter/` (PEFT layout) and `aligner.safetensors`. `--resume RUN` continues a killed
//! run from its latest checkpoint with the settings in its `config.toml`, exactly where it
//! stopped (data order, optimiser state, learning rate).

use std::path::{Path, PathBuf};

use clap::Args;
use lavender_core::adapters::lora::LoraSettings;

use crate::{
    commands::GridArg,
    device::{DeviceList, DeviceSpec},
    train::{
        config::{AggregationArg, DepthArg, PositionsArg, PrecisionArg, TrainConfig},
        run_dir::RunDir,
    },
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender train --vlm ./Llama-3.2-11B-Vision-Instruct --data flickr30k:data/dataset_flickr30k.json \\
      --teacher-maps maps/ --out runs/lavender --device cuda
  lavender train ... --lambda 0 --out runs/sft          # plain SFT, same code path
  lavender train --resume runs/lavender                 # continue a killed run
  lavender train ... --devices cuda:0,cuda:1,cuda:2,cuda:3 --batch 16   # data-parallel

Several devices (--devices): every device holds a copy of the model; each step's --batch samples
(the global batch, whatever the device count) are split across them, the gradients are summed on
the first device, the optimiser steps there and the trained parameters are copied back, so the
run matches a single-device one with the same --batch. --batch must be at least the device count.
Checkpoints come from the first device, and --resume may use another device list.

Data specs: jsonl:PATH ({\"image\", \"text\"} or {\"image\", \"conversations\": [{\"role\", \"content\"}]}),
flickr30k:PATH, rlaifv:PATH, ocrvqa:PATH. Samples whose teacher maps are missing train with the
cross-entropy only and are counted.")]
pub struct TrainArgs {
    /// Continue the run in this folder from its latest checkpoint (its config.toml is used).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["vlm", "data", "out"])]
    pub resume: Option<PathBuf>,

    /// The student: a Hugging Face Mllama folder.
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    pub vlm: Option<PathBuf>,

    /// The training data (see below).
    #[arg(long, value_name = "SPEC", required_unless_present = "resume")]
    pub data: Option<String>,

    /// Teacher maps from `lavender extract` (or the reference's JPEG layout). Without it the
    /// run is plain SFT whatever --lambda says.
    #[arg(long, value_name = "DIR")]
    pub teacher_maps: Option<PathBuf>,

    /// The run folder to create.
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub settings: TrainSettingsArgs,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU;
    /// on --resume, the run's devices).
    #[arg(long, value_name = "DEVICE", conflicts_with = "devices")]
    pub device: Option<DeviceSpec>,

    /// Data-parallel training on these devices of one backend, e.g. cuda:0,cuda:1 (the first
    /// is the main device: optimiser, evaluation, checkpoints). One entry is --device.
    #[arg(long, value_name = "DEVICE,...", value_delimiter = ',')]
    pub devices: Vec<DeviceSpec>,
}

#[derive(Debug, Args)]
pub struct TrainSettingsArgs {
    /// Weight of the alignment loss (0: plain SFT).
    #[arg(long = "lambda", default_value_t = 10.0)]
    pub lambda: f64,
    /// Fine-tune every parameter instead of LoRA factors.
    #[arg(long)]
    pub full: bool,
    /// Start the LoRA factors from this PEFT adapter folder.
    #[arg(long, value_name = "DIR", conflicts_with = "full")]
    pub adapter: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Module names given LoRA factors, in both towers.
    #[arg(long, value_delimiter = ',', default_values_t = ["q_proj".to_string(), "v_proj".to_string()])]
    pub lora_targets: Vec<String>,
    /// AdamW learning rate (no weight decay).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// The learning rate is multiplied by this after every epoch (StepLR).
    #[arg(long, default_value_t = 0.85)]
    pub lr_gamma: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimiser steps (default: the epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Samples per optimiser step (gradients accumulated one sample at a time).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Clip each parameter's gradient to this L2 norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Fraction of the images held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    /// Evaluate every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// At most this many held-out samples per evaluation.
    #[arg(long, default_value_t = 64)]
    pub eval_samples: usize,
    /// Checkpoint every N steps (and always at the end).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Side of the attention maps (the teacher's must match).
    #[arg(long, default_value_t = 32)]
    pub map_size: usize,
    #[arg(long, value_enum, default_value_t = GridArg::Corrected)]
    pub grid: GridArg,
    #[arg(long, value_enum, default_value_t = PositionsArg::Answer)]
    pub positions: PositionsArg,
    #[arg(long, value_enum, default_value_t = AggregationArg::Aligner)]
    pub aggregation: AggregationArg,
    #[arg(long, value_enum, default_value_t = DepthArg::Sim)]
    pub aligner_depth: DepthArg,
    /// Float type of the weights and activations (bf16 on GPUs halves memory; softmax and norm
    /// statistics are computed in f32 either way).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

/// The main device `train` will use, for `BURN_DEVICE` (see [`DeviceSpec::burn_device_env`]):
/// the first of [`device_list`].
pub fn device_spec(args: &TrainArgs) -> anyhow::Result<DeviceSpec> {
    Ok(device_list(args)?.main())
}

/// The devices `train` will use, the main one first: the flags, else the resumed run's, else
/// the best available.
pub fn device_list(args: &TrainArgs) -> anyhow::Result<DeviceList> {
    if let Some(spec) = args.device {
        DeviceList::new(vec![spec])
    } else if !args.devices.is_empty() {
        DeviceList::new(args.devices.clone())
    } else if let Some(run) = &args.resume {
        let config: TrainConfig = RunDir::open(run)?.read_config()?;
        config
            .device
            .parse()
            .map_err(|error| anyhow::anyhow!("{}: device {error}", run.display()))
    } else {
        DeviceList::new(vec![DeviceSpec::best_available()])
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let devices = device_list(&args)?;
    match &args.resume {
        Some(path) => {
            let run_dir = RunDir::open(path)?;
            let mut config: TrainConfig = run_dir.read_config()?;
            config.device = devices.to_string();
            crate::train::run::run(&devices, Some(run_dir), config, None)
        }
        None => {
            let config = resolve(&args, &devices.to_string())?;
            crate::train::run::run(&devices, None, config, args.out.as_deref())
        }
    }
}

/// The settings of a new run from the flags.
fn resolve(args: &TrainArgs, device_list: &str) -> anyhow::Result<TrainConfig> {
    let s = &args.settings;
    anyhow::ensure!(s.batch > 0, "--batch must be positive");
    anyhow::ensure!(s.epochs > 0, "--epochs must be positive");
    anyhow::ensure!(s.lr > 0.0, "--lr must be positive");
    anyhow::ensure!(s.lambda >= 0.0, "--lambda cannot be negative");
    anyhow::ensure!(s.map_size > 0, "--map-size must be positive");
    anyhow::ensure!(
        s.checkpoint_every > 0,
        "--checkpoint-every must be positive"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&s.eval_fraction),
        "--eval-fraction must be in [0, 1)"
    );
    anyhow::ensure!(s.lora_r > 0, "--lora-r must be positive");
    let vlm = args.vlm.clone().expect("clap requires --vlm");
    anyhow::ensure!(vlm.is_dir(), "--vlm {} is not a folder", vlm.display());
    if let Some(dir) = &args.teacher_maps {
        anyhow::ensure!(
            dir.is_dir(),
            "--teacher-maps {} is not a folder",
            dir.display()
        );
    }
    Ok(TrainConfig {
        vlm: absolute(&vlm),
        data: absolute_data(args.data.as_deref().expect("clap requires --data")),
        teacher_maps: args.teacher_maps.as_deref().map(absolute),
        adapter: s.adapter.as_deref().map(absolute),
        lambda: s.lambda,
        full: s.full,
        lora: LoraSettings {
            r: s.lora_r,
            alpha: s.lora_alpha,
            target_modules: s.lora_targets.clone(),
        },
        lr: s.lr,
        lr_gamma: s.lr_gamma,
        epochs: s.epochs,
        max_steps: s.max_steps.unwrap_or(0),
        batch: s.batch,
        clip_norm: s.clip_norm,
        eval_fraction: s.eval_fraction,
        eval_every: s.eval_every,
        eval_samples: s.eval_samples,
        checkpoint_every: s.checkpoint_every,
        keep_checkpoints: s.keep_checkpoints.max(1),
        seed: s.seed,
        map_size: s.map_size,
        grid: match s.grid {
            GridArg::Corrected => "corrected".into(),
            GridArg::Legacy => "legacy".into(),
        },
        positions: s.positions,
        aggregation: s.aggregation,
        aligner_depth: s.aligner_depth,
        precision: s.precision,
        device: device_list.to_string(),
        train_samples: 0,
        eval_samples_held_out: 0,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `KIND:PATH` with the path made absolute, so `--resume` reads the same data from any folder.
fn absolute_data(spec: &str) -> String {
    match spec.split_once(':') {
        Some((kind, path)) if !path.is_empty() => {
            format!("{kind}:{}", absolute(Path::new(path)).display())
        }
        _ => spec.to_string(),
    }
}
