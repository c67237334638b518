//! diffusers `ResnetBlock2D` as SD v1.x uses it in the UNet (with a timestep embedding) and
//! the VAE (without): GroupNorm -> SiLU -> conv3x3 (+ time projection) -> GroupNorm -> SiLU
//! -> conv3x3, plus a 1x1 shortcut when the channel count changes.

use burn::{
    nn::{GroupNorm, Linear, conv::Conv2d},
    tensor::{Device, Tensor, activation::silu},
};

use crate::weights::{LoadError, Weights};

#[derive(burn::module::Module, Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

/// Shape of one block, as diffusers builds it from the model config.
#[derive(Debug, Clone, Copy)]
pub struct ResnetShape {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the timestep embedding; `None` in the VAE.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
}

/// The input widths of a block's `count` stacked resnets: the first takes the block's
/// `in_channels`, each later one the `out_channels` of the one before.
pub fn stack_inputs(
    in_channels: usize,
    out_channels: usize,
    count: usize,
) -> impl Iterator<Item = usize> {
    (0..count).map(move |i| if i == 0 { in_channels } else { out_channels })
}

impl ResnetBlock2D {
    /// A block's resnets, `prefix.resnets.{i}` with the `i`-th of `shapes`.
    pub fn load_stack(
        weights: &Weights,
        prefix: &str,
        shapes: impl IntoIterator<Item = ResnetShape>,
        device: &Device,
    ) -> Result<Vec<Self>, LoadError> {
        shapes
            .into_iter()
            .enumerate()
            .map(|(i, shape)| Self::load(weights, &format!("{prefix}.resnets.{i}"), shape, device))
            .collect()
    }

    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: ResnetShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let ResnetShape {
            in_channels,
            out_channels,
            temb_channels,
            groups,
            eps,
        } = shape;
        Ok(Self {
            norm1: weights.group_norm(
                &format!("{prefix}.norm1"),
                groups,
                in_channels,
                eps,
                device,
            )?,
            conv1: weights.conv2d(
                &format!("{prefix}.conv1"),
                in_channels,
                out_channels,
                3,
                1,
                1,
                device,
            )?,
            time_emb_proj: temb_channels
                .map(|temb| {
                    weights.linear(
                        &format!("{prefix}.time_emb_proj"),
                        temb,
                        out_channels,
                        true,
                        device,
                    )
                })
                .transpose()?,
            norm2: weights.group_norm(
                &format!("{prefix}.norm2"),
                groups,
                out_channels,
                eps,
                device,
            )?,
            conv2: weights.conv2d(
                &format!("{prefix}.conv2"),
                out_channels,
                out_channels,
                3,
                1,
                1,
                device,
            )?,
            conv_shortcut: (in_channels != out_channels)
                .then(|| {
                    weights.conv2d(
                        &format!("{prefix}.conv_shortcut"),
                        in_channels,
                        out_channels,
                        1,
                        1,
                        0,
                        device,
                    )
                })
                .transpose()?,
        })
    }

    /// `x`: `[batch, in, h, w]`; `temb`: `[batch, temb_channels]` (UNet) or `None` (VAE).
    pub fn forward(&self, x: Tensor<4>, temb: Option<Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let [batch, channels] = [h.dims()[0], h.dims()[1]];
            h = h + proj.forward(silu(temb)).reshape([batch, channels, 1, 1]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}
