//! The vision transformer layers (transformers `MllamaVisionEncoder`): pre-norm self-attention
//! and a GELU MLP, with `tanh` gates on both residual branches in the global encoder.

use burn::{
    module::{Module, Param},
    nn::{LayerNorm, Linear},
    tensor::{
        Bool, Device, Tensor,
        activation::{gelu, gelu_approximate},
    },
};

use crate::{
    fused_attention::{Causal, fused_attention},
    weights::{LoadError, Weights},
};

/// The MLP activation, from `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionActivation {
    /// `gelu`: the exact (erf) GELU of the released model.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation.
    GeluTanh,
}

impl VisionActivation {
    /// Reads transformers' `hidden_act` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
        }
    }
}

/// The shapes shared by every layer of both encoders.
#[derive(Debug, Clone, Copy)]
pub struct VisionLayerShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub heads: usize,
    pub norm_eps: f64,
    pub activation: VisionActivation,
}

/// Multi-head self-attention, `q_proj`/`k_proj`/`v_proj`/`o_proj` without bias.
#[derive(Module, Debug)]
pub struct VisionAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl VisionAttention {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        heads: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let linear =
            |name: &str| weights.linear(&format!("{prefix}.{name}"), hidden, hidden, false, device);
        Ok(Self {
            q_proj: linear("q_proj")?,
            k_proj: linear("k_proj")?,
            v_proj: linear("v_proj")?,
            o_proj: linear("o_proj")?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// `x`: `[images, tokens, hidden]`; `mask`: `[images, heads, tokens, tokens]`, `true` where
    /// a score is dropped. Returns `[images, tokens, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let [images, tokens, hidden] = x.dims();
        let split = |t: Tensor<3>| {
            t.reshape([images, tokens, self.heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let out = fused_attention(q, k, v, Some(mask), Causal::No);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([images, tokens, hidden]))
    }
}

/// `fc1` -> activation -> `fc2`, both with bias.
#[derive(Module, Debug)]
pub struct VisionMlp {
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    activation: VisionActivation,
}

impl VisionMlp {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: VisionLayerShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            fc1: weights.linear(
                &format!("{prefix}.fc1"),
                shape.hidden_size,
                shape.intermediate_size,
                true,
                device,
            )?,
            fc2: weights.linear(
                &format!("{prefix}.fc2"),
                shape.intermediate_size,
                shape.hidden_size,
                true,
                device,
            )?,
            activation: shape.activation,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2
            .forward(self.activation.forward(self.fc1.forward(x)))
    }
}

/// One pre-norm transformer layer (`MllamaVisionEncoderLayer`).
#[derive(Module, Debug)]
pub struct VisionEncoderLayer {
    input_layernorm: LayerNorm,
    self_attn: VisionAttention,
    post_attention_layernorm: LayerNorm,
    mlp: VisionMlp,
    /// `[1]`, applied as `tanh(gate_attn)`; in the global encoder only.
    gate_attn: Option<Param<Tensor<1>>>,
    /// `[1]`, applied as `tanh(gate_ffn)`; in the global encoder only.
    gate_ffn: Option<Param<Tensor<1>>>,
}

impl VisionEncoderLayer {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: VisionLayerShape,
        gated: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let hidden = shape.hidden_size;
        let gate = |name: &str| -> Result<_, LoadError> {
            Ok(if gated {
                Some(weights.param(&format!("{prefix}.{name}"), [1], device)?)
            } else {
                None
            })
        };
        Ok(Self {
            input_layernorm: weights.layer_norm(
                &format!("{prefix}.input_layernorm"),
                hidden,
                shape.norm_eps,
                device,
            )?,
            self_attn: VisionAttention::load(
                weights,
                &format!("{prefix}.self_attn"),
                hidden,
                shape.heads,
                device,
            )?,
            post_attention_layernorm: weights.layer_norm(
                &format!("{prefix}.post_attention_layernorm"),
                hidden,
                shape.norm_eps,
                device,
            )?,
            mlp: VisionMlp::load(weights, &format!("{prefix}.mlp"), shape, device)?,
            gate_attn: gate("gate_attn")?,
            gate_ffn: gate("gate_ffn")?,
        })
    }

    /// `x`: `[images, tokens, hidden]`; `mask` as in [`VisionAttention::forward`].
    pub fn forward(&self, x: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let gate = |branch: Tensor<3>, gate: &Option<Param<Tensor<1>>>| match gate {
            Some(gate) => branch * gate.val().tanh().reshape([1, 1, 1]),
            None => branch,
        };
        let attn = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), mask);
        let x = x + gate(attn, &self.gate_attn);
        let ffn = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + gate(ffn, &self.gate_ffn)
    }
}

/// A stack of layers: `transformer` (ungated) or `global_transformer` (gated).
#[derive(Module, Debug)]
pub struct VisionEncoder {
    layers: Vec<VisionEncoderLayer>,
}

impl VisionEncoder {
    /// Loads `prefix.layers.{0..num_layers}`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        num_layers: usize,
        shape: VisionLayerShape,
        gated: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let layers = (0..num_layers)
            .map(|i| {
                VisionEncoderLayer::load(
                    weights,
                    &format!("{prefix}.layers.{i}"),
                    shape,
                    gated,
                    device,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// `x`: `[images, tokens, hidden]`. Returns the last layer's output and the outputs of the
    /// layers in `collect` (in that order, indices counted from 0 = the first layer's output).
    pub fn forward(
        &self,
        mut x: Tensor<3>,
        mask: Tensor<4, Bool>,
        collect: &[usize],
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        // Keep only the requested layers' outputs: the released model has 32 layers of
        // [images, 6432, 1280] states.
        let mut kept: Vec<Option<Tensor<3>>> = vec![None; self.layers.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, mask.clone());
            if collect.contains(&i) {
                kept[i] = Some(x.clone());
            }
        }
        let collected = collect
            .iter()
            .map(|&i| {
                kept[i]
                    .clone()
                    .expect("collected layer index within the encoder")
            })
            .collect();
        (x, collected)
    }
}
