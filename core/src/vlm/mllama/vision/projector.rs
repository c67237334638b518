//! `multi_modal_projector`: the linear map from the vision output to the text model's width.

use burn::{
    module::Module,
    nn::Linear,
    tensor::{Device, Tensor},
};

use crate::weights::{LoadError, Weights};

/// `nn.Linear(vision_output_dim, text hidden_size, bias=True)`.
#[derive(Module, Debug)]
pub struct MultiModalProjector {
    linear: Linear,
    text_hidden_size: usize,
}

impl MultiModalProjector {
    /// Loads `prefix.weight` `[text_hidden, vision_output_dim]` and `prefix.bias` (prefix
    /// `multi_modal_projector` in the released checkpoints).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        vision_output_dim: usize,
        text_hidden_size: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            linear: weights.linear(prefix, vision_output_dim, text_hidden_size, true, device)?,
            text_hidden_size,
        })
    }

    /// `vision_output`: `[batch, images, tiles, tokens_per_tile, vision_output_dim]`. Returns
    /// the cross-attention states `[batch * images * tiles, tokens_per_tile, text_hidden]`,
    /// reshaped as transformers' `MllamaModel` does (the text model's cross-attention splits
    /// the first axis back per batch item).
    pub fn forward(&self, vision_output: Tensor<5>) -> Tensor<3> {
        let [batch, images, tiles, tokens, _] = vision_output.dims();
        self.linear.forward(vision_output).reshape([
            batch * images * tiles,
            tokens,
            self.text_hidden_size,
        ])
    }
}
