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

use anyhow::Context;
use clap::Args;
use lavender_core::adapters::{
    lora::LoraSettings,
    peft::{LoraConfig as PeftLoraConfig, TargetModules},
};

use crate::{
    commands::GridArg,
    device::{DeviceList, DeviceSpec},
    train::{
        config::{
            AggregationArg, DepthArg, ImageFitArg, PositionsArg, PrecisionArg, SuperviseArg,
            TrainConfig,
        },
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
    /// Continue the run in this folder from its latest checkpoint (its config.toml is used;
    /// only --lr and --lambda may change, e.g. after a non-finite loss).
    #[arg(
        long,
        value_name = "RUN_DIR",
        conflicts_with_all = ["vlm", "data", "out", "teacher_maps", "TrainSettingsArgs"]
    )]
    pub resume: Option<PathBuf>,

    /// Weight of the alignment loss (0: plain SFT; default 10). With --resume, the rest of the
    /// run uses this one (recorded in its config.toml).
    #[arg(long = "lambda", value_name = "LAMBDA")]
    pub lambda: Option<f64>,

    /// AdamW learning rate (no weight decay; default 1e-4). With --resume, the rest of the run
    /// uses this one (recorded in its config.toml; StepLR's decay still applies).
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,

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
    /// Fine-tune every parameter instead of LoRA factors.
    #[arg(long)]
    pub full: bool,
    /// With --full: initialise every weight at random (from --seed) from --vlm's config.json
    /// instead of loading its safetensors, to pre-train a model from scratch (the folder needs
    /// only config.json, tokenizer.json, the chat template and preprocessor_config.json).
    #[arg(long, requires = "full")]
    pub from_scratch: bool,
    /// Start the LoRA factors from this PEFT adapter folder (its r, alpha and target modules
    /// come from its adapter_config.json).
    #[arg(long, value_name = "DIR", conflicts_with = "full")]
    pub adapter: Option<PathBuf>,
    /// LoRA rank (default 8; with --adapter, the adapter's).
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA alpha: the factors are scaled by alpha / r (default 32; with --adapter, the
    /// adapter's).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Module names given LoRA factors, in both towers (default q_proj,v_proj; with
    /// --adapter, the adapter's `target_modules`).
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    /// The learning rate is multiplied by this after every epoch (StepLR).
    #[arg(long, default_value_t = 0.85)]
    pub lr_gamma: f64,
    /// Passes over the training samples (the authors' default: 3; StepLR decays after each).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after this many optimiser steps (default: the epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Samples per optimiser step, over all devices: the step's gradient is the mean of the
    /// samples' (the authors' run: 1 per GPU on 8 GPUs).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Samples per forward and backward pass on a device, as one right-padded batch; the
    /// gradients of a step's micro-batches are summed. Memory grows with it (default: a
    /// device's whole share of --batch; 1: one sample at a time).
    #[arg(long, value_name = "M")]
    pub micro_batch: Option<usize>,
    /// Order each epoch in batches of similar text length, then shuffle the batches
    /// (llama-recipes' length-based sampler), so padded batches waste little.
    #[arg(long)]
    pub group_by_length: bool,
    /// Stop at a training image that cannot be read, instead of skipping the sample (skipped
    /// samples are listed in the run's skipped.jsonl and counted at the end).
    #[arg(long)]
    pub strict: bool,
    /// Clip the L2 norm of all gradients together to this, as PyTorch's `clip_grad_norm_`
    /// (0: no clipping, the authors' default).
    #[arg(long, default_value_t = 0.0)]
    pub clip_grad_norm: f64,
    /// Clip each parameter's gradient tensor to this L2 norm on its own (Burn's clipping; 0:
    /// off).
    #[arg(long, default_value_t = 0.0)]
    pub clip_norm: f64,
    /// Which tokens the cross-entropy learns: the answers (the authors' intent), or all but
    /// the assistant headers, padding and images (what their Flickr30k and RLAIF-V runs did).
    #[arg(long, value_enum, default_value_t = SuperviseArg::Answers)]
    pub supervise: SuperviseArg,
    /// How an image meets the student's processor: squashed to one tile (the authors'
    /// Flickr30k and RLAIF-V runs), or the processor's aspect-keeping tiles (inference's).
    #[arg(long, value_enum, default_value_t = ImageFitArg::Squash)]
    pub image_fit: ImageFitArg,
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
            // The two settings a resumed run may change; the new values are recorded.
            if args.lr.is_some() || args.lambda.is_some() {
                if let Some(lr) = args.lr {
                    check_lr(lr)?;
                    eprintln!("resuming with --lr {lr} (was {})", config.lr);
                    config.lr = lr;
                }
                if let Some(lambda) = args.lambda {
                    check_lambda(lambda)?;
                    eprintln!("resuming with --lambda {lambda} (was {})", config.lambda);
                    config.lambda = lambda;
                }
                run_dir.write_config(&config)?;
            }
            crate::train::run::run(&devices, Some(run_dir), config, None)
        }
        None => {
            let config = resolve(&args, &devices.to_string())?;
            crate::train::run::run(&devices, None, config, args.out.as_deref())
        }
    }
}

fn check_lr(lr: f64) -> anyhow::Result<()> {
    anyhow::ensure!(lr.is_finite() && lr > 0.0, "--lr must be a positive number");
    Ok(())
}

fn check_lambda(lambda: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        lambda.is_finite() && lambda >= 0.0,
        "--lambda must be a number, 0 or more"
    );
    Ok(())
}

/// The settings of a new run from the flags.
fn resolve(args: &TrainArgs, device_list: &str) -> anyhow::Result<TrainConfig> {
    let s = &args.settings;
    anyhow::ensure!(
        (1..=65_536).contains(&s.batch),
        "--batch must be 1 to 65536 samples per step"
    );
    anyhow::ensure!(
        s.micro_batch != Some(0),
        "--micro-batch must be positive (leave it out for a device's whole share)"
    );
    anyhow::ensure!(s.epochs > 0, "--epochs must be positive");
    let lr = args.lr.unwrap_or(1e-4);
    let lambda = args.lambda.unwrap_or(10.0);
    check_lr(lr)?;
    check_lambda(lambda)?;
    anyhow::ensure!(
        s.lr_gamma.is_finite() && s.lr_gamma > 0.0,
        "--lr-gamma must be a positive number (StepLR's factor per epoch; 1 keeps the rate)"
    );
    anyhow::ensure!(
        s.max_steps != Some(0),
        "--max-steps must be positive (leave it out to train --epochs epochs)"
    );
    anyhow::ensure!(
        s.clip_grad_norm >= 0.0 && s.clip_norm >= 0.0,
        "--clip-grad-norm and --clip-norm cannot be negative"
    );
    anyhow::ensure!(
        (1..=1024).contains(&s.map_size),
        "--map-size must be 1 to 1024 (Lavender: 32)"
    );
    if let Some(micro) = s.micro_batch {
        anyhow::ensure!(
            micro <= s.batch,
            "--micro-batch {micro} is larger than --batch {}",
            s.batch
        );
    }
    anyhow::ensure!(
        s.checkpoint_every > 0,
        "--checkpoint-every must be positive"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&s.eval_fraction),
        "--eval-fraction must be in [0, 1)"
    );
    let lora = lora_settings(s)?;
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
        lambda,
        full: s.full,
        from_scratch: s.from_scratch,
        lora,
        lr,
        lr_gamma: s.lr_gamma,
        epochs: s.epochs,
        max_steps: s.max_steps.unwrap_or(0),
        batch: s.batch,
        micro_batch: s.micro_batch.unwrap_or(0),
        group_by_length: s.group_by_length,
        strict: s.strict,
        clip_norm: s.clip_norm,
        clip_grad_norm: s.clip_grad_norm,
        adam_epsilon: 1e-8,
        supervise: s.supervise,
        image_fit: s.image_fit,
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

/// The LoRA of a new run: the flags (r 8, alpha 32 on q_proj and v_proj by default), or with
/// `--adapter` the adapter's own `adapter_config.json`, as PEFT takes them; a flag that
/// contradicts the adapter is an error naming both.
fn lora_settings(s: &TrainSettingsArgs) -> anyhow::Result<LoraSettings> {
    let defaults = LoraSettings::default();
    let Some(adapter) = &s.adapter else {
        let settings = LoraSettings {
            r: s.lora_r.unwrap_or(defaults.r),
            alpha: s.lora_alpha.unwrap_or(defaults.alpha),
            target_modules: s.lora_targets.clone().unwrap_or(defaults.target_modules),
        };
        anyhow::ensure!(
            (1..=4096).contains(&settings.r),
            "--lora-r must be 1 to 4096 (Lavender: 8)"
        );
        return Ok(settings);
    };
    let path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--adapter: cannot read {}", path.display()))?;
    let config: PeftLoraConfig = serde_json::from_str(&text)
        .with_context(|| format!("--adapter: {} is not a PEFT LoRA config", path.display()))?;
    anyhow::ensure!(config.r > 0, "{}: r must be positive", path.display());
    let targets = match config.target_modules {
        TargetModules::List(names) => names,
        TargetModules::Regex(pattern) => anyhow::bail!(
            "{}: target_modules is the pattern `{pattern}`; training from an adapter needs a \
             list of module names",
            path.display()
        ),
        TargetModules::None => anyhow::bail!("{}: no target_modules", path.display()),
    };
    // rsLoRA scales by alpha / sqrt(r): the same scale as alpha * sqrt(r) / r.
    let alpha = if config.use_rslora {
        config.lora_alpha * (config.r as f64).sqrt()
    } else {
        config.lora_alpha
    };
    let contradiction = |flag: &str, ours: String, theirs: String| {
        anyhow::anyhow!(
            "{flag} {ours} contradicts the adapter's {theirs} ({}); leave {flag} out to take \
             the adapter's",
            path.display()
        )
    };
    if let Some(r) = s.lora_r.filter(|&r| r != config.r) {
        return Err(contradiction(
            "--lora-r",
            r.to_string(),
            format!("r {}", config.r),
        ));
    }
    if let Some(flag) = s.lora_alpha.filter(|&a| a != alpha) {
        return Err(contradiction(
            "--lora-alpha",
            flag.to_string(),
            format!("lora_alpha {alpha}"),
        ));
    }
    let sorted = |names: &[String]| {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        names
    };
    if let Some(flag) = s
        .lora_targets
        .as_ref()
        .filter(|flag| sorted(flag) != sorted(&targets))
    {
        return Err(contradiction(
            "--lora-targets",
            flag.join(","),
            format!("target_modules {}", targets.join(",")),
        ));
    }
    Ok(LoraSettings {
        r: config.r,
        alpha,
        target_modules: targets,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// A new run's defaults are the authors' (docs/method.md, "Optimisation defaults"): AdamW
    /// eps 1e-8, no clipping, a global batch of 8, 3 epochs, PEFT's LoRA (r 8, alpha 32, q/v).
    #[test]
    fn defaults_are_the_authors_run() {
        let folder = std::env::temp_dir().join(format!("lavender-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let cli = Cli::try_parse_from([
            "train",
            "--vlm",
            folder.to_str().unwrap(),
            "--data",
            "jsonl:data.jsonl",
            "--out",
            "run",
        ])
        .unwrap();
        let config = resolve(&cli.train, "cpu").unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        assert_eq!(config.adam_epsilon, 1e-8);
        assert_eq!((config.clip_grad_norm, config.clip_norm), (0.0, 0.0));
        assert_eq!((config.batch, config.epochs), (8, 3));
        assert_eq!(config.lora, LoraSettings::default());
        assert_eq!(config.supervise, SuperviseArg::Answers);
        assert_eq!(config.image_fit, ImageFitArg::Squash);
    }

    /// `--adapter` gives the LoRA its r, alpha and targets (the fixture adapter: r 8, alpha 32,
    /// q/v); a flag that contradicts them is an error naming both.
    #[test]
    fn an_adapter_brings_its_own_lora_settings() {
        let adapter = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/mllama-tiny/adapter");
        let settings = |extra: &[&str]| {
            let mut args = vec!["train", "--adapter", adapter.to_str().unwrap()];
            args.extend(extra);
            let cli = Cli::try_parse_from(
                ["train", "--vlm", ".", "--data", "jsonl:x", "--out", "run"]
                    .into_iter()
                    .chain(args.into_iter().skip(1)),
            )
            .unwrap();
            lora_settings(&cli.train.settings)
        };
        assert_eq!(settings(&[]).unwrap(), LoraSettings::default());
        assert_eq!(
            settings(&["--lora-r", "8", "--lora-targets", "v_proj,q_proj"]).unwrap(),
            LoraSettings::default()
        );
        let error = settings(&["--lora-r", "4"]).unwrap_err().to_string();
        assert!(
            error.contains("--lora-r 4 contradicts the adapter's r 8")
                && error.contains("adapter_config.json"),
            "{error}"
        );
        let error = settings(&["--lora-alpha", "16"]).unwrap_err().to_string();
        assert!(error.contains("lora_alpha 32"), "{error}");
        let error = settings(&["--lora-targets", "q_proj"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("target_modules q_proj,v_proj"), "{error}");
    }
}
