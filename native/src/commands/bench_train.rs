//! `lavender bench-train`: one Lavender LoRA training step (forward, backward, AdamW) and
//! greedy decoding of Llama-3.2-11B-Vision with random weights, the student-side counterpart of
//! `bench/torch_reference.py mllama`, which does the same work in PyTorch + peft: 96 text
//! tokens, one image (one valid tile of four), labels on the last 56 tokens, LoRA r 8 / alpha 32
//! on q_proj and v_proj of both towers, AdamW at 1e-4, and with `align` the cross-attention of
//! every cross-attention layer (head mean, layer mean, first tile without its class token, on
//! its patch grid, antialiased bilinear to 32x32) pulled toward a random map by MSE x 10.
//! `--batch 1,8` times each batch size as one batched step.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use burn::{
    module::Module,
    optim::{AdamWConfig, GradientsParams},
    tensor::{
        Device, Distribution, Int, Tensor, TensorData,
        quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype},
    },
};
use clap::Args;
use lavender_core::{
    adapters::lora::{LoraSettings, apply_lora, apply_qlora},
    align::loss::cross_entropy,
    maps::resize::resize_bilinear_antialias,
    vlm::mllama::{
        config::MllamaConfig,
        model::MllamaModel,
        text::{KvCache, Sampler},
    },
    weights::Weights,
};

use crate::{commands::bench_unet::Precision, device::DeviceSpec};

/// `config.json` of meta-llama/Llama-3.2-11B-Vision-Instruct (the fields this crate reads).
const LLAMA_32_11B_VISION: &str = r#"{
  "model_type": "mllama", "image_token_index": 128256,
  "text_config": {
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "hidden_act": "silu",
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "pad_token_id": 128004,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}
  },
  "vision_config": {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_global_layers": 8, "attention_heads": 16, "image_size": 560, "patch_size": 14,
    "max_num_tiles": 4, "vision_output_dim": 7680, "norm_eps": 1e-05, "hidden_act": "gelu",
    "intermediate_layers_indices": [3, 7, 15, 23, 30],
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
  }
}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaseQuant {
    None,
    Q8,
    Q4,
}

impl BaseQuant {
    fn scheme(self, block: u8) -> Option<QuantScheme> {
        let value = match self {
            Self::None => return None,
            Self::Q8 => QuantValue::Q8S,
            Self::Q4 => QuantValue::Q4S,
        };
        Some(
            QuantScheme::default()
                .with_value(value)
                .with_store(QuantStore::PackedU32(0))
                .per_block([block], ScaleDtype::F32),
        )
    }
}

/// Label positions before this one are masked, as in the PyTorch reference.
const PROMPT_TOKENS: usize = 40;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender bench-train --device cuda --precision bf16
  lavender bench-train --device cpu --config tests/fixtures/mllama-tiny/config.json --seq 24
  lavender bench-train --device cpu --precision f32 --config mid.json --batch 1,8 --decode-tokens 0")]
pub struct BenchTrainArgs {
    /// A Mllama config.json (default: Llama-3.2-11B-Vision's).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Text tokens per sample (the image token is the second).
    #[arg(long, default_value_t = 96)]
    pub seq: usize,

    /// Samples per training step, comma-separated: each is timed as one batched forward and
    /// backward pass (the same text repeated, a different random image per sample).
    #[arg(long, value_delimiter = ',', default_values_t = [1])]
    pub batch: Vec<usize>,

    /// LoRA rank (alpha is 4 x rank, as Lavender's 8 / 32).
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,

    /// Timed training steps per variant.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,

    /// Untimed steps first (kernel compilation and autotuning).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,

    /// Tokens to decode greedily for the tokens/s figure (0: skip).
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,

    #[arg(long, value_enum, default_value_t = Precision::Bf16)]
    pub precision: Precision,

    /// Quantize the frozen base for QLoRA (per-block symmetric, f32 scales).
    #[arg(long, value_enum, default_value_t = BaseQuant::None)]
    pub base_quant: BaseQuant,

    /// Values per quantization block (every linear weight's output width must divide by it).
    #[arg(long, default_value_t = 32)]
    pub quant_block: u8,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: BenchTrainArgs) -> anyhow::Result<()> {
    let config: MllamaConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a Mllama config", path.display()))?
        }
        None => serde_json::from_str(LLAMA_32_11B_VISION).context("the built-in 11B config")?,
    };
    anyhow::ensure!(
        args.seq > PROMPT_TOKENS.min(args.seq / 2) + 2,
        "--seq {} is too short",
        args.seq
    );
    anyhow::ensure!(args.lora_r > 0, "--lora-r must be positive");
    anyhow::ensure!(
        !args.batch.is_empty() && args.batch.iter().all(|&b| b > 0),
        "--batch needs positive sizes"
    );
    let spec = args.device.unwrap_or_else(DeviceSpec::best_available);
    let dtype = args.precision.float_dtype();
    let device = spec.open_with_float(dtype)?;
    let device = device.autodiff();

    let started = Instant::now();
    let model = MllamaModel::from_weights(config.clone(), &Weights::random(0.02), &device)?;
    let settings = LoraSettings {
        r: args.lora_r,
        alpha: 4.0 * args.lora_r as f64,
        ..LoraSettings::default()
    };
    let model = match args.base_quant.scheme(args.quant_block) {
        // Burn panics on a weight that does not divide into blocks; say which instead.
        Some(scheme) => crate::panic_capture::catch_panic(move || {
            apply_qlora(model, &settings, scheme, Some(dtype))
        })
        .map_err(|message| anyhow::anyhow!("cannot quantize the base: {message}"))??,
        None => apply_lora(model, &settings)?,
    };
    report(
        &format!(
            "\"what\": \"init_s\", \"value\": {:.1}, \"params_b\": {:.2}, \"lora_trainable_params\": {}",
            started.elapsed().as_secs_f64(),
            model.num_params() as f64 / 1e9,
            trainable_params(&model)
        ),
        &spec,
        args.precision,
    );

    let mut model = model;
    for &batch in &args.batch {
        let batch_inputs = Inputs::random(&config, args.seq, batch, &device);
        for align in [false, true] {
            let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
            let mut step = |model: MllamaModel| -> anyhow::Result<MllamaModel> {
                let loss = batch_inputs.loss(&model, align)?;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let model = optimizer.step(1e-4, model, grads);
                device
                    .sync()
                    .map_err(|error| anyhow::anyhow!("the step failed on {spec}: {error:?}"))?;
                Ok(model)
            };
            for _ in 0..args.warmup {
                model = step(model)?;
            }
            let started = Instant::now();
            for _ in 0..args.steps {
                model = step(model)?;
            }
            let ms = started.elapsed().as_secs_f64() * 1e3 / args.steps.max(1) as f64;
            report(
                &format!(
                    "\"what\": \"lora_step\", \"align\": {align}, \"batch\": {batch}, \"seq\": {}, \"tiles\": 1, \"ms\": {ms:.1}, \"samples_per_s\": {:.2}, \"reserved_gb\": {}",
                    args.seq,
                    batch as f64 * 1e3 / ms,
                    reserved_gb(&device)
                ),
                &spec,
                args.precision,
            );
        }
    }

    if args.decode_tokens > 0 {
        let model = model.valid();
        let inner = device.clone().inner();
        let first = Inputs::random(&config, args.seq, 1, &device);
        let states = first.states(&model).inner();
        let mask = first.mask.clone().inner();
        let started = Instant::now();
        let prompt: Vec<u32> = first.ids.clone();
        let tokens = model.text.generate_streaming(
            &prompt,
            Some(states),
            Some(mask),
            args.decode_tokens,
            &[],
            &Sampler::greedy(),
            |_| {},
        );
        inner
            .sync()
            .map_err(|error| anyhow::anyhow!("decoding failed on {spec}: {error:?}"))?;
        let seconds = started.elapsed().as_secs_f64();
        report(
            &format!(
                "\"what\": \"decode\", \"prompt\": {}, \"tokens\": {}, \"tokens_per_s\": {:.2}",
                prompt.len(),
                tokens.len(),
                tokens.len() as f64 / seconds
            ),
            &spec,
            args.precision,
        );
    }
    Ok(())
}

fn report(fields: &str, spec: &DeviceSpec, precision: Precision) {
    println!(
        "{{\"bench\": \"mllama\", \"device\": \"{spec}\", \"precision\": \"{precision:?}\", {fields}}}"
    );
}

/// Bytes the device's allocator holds (its pools only grow during a step, so after the steps
/// this is their high-water mark), or `null` where the backend does not say.
fn reserved_gb(device: &Device) -> String {
    device
        .memory_pool_usage()
        .map(|usage| format!("{:.2}", usage.bytes_reserved as f64 / (1u64 << 30) as f64))
        .unwrap_or_else(|| "null".into())
}

fn trainable_params(model: &MllamaModel) -> usize {
    lavender_core::adapters::lora::lora_factor_count(model)
}

/// The reference's random batch: ids with `<|image|>` second (the same for every sample), one
/// image per sample of four tile slots of which the first is valid, every token after the image
/// seeing that tile.
struct Inputs {
    batch: usize,
    ids: Vec<u32>,
    labels: Vec<i64>,
    pixel_values: Tensor<6>,
    aspect_ratio_ids: Tensor<2, Int>,
    aspect_ratio_mask: Tensor<3, Int>,
    /// `[1, seq, 1, max_tiles]`.
    mask: Tensor<4>,
    tile: usize,
    patches_per_side: usize,
}

impl Inputs {
    fn random(config: &MllamaConfig, seq: usize, batch: usize, device: &Device) -> Self {
        let vision = &config.vision_config;
        let vocab = config.text_config.vocab_size.min(128_000) as u32;
        // A fixed LCG: the values do not matter, their spread does.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut ids: Vec<u32> = (0..seq)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) as u32) % vocab
            })
            .collect();
        ids[1] = config.image_token_index;
        let masked = PROMPT_TOKENS.min(seq / 2);
        let labels = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| if i < masked { -100 } else { i64::from(id) })
            .collect();
        let tiles = vision.max_num_tiles;
        let size = vision.image_size;
        let pixel_values = Tensor::random(
            [batch, 1, tiles, vision.num_channels, size, size],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let aspect_ratio_ids =
            Tensor::from_data(TensorData::new(vec![1i64; batch], [batch, 1]), device);
        let mut tile_mask = vec![0i64; batch * tiles];
        for sample in 0..batch {
            tile_mask[sample * tiles] = 1;
        }
        let aspect_ratio_mask =
            Tensor::from_data(TensorData::new(tile_mask, [batch, 1, tiles]), device);
        let mut mask = vec![0f32; batch * seq * tiles];
        for sample in 0..batch {
            for position in 1..seq {
                mask[(sample * seq + position) * tiles] = 1.0;
            }
        }
        let mask = Tensor::from_data(TensorData::new(mask, [batch, seq, 1, tiles]), device);
        Self {
            batch,
            ids,
            labels,
            pixel_values,
            aspect_ratio_ids,
            aspect_ratio_mask,
            mask,
            tile: vision.tokens_per_tile(),
            patches_per_side: vision.patches_per_side(),
        }
    }

    fn states(&self, model: &MllamaModel) -> Tensor<3> {
        model.image_states(
            self.pixel_values.clone(),
            self.aspect_ratio_ids.clone(),
            self.aspect_ratio_mask.clone(),
        )
    }

    /// The mean over the batch of each sample's CE on the labels (HF's token mean over the
    /// batch: every sample has the same labels), plus with `align` 10 x MSE of the attention
    /// maps to random ones.
    fn loss(&self, model: &MllamaModel, align: bool) -> anyhow::Result<Tensor<1>> {
        let device = self.pixel_values.device();
        let (batch, seq) = (self.batch, self.ids.len());
        let ids: Vec<i64> = (0..batch)
            .flat_map(|_| self.ids.iter().map(|&id| i64::from(id)))
            .collect();
        let output = model.text.forward(
            Tensor::from_data(TensorData::new(ids, [batch, seq]), &device),
            Some(self.states(model)),
            Some(self.mask.clone()),
            &mut KvCache::new(),
            align,
        );
        let ce = (0..batch)
            .map(|sample| cross_entropy(output.logits.clone().narrow(0, sample, 1), &self.labels))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("at least one sample")
            .div_scalar(batch as f64);
        if !align {
            return Ok(ce);
        }
        let queries = seq - PROMPT_TOKENS.min(seq / 2);
        let side = self.patches_per_side;
        let layers = output.cross_attention.len();
        anyhow::ensure!(layers > 0, "no cross-attention was captured");
        let maps = output
            .cross_attention
            .into_iter()
            .map(|(_, probs)| {
                // [batch, heads, seq, keys] -> head mean of the answer rows, tile 0 without CLS.
                let [_, _, _, keys] = probs.dims();
                probs
                    .narrow(2, seq - queries, queries)
                    .narrow(3, 1, (self.tile - 1).min(keys - 1))
                    .mean_dim(1)
                    .reshape([batch * queries, side * side])
            })
            .reduce(|a, b| a + b)
            .expect("at least one layer")
            .div_scalar(layers as f64);
        // A matrix-product resize: CubeCL has no backward for bilinear `interpolate`.
        let maps = resize_bilinear_antialias(maps.reshape([batch * queries, side, side]), [32, 32]);
        let target = Tensor::random(maps.shape(), Distribution::Uniform(0.0, 1.0), &device);
        let mse = (maps - target)
            .powi_scalar(2)
            .mean()
            .cast(burn::tensor::DType::F32);
        Ok(ce + mse.mul_scalar(10.0))
    }
}
