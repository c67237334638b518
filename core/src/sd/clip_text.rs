//! transformers' `CLIPTextModel`, the text encoder of SD v1.x: token + position embeddings,
//! pre-LayerNorm transformer layers with a causal mask, a final LayerNorm. SD conditions the
//! UNet on the whole `last_hidden_state` `[batch, 77, hidden]` (no pooling, no padding mask).

use std::path::Path;

use burn::{
    nn::{Embedding, LayerNorm, Linear},
    tensor::{
        Device, Int, Tensor,
        activation::{gelu, sigmoid},
    },
};

use crate::{
    fused_attention::{Causal, fused_attention},
    weights::{LoadError, Weights, component_weight_files, read_json},
};

/// The fields of transformers' `CLIPTextConfig` (`text_encoder/config.json`) that the forward
/// pass needs; defaults are transformers'.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// Rejects shapes the model cannot have; `path` names the config in the error.
    fn check(&self, path: &Path) -> Result<(), LoadError> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(LoadError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            });
        }
        Ok(())
    }
}

fn default_vocab_size() -> usize {
    49408
}
fn default_hidden_size() -> usize {
    512
}
fn default_intermediate_size() -> usize {
    2048
}
fn default_num_hidden_layers() -> usize {
    12
}
fn default_num_attention_heads() -> usize {
    8
}
fn default_max_position_embeddings() -> usize {
    77
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}

/// The MLP activation: OpenAI CLIP (SD v1.x) uses `quick_gelu`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)`.
    #[default]
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

impl HiddenAct {
    fn forward(self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Self::Gelu => gelu(x),
        }
    }
}

/// `CLIPAttention`: causal multi-head self-attention with biased q/k/v/out projections.
#[derive(burn::module::Module, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &ClipTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let dim = config.hidden_size;
        let linear =
            |name: &str| weights.linear(&format!("{prefix}.{name}"), dim, dim, true, device);
        Ok(Self {
            q_proj: linear("q_proj")?,
            k_proj: linear("k_proj")?,
            v_proj: linear("v_proj")?,
            out_proj: linear("out_proj")?,
            heads: config.num_attention_heads,
            head_dim: dim / config.num_attention_heads,
        })
    }

    /// `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`; position i attends to 0..=i.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let out = fused_attention(q, k, v, None, Causal::Yes);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([batch, seq, hidden]))
    }
}

/// `CLIPEncoderLayer`: `x + attn(ln1(x))`, then `x + fc2(act(fc1(ln2(x))))`.
#[derive(burn::module::Module, Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    act: HiddenAct,
}

impl ClipEncoderLayer {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &ClipTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let (dim, eps) = (config.hidden_size, config.layer_norm_eps);
        Ok(Self {
            layer_norm1: weights.layer_norm(&format!("{prefix}.layer_norm1"), dim, eps, device)?,
            self_attn: ClipAttention::load(
                weights,
                &format!("{prefix}.self_attn"),
                config,
                device,
            )?,
            layer_norm2: weights.layer_norm(&format!("{prefix}.layer_norm2"), dim, eps, device)?,
            fc1: weights.linear(
                &format!("{prefix}.mlp.fc1"),
                dim,
                config.intermediate_size,
                true,
                device,
            )?,
            fc2: weights.linear(
                &format!("{prefix}.mlp.fc2"),
                config.intermediate_size,
                dim,
                true,
                device,
            )?,
            act: config.hidden_act,
        })
    }

    /// `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = self.fc1.forward(self.layer_norm2.forward(x.clone()));
        x + self.fc2.forward(self.act.forward(h))
    }
}

/// `CLIPTextModel` up to `last_hidden_state`.
#[derive(burn::module::Module, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    /// `[max_position_embeddings, hidden]` (a parameter: it trains with the rest).
    position_embedding: burn::module::Param<Tensor<2>>,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    #[module(skip)]
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Loads `folder/config.json` and the folder's safetensors weights (a diffusers
    /// `text_encoder/`).
    pub fn load(folder: &Path, device: &Device) -> Result<Self, LoadError> {
        let config_path = folder.join("config.json");
        let config: ClipTextConfig = read_json(&config_path)?;
        config.check(&config_path)?;
        let weights = Weights::from_files(&component_weight_files(folder)?)?;
        Self::from_weights(&weights, config, device)
    }

    /// Builds the model from `text_model.*` tensors (or the same keys without the prefix).
    pub fn from_weights(
        weights: &Weights,
        config: ClipTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        config.check(Path::new("CLIPTextConfig"))?;
        // SD v1.x checkpoints prefix every key with `text_model.`; transformers 5 saves
        // CLIPTextModel without it. Both load.
        let prefix = if weights.contains("text_model.embeddings.token_embedding.weight") {
            "text_model."
        } else {
            ""
        };
        let (dim, eps) = (config.hidden_size, config.layer_norm_eps);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                ClipEncoderLayer::load(
                    weights,
                    &format!("{prefix}encoder.layers.{i}"),
                    &config,
                    device,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            token_embedding: weights.embedding(
                &format!("{prefix}embeddings.token_embedding"),
                config.vocab_size,
                dim,
                device,
            )?,
            position_embedding: weights.param(
                &format!("{prefix}embeddings.position_embedding.weight"),
                [config.max_position_embeddings, dim],
                device,
            )?,
            layers,
            final_layer_norm: weights.layer_norm(
                &format!("{prefix}final_layer_norm"),
                dim,
                eps,
                device,
            )?,
            config,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// `input_ids`: `[batch, seq]` with `seq <= max_position_embeddings` (77 in SD) ->
    /// `last_hidden_state` `[batch, seq, hidden]`.
    #[allow(clippy::single_range_in_vec_init)]
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq] = input_ids.dims();
        let positions = self
            .position_embedding
            .val()
            // Burn's slice takes one range per dimension.
            .slice([0..seq])
            .unsqueeze::<3>();
        let mut x = self.token_embedding.forward(input_ids) + positions;
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.final_layer_norm.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::testing::{assert_close, device, sd_golden, sd_tiny_dir};

    /// The golden int64 ids `name` `[1, 77]` as an Int tensor.
    fn golden_ids(name: &str, device: &Device) -> Tensor<2, Int> {
        let bytes = std::fs::read(sd_tiny_dir().join("golden.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name} dtype");
        let ids: Vec<i64> = view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_data(
            TensorData::new(ids, [view.shape()[0], view.shape()[1]]),
            device,
        )
    }

    #[test]
    fn embeddings_match_transformers() {
        let device = device();
        let model = ClipTextModel::load(&sd_tiny_dir().join("text_encoder"), &device).unwrap();
        let golden = sd_golden();
        for (ids, embeddings) in [
            ("cond_input_ids", "cond_embeddings"),
            ("uncond_input_ids", "uncond_embeddings"),
        ] {
            let actual = model.forward(golden_ids(ids, &device));
            let expected = golden
                .tensor::<3>(embeddings, [1, 77, 32], &device)
                .unwrap();
            assert_close(embeddings, actual, expected, 1e-4);
        }
    }

    #[test]
    fn prompt_to_embeddings() {
        let device = device();
        let tokenizer =
            crate::sd::tokenizer::ClipTokenizer::load(&sd_tiny_dir().join("tokenizer")).unwrap();
        let model = ClipTextModel::load(&sd_tiny_dir().join("text_encoder"), &device).unwrap();
        let prompt = crate::testing::sd_golden_metadata("prompt");
        let ids = tokenizer.encode(&prompt).unwrap().to_tensor(&device);
        let expected = sd_golden()
            .tensor::<3>("cond_embeddings", [1, 77, 32], &device)
            .unwrap();
        assert_close("cond_embeddings", model.forward(ids), expected, 1e-4);
    }

    #[test]
    fn quick_gelu_is_x_sigmoid_1702x() {
        let device = device();
        let x =
            Tensor::<3>::from_data(TensorData::new(vec![-2.0f32, 0.0, 1.5], [1, 1, 3]), &device);
        let y: Vec<f32> = HiddenAct::QuickGelu
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, y) in [-2.0f32, 0.0, 1.5].into_iter().zip(y) {
            assert!((y - x / (1.0 + (-1.702 * x).exp())).abs() < 1e-6);
        }
    }
}
