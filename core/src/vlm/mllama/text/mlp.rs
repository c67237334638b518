//! The SwiGLU feed-forward (`mlp.{gate,up,down}_proj`, no bias) and the RMSNorm loader every
//! text layer uses.

use burn::{
    module::Module,
    nn::{Linear, RmsNorm},
    tensor::{Device, Tensor, activation::silu},
};

use crate::{
    vlm::mllama::config::MllamaTextConfig,
    weights::{LoadError, Weights},
};

/// transformers' `MllamaTextMLP`: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            gate_proj: weights.linear(
                &format!("{prefix}.gate_proj"),
                hidden,
                intermediate,
                false,
                device,
            )?,
            up_proj: weights.linear(
                &format!("{prefix}.up_proj"),
                hidden,
                intermediate,
                false,
                device,
            )?,
            down_proj: weights.linear(
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                false,
                device,
            )?,
        })
    }

    /// The feed-forward `{prefix}.mlp` of a text decoder layer.
    pub fn load_layer(
        weights: &Weights,
        prefix: &str,
        config: &MllamaTextConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Self::load(
            weights,
            &format!("{prefix}.mlp"),
            config.hidden_size,
            config.intermediate_size,
            device,
        )
    }

    /// `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// `MllamaTextRMSNorm` from `name` (`[dim]`): `x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(
    weights: &Weights,
    name: &str,
    dim: usize,
    epsilon: f64,
    device: &Device,
) -> Result<RmsNorm, LoadError> {
    Ok(RmsNorm {
        gamma: weights.param(name, [dim], device)?,
        epsilon,
    })
}

/// The hidden-size RMSNorm `{prefix}.{name}.weight` of a text decoder layer.
pub fn layer_rms_norm(
    weights: &Weights,
    prefix: &str,
    name: &str,
    config: &MllamaTextConfig,
    device: &Device,
) -> Result<RmsNorm, LoadError> {
    rms_norm(
        weights,
        &format!("{prefix}.{name}.weight"),
        config.hidden_size,
        config.rms_norm_eps,
        device,
    )
}
