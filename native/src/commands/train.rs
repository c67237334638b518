//! `lavender train`: Lavender fine-tuning (or plain SFT with `--lambda 0`, the same code path)
//! of the Mllama student against teacher attention maps.
//!
//! Run folder: `config.toml` (every resolved setting), `metrics.jsonl`, `loss.png`,
//! `checkpoints/step-NNNNNN/` (atomic; LoRA runs keep only the factors and the Aligner), and at
//! the end `adapter/` (PEFT layout) and `aligner.safetensors`. `--resume RUN` continues a killed
//! run from its latest checkpoint with the settings in its `config.toml`, exactly where it
//! stopped (data order, optimiser state, learning rate).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use burn::{
    grad_clipping::GradientClippingConfig,
    optim::{AdamWConfig, ModuleOptimizer},
    tensor::Device,
};
use clap::{Args, ValueEnum};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    align::{
        aligner::{AlignerActivation, AlignerConfig, AlignerDepth},
        grid::GridMode,
        loss::{LossConfig, Positions},
        student_maps::Aggregation,
    },
    data::{
        Conversation, DataSpec, EpochShuffler, ImageLoader, TeacherMaps, TeacherMapsIndex,
        dataset_fingerprint, split_holdout,
    },
    vlm::mllama::{
        lora::{LoraSettings, apply_lora, export_peft, load_peft_factors},
        student::Mllama,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    commands::GridArg,
    device::DeviceSpec,
    output::{write_atomically, write_folder_atomically},
    train::{
        checkpoint::{self, Checkpoints, TrainState},
        guard::check_finite,
        parallel::{
            DataParallel, SampleInput, StepSettings, check_device_list, format_device_list,
            parse_device_list,
        },
        run_dir::{MetricsRecord, RunDir, Split},
        trainer::{LORA_CHECKPOINT_FILTER, LossValues, Trainable, sample_loss, teacher_word_maps},
    },
};

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
    fn loss(&self) -> LossConfig {
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
    fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_gamma.powi(epoch as i32)
    }

    fn checkpoint_filter(&self) -> Option<&'static str> {
        (!self.full).then_some(LORA_CHECKPOINT_FILTER)
    }

    fn optimizer(&self) -> ModuleOptimizer {
        let mut config = AdamWConfig::new().with_weight_decay(0.0);
        if self.clip_norm > 0.0 {
            config = config
                .with_grad_clipping(Some(GradientClippingConfig::Norm(self.clip_norm as f32)));
        }
        config.init()
    }
}

/// The main device `train` will use, for `BURN_DEVICE` (see [`checkpoint::burn_device_env`]):
/// the first of [`device_specs`].
pub fn device_spec(args: &TrainArgs) -> anyhow::Result<DeviceSpec> {
    Ok(device_specs(args)?[0])
}

/// The devices `train` will use, the main one first: the flags, else the resumed run's, else
/// the best available.
pub fn device_specs(args: &TrainArgs) -> anyhow::Result<Vec<DeviceSpec>> {
    let specs = if let Some(spec) = args.device {
        vec![spec]
    } else if !args.devices.is_empty() {
        args.devices.clone()
    } else if let Some(run) = &args.resume {
        let config: TrainConfig = RunDir::open(run)?.read_config()?;
        parse_device_list(&config.device)
            .map_err(|error| anyhow::anyhow!("{}: device {error}", run.display()))?
    } else {
        vec![DeviceSpec::best_available()]
    };
    check_device_list(&specs)?;
    Ok(specs)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let specs = device_specs(&args)?;
    let device_list = format_device_list(&specs);
    let (existing, config) = match &args.resume {
        Some(path) => {
            let run_dir = RunDir::open(path)?;
            let mut config: TrainConfig = run_dir.read_config()?;
            config.device = device_list.clone();
            (Some(run_dir), config)
        }
        None => (None, resolve(&args, &device_list)?),
    };
    // Idle devices would hold a model copy for nothing: refuse rather than waste them.
    anyhow::ensure!(
        config.batch >= specs.len(),
        "--batch {} is smaller than the {} devices ({device_list}): every device needs at least \
         one sample per step; raise --batch or list fewer devices",
        config.batch,
        specs.len()
    );
    // Every device is opened before a new run folder is created, so a device that cannot be
    // used leaves nothing behind.
    let devices = specs
        .iter()
        .map(|spec| {
            let opened = match config.precision {
                PrecisionArg::F32 => spec.open(),
                PrecisionArg::Bf16 => spec.open_with_float(burn::tensor::FloatDType::BF16),
            };
            Ok(opened
                .with_context(|| format!("cannot open training device {spec}"))?
                .autodiff())
        })
        .collect::<anyhow::Result<Vec<Device>>>()?;
    // Seeded after every device is open: opening runs a probe, which must not move the RNG.
    for device in &devices {
        device.seed(config.seed);
    }
    let resuming = existing.is_some();
    let run_dir = match existing {
        Some(run_dir) => run_dir,
        None => RunDir::create(args.out.as_deref().expect("clap requires --out"))?,
    };
    let device = devices[0].clone();

    // Data: the same split and order on every (re)start.
    let spec_data: DataSpec = config
        .data
        .parse()
        .map_err(|error| anyhow::anyhow!("--data {}: {error}", config.data))?;
    let conversations = spec_data
        .read_conversations()
        .with_context(|| format!("cannot read {}", config.data))?;
    anyhow::ensure!(!conversations.is_empty(), "{} has no samples", config.data);
    let holdout = split_holdout(conversations, config.eval_fraction, config.seed)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        !holdout.train.is_empty(),
        "no training samples are left after holding out {} for evaluation",
        config.eval_fraction
    );
    let fingerprint = dataset_fingerprint(holdout.train.iter().map(|c| c.id.as_str()));
    let teacher = match &config.teacher_maps {
        Some(dir) => Some(
            TeacherMapsIndex::open(dir)
                .with_context(|| format!("cannot open the teacher maps {}", dir.display()))?,
        ),
        None => None,
    };
    let missing = teacher.as_ref().map_or(holdout.train.len(), |index| {
        index.count_missing(holdout.train.iter().map(|c| c.teacher_id.as_str()))
    });

    let mut config = config;
    config.train_samples = holdout.train.len();
    config.eval_samples_held_out = holdout.eval.len();
    if config.max_steps == 0 {
        config.max_steps = (config.epochs * holdout.train.len()).div_ceil(config.batch) as u64;
    }
    if !resuming {
        run_dir.write_config(&config)?;
    }
    tracing::info!(
        "{} training and {} held-out samples; {} training samples have no teacher maps (cross-entropy only)",
        holdout.train.len(),
        holdout.eval.len(),
        missing
    );

    // Model, optimiser and where the run stands.
    let mut trainable = build_trainable(&config, &device)?;
    let mut optimizer = config.optimizer();
    let checkpoints = Checkpoints::new(run_dir.checkpoints_dir(), config.keep_checkpoints);
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        data_position: Default::default(),
        data_fingerprint: fingerprint.clone(),
        seed: config.seed,
        rng_state: config.seed,
        lr: config.lr,
        best_eval_loss: None,
        last_train_loss: None,
        last_eval_loss: None,
    };
    if resuming {
        match checkpoints.latest()? {
            Some(latest) => {
                let loaded =
                    checkpoint::load(&latest, trainable, optimizer, config.checkpoint_filter())?;
                trainable = loaded.module;
                optimizer = loaded.optimizer;
                state = loaded.state;
                anyhow::ensure!(
                    state.data_fingerprint == fingerprint,
                    "the training data changed since {} was written: resuming would not continue the same run",
                    latest.display()
                );
                eprintln!(
                    "resuming {} from step {}",
                    run_dir.path().display(),
                    state.step
                );
            }
            None => eprintln!(
                "{} has no checkpoint yet: starting from step 0",
                run_dir.path().display()
            ),
        }
    }
    // After the checkpoint is loaded: the replicas take its parameter ids and values.
    let mut parallel = DataParallel::new(trainable, &devices)?;
    if devices.len() > 1 {
        eprintln!(
            "data-parallel over {device_list}: {} samples per step",
            config.batch
        );
    }
    let mut metrics = run_dir.metrics(resuming.then_some(state.step))?;
    let mut order = EpochShuffler::resume(holdout.train.len(), config.seed, state.data_position)
        .map_err(anyhow::Error::msg)?;
    let loss_config = config.loss();
    let mut images = ImageLoader::default();

    let progress = ProgressBar::new(config.max_steps).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta} left) {msg}",
        )
        .expect("a valid template"),
    );
    progress.set_position(state.step);

    // Images and teacher maps are read here, on the main thread; the maps become tensors on
    // the device that processes the sample.
    let read_sample = |sample: &Conversation,
                       images: &mut ImageLoader|
     -> anyhow::Result<(RgbImage, Option<TeacherMaps>)> {
        let image = images
            .load(&sample.image)
            .with_context(|| format!("sample {}: image {}", sample.id, sample.image))?
            .to_rgb8();
        let maps = match &teacher {
            Some(index) => index
                .get(&sample.teacher_id)
                .with_context(|| format!("the teacher maps of {}", sample.teacher_id))?,
            None => None,
        };
        Ok((image, maps))
    };
    let run_loss = |trainable: &Trainable,
                    sample: &Conversation,
                    images: &mut ImageLoader|
     -> anyhow::Result<(_, LossValues)> {
        let (image, maps) = read_sample(sample, images)?;
        let teacher_maps = teacher_word_maps(maps, config.map_size, &device)?;
        sample_loss(trainable, sample, &image, &teacher_maps, &loss_config)
    };

    let (mut seen, mut without_maps) = (0usize, 0usize);
    while state.step < config.max_steps {
        let started = Instant::now();
        // The epoch of the batch's first sample (StepLR's), the same whether or not the run
        // was resumed at an epoch's end.
        let epoch = order.next_epoch();
        let lr = config.lr_at(epoch);
        let mut inputs = Vec::with_capacity(config.batch);
        for _ in 0..config.batch {
            let index = order.next().expect("a non-empty dataset never ends");
            let sample = &holdout.train[index];
            let (image, maps) = read_sample(sample, &mut images)?;
            inputs.push(SampleInput {
                sample,
                image,
                maps,
            });
        }
        let step_number = state.step + 1;
        let check = |sample: &Conversation, values: &LossValues| {
            check_finite(step_number, values.ce, values.align).map_err(|error| {
                anyhow::anyhow!(
                    "{error} (sample {}); the run stopped, its last good checkpoint is kept in {}",
                    sample.id,
                    checkpoints.dir().display()
                )
            })
        };
        let settings = StepSettings {
            loss: &loss_config,
            map_size: config.map_size,
            batch: config.batch,
            check: &check,
        };
        let mut sums = Sums::default();
        for values in parallel.step(inputs, &settings, &mut optimizer, lr)? {
            seen += 1;
            without_maps += usize::from(!values.has_maps);
            sums.add(values);
        }
        state.step += 1;
        state.epoch = order.position().epoch;
        state.data_position = order.position();
        state.lr = lr;
        let mean = sums.mean();
        let samples_per_s = config.batch as f64 / started.elapsed().as_secs_f64();
        state.last_train_loss = Some(mean.total);
        metrics.append(MetricsRecord {
            step: state.step,
            epoch,
            split: Split::Train,
            ce: mean.ce,
            align: mean.align,
            total: mean.total,
            matched_words: mean.matched,
            lr,
            samples_per_s,
        })?;
        progress.set_message(format!(
            "ce {:.4} align {:.4} words {:.1} | {samples_per_s:.2} samples/s",
            mean.ce, mean.align, mean.matched
        ));
        progress.inc(1);

        let last = state.step == config.max_steps;
        if !holdout.eval.is_empty()
            && (last || (config.eval_every > 0 && state.step.is_multiple_of(config.eval_every)))
        {
            let eval = evaluate(
                parallel.main(),
                &holdout.eval,
                config.eval_samples,
                &mut |t, s| run_loss(t, s, &mut images),
            )?;
            state.last_eval_loss = Some(eval.total);
            if state.best_eval_loss.is_none_or(|best| eval.total < best) {
                state.best_eval_loss = Some(eval.total);
            }
            metrics.append(MetricsRecord {
                step: state.step,
                epoch,
                split: Split::Eval,
                ce: eval.ce,
                align: eval.align,
                total: eval.total,
                matched_words: eval.matched,
                lr,
                samples_per_s: 0.0,
            })?;
        }
        if last || state.step.is_multiple_of(config.checkpoint_every) {
            checkpoints.save(
                parallel.main(),
                &optimizer,
                &state,
                config.checkpoint_filter(),
            )?;
        }
    }
    progress.finish_and_clear();

    run_dir.write_loss_plot(metrics.records())?;
    export(&run_dir, parallel.main(), &config)?;
    println!(
        "trained {} steps ({}): {}",
        state.step,
        if config.lambda > 0.0 && config.teacher_maps.is_some() {
            "Lavender"
        } else {
            "plain SFT"
        },
        run_dir.path().display()
    );
    if let Some(loss) = state.last_train_loss {
        println!("  last training loss {loss:.4}");
    }
    if let Some(loss) = state.last_eval_loss {
        println!("  held-out loss {loss:.4}");
    }
    if without_maps > 0 {
        println!(
            "  {without_maps} of the {seen} samples trained in this session had no teacher maps \
             (cross-entropy only)"
        );
    }
    println!(
        "  metrics {}, plot {}",
        run_dir.metrics_path().display(),
        run_dir.loss_plot_path().display()
    );
    Ok(())
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

/// The student (LoRA'd unless `full`, factors from `adapter` if given) and a fresh Aligner.
fn build_trainable(config: &TrainConfig, device: &Device) -> anyhow::Result<Trainable> {
    let mut student = Mllama::load(&config.vlm, None, device)
        .with_context(|| format!("cannot load the model from {}", config.vlm.display()))?;
    if !config.full {
        student = student.try_map_model(|model| {
            let model = apply_lora(model, &config.lora)?;
            match &config.adapter {
                Some(adapter) => load_peft_factors(model, adapter),
                None => Ok(model),
            }
        })?;
    }
    let heads = student.model.config.text_config.num_attention_heads;
    let aligner = AlignerConfig::new(heads)
        .with_depth(match config.aligner_depth {
            DepthArg::Light => AlignerDepth::Light,
            DepthArg::Sim => AlignerDepth::Sim,
            DepthArg::Deep => AlignerDepth::Deep,
        })
        .with_activation(AlignerActivation::Relu6)
        .init(device);
    Ok(Trainable { student, aligner })
}

/// A sample's loss graph and its values.
type SampleLoss = (lavender_core::align::loss::LavenderLoss, LossValues);

/// Mean losses over (at most `limit`) held-out samples; no backward pass.
fn evaluate(
    trainable: &Trainable,
    samples: &[Conversation],
    limit: usize,
    run_loss: &mut dyn FnMut(&Trainable, &Conversation) -> anyhow::Result<SampleLoss>,
) -> anyhow::Result<Mean> {
    let mut sums = Sums::default();
    for sample in samples.iter().take(limit.max(1)) {
        let (_, values) = run_loss(trainable, sample)?;
        sums.add(values);
    }
    Ok(sums.mean())
}

#[derive(Debug, Default)]
struct Sums {
    ce: f64,
    align: f64,
    total: f64,
    matched: f64,
    count: usize,
}

#[derive(Debug)]
struct Mean {
    ce: f64,
    align: f64,
    total: f64,
    matched: f64,
}

impl Sums {
    fn add(&mut self, values: LossValues) {
        self.ce += values.ce;
        self.align += values.align;
        self.total += values.total;
        self.matched += values.matched as f64;
        self.count += 1;
    }

    fn mean(&self) -> Mean {
        let n = self.count.max(1) as f64;
        Mean {
            ce: self.ce / n,
            align: self.align / n,
            total: self.total / n,
            matched: self.matched / n,
        }
    }
}

/// `adapter/` (PEFT) for a LoRA run and `aligner.safetensors`, each written atomically.
fn export(run_dir: &RunDir, trainable: &Trainable, config: &TrainConfig) -> anyhow::Result<()> {
    if !config.full {
        let peft = export_peft(
            &trainable.student.model,
            &config.lora,
            Some(&config.vlm.display().to_string()),
        )?;
        write_folder_atomically(
            &run_dir.path().join("adapter"),
            [
                ("adapter_config.json", peft.adapter_config_json.as_bytes()),
                (
                    "adapter_model.safetensors",
                    &peft.adapter_model_safetensors[..],
                ),
            ],
        )?;
    }
    let aligner = trainable
        .aligner
        .to_safetensors()
        .map_err(|error| anyhow::anyhow!("cannot serialise the Aligner: {error}"))?;
    write_atomically(&run_dir.path().join("aligner.safetensors"), &aligner)?;
    if config.full {
        // No Hugging Face export of a whole model yet: its weights are the checkpoint's.
        eprintln!(
            "note: the fine-tuned weights are in the last checkpoint's model.bpk \
             (no Hugging Face export of a full fine-tune yet)"
        );
    }
    Ok(())
}
