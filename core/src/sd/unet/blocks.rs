//! The UNet's stages as diffusers builds them: `CrossAttnDownBlock2D` / `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D`; the `Downsample2D` /
//! `Upsample2D` between resolutions are the ones the VAE uses too ([`crate::sd::sampling`]).
//!
//! A cross-attention block and its plain twin differ only in having a `Transformer2DModel`
//! after each resnet, so each pair is one type with an optional list of attentions.

use burn::tensor::{Device, Tensor};

use super::transformer::{Transformer2DModel, TransformerShape};
pub use crate::sd::sampling::{Downsample2D, Upsample2D};
use crate::{
    sd::{
        attention::AttentionCapture,
        resnet::{ResnetBlock2D, ResnetShape, stack_inputs},
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
    /// The resnets (`prefix.resnets.{i}`), one per input width.
    fn resnets(
        &self,
        weights: &Weights,
        prefix: &str,
        inputs: impl IntoIterator<Item = usize>,
        device: &Device,
    ) -> Result<Vec<ResnetBlock2D>, LoadError> {
        let shapes = inputs.into_iter().map(|in_channels| ResnetShape {
            in_channels,
            out_channels: self.out_channels,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
        });
        ResnetBlock2D::load_stack(weights, prefix, shapes, device)
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

/// `CrossAttnDownBlock2D` (with attentions) or `DownBlock2D` (without).
#[derive(burn::module::Module, Debug)]
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
            resnets: shape.resnets(
                weights,
                prefix,
                stack_inputs(shape.in_channels, shape.out_channels, layers),
                device,
            )?,
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
#[derive(burn::module::Module, Debug)]
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
            resnets: shape.resnets(weights, prefix, [shape.out_channels; 2], device)?,
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
#[derive(burn::module::Module, Debug)]
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
            resnets: shape.resnets(
                weights,
                prefix,
                stack_inputs(shape.in_channels, shape.out_channels, skip_channels.len())
                    .zip(skip_channels)
                    .map(|(input, skip)| input + skip),
                device,
            )?,
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
            let size = skips.last().map(|next| {
                let [_, _, height, width] = next.dims();
                [height, width]
            });
            x = upsampler.forward(x, size);
        }
        x
    }
}
