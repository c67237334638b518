//! transformers' `MllamaSelfAttentionDecoderLayer`: pre-norm causal self-attention with RoPE
//! and grouped-query heads, then the SwiGLU feed-forward.

use burn::{
    module::Module,
    nn::{Linear, RmsNorm},
    tensor::{Device, Tensor},
};

use super::{
    HeadShape,
    cache::KvCache,
    mlp::{Mlp, layer_rms_norm},
    repeat_kv,
    rope::RopeTables,
};
use crate::{
    fused_attention::{Causal, fused_attention},
    vlm::mllama::config::MllamaTextConfig,
    weights::{LoadError, Weights},
};

/// `self_attn.{q,k,v,o}_proj`, no bias.
#[derive(Module, Debug)]
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    #[module(skip)]
    heads: HeadShape,
}

impl SelfAttention {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        heads: HeadShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let q = heads.heads * heads.head_dim;
        let kv = heads.kv_heads * heads.head_dim;
        Ok(Self {
            q_proj: weights.linear(&format!("{prefix}.q_proj"), hidden, q, false, device)?,
            k_proj: weights.linear(&format!("{prefix}.k_proj"), hidden, kv, false, device)?,
            v_proj: weights.linear(&format!("{prefix}.v_proj"), hidden, kv, false, device)?,
            o_proj: weights.linear(&format!("{prefix}.o_proj"), q, hidden, false, device)?,
            heads,
        })
    }

    /// `x` `[batch, seq, hidden]` at the positions `rope` was made for; this call's keys and
    /// values are appended to layer `layer` of `cache` and attend causally over all of them.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        layer: usize,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let HeadShape {
            heads,
            kv_heads,
            head_dim,
        } = self.heads;
        let split = |t: Tensor<3>, n: usize| t.reshape([batch, seq, n, head_dim]).swap_dims(1, 2);
        let q = rope.apply(split(self.q_proj.forward(x.clone()), heads));
        let k = rope.apply(split(self.k_proj.forward(x.clone()), kv_heads));
        let v = split(self.v_proj.forward(x), kv_heads);
        let kv = cache.append(layer, k, v);

        let out = fused_attention(
            q,
            repeat_kv(kv.key, heads),
            repeat_kv(kv.value, heads),
            None,
            Causal::Yes,
        );
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([batch, seq, heads * head_dim]))
    }
}

/// One self-attention decoder layer (`language_model.model.layers.N`).
#[derive(Module, Debug)]
pub struct SelfAttentionDecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl SelfAttentionDecoderLayer {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &MllamaTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            input_layernorm: layer_rms_norm(weights, prefix, "input_layernorm", config, device)?,
            self_attn: SelfAttention::load(
                weights,
                &format!("{prefix}.self_attn"),
                config.hidden_size,
                HeadShape::of(config),
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
        })
    }

    /// `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        layer: usize,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, layer, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}
