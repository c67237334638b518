//! transformers' `MllamaCrossAttentionDecoderLayer`: text queries attend to the projected
//! image states (per-head RMSNorm on queries and keys), and both the attention and the
//! feed-forward are added through tanh gates.

use burn::{
    module::{Module, Param},
    nn::{Linear, RmsNorm},
    tensor::{Bool, DType, Device, Tensor, activation::softmax},
};

use super::{
    HeadShape,
    cache::{CrossKv, LayerKv},
    mlp::{Mlp, layer_rms_norm, rms_norm},
    repeat_kv,
};
use crate::{
    fused_attention::{Causal, fused_attention},
    vlm::mllama::config::MllamaTextConfig,
    weights::{LoadError, Weights},
};

/// The cross-attention mask in the form the layers use (transformers'
/// `_prepare_cross_attention_mask`).
#[derive(Debug, Clone)]
pub struct CrossAttentionMask {
    /// `[batch, 1, seq, keys]`, true where a text token may not see a vision token. Rows of
    /// tokens that see no image at all are left unmasked, as transformers' additive mask is
    /// multiplied by the row mask there: those tokens attend to every vision token.
    pub blocked: Tensor<4, Bool>,
    /// `full_text_row_masked_out_mask` `[batch, seq, 1]`: 1 where the token sees at least one
    /// tile; the cross-attention layers' feed-forward output is zeroed elsewhere.
    pub rows: Tensor<3>,
}

impl CrossAttentionMask {
    /// `mask` `[batch, seq, images, tiles]` of 0/1 (1: the token attends to the tile),
    /// repeated over each tile's `tokens_per_tile` vision tokens.
    pub fn new(mask: Tensor<4>, tokens_per_tile: usize) -> Self {
        let [batch, seq, images, tiles] = mask.dims();
        let keys = images * tiles * tokens_per_tile;
        // repeat_interleave over the tile axis: the keys run image, tile, token.
        let mask = mask
            .unsqueeze_dim::<5>(4)
            .expand([batch, seq, images, tiles, tokens_per_tile])
            .reshape([batch, seq, keys]);
        let rows = mask.clone().max_dim(2).greater_elem(0.0).float();
        let blocked = (mask.neg() + 1.0) * rows.clone();
        Self {
            blocked: blocked.greater_elem(0.5).unsqueeze_dim(1),
            rows,
        }
    }
}

/// `cross_attn.{q,k,v,o}_proj` (no bias) and `cross_attn.{q,k}_norm` (RMSNorm over each head).
#[derive(Module, Debug)]
pub struct CrossAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    #[module(skip)]
    heads: HeadShape,
}

impl CrossAttention {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        heads: HeadShape,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let q = heads.heads * heads.head_dim;
        let kv = heads.kv_heads * heads.head_dim;
        Ok(Self {
            q_proj: weights.linear(&format!("{prefix}.q_proj"), hidden, q, false, device)?,
            k_proj: weights.linear(&format!("{prefix}.k_proj"), hidden, kv, false, device)?,
            v_proj: weights.linear(&format!("{prefix}.v_proj"), hidden, kv, false, device)?,
            o_proj: weights.linear(&format!("{prefix}.o_proj"), q, hidden, false, device)?,
            q_norm: rms_norm(
                weights,
                &format!("{prefix}.q_norm.weight"),
                heads.head_dim,
                eps,
                device,
            )?,
            k_norm: rms_norm(
                weights,
                &format!("{prefix}.k_norm.weight"),
                heads.head_dim,
                eps,
                device,
            )?,
            heads,
        })
    }

    /// Keys and values of the image states `[num_tiles_total, tokens_per_tile, hidden]`
    /// (every tile of every image of every sample, in order), read as `batch` rows of
    /// `num_tiles_total / batch` tiles each as transformers' `view(bsz, -1, ...)` does.
    pub fn key_values(&self, states: Tensor<3>, batch: usize) -> CrossKv {
        let [tiles, tokens_per_tile, hidden] = states.dims();
        assert!(
            tiles % batch == 0,
            "{tiles} image tiles cannot be split over a batch of {batch}"
        );
        let keys = tiles / batch * tokens_per_tile;
        let states = states.reshape([batch, keys, hidden]);
        let HeadShape {
            kv_heads, head_dim, ..
        } = self.heads;
        let split = |t: Tensor<3>| t.reshape([batch, keys, kv_heads, head_dim]).swap_dims(1, 2);
        CrossKv {
            kv: LayerKv {
                key: self
                    .k_norm
                    .forward(split(self.k_proj.forward(states.clone()))),
                value: split(self.v_proj.forward(states)),
            },
            tokens_per_tile,
        }
    }

    /// `x` `[batch, seq, hidden]` attending to `kv`; with `capture`, also the softmax
    /// probabilities `[batch, heads, seq, keys]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        kv: &LayerKv,
        mask: Option<&CrossAttentionMask>,
        capture: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let [batch, seq, _] = x.dims();
        let HeadShape {
            heads, head_dim, ..
        } = self.heads;
        let q = self
            .q_proj
            .forward(x)
            .reshape([batch, seq, heads, head_dim])
            .swap_dims(1, 2);
        let q = self.q_norm.forward(q);
        let k = repeat_kv(kv.key.clone(), heads);
        let v = repeat_kv(kv.value.clone(), heads);
        let keys = k.dims()[2];
        let blocked = mask.map(|mask| {
            let blocked_keys = mask.blocked.dims()[3];
            assert_eq!(
                blocked_keys, keys,
                "cross-attention mask covers {blocked_keys} vision tokens, the states have {keys}"
            );
            mask.blocked.clone().expand([batch, heads, seq, keys])
        });

        let (out, probs) = if capture {
            let scores = q
                .matmul(k.swap_dims(2, 3))
                .mul_scalar((head_dim as f64).powf(-0.5));
            let scores = match blocked {
                Some(blocked) => scores.mask_fill(blocked, f32::NEG_INFINITY),
                None => scores,
            };
            // The softmax in f32 whatever the model's dtype, as the reference computes the
            // probabilities it aligns; then back to the model's dtype for the values.
            let dtype = scores.dtype();
            let probs = softmax(scores.cast(DType::F32), 3).cast(dtype);
            (probs.clone().matmul(v), Some(probs))
        } else {
            (fused_attention(q, k, v, blocked, Causal::No), None)
        };
        let out = out.swap_dims(1, 2).reshape([batch, seq, heads * head_dim]);
        (self.o_proj.forward(out), probs)
    }
}

/// One gated cross-attention decoder layer (`language_model.model.layers.N` for N in
/// `cross_attention_layers`).
#[derive(Module, Debug)]
pub struct CrossAttentionDecoderLayer {
    input_layernorm: RmsNorm,
    pub(crate) cross_attn: CrossAttention,
    /// `[1]`, applied as `tanh(gate)`.
    cross_attn_attn_gate: Param<Tensor<1>>,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
    /// `[1]`, applied as `tanh(gate)`.
    cross_attn_mlp_gate: Param<Tensor<1>>,
}

impl CrossAttentionDecoderLayer {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &MllamaTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            input_layernorm: layer_rms_norm(weights, prefix, "input_layernorm", config, device)?,
            cross_attn: CrossAttention::load(
                weights,
                &format!("{prefix}.cross_attn"),
                config.hidden_size,
                HeadShape::of(config),
                config.rms_norm_eps,
                device,
            )?,
            cross_attn_attn_gate: weights.param(
                &format!("{prefix}.cross_attn_attn_gate"),
                [1],
                device,
            )?,
            post_attention_layernorm: layer_rms_norm(
                weights,
                prefix,
                "post_attention_layernorm",
                config,
                device,
            )?,
            mlp: Mlp::load_layer(weights, prefix, config, device)?,
            cross_attn_mlp_gate: weights.param(
                &format!("{prefix}.cross_attn_mlp_gate"),
                [1],
                device,
            )?,
        })
    }

    /// `[batch, seq, hidden]` -> `[batch, seq, hidden]`, and the attention probabilities
    /// when `capture`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        kv: &LayerKv,
        mask: Option<&CrossAttentionMask>,
        capture: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let (attended, probs) =
            self.cross_attn
                .forward(self.input_layernorm.forward(x.clone()), kv, mask, capture);
        let x = x + attended * self.cross_attn_attn_gate.val().tanh().unsqueeze::<3>();
        let mut ff = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        if let Some(mask) = mask {
            // Tokens that see no image get no image-conditioned feed-forward.
            ff = ff * mask.rows.clone();
        }
        let x = x + ff * self.cross_attn_mlp_gate.val().tanh().unsqueeze::<3>();
        (x, probs)
    }
}
