//! The SD v1.x VAE, diffusers `AutoencoderKL`: an encoder from images in [-1, 1] to the mean
//! of the latent posterior, and a decoder back. Latents here are *unscaled*: the pipeline
//! multiplies by [`AutoencoderKl::scaling_factor`] after encoding and divides before decoding.

mod attention;
mod blocks;
mod coder;

use std::path::{Path, PathBuf};

use burn::{
    nn::conv::Conv2d,
    tensor::{Device, Tensor},
};

use self::{blocks::Direction, coder::Coder};
use crate::weights::{LoadError, Weights, component_weight_files, read_json};

/// diffusers' `vae/config.json`, with `AutoencoderKL`'s defaults for absent fields.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_image_channels")]
    pub in_channels: usize,
    #[serde(default = "default_image_channels")]
    pub out_channels: usize,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// Multiplies the posterior mean into the UNet's latent space (0.18215 for SD v1.x).
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// SD3/Flux-style latent shift; SD v1.x has none, and it is refused when set.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
}

fn default_image_channels() -> usize {
    3
}
fn default_down_block_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".to_string()]
}
fn default_up_block_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".to_string()]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers_per_block() -> usize {
    1
}
fn default_latent_channels() -> usize {
    4
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_sample_size() -> usize {
    32
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_true() -> bool {
    true
}
fn default_act_fn() -> String {
    "silu".to_string()
}

impl VaeConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let config: Self = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// How many image pixels one latent pixel covers along each side (8 for SD v1.x).
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Refuses what this implementation does not build, naming `path` in the error.
    pub fn validate(&self, path: &Path) -> Result<(), LoadError> {
        let fail = |reason: String| {
            Err(LoadError::Config {
                path: path.to_path_buf(),
                reason,
            })
        };
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return fail("`block_out_channels` is empty".to_string());
        }
        if self.down_block_types.len() != blocks || self.up_block_types.len() != blocks {
            return fail(format!(
                "{} down and {} up block types for {blocks} `block_out_channels`",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(other) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return fail(format!(
                "unsupported down block type `{other}` (only DownEncoderBlock2D)"
            ));
        }
        if let Some(other) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return fail(format!(
                "unsupported up block type `{other}` (only UpDecoderBlock2D)"
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return fail(format!(
                "unsupported `act_fn` `{}` (only silu)",
                self.act_fn
            ));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return fail("`layers_per_block` and `latent_channels` must be positive".to_string());
        }
        let groups = self.norm_num_groups;
        if let Some(channels) = self
            .block_out_channels
            .iter()
            .find(|&&c| groups == 0 || c % groups != 0)
        {
            return fail(format!(
                "{channels} channels cannot be split into {groups} groups"
            ));
        }
        if let Some(shift) = self.shift_factor {
            return fail(format!(
                "`shift_factor` {shift} is not supported (SD v1.x VAEs have none)"
            ));
        }
        Ok(())
    }
}

/// diffusers `AutoencoderKL` (keys `encoder.*`, `quant_conv`, `post_quant_conv`, `decoder.*`).
#[derive(burn::module::Module, Debug)]
pub struct AutoencoderKl {
    /// diffusers `Encoder`.
    encoder: Coder,
    /// 1x1 conv over the posterior moments, `2 * latent` -> `2 * latent`.
    quant_conv: Option<Conv2d>,
    /// 1x1 conv over the latent before decoding.
    post_quant_conv: Option<Conv2d>,
    /// diffusers `Decoder`.
    decoder: Coder,
    #[module(skip)]
    config: VaeConfig,
}

impl AutoencoderKl {
    /// Loads a diffusers `vae/` folder: `config.json` and its safetensors weights.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, LoadError> {
        let config = VaeConfig::load(&folder.join("config.json"))?;
        let weights = Weights::from_files(&component_weight_files(folder)?)?;
        Self::from_weights(config, &weights, device)
    }

    /// Builds the model from `config` and weights already read (e.g. from memory).
    pub fn from_weights(
        config: VaeConfig,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, LoadError> {
        config.validate(&PathBuf::from("vae/config.json"))?;
        let latent = config.latent_channels;
        Ok(Self {
            encoder: Coder::load(weights, "encoder", &config, Direction::Down, device)?,
            quant_conv: config
                .use_quant_conv
                .then(|| weights.conv2d("quant_conv", 2 * latent, 2 * latent, 1, 1, 0, device))
                .transpose()?,
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| weights.conv2d("post_quant_conv", latent, latent, 1, 1, 0, device))
                .transpose()?,
            decoder: Coder::load(weights, "decoder", &config, Direction::Up, device)?,
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The factor between the posterior mean and the UNet's latents (0.18215 for SD v1.x).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Image `[b, 3, H, W]` in [-1, 1] -> posterior mean `[b, latent, H/f, W/f]`, not yet
    /// multiplied by the scaling factor (`f` = [`VaeConfig::downscale_factor`]).
    pub fn encode_mean(&self, image: Tensor<4>) -> Tensor<4> {
        let moments = self.encoder.forward(image);
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(moments),
            None => moments,
        };
        // Moments are [mean, logvar] along the channels; the mean is the first half.
        moments.narrow(1, 0, self.config.latent_channels)
    }

    /// Unscaled latent `[b, latent, h, w]` (already divided by the scaling factor) -> image
    /// `[b, 3, h*f, w*f]`, nominally in [-1, 1] (not clamped).
    pub fn decode(&self, latent: Tensor<4>) -> Tensor<4> {
        let latent = match &self.post_quant_conv {
            Some(conv) => conv.forward(latent),
            None => latent,
        };
        self.decoder.forward(latent)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::SafeTensors;

    use super::*;
    use crate::testing::{assert_close, device, relative_error, sd_golden, sd_tiny_dir};

    fn tiny_vae() -> AutoencoderKl {
        AutoencoderKl::load(&sd_tiny_dir().join("vae"), &device()).expect("tiny VAE loads")
    }

    fn tiny_config() -> VaeConfig {
        VaeConfig::load(&sd_tiny_dir().join("vae/config.json")).unwrap()
    }

    /// The tiny VAE's weights with every tensor renamed by `rename` (`None` drops it).
    fn rewritten_weights(rename: impl Fn(&str) -> Option<String>) -> Weights {
        let files = component_weight_files(&sd_tiny_dir().join("vae")).unwrap();
        let bytes = std::fs::read(&files[0]).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        let kept: HashMap<String, _> = tensors
            .tensors()
            .into_iter()
            .filter_map(|(name, view)| rename(&name).map(|new| (new, view)))
            .collect();
        let out = safetensors::serialize(kept, None).unwrap();
        Weights::from_bytes("rewritten-vae.safetensors", out).unwrap()
    }

    #[test]
    fn encode_matches_diffusers() {
        let golden = sd_golden();
        let device = device();
        let vae = tiny_vae();
        let image = golden.tensor("image", [1, 3, 32, 32], &device).unwrap();
        let expected = golden.tensor("latent", [1, 4, 16, 16], &device).unwrap();
        let latent = vae.encode_mean(image).mul_scalar(vae.scaling_factor());
        eprintln!(
            "latent relative error {:e}",
            relative_error(latent.clone(), expected.clone())
        );
        assert_close("latent", latent, expected, 1e-4);
    }

    #[test]
    fn decode_matches_diffusers() {
        let golden = sd_golden();
        let device = device();
        let vae = tiny_vae();
        let latent: Tensor<4> = golden.tensor("latent", [1, 4, 16, 16], &device).unwrap();
        let expected = golden.tensor("decoded", [1, 3, 32, 32], &device).unwrap();
        let decoded = vae.decode(latent.div_scalar(vae.scaling_factor()));
        eprintln!(
            "decoded relative error {:e}",
            relative_error(decoded.clone(), expected.clone())
        );
        assert_close("decoded", decoded, expected, 1e-4);
    }

    #[test]
    fn legacy_attention_names_load() {
        // Checkpoints saved before diffusers' `Attention` rewrite name the projections
        // query/key/value/proj_attn.
        let legacy = rewritten_weights(|name| {
            Some(
                name.replace(".to_q.", ".query.")
                    .replace(".to_k.", ".key.")
                    .replace(".to_v.", ".value.")
                    .replace(".to_out.0.", ".proj_attn."),
            )
        });
        assert!(legacy.contains("encoder.mid_block.attentions.0.proj_attn.weight"));
        let device = device();
        let vae = AutoencoderKl::from_weights(tiny_config(), &legacy, &device).unwrap();
        let golden = sd_golden();
        let image = golden.tensor("image", [1, 3, 32, 32], &device).unwrap();
        let expected = golden.tensor("latent", [1, 4, 16, 16], &device).unwrap();
        let latent = vae.encode_mean(image).mul_scalar(vae.scaling_factor());
        assert_close("latent (legacy names)", latent, expected, 1e-4);
    }

    #[test]
    fn missing_tensor_is_named() {
        for missing in [
            "decoder.mid_block.attentions.0.to_v.bias",
            "encoder.down_blocks.0.downsamplers.0.conv.weight",
            "post_quant_conv.bias",
        ] {
            let weights = rewritten_weights(|name| (name != missing).then(|| name.to_string()));
            match AutoencoderKl::from_weights(tiny_config(), &weights, &device()) {
                Err(LoadError::Missing { name, .. }) => assert_eq!(name, missing),
                other => panic!("expected `{missing}` to be reported missing, got {other:?}"),
            }
        }
    }

    #[test]
    fn sd_v1_config_loads() {
        // runwayml/stable-diffusion-v1-5 vae/config.json: no `scaling_factor` (default applies).
        let json = r#"{
            "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
        }"#;
        let config: VaeConfig = serde_json::from_str(json).unwrap();
        config.validate(Path::new("config.json")).unwrap();
        assert_eq!(config.downscale_factor(), 8);
        assert_eq!(config.scaling_factor, 0.18215);
        assert!(config.mid_block_add_attention && config.use_quant_conv);

        let tiny = tiny_config();
        assert_eq!(tiny.downscale_factor(), 2);
        assert_eq!(tiny.block_out_channels, [16, 32]);
    }

    #[test]
    fn unsupported_config_is_refused() {
        let mut config = tiny_config();
        config.up_block_types[0] = "AttnUpDecoderBlock2D".to_string();
        let err = config.validate(Path::new("config.json")).unwrap_err();
        assert!(err.to_string().contains("AttnUpDecoderBlock2D"), "{err}");
    }

    #[test]
    fn round_trip_shapes() {
        // A 2-image batch of another size: shapes follow the downscale factor.
        let device = device();
        let vae = tiny_vae();
        let image = Tensor::<4>::zeros([2, 3, 24, 40], &device);
        let latent = vae.encode_mean(image);
        assert_eq!(latent.dims(), [2, 4, 12, 20]);
        assert_eq!(vae.decode(latent).dims(), [2, 3, 24, 40]);
    }
}
