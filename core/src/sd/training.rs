//! Training a small Stable Diffusion v1.x from scratch (the study's teacher): the parts'
//! configurations at a size a CPU trains, a word-level CLIP vocabulary for a small language,
//! the forward noising of DDPM training and the noise-prediction loss, and the VAE's
//! reconstruction loss. No I/O and no loop: `lavender train-teacher` owns those.
//!
//! The architecture is SD v1.x's (CLIP text encoder, `UNet2DConditionModel` with
//! cross-attention, `AutoencoderKL`, DDIM scheduler config, CLIP BPE tokenizer), only narrower
//! and shallower, so diffusers and `lavender` load the result as any SD v1.x folder.

use std::collections::BTreeSet;

use burn::{
    module::Module,
    tensor::{Int, Tensor, TensorData},
};
use serde_json::{Value, json};

use super::{
    clip_text::ClipTextModel,
    tokenizer::{END, START},
    unet::UNet2DConditionModel,
    vae::AutoencoderKl,
};

/// The SD v1.x scheduler every teacher here is trained and sampled with.
pub fn scheduler_config() -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    })
}

/// diffusers' `model_index.json` of an SD v1.x pipeline.
pub fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [null, null],
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
    })
}

/// A CLIP text encoder of 2 layers, width 64, for a vocabulary of `vocab_size` whose special
/// tokens have ids `bos` and `eos`.
pub fn text_encoder_config(vocab_size: usize, bos: u32, eos: u32) -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 64,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "attention_dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
    })
}

/// A UNet with cross-attention at both of its resolutions (the latent's and half of it), width
/// 32 then 64, for latents of side `latent_size` and text of width 64.
pub fn unet_config(latent_size: usize) -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [32, 64],
        "center_input_sample": false,
        "cross_attention_dim": 64,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": latent_size,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": false,
    })
}

/// An `AutoencoderKL` of 4x downscaling (three stages of width 32, 64, 64) for images of side
/// `image_size`, with latents multiplied by `scaling_factor` for the UNet.
pub fn vae_config(image_size: usize, scaling_factor: f64) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": image_size,
        "scaling_factor": scaling_factor,
        "mid_block_add_attention": true,
        "use_quant_conv": true,
        "use_post_quant_conv": true,
    })
}

/// Characters every vocabulary holds alone and as a word end (`c</w>`): printable ASCII.
fn base_characters() -> impl Iterator<Item = char> {
    (33u8..=126).map(char::from)
}

/// A CLIP BPE vocabulary (`vocab.json` as a JSON object, `merges.txt` text) in which each of
/// `words` (lower-case letters and digits) becomes one token, built letter by letter from
/// the left; any other text still tokenizes, into characters. The special tokens come last.
pub fn clip_word_vocabulary<'a>(words: impl IntoIterator<Item = &'a str>) -> (Value, String) {
    let mut tokens: Vec<String> = Vec::new();
    for c in base_characters() {
        tokens.push(c.to_string());
    }
    for c in base_characters() {
        tokens.push(format!("{c}</w>"));
    }
    let mut merges = vec!["#version: 0.2".to_string()];
    let mut known: BTreeSet<String> = tokens.iter().cloned().collect();
    let unique: BTreeSet<String> = words
        .into_iter()
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 1 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .collect();
    for word in &unique {
        let chars: Vec<char> = word.chars().collect();
        let mut left = chars[0].to_string();
        for (index, &c) in chars.iter().enumerate().skip(1) {
            let right = if index + 1 == chars.len() {
                format!("{c}</w>")
            } else {
                c.to_string()
            };
            let merged = format!("{left}{right}");
            if known.insert(merged.clone()) {
                merges.push(format!("{left} {right}"));
                tokens.push(merged.clone());
            }
            left = merged;
        }
    }
    tokens.push(START.to_string());
    tokens.push(END.to_string());
    let vocab: serde_json::Map<String, Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| (token, json!(id)))
        .collect();
    (Value::Object(vocab), merges.join("\n") + "\n")
}

/// DDPM's forward process: `sqrt(a_t) * latents + sqrt(1 - a_t) * noise`, with `a_t` the
/// cumulative alpha of each batch element's timestep.
pub fn noised(
    latents: Tensor<4>,
    noise: Tensor<4>,
    timesteps: &[usize],
    alphas_cumprod: &[f64],
) -> Tensor<4> {
    let device = latents.device();
    let batch = timesteps.len();
    let column = |values: Vec<f32>| {
        Tensor::<4>::from_data(TensorData::new(values, [batch, 1, 1, 1]), &device)
    };
    let signal = column(
        timesteps
            .iter()
            .map(|&t| alphas_cumprod[t].sqrt() as f32)
            .collect(),
    );
    let spread = column(
        timesteps
            .iter()
            .map(|&t| (1.0 - alphas_cumprod[t]).sqrt() as f32)
            .collect(),
    );
    latents * signal + noise * spread
}

/// The text encoder and the UNet, trained together on the noise-prediction loss.
#[derive(Module, Debug)]
pub struct Denoiser {
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
}

impl Denoiser {
    /// The mean squared error of the predicted noise: the text `ids` `[batch, 77]` encoded,
    /// `latents` (scaled) noised to `timesteps` with `noise`.
    pub fn loss(
        &self,
        ids: Tensor<2, Int>,
        latents: Tensor<4>,
        noise: Tensor<4>,
        timesteps: &[usize],
        alphas_cumprod: &[f64],
    ) -> Tensor<1> {
        let context = self.text_encoder.forward(ids);
        let noisy = noised(latents, noise.clone(), timesteps, alphas_cumprod);
        let steps: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let predicted = self.unet.forward_timesteps(noisy, &steps, context);
        (predicted - noise).powi_scalar(2).mean()
    }
}

/// The VAE's training loss on images in [-1, 1]: reconstruction error of the posterior mean,
/// plus a small pull of the latents towards zero (`latent_weight`), which keeps their scale in
/// check where the full KL term would need the log-variance half as well.
pub fn autoencoder_loss(vae: &AutoencoderKl, images: Tensor<4>, latent_weight: f32) -> Tensor<1> {
    let latents = vae.encode_mean(images.clone());
    let penalty = latents
        .clone()
        .powi_scalar(2)
        .mean()
        .mul_scalar(latent_weight);
    (vae.decode(latents) - images).powi_scalar(2).mean() + penalty
}

#[cfg(test)]
mod tests {
    use burn::{
        optim::{AdamConfig, GradientsParams, ModuleOptimizer},
        tensor::{Device, Distribution},
    };

    use super::*;
    use crate::{
        sd::{
            clip_text::ClipTextConfig,
            scheduler::{DdimScheduler, SchedulerConfig},
            tokenizer::ClipTokenizer,
            unet::UNetConfig,
            vae::VaeConfig,
        },
        weights::Weights,
    };

    fn tokenizer(words: &[&str]) -> (ClipTokenizer, Value) {
        let (vocab, merges) = clip_word_vocabulary(words.iter().copied());
        let dir = std::env::temp_dir().join(format!(
            "lavender-clip-vocab-{}-{}",
            std::process::id(),
            words.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vocab.json"), vocab.to_string()).unwrap();
        std::fs::write(dir.join("merges.txt"), merges).unwrap();
        let tokenizer = ClipTokenizer::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (tokenizer, vocab)
    }

    #[test]
    fn each_word_of_the_language_is_one_token() {
        let words = [
            "a", "red", "green", "circle", "square", "left", "of", "from", "three",
        ];
        let (tokenizer, vocab) = tokenizer(&words);
        let tokens = tokenizer.encode("A red circle, a green square").unwrap();
        assert_eq!(
            tokens.pieces,
            [
                "a</w>",
                "red</w>",
                "circle</w>",
                ",</w>",
                "a</w>",
                "green</w>",
                "square</w>"
            ]
        );
        assert_eq!(tokens.ids[0], vocab[START].as_u64().unwrap() as u32);
        // Unknown words fall back to characters.
        let unknown = tokenizer.encode("blue").unwrap();
        assert_eq!(unknown.pieces, ["b", "l", "u", "e</w>"]);
    }

    #[test]
    fn noising_follows_the_schedule() {
        let device = Device::flex();
        let scheduler = DdimScheduler::new(
            &serde_json::from_value::<SchedulerConfig>(scheduler_config()).unwrap(),
        )
        .unwrap();
        let ac = scheduler.alphas_cumprod();
        let latents = Tensor::<4>::ones([2, 1, 1, 1], &device);
        let noise = Tensor::<4>::ones([2, 1, 1, 1], &device).mul_scalar(2.0);
        let values: Vec<f32> = noised(latents, noise, &[0, 999], ac)
            .into_data()
            .try_to_vec()
            .unwrap();
        for (value, t) in values.iter().zip([0, 999]) {
            let expected = ac[t].sqrt() + 2.0 * (1.0 - ac[t]).sqrt();
            assert!(
                (f64::from(*value) - expected).abs() < 1e-6,
                "{value} vs {expected}"
            );
        }
    }

    /// The tiny teacher's parts build from their configs, and a few steps of each loss lower
    /// it on a fixed batch.
    #[test]
    fn the_tiny_teacher_builds_and_learns() {
        let device = Device::flex().autodiff();
        device.seed(11);
        let (tokenizer, vocab) = tokenizer(&["a", "red", "circle"]);
        let vocab_size = vocab.as_object().unwrap().len();
        let fresh = Weights::fresh();
        let text_config: ClipTextConfig = serde_json::from_value(text_encoder_config(
            vocab_size,
            vocab_size as u32 - 2,
            vocab_size as u32 - 1,
        ))
        .unwrap();
        let unet_config: UNetConfig = serde_json::from_value(unet_config(4)).unwrap();
        let vae_config: VaeConfig = serde_json::from_value(vae_config(16, 1.0)).unwrap();
        let text_encoder = ClipTextModel::from_weights(&fresh, text_config, &device).unwrap();
        let unet = UNet2DConditionModel::from_weights(&unet_config, &fresh, &device).unwrap();
        let mut vae = AutoencoderKl::from_weights(vae_config, &fresh, &device).unwrap();

        let images = Tensor::<4>::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        let mut optimizer: ModuleOptimizer = AdamConfig::new().init();
        let start: f32 = autoencoder_loss(&vae, images.clone(), 1e-3).into_scalar();
        for _ in 0..5 {
            let grads = GradientsParams::from_grads(
                autoencoder_loss(&vae, images.clone(), 1e-3).backward(),
                &vae,
            );
            vae = optimizer.step(1e-3, vae, grads);
        }
        let end: f32 = autoencoder_loss(&vae, images.clone(), 1e-3).into_scalar();
        assert!(end < start, "VAE loss {start} -> {end}");
        assert_eq!(vae.encode_mean(images).dims(), [2, 4, 4, 4]);

        let scheduler = DdimScheduler::new(
            &serde_json::from_value::<SchedulerConfig>(scheduler_config()).unwrap(),
        )
        .unwrap();
        let ids: Vec<i64> = tokenizer
            .encode("a red circle")
            .unwrap()
            .ids
            .iter()
            .chain(tokenizer.encode("").unwrap().ids.iter())
            .map(|&id| i64::from(id))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 77]), &device);
        let latents = Tensor::<4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let mut denoiser = Denoiser { text_encoder, unet };
        let mut optimizer: ModuleOptimizer = AdamConfig::new().init();
        let loss = |d: &Denoiser| {
            d.loss(
                ids.clone(),
                latents.clone(),
                noise.clone(),
                &[100, 700],
                scheduler.alphas_cumprod(),
            )
        };
        let start: f32 = loss(&denoiser).into_scalar();
        for _ in 0..5 {
            let grads = GradientsParams::from_grads(loss(&denoiser).backward(), &denoiser);
            denoiser = optimizer.step(1e-3, denoiser, grads);
        }
        let end: f32 = loss(&denoiser).into_scalar();
        assert!(end < start, "denoising loss {start} -> {end}");
    }
}
