//! diffusers `Transformer2DModel` over continuous inputs, as SD v1.x uses it between the UNet's
//! resnets: GroupNorm (eps 1e-6) -> `proj_in` -> `BasicTransformerBlock`s (self-attention,
//! cross-attention on the text, GEGLU feed-forward) -> `proj_out`, plus the input as residual.

use burn::{
    nn::{GroupNorm, LayerNorm, Linear, conv::Conv2d},
    tensor::{Device, Tensor, activation::gelu},
};

use crate::{
    sd::attention::{Attention, AttentionCapture},
    weights::{LoadError, Weights},
};

/// diffusers' `Transformer2DModel` builds its GroupNorm with this eps, whatever the UNet's.
const GROUP_NORM_EPS: f64 = 1e-6;
/// `BasicTransformerBlock`'s LayerNorm eps (the UNet does not pass its own).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Shape of one `Transformer2DModel`, as the UNet's blocks build it.
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    /// Channels in and out; also the inner width (`heads * head_dim`).
    pub channels: usize,
    pub heads: usize,
    /// Width of the text embeddings (`cross_attention_dim`).
    pub context_dim: usize,
    /// Number of `BasicTransformerBlock`s (`transformer_layers_per_block`).
    pub layers: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
}

/// `proj_in` / `proj_out`: a 1x1 convolution (SD v1) or a linear layer on the tokens (SD v2).
#[derive(burn::module::Module, Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        linear: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(if linear {
            Self::Linear(weights.linear(prefix, channels, channels, true, device)?)
        } else {
            Self::Conv(weights.conv2d(prefix, channels, channels, 1, 1, 0, device)?)
        })
    }
}

/// `[b, c, h, w]` -> `[b, h * w, c]`.
fn to_tokens(x: Tensor<4>) -> Tensor<3> {
    let [batch, channels, height, width] = x.dims();
    x.permute([0, 2, 3, 1])
        .reshape([batch, height * width, channels])
}

/// `[b, h * w, c]` -> `[b, c, h, w]`.
fn to_image(x: Tensor<3>, height: usize, width: usize) -> Tensor<4> {
    let [batch, _, channels] = x.dims();
    x.reshape([batch, height, width, channels])
        .permute([0, 3, 1, 2])
}

#[derive(burn::module::Module, Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: TransformerShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let TransformerShape {
            channels,
            groups,
            use_linear_projection,
            ..
        } = shape;
        Ok(Self {
            norm: weights.group_norm(
                &format!("{prefix}.norm"),
                groups,
                channels,
                GROUP_NORM_EPS,
                device,
            )?,
            proj_in: Projection::load(
                weights,
                &format!("{prefix}.proj_in"),
                channels,
                use_linear_projection,
                device,
            )?,
            transformer_blocks: (0..shape.layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        weights,
                        &format!("{prefix}.transformer_blocks.{i}"),
                        shape,
                        device,
                    )
                })
                .collect::<Result<_, _>>()?,
            proj_out: Projection::load(
                weights,
                &format!("{prefix}.proj_out"),
                channels,
                use_linear_projection,
                device,
            )?,
        })
    }

    /// `x`: `[batch, channels, h, w]`; `context`: `[batch, keys, context_dim]`. The capture
    /// is offered to every block's cross-attention.
    pub fn forward(
        &self,
        x: Tensor<4>,
        context: Tensor<3>,
        mut capture: Option<&mut AttentionCapture>,
    ) -> Tensor<4> {
        let [_, _, height, width] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(linear) => linear.forward(to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone(), capture.as_deref_mut());
        }
        let x = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_image(tokens, height, width)),
            Projection::Linear(linear) => to_image(linear.forward(tokens), height, width),
        };
        x + residual
    }
}

/// diffusers `BasicTransformerBlock` with `norm_type = "layer_norm"`, pre-norm residuals.
#[derive(burn::module::Module, Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(
        weights: &Weights,
        prefix: &str,
        shape: TransformerShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let TransformerShape {
            channels: dim,
            heads,
            context_dim,
            ..
        } = shape;
        let head_dim = dim / heads;
        let norm = |name: &str| {
            weights.layer_norm(&format!("{prefix}.{name}"), dim, LAYER_NORM_EPS, device)
        };
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: Attention::load(
                weights,
                &format!("{prefix}.attn1"),
                dim,
                dim,
                heads,
                head_dim,
                device,
            )?,
            norm2: norm("norm2")?,
            attn2: Attention::load(
                weights,
                &format!("{prefix}.attn2"),
                dim,
                context_dim,
                heads,
                head_dim,
                device,
            )?,
            norm3: norm("norm3")?,
            ff: FeedForward::load(weights, &format!("{prefix}.ff"), dim, device)?,
        })
    }

    /// `x`: `[batch, tokens, dim]`; `context`: `[batch, keys, context_dim]`. Only the
    /// cross-attention (`attn2`) is offered to the capture.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        capture: Option<&mut AttentionCapture>,
    ) -> Tensor<3> {
        let x = self
            .attn1
            .forward(self.norm1.forward(x.clone()), None, None)
            + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context), capture)
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// diffusers `FeedForward` with GEGLU (`mult = 4`): `net.0.proj` (`dim -> 2 * 4 dim`), split
/// into value and gate, `value * gelu(gate)`, then `net.2` (`4 dim -> dim`).
#[derive(burn::module::Module, Debug)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
    inner: usize,
}

impl FeedForward {
    fn load(
        weights: &Weights,
        prefix: &str,
        dim: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let inner = 4 * dim;
        Ok(Self {
            proj: weights.linear(
                &format!("{prefix}.net.0.proj"),
                dim,
                2 * inner,
                true,
                device,
            )?,
            out: weights.linear(&format!("{prefix}.net.2"), inner, dim, true, device)?,
            inner,
        })
    }

    /// `[batch, tokens, dim]` -> `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.proj.forward(x);
        let value = h.clone().narrow(2, 0, self.inner);
        let gate = h.narrow(2, self.inner, self.inner);
        self.out.forward(value * gelu(gate))
    }
}
