//! The UNet's stages as diffusers builds them: `CrossAttnDownBlock2D` / `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D`, and the `Downsample2D` /
//! `Upsample2D` between resolutions.
//!
//! A cross-attention block and its plain twin differ only in having a `Transformer2DModel`
//! after each resnet, so each pair is one type with an optional list of attentions.

use burn::{
    nn::{PaddingConfig2d, conv::Conv2d},
    tensor::{
        Device, Tensor,
        module::interpolate,
        ops::{InterpolateMode, InterpolateOptions},
    },
};

use super::transformer::{Transformer2DModel, TransformerShape};
use crate::{
    sd::{
        attention::AttentionCapture,
        resnet::{ResnetBlock2D, ResnetShape},
    },
    weights::{LoadError, Weights},
};

/// What a block's cross-attention layers look like; `None` for `DownBlock2D` / `UpBlock2D`.
#[derive(Debug, Clone, Copy)]
pub struct CrossAttentionShape {
    pub heads: usize,
    pub context_dim: usize,
    /// `BasicTransformerBlock`s per `Transformer2DModel`.
    pub transformer_layers: usize,
    pub use_linear_projection: bool,
}

/// What every block shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_attention: Option<CrossAttentionShape>,
}

impl BlockShape {
    fn resnet(&self, in_channels: usize) -> ResnetShape {
        ResnetShape {
            in_channels,
            out_channels: self.out_channels,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
        }
    }

    /// The attentions after the resnets (`prefix.attentions.{i}`), none for a plain block.
    fn attentions(
        &self,
        weights: &Weights,
        prefix: &str,
        count: usize,
        device: &Device,
    ) -> Result<Vec<Transformer2DModel>, LoadError> {
        let Some(cross) = self.cross_attention else {
            return Ok(Vec::new());
        };
        let shape = TransformerShape {
            channels: self.out_channels,
            heads: cross.heads,
            context_dim: cross.context_dim,
            layers: cross.transformer_layers,
            groups: self.groups,
            use_linear_projection: cross.use_linear_projection,
        };
        (0..count)
            .map(|i| {
                Transformer2DModel::load(
                    weights,
                    &format!("{prefix}.attentions.{i}"),
                    shape,
                    device,
                )
            })
            .collect()
    }
}

/// diffusers `Downsample2D` with a convolution: conv3x3 with stride 2. With
/// `downsample_padding = 0` diffusers pads only right and bottom by one.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let mut conv = weights.conv2d(
            &format!("{prefix}.conv"),
            channels,
            channels,
            3,
            2,
            padding,
            device,
        )?;
        if padding == 0 {
            conv.padding = PaddingConfig2d::Explicit(0, 0, 1, 1);
        }
        Ok(Self { conv })
    }

    /// `[b, c, h, w]` -> `[b, c, ceil(h / 2), ceil(w / 2)]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// diffusers `Upsample2D` with a convolution: nearest-neighbour resize, then conv3x3.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            conv: weights.conv2d(
                &format!("{prefix}.conv"),
                channels,
                channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// `[b, c, h, w]` -> `[b, c, size[0], size[1]]`: twice the size, or the size of the skip
    /// connection it meets when the latent was not divisible (diffusers' `upsample_size`).
    pub fn forward(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        let x = interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(size),
        );
        self.conv.forward(x)
    }
}

/// `CrossAttnDownBlock2D` (with attentions) or `DownBlock2D` (without).
#[derive(Debug)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    /// `prefix` is `down_blocks.{i}`; `downsample` is `Some(downsample_padding)` for all but
    /// the last block.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: BlockShape,
        layers: usize,
        downsample: Option<usize>,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            resnets: (0..layers)
                .map(|i| {
                    let in_channels = if i == 0 {
                        shape.in_channels
                    } else {
                        shape.out_channels
                    };
                    ResnetBlock2D::load(
                        weights,
                        &format!("{prefix}.resnets.{i}"),
                        shape.resnet(in_channels),
                        device,
                    )
                })
                .collect::<Result<_, _>>()?,
            attentions: shape.attentions(weights, prefix, layers, device)?,
            downsampler: downsample
                .map(|padding| {
                    Downsample2D::load(
                        weights,
                        &format!("{prefix}.downsamplers.0"),
                        shape.out_channels,
                        padding,
                        device,
                    )
                })
                .transpose()?,
        })
    }

    /// Runs the block, pushing each layer's output and the downsampled output onto `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: Tensor<2>,
        context: Tensor<3>,
        mut capture: Option<&mut AttentionCapture>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb.clone()));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, context.clone(), capture.as_deref_mut());
            }
            skips.push(x.clone());
        }
        if let Some(downsampler) = &self.downsampler {
            x = downsampler.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn` with one layer: resnet, attention, resnet. Its attention is never
/// offered to the capture (the teacher recipe records down and up blocks only).
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    /// Resnet outputs are divided by this (`mid_block_scale_factor`).
    output_scale_factor: f64,
}

impl UNetMidBlock2DCrossAttn {
    /// `prefix` is `mid_block`; `shape.in_channels` must equal `shape.out_channels`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: BlockShape,
        output_scale_factor: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            resnets: (0..2)
                .map(|i| {
                    ResnetBlock2D::load(
                        weights,
                        &format!("{prefix}.resnets.{i}"),
                        shape.resnet(shape.out_channels),
                        device,
                    )
                })
                .collect::<Result<_, _>>()?,
            attentions: shape.attentions(weights, prefix, 1, device)?,
            output_scale_factor,
        })
    }

    pub fn forward(&self, x: Tensor<4>, temb: Tensor<2>, context: Tensor<3>) -> Tensor<4> {
        let resnet = |index: usize, x: Tensor<4>| {
            let y = self.resnets[index].forward(x, Some(temb.clone()));
            if self.output_scale_factor == 1.0 {
                y
            } else {
                y.div_scalar(self.output_scale_factor)
            }
        };
        let mut x = resnet(0, x);
        for (i, attention) in self.attentions.iter().enumerate() {
            x = attention.forward(x, context.clone(), None);
            x = resnet(i + 1, x);
        }
        x
    }
}

/// `CrossAttnUpBlock2D` (with attentions) or `UpBlock2D` (without).
#[derive(Debug)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    /// `prefix` is `up_blocks.{i}`. `shape.in_channels` is the width coming from below
    /// (diffusers' `prev_output_channel`); `skip_channels` the widths of the skip connections
    /// each resnet concatenates, in the order they are consumed (one resnet per skip).
    pub fn load(
        weights: &Weights,
        prefix: &str,
        shape: BlockShape,
        skip_channels: &[usize],
        upsample: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            resnets: skip_channels
                .iter()
                .enumerate()
                .map(|(i, skip)| {
                    let in_channels = if i == 0 {
                        shape.in_channels
                    } else {
                        shape.out_channels
                    };
                    ResnetBlock2D::load(
                        weights,
                        &format!("{prefix}.resnets.{i}"),
                        shape.resnet(in_channels + skip),
                        device,
                    )
                })
                .collect::<Result<_, _>>()?,
            attentions: shape.attentions(weights, prefix, skip_channels.len(), device)?,
            upsampler: upsample
                .then(|| {
                    Upsample2D::load(
                        weights,
                        &format!("{prefix}.upsamplers.0"),
                        shape.out_channels,
                        device,
                    )
                })
                .transpose()?,
        })
    }

    /// Runs the block, popping one skip connection per resnet from `skips`; the upsampler
    /// resizes to the skip connection that comes next.
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: Tensor<2>,
        context: Tensor<3>,
        mut capture: Option<&mut AttentionCapture>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the UNet pushed one skip connection per up-block resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb.clone()));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, context.clone(), capture.as_deref_mut());
            }
        }
        if let Some(upsampler) = &self.upsampler {
            let [_, _, height, width] = x.dims();
            let size = match skips.last() {
                Some(next) => {
                    let [_, _, h, w] = next.dims();
                    [h, w]
                }
                None => [2 * height, 2 * width],
            };
            x = upsampler.forward(x, size);
        }
        x
    }
}
