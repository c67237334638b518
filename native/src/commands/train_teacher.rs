//! `lavender train-teacher`: a small Stable Diffusion v1.x trained from scratch on a caption
//! dataset (`lavender_core::sd::training`), saved as a diffusers folder that `extract`,
//! `attend-sd` and diffusers' `StableDiffusionPipeline` load like a released one.
//!
//! Two stages: the autoencoder first, on the images alone (reconstruction, with a small pull
//! of the latents towards zero); its latents' spread then sets the scaling factor; then the
//! text encoder and the UNet together on the noise-prediction loss, with a fraction of the
//! captions dropped (replaced by the empty text) so classifier-free guidance works. The
//! tokenizer is a CLIP BPE vocabulary in which every word of the captions is one token.
//! Deterministic for a seed on the CPU. The folder is written when training ends, whole.

use std::{collections::BTreeSet, path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use burn::{
    module::Module,
    optim::{AdamConfig, GradientsParams, ModuleOptimizer},
    tensor::{Device, Distribution, Int, Tensor, TensorData},
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    checkpoint::{NamedTensor, StoredDtype, safetensors_bytes_as},
    data::DataSpec,
    rng::SeededRng,
    sd::{
        clip_text::{ClipTextConfig, ClipTextModel},
        save::{text_encoder_tensors, unet_tensors, vae_tensors},
        scheduler::{DdimScheduler, SchedulerConfig},
        tokenizer::ClipTokenizer,
        training::{
            Denoiser, autoencoder_loss, clip_word_vocabulary, model_index, scheduler_config,
            text_encoder_config, unet_config, vae_config,
        },
        unet::{UNet2DConditionModel, UNetConfig},
        vae::{AutoencoderKl, VaeConfig},
    },
    weights::Weights,
};
use serde_json::json;

use crate::{device::DeviceSpec, output::write_folder_atomically};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender train-teacher --data jsonl:data/shapes/captions-train.jsonl --out teachers/shapes
  lavender train-teacher --data jsonl:pairs.jsonl --out teacher --image-size 32 --steps 200 --vae-steps 100

Then:
  lavender extract --sd teachers/shapes --data jsonl:data/shapes/captions-val.jsonl --out maps/ --image-size 64
  lavender point --maps maps/ --data data/shapes/captions-val.jsonl")]
pub struct TrainTeacherArgs {
    /// Images and captions: a data spec (jsonl:PATH, flickr30k:PATH, ...).
    #[arg(long, value_name = "SPEC")]
    pub data: DataSpec,

    /// The diffusers folder to write (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Image side in pixels (a multiple of 8, at most 256).
    #[arg(long, default_value_t = 64)]
    pub image_size: usize,

    /// Autoencoder training steps.
    #[arg(long, default_value_t = 600)]
    pub vae_steps: usize,

    /// Text encoder + UNet training steps.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,

    /// Images per step.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch: u64,

    /// Adam learning rate of both stages.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,

    /// Fraction of captions replaced by the empty text (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub caption_dropout: f64,

    /// Seed of the initialisation, the batches, the noise and the timesteps.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Store the weights in f16 (half the size; training is in f32 either way).
    #[arg(long)]
    pub half: bool,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: TrainTeacherArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.image_size.is_multiple_of(8) && (8..=256).contains(&args.image_size),
        "--image-size must be a multiple of 8 from 8 to 256"
    );
    anyhow::ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be a positive number"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.caption_dropout),
        "--caption-dropout must be at least 0 and below 1"
    );
    if args.out.exists() {
        bail!(
            "{} exists; choose a new --out (a teacher folder is written whole, once)",
            args.out.display()
        );
    }
    let samples = args
        .data
        .read()
        .with_context(|| format!("cannot read the dataset {}", args.data))?;
    anyhow::ensure!(!samples.is_empty(), "{} has no samples", args.data);
    let size = args.image_size;
    let mut loader = crate::limits::image_loader();
    let mut pixels: Vec<f32> = Vec::with_capacity(samples.len() * 3 * size * size);
    let mut captions = Vec::with_capacity(samples.len());
    for sample in &samples {
        let image = loader
            .load(&sample.image)
            .with_context(|| format!("sample {}", sample.id))?
            .resize_exact(
                size as u32,
                size as u32,
                image::imageops::FilterType::Triangle,
            )
            .to_rgb8();
        for channel in 0..3 {
            pixels.extend(image.pixels().map(|p| f32::from(p[channel]) / 127.5 - 1.0));
        }
        captions.push(sample.text.clone());
    }
    let count = samples.len();
    println!("{}: {count} images at {size} px", args.data);

    // The tokenizer: every caption word one token.
    let words: BTreeSet<String> = captions
        .iter()
        .flat_map(|c| {
            c.split(|ch: char| !ch.is_ascii_alphanumeric())
                .map(str::to_lowercase)
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let (vocab, merges) = clip_word_vocabulary(words.iter().map(String::as_str));
    let vocab_size = vocab.as_object().map_or(0, serde_json::Map::len);
    let scratch =
        std::env::temp_dir().join(format!("lavender-teacher-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(scratch.join("vocab.json"), vocab.to_string())?;
    std::fs::write(scratch.join("merges.txt"), &merges)?;
    let tokenizer = ClipTokenizer::load(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let tokenizer = tokenizer?;
    let (bos, eos) = (tokenizer.start_id(), tokenizer.end_id());

    let spec = args.device.unwrap_or_else(DeviceSpec::best_available);
    let device = spec.open()?.autodiff();
    device.seed(args.seed);
    let mut rng = SeededRng::new(args.seed);
    let batch = (args.batch as usize).min(count);
    let images = |indices: &[usize], device: &Device| {
        let plane = 3 * size * size;
        let values: Vec<f32> = indices
            .iter()
            .flat_map(|&i| pixels[i * plane..(i + 1) * plane].iter().copied())
            .collect();
        Tensor::<4>::from_data(
            TensorData::new(values, [indices.len(), 3, size, size]),
            device,
        )
    };
    let draw = |rng: &mut SeededRng| -> Vec<usize> {
        (0..batch)
            .map(|_| rng.below(count as u64) as usize)
            .collect()
    };
    let bar = |steps: usize, what: &str| {
        ProgressBar::new(steps as u64).with_style(
            ProgressStyle::with_template(&format!(
                "{what} {{bar:30}} {{pos}}/{{len}} steps  {{per_sec}}  ETA {{eta}}  {{msg}}"
            ))
            .expect("valid template"),
        )
    };
    let started = Instant::now();

    // Stage 1: the autoencoder.
    let fresh = Weights::fresh();
    let vae_json = vae_config(size, 1.0);
    let mut vae = AutoencoderKl::from_weights(serde_json::from_value(vae_json)?, &fresh, &device)?;
    let mut optimizer: ModuleOptimizer = AdamConfig::new().init();
    let progress = bar(args.vae_steps, "autoencoder");
    let mut vae_loss = f32::NAN;
    for step in 0..args.vae_steps {
        let loss = autoencoder_loss(&vae, images(&draw(&mut rng), &device), 1e-4);
        let grads = GradientsParams::from_grads(loss.backward(), &vae);
        vae = optimizer.step(args.lr, vae, grads);
        if step % 20 == 0 || step + 1 == args.vae_steps {
            vae_loss = loss.into_scalar();
            anyhow::ensure!(
                vae_loss.is_finite(),
                "the autoencoder's loss is {vae_loss} at step {step}"
            );
            progress.set_message(format!("loss {vae_loss:.4}"));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();

    // The latents of every image, and their spread: the scaling factor.
    let mut latents: Vec<f32> = Vec::new();
    let all: Vec<usize> = (0..count).collect();
    // Without autodiff: a graph kept for every chunk would hold every activation.
    let encoder = vae.valid();
    let plain = device.clone().without_autodiff();
    for chunk in all.chunks(64) {
        let mean = encoder.encode_mean(images(chunk, &plain));
        latents.extend(
            mean.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let n = latents.len() as f64;
    let mean = latents.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let spread = (latents
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    anyhow::ensure!(
        spread > 0.0 && spread.is_finite(),
        "the latents have no spread ({spread})"
    );
    let scaling = 1.0 / spread;
    let latent_size = size / 4;
    let latent_plane = 4 * latent_size * latent_size;
    anyhow::ensure!(
        latents.len() == count * latent_plane,
        "unexpected latent shape"
    );
    println!(
        "autoencoder: {} steps, loss {vae_loss:.4}; latent spread {spread:.4} (scaling factor {scaling:.4})",
        args.vae_steps
    );

    // Stage 2: text encoder and UNet.
    let text_json = text_encoder_config(vocab_size, bos, eos);
    let unet_json = unet_config(latent_size);
    let text_config: ClipTextConfig = serde_json::from_value(text_json.clone())?;
    let unet_parsed: UNetConfig = serde_json::from_value(unet_json.clone())?;
    let mut denoiser = Denoiser {
        text_encoder: ClipTextModel::from_weights(&fresh, text_config, &device)?,
        unet: UNet2DConditionModel::from_weights(&unet_parsed, &fresh, &device)?,
    };
    let scheduler = DdimScheduler::new(&serde_json::from_value::<SchedulerConfig>(
        scheduler_config(),
    )?)
    .map_err(anyhow::Error::msg)?;
    let alphas = scheduler.alphas_cumprod().to_vec();
    let timesteps = alphas.len() as u64;
    let empty = tokenizer.encode("")?.ids;
    let encoded: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| tokenizer.encode(c).map(|t| t.ids))
        .collect::<Result<_, _>>()?;
    let mut optimizer: ModuleOptimizer = AdamConfig::new().init();
    let progress = bar(args.steps, "denoiser");
    let mut history = Vec::new();
    let mut running = f64::NAN;
    for step in 0..args.steps {
        let picked = draw(&mut rng);
        let ids: Vec<i64> = picked
            .iter()
            .flat_map(|&i| {
                let dropped = rng.next_f64() < args.caption_dropout;
                let ids = if dropped { &empty } else { &encoded[i] };
                ids.iter().map(|&id| i64::from(id)).collect::<Vec<_>>()
            })
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 77]), &device);
        let values: Vec<f32> = picked
            .iter()
            .flat_map(|&i| {
                latents[i * latent_plane..(i + 1) * latent_plane]
                    .iter()
                    .map(|&v| v * scaling as f32)
            })
            .collect();
        let shape = [batch, 4, latent_size, latent_size];
        let z = Tensor::<4>::from_data(TensorData::new(values, shape), &device);
        let noise = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let ts: Vec<usize> = (0..batch).map(|_| rng.below(timesteps) as usize).collect();
        let loss = denoiser.loss(ids, z, noise, &ts, &alphas);
        let grads = GradientsParams::from_grads(loss.backward(), &denoiser);
        denoiser = optimizer.step(args.lr, denoiser, grads);
        if step % 20 == 0 || step + 1 == args.steps {
            let value = f64::from(loss.into_scalar::<f32>());
            anyhow::ensure!(
                value.is_finite(),
                "the denoising loss is {value} at step {step}"
            );
            running = if running.is_nan() {
                value
            } else {
                0.8 * running + 0.2 * value
            };
            progress.set_message(format!("loss {running:.4}"));
            history.push(json!({"step": step, "loss": value}));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "denoiser: {} steps, loss {running:.4}; trained in {seconds:.0} s",
        args.steps
    );

    // The diffusers folder.
    let vae_json = vae_config(size, scaling);
    let dtype = if args.half {
        StoredDtype::F16
    } else {
        StoredDtype::F32
    };
    let stored = |tensors: Result<Vec<NamedTensor>, String>| {
        tensors
            .and_then(|tensors| safetensors_bytes_as(&tensors, dtype))
            .map_err(anyhow::Error::msg)
    };
    let unet_bytes = stored(unet_tensors(&denoiser.unet, &unet_parsed))?;
    let text_bytes = stored(text_encoder_tensors(&denoiser.text_encoder))?;
    // The weights do not depend on the scaling factor; the written vae/config.json carries it.
    let vae_bytes = stored(vae_tensors(&vae))?;
    // The config to be written must read back as one.
    let _: VaeConfig = serde_json::from_value(vae_json.clone())?;
    let specials = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    });
    let mut tokenizer_config = specials.clone();
    tokenizer_config["tokenizer_class"] = json!("CLIPTokenizer");
    tokenizer_config["model_max_length"] = json!(77);
    tokenizer_config["do_lower_case"] = json!(true);
    let record = json!({
        "trained_by": "lavender train-teacher",
        "data": args.data.to_string(),
        "images": count,
        "image_size": size,
        "vae_steps": args.vae_steps,
        "steps": args.steps,
        "batch": batch,
        "lr": args.lr,
        "caption_dropout": args.caption_dropout,
        "seed": args.seed,
        "half": args.half,
        "device": spec.to_string(),
        "seconds": seconds,
        "autoencoder_loss": vae_loss,
        "latent_spread": spread,
        "vocabulary": words,
        "loss_history": history,
    });
    let pretty = |value: &serde_json::Value| {
        serde_json::to_vec_pretty(value).map(|mut v| {
            v.push(b'\n');
            v
        })
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model_index.json", pretty(&model_index())?),
        (
            "scheduler/scheduler_config.json",
            pretty(&scheduler_config())?,
        ),
        ("tokenizer/vocab.json", vocab.to_string().into_bytes()),
        ("tokenizer/merges.txt", merges.into_bytes()),
        ("tokenizer/special_tokens_map.json", pretty(&specials)?),
        (
            "tokenizer/tokenizer_config.json",
            pretty(&tokenizer_config)?,
        ),
        ("text_encoder/config.json", pretty(&text_json)?),
        ("text_encoder/model.safetensors", text_bytes),
        ("unet/config.json", pretty(&unet_json)?),
        ("unet/diffusion_pytorch_model.safetensors", unet_bytes),
        ("vae/config.json", pretty(&vae_json)?),
        ("vae/diffusion_pytorch_model.safetensors", vae_bytes),
        ("training.json", pretty(&record)?),
    ];
    write_folder_atomically(&args.out, files.iter().map(|(n, b)| (*n, b.as_slice())))?;
    println!("wrote the teacher to {}", args.out.display());
    Ok(())
}
