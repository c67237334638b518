//! diffusers `UNet2DConditionModel` as Stable Diffusion v1.x configures it: predicts the noise
//! of a latent at one timestep under text embeddings, and can hand its down- and up-block
//! cross-attention probabilities to an [`AttentionCapture`].
//!
//! Loads from a diffusers `unet/` folder (`config.json` and safetensors with diffusers' key
//! names). Any SD v1.x-shaped config loads; options that change the architecture beyond that
//! are refused with a [`LoadError::Config`] naming the field.

pub mod blocks;
pub mod embeddings;
pub mod transformer;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use burn::{
    nn::{GroupNorm, conv::Conv2d},
    tensor::{Device, Tensor, activation::silu},
};
use serde_json::Value;

use self::{
    blocks::{BlockShape, CrossAttentionShape, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D},
    embeddings::{TimestepEmbedding, Timesteps},
};
use crate::{
    sd::attention::AttentionCapture,
    weights::{LoadError, Weights, component_weight_files, read_json},
};

/// A config value given once for all blocks or once per block (diffusers accepts both).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn resolve(&self, blocks: usize, field: &str) -> Result<Vec<T>, String> {
        match self {
            Self::All(value) => Ok(vec![value.clone(); blocks]),
            Self::Each(values) if values.len() == blocks => Ok(values.clone()),
            Self::Each(values) => Err(format!(
                "`{field}` has {} entries but there are {blocks} down blocks",
                values.len()
            )),
        }
    }
}

/// diffusers `unet/config.json`, with diffusers' field names and defaults.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct UNetConfig {
    #[serde(default)]
    pub sample_size: Option<PerBlock<usize>>,
    #[serde(default = "default_latent_channels")]
    pub in_channels: usize,
    #[serde(default = "default_latent_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f32,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    /// SD v1's misnomer: with `num_attention_heads` null this is the number of heads.
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Must be false: SD v1.x attends to itself before the text.
    #[serde(default = "default_false_per_block")]
    pub only_cross_attention: PerBlock<bool>,
    /// Ignored: everything runs in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "default_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_kernel")]
    pub conv_out_kernel: usize,
    /// The remaining keys; those that would change the architecture must keep the value SD
    /// v1.x uses (see [`UNSUPPORTED_OPTIONS`]).
    #[serde(flatten)]
    pub other: HashMap<String, Value>,
}

fn default_latent_channels() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_down_block_types() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up_block_types() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::All(2)
}
fn default_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::All(1280)
}
fn default_attention_head_dim() -> PerBlock<usize> {
    PerBlock::All(8)
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_one() -> f64 {
    1.0
}
fn default_one_usize() -> usize {
    1
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_one_per_block() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_false_per_block() -> PerBlock<bool> {
    PerBlock::All(false)
}
fn default_kernel() -> usize {
    3
}

/// Config keys this implementation does not model, with the values it accepts (diffusers'
/// defaults, which SD v1.x uses). Absent keys take the default.
pub const UNSUPPORTED_OPTIONS: &[(&str, &[&str])] = &[
    ("mid_block_type", &["\"UNetMidBlock2DCrossAttn\""]),
    ("dual_cross_attention", &["false"]),
    ("class_embed_type", &["null"]),
    ("num_class_embeds", &["null"]),
    ("class_embeddings_concat", &["false"]),
    ("addition_embed_type", &["null"]),
    ("addition_time_embed_dim", &["null"]),
    ("projection_class_embeddings_input_dim", &["null"]),
    ("encoder_hid_dim", &["null"]),
    ("encoder_hid_dim_type", &["null"]),
    ("resnet_time_scale_shift", &["\"default\""]),
    ("resnet_skip_time_act", &["false"]),
    ("resnet_out_scale_factor", &["1.0"]),
    ("time_embedding_type", &["\"positional\""]),
    ("time_embedding_act_fn", &["null"]),
    ("timestep_post_act", &["null"]),
    ("time_cond_proj_dim", &["null"]),
    ("attention_type", &["\"default\""]),
    ("cross_attention_norm", &["null"]),
    ("reverse_transformer_layers_per_block", &["null"]),
    ("mid_block_only_cross_attention", &["null", "false"]),
];

/// Whether a config value equals one written in JSON (numbers compared as numbers, so `1`
/// equals `1.0`).
fn json_equals(value: &Value, allowed: &str) -> bool {
    let allowed: Value = serde_json::from_str(allowed).expect("allowed values are valid JSON");
    match (value.as_f64(), allowed.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => *value == allowed,
    }
}

/// The two kinds each down / up stage can be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BlockKind {
    CrossAttn,
    Plain,
}

/// The config resolved per block, after every check.
#[derive(Debug)]
struct Plan {
    down: Vec<BlockKind>,
    up: Vec<BlockKind>,
    layers: Vec<usize>,
    heads: Vec<usize>,
    cross_attention_dim: Vec<usize>,
    transformer_layers: Vec<usize>,
    groups: usize,
}

impl UNetConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let config: Self = read_json(path)?;
        config.plan().map_err(|reason| LoadError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Checks the config and resolves the per-block values; the error names the field.
    fn plan(&self) -> Result<Plan, String> {
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return Err("`block_out_channels` is empty".to_string());
        }
        let kinds = |field: &str, types: &[String], cross: &str, plain: &str| {
            if types.len() != blocks {
                return Err(format!(
                    "`{field}` has {} entries but `block_out_channels` has {blocks}",
                    types.len()
                ));
            }
            types
                .iter()
                .map(|name| match name.as_str() {
                    n if n == cross => Ok(BlockKind::CrossAttn),
                    n if n == plain => Ok(BlockKind::Plain),
                    other => Err(format!(
                        "`{field}`: unsupported block type `{other}` (supported: {cross}, {plain})"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let down = kinds(
            "down_block_types",
            &self.down_block_types,
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        )?;
        let up = kinds(
            "up_block_types",
            &self.up_block_types,
            "CrossAttnUpBlock2D",
            "UpBlock2D",
        )?;

        for (field, allowed) in UNSUPPORTED_OPTIONS {
            if let Some(value) = self.other.get(*field)
                && !allowed.iter().any(|a| json_equals(value, a))
            {
                return Err(format!(
                    "`{field}` = {value} is not supported (accepted: {})",
                    allowed.join(", ")
                ));
            }
        }
        if self
            .only_cross_attention
            .resolve(blocks, "only_cross_attention")?
            .contains(&true)
        {
            return Err("`only_cross_attention` = true is not supported".to_string());
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!(
                "`act_fn` = \"{}\" is not supported (accepted: silu)",
                self.act_fn
            ));
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| "`norm_num_groups` = null is not supported".to_string())?;
        if groups == 0 {
            return Err("`norm_num_groups` = 0: a group norm needs at least one group".into());
        }
        for (field, kernel) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if kernel % 2 == 0 {
                return Err(format!(
                    "`{field}` = {kernel} is not supported (odd kernels only)"
                ));
            }
        }

        let heads = match &self.num_attention_heads {
            Some(heads) => heads.resolve(blocks, "num_attention_heads")?,
            None => self
                .attention_head_dim
                .resolve(blocks, "attention_head_dim")?,
        };
        for (&channels, &h) in self.block_out_channels.iter().zip(&heads) {
            if h == 0 || channels % h != 0 {
                return Err(format!(
                    "{channels} channels cannot be split into {h} attention heads \
                     (`attention_head_dim` / `num_attention_heads`)"
                ));
            }
            if channels % groups != 0 {
                return Err(format!(
                    "{channels} channels cannot be split into {groups} groups (`norm_num_groups`)"
                ));
            }
        }
        Ok(Plan {
            down,
            up,
            layers: self.layers_per_block.resolve(blocks, "layers_per_block")?,
            heads,
            cross_attention_dim: self
                .cross_attention_dim
                .resolve(blocks, "cross_attention_dim")?,
            transformer_layers: self
                .transformer_layers_per_block
                .resolve(blocks, "transformer_layers_per_block")?,
            groups,
        })
    }
}

/// The SD v1.x noise predictor.
#[derive(burn::module::Module, Debug)]
pub struct UNet2DConditionModel {
    center_input_sample: bool,
    #[module(skip)]
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock2D>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Loads a diffusers `unet/` folder.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, LoadError> {
        let config_path = folder.join("config.json");
        let config = UNetConfig::from_file(&config_path)?;
        let weights = Weights::from_files(&component_weight_files(folder)?)?;
        Self::from_weights(&config, &weights, device).map_err(|error| match error {
            LoadError::Config { reason, .. } => LoadError::Config {
                path: config_path,
                reason,
            },
            other => other,
        })
    }

    /// Builds the model from a config and weights already in memory.
    pub fn from_weights(
        config: &UNetConfig,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let config_error = |reason: String| LoadError::Config {
            path: PathBuf::from("unet/config.json"),
            reason,
        };
        let plan = config.plan().map_err(config_error)?;
        let channels = &config.block_out_channels;
        let blocks = channels.len();
        let first = channels[0];
        let last = channels[blocks - 1];
        let time_embed_dim = config.time_embedding_dim.unwrap_or(4 * first);
        let shape = |in_channels, out_channels, cross: bool, i: usize, up: bool| {
            // Up blocks take the per-block lists reversed, as diffusers does.
            let j = if up { blocks - 1 - i } else { i };
            BlockShape {
                in_channels,
                out_channels,
                temb_channels: time_embed_dim,
                groups: plan.groups,
                eps: config.norm_eps,
                cross_attention: cross.then_some(CrossAttentionShape {
                    heads: plan.heads[j],
                    context_dim: plan.cross_attention_dim[j],
                    transformer_layers: plan.transformer_layers[j],
                    use_linear_projection: config.use_linear_projection,
                }),
            }
        };

        // Widths of the skip connections, in the order the down path pushes them.
        let mut skips = vec![first];
        let mut down_blocks = Vec::with_capacity(blocks);
        let mut width = first;
        for (i, kind) in plan.down.iter().enumerate() {
            let out = channels[i];
            let is_final = i == blocks - 1;
            let shape = shape(width, out, *kind == BlockKind::CrossAttn, i, false);
            let downsample = (!is_final).then_some(config.downsample_padding);
            down_blocks.push(DownBlock2D::load(
                weights,
                &format!("down_blocks.{i}"),
                shape,
                plan.layers[i],
                downsample,
                device,
            )?);
            skips.extend(std::iter::repeat_n(
                out,
                plan.layers[i] + usize::from(!is_final),
            ));
            width = out;
        }

        let mid_block = UNetMidBlock2DCrossAttn::load(
            weights,
            "mid_block",
            shape(last, last, true, blocks - 1, false),
            config.mid_block_scale_factor,
            device,
        )?;

        let mut up_blocks = Vec::with_capacity(blocks);
        for (i, kind) in plan.up.iter().enumerate() {
            let out = channels[blocks - 1 - i];
            let resnets = plan.layers[blocks - 1 - i] + 1;
            if skips.len() < resnets {
                return Err(config_error(
                    "`layers_per_block`: the up blocks need more skip connections than the down blocks make"
                        .to_string(),
                ));
            }
            let skip_channels: Vec<usize> = skips
                .split_off(skips.len() - resnets)
                .into_iter()
                .rev()
                .collect();
            let shape = shape(width, out, *kind == BlockKind::CrossAttn, i, true);
            up_blocks.push(UpBlock2D::load(
                weights,
                &format!("up_blocks.{i}"),
                shape,
                &skip_channels,
                i != blocks - 1,
                device,
            )?);
            width = out;
        }
        if !skips.is_empty() {
            return Err(config_error(
                "`layers_per_block`: the up blocks leave skip connections unused".to_string(),
            ));
        }

        let conv_padding = |kernel: usize| (kernel - 1) / 2;
        Ok(Self {
            center_input_sample: config.center_input_sample,
            time_proj: Timesteps::new(first, config.flip_sin_to_cos, config.freq_shift),
            time_embedding: TimestepEmbedding::load(
                weights,
                "time_embedding",
                first,
                time_embed_dim,
                device,
            )?,
            conv_in: weights.conv2d(
                "conv_in",
                config.in_channels,
                first,
                config.conv_in_kernel,
                1,
                conv_padding(config.conv_in_kernel),
                device,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: weights.group_norm(
                "conv_norm_out",
                plan.groups,
                first,
                config.norm_eps,
                device,
            )?,
            conv_out: weights.conv2d(
                "conv_out",
                first,
                config.out_channels,
                config.conv_out_kernel,
                1,
                conv_padding(config.conv_out_kernel),
                device,
            )?,
        })
    }

    /// Predicts the noise. `sample`: `[batch, in_channels, h, w]`; one `timestep` for the whole
    /// batch; `context` (text embeddings): `[batch, keys, cross_attention_dim]`. Returns
    /// `[batch, out_channels, h, w]`.
    ///
    /// `capture` is offered to the cross-attention (`attn2`) of the down and up blocks, never
    /// the mid block or self-attention; it keeps the layers whose resolution it wants.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        context: Tensor<3>,
        capture: Option<&mut AttentionCapture>,
    ) -> Tensor<4> {
        let [batch, ..] = sample.dims();
        // The same embedding for every batch element: computed once, then broadcast.
        let temb = self
            .time_embedding
            .forward(self.time_proj.forward(timestep, &sample.device()));
        let [_, temb_dim] = temb.dims();
        self.forward_with_embedding(sample, temb.expand([batch, temb_dim]), context, capture)
    }

    /// [`forward`](Self::forward) with one timestep per batch element (`timesteps.len()` is
    /// the batch), as training draws them.
    pub fn forward_timesteps(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
    ) -> Tensor<4> {
        let temb = self
            .time_embedding
            .forward(self.time_proj.forward_each(timesteps, &sample.device()));
        self.forward_with_embedding(sample, temb, context, None)
    }

    /// The UNet from the timestep embedding `temb` `[batch, temb_dim]` on.
    fn forward_with_embedding(
        &self,
        sample: Tensor<4>,
        temb: Tensor<2>,
        context: Tensor<3>,
        mut capture: Option<&mut AttentionCapture>,
    ) -> Tensor<4> {
        let sample = if self.center_input_sample {
            sample.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            sample
        };

        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(
                x,
                temb.clone(),
                context.clone(),
                capture.as_deref_mut(),
                &mut skips,
            );
        }
        x = self.mid_block.forward(x, temb.clone(), context.clone());
        for block in &self.up_blocks {
            x = block.forward(
                x,
                temb.clone(),
                context.clone(),
                capture.as_deref_mut(),
                &mut skips,
            );
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{
        assert_close, device, relative_error, sd_golden, sd_golden_metadata, sd_tiny_dir,
    };

    fn tiny_unet() -> UNet2DConditionModel {
        UNet2DConditionModel::load(&sd_tiny_dir().join("unet"), &device()).expect("tiny UNet loads")
    }

    /// `latent` and `cond_embeddings` from the golden file.
    fn golden_inputs() -> (Tensor<4>, Tensor<3>) {
        let golden = sd_golden();
        let device = device();
        let latent_shape: [usize; 4] = golden.shape("latent").unwrap().try_into().unwrap();
        let cond_shape: [usize; 3] = golden.shape("cond_embeddings").unwrap().try_into().unwrap();
        (
            golden.tensor("latent", latent_shape, &device).unwrap(),
            golden
                .tensor("cond_embeddings", cond_shape, &device)
                .unwrap(),
        )
    }

    #[test]
    fn unet_matches_diffusers() {
        let unet = tiny_unet();
        let (latent, cond) = golden_inputs();
        let timestep: f32 = sd_golden_metadata("unet_timestep").parse().unwrap();
        let eps = unet.forward(latent.clone(), timestep, cond, None);
        let expected = sd_golden()
            .tensor("unet_eps", latent.dims(), &device())
            .unwrap();
        eprintln!(
            "unet_eps relative error: {:e}",
            relative_error(eps.clone(), expected.clone())
        );
        assert_close("unet_eps", eps, expected, 1e-4);
    }

    #[test]
    fn capture_records_down_and_up_cross_attention() {
        let unet = tiny_unet();
        let (latent, cond) = golden_inputs();
        let [batch, keys, _] = cond.dims();
        let mut capture = AttentionCapture::at_resolution(16);
        let plain = unet.forward(latent.clone(), 500.0, cond.clone(), None);
        let captured = unet.forward(latent, 500.0, cond, Some(&mut capture));
        let expected_layers: usize = sd_golden_metadata("layers_per_step").parse().unwrap();
        assert_eq!(capture.count(), expected_layers);
        // Recording must not change the prediction (explicit vs fused attention).
        assert_close("eps with capture", captured, plain, 1e-5);

        let mean = capture.mean().expect("layers were recorded");
        assert_eq!(mean.dims(), [batch, 16 * 16, keys]);
        let sums = mean.sum_dim(2);
        let ones = Tensor::ones(sums.dims(), &device());
        assert_close("probabilities summed over keys", sums, ones, 1e-5);
    }

    fn tiny_config() -> Value {
        let text = std::fs::read_to_string(sd_tiny_dir().join("unet/config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn load_error(config: Value) -> String {
        let config: UNetConfig = serde_json::from_value(config).unwrap();
        let weights =
            Weights::from_files(&component_weight_files(&sd_tiny_dir().join("unet")).unwrap())
                .unwrap();
        match UNet2DConditionModel::from_weights(&config, &weights, &device()) {
            Err(error @ LoadError::Config { .. }) => error.to_string(),
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("expected a config error, the model loaded"),
        }
    }

    #[test]
    fn unknown_down_block_type_is_a_config_error() {
        let mut config = tiny_config();
        config["down_block_types"][1] = json!("SimpleCrossAttnDownBlock2D");
        let message = load_error(config);
        assert!(message.contains("down_block_types"), "{message}");
        assert!(message.contains("SimpleCrossAttnDownBlock2D"), "{message}");
    }

    #[test]
    fn unsupported_options_are_config_errors() {
        let mut config = tiny_config();
        config["resnet_time_scale_shift"] = json!("scale_shift");
        assert!(load_error(config).contains("resnet_time_scale_shift"));

        let mut config = tiny_config();
        config["only_cross_attention"] = json!(true);
        assert!(load_error(config).contains("only_cross_attention"));

        let mut config = tiny_config();
        config["layers_per_block"] = json!([1, 1]);
        assert!(load_error(config).contains("layers_per_block"));

        // A division by zero (a panic) before: now a config error.
        let mut config = tiny_config();
        config["norm_num_groups"] = json!(0);
        assert!(load_error(config).contains("`norm_num_groups` = 0"));
    }

    #[test]
    fn sd_v1_config_resolves() {
        // SD v1.4's config: `attention_head_dim` 8 is the number of heads in every block.
        let config: UNetConfig = serde_json::from_value(json!({
            "_class_name": "UNet2DConditionModel",
            "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280],
            "cross_attention_dim": 768,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": 64,
            "mid_block_scale_factor": 1,
        }))
        .unwrap();
        let plan = config.plan().unwrap();
        assert_eq!(plan.heads, vec![8; 4]);
        assert_eq!(plan.layers, vec![2; 4]);
        assert_eq!(plan.cross_attention_dim, vec![768; 4]);
        assert_eq!(plan.down.last(), Some(&BlockKind::Plain));
        assert_eq!(plan.up.first(), Some(&BlockKind::Plain));
    }

    /// One timestep per batch element: equal timesteps give [`forward`]'s output, different
    /// ones give each element its own.
    #[test]
    fn per_sample_timesteps_match_the_shared_one() {
        use burn::tensor::Distribution;
        let device = device();
        let unet = tiny_unet();
        let config = UNetConfig::from_file(&sd_tiny_dir().join("unet/config.json")).unwrap();
        let width = match &config.cross_attention_dim {
            PerBlock::All(dim) => *dim,
            PerBlock::Each(dims) => dims[0],
        };
        let sample = Tensor::<4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let context = Tensor::<3>::random([2, 5, width], Distribution::Normal(0.0, 1.0), &device);
        let shared = unet.forward(sample.clone(), 250.0, context.clone(), None);
        let each = unet.forward_timesteps(sample.clone(), &[250.0, 250.0], context.clone());
        assert!(relative_error(each, shared.clone()) < 1e-6);
        let mixed = unet.forward_timesteps(sample.clone(), &[250.0, 900.0], context.clone());
        let first = |t: Tensor<4>| t.narrow(0, 0, 1);
        assert!(relative_error(first(mixed.clone()), first(shared.clone())) < 1e-6);
        let late = unet.forward(sample, 900.0, context, None);
        assert!(relative_error(mixed.narrow(0, 1, 1), late.narrow(0, 1, 1)) < 1e-6);
    }

    /// The UNet is a Burn module: on an autodiff device every parameter gets a gradient from
    /// the noise-prediction loss, and a few Adam steps on a fixed batch lower that loss (the
    /// first thing training a teacher here needs).
    #[test]
    fn the_unet_trains_on_the_noise_prediction_loss() {
        use burn::{
            module::{Module, ModuleVisitor, Param},
            optim::{AdamConfig, GradientsParams, ModuleOptimizer},
            tensor::Distribution,
        };
        let device = Device::flex().autodiff();
        device.seed(3);
        let unet =
            UNet2DConditionModel::load(&sd_tiny_dir().join("unet"), &device).expect("tiny UNet");
        let config = UNetConfig::from_file(&sd_tiny_dir().join("unet/config.json")).unwrap();
        let context_dim = match &config.cross_attention_dim {
            PerBlock::All(dim) => *dim,
            PerBlock::Each(dims) => dims[0],
        };
        let normal = Distribution::Normal(0.0, 1.0);
        let noisy = Tensor::<4>::random([2, 4, 8, 8], normal, &device);
        let noise = Tensor::<4>::random([2, 4, 8, 8], normal, &device);
        let context = Tensor::<3>::random([2, 5, context_dim], normal, &device);
        let loss = |unet: &UNet2DConditionModel| {
            (unet.forward(noisy.clone(), 400.0, context.clone(), None) - noise.clone())
                .powi_scalar(2)
                .mean()
        };

        struct Counter<'a> {
            grads: &'a burn::tensor::Gradients,
            with: usize,
            without: usize,
        }
        impl ModuleVisitor for Counter<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                match param.grad(self.grads) {
                    Some(grad) if grad.clone().abs().sum().into_scalar::<f32>() > 0.0 => {
                        self.with += 1
                    }
                    _ => self.without += 1,
                }
            }
        }
        let first = loss(&unet);
        let grads = first.backward();
        let mut counter = Counter {
            grads: &grads,
            with: 0,
            without: 0,
        };
        unet.visit(&mut counter);
        assert!(
            counter.with > 50,
            "{} parameters with gradients",
            counter.with
        );
        assert_eq!(counter.without, 0, "parameters without a gradient");

        let mut optimizer: ModuleOptimizer = AdamConfig::new().init();
        let mut unet = unet;
        let start: f32 = loss(&unet).into_scalar();
        for _ in 0..5 {
            let grads = GradientsParams::from_grads(loss(&unet).backward(), &unet);
            unet = optimizer.step(1e-3, unet, grads);
        }
        let end: f32 = loss(&unet).into_scalar();
        assert!(end < 0.9 * start, "loss {start} -> {end}");
    }
}
