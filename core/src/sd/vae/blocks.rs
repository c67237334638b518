//! The VAE's building blocks as diffusers names them: `DownEncoderBlock2D`,
//! `UpDecoderBlock2D`, `UNetMidBlock2D` (without time embedding), and their
//! `Downsample2D` / `Upsample2D`.

use burn::{
    nn::{PaddingConfig2d, conv::Conv2d},
    tensor::{
        Device, Tensor,
        module::interpolate,
        ops::{InterpolateMode, InterpolateOptions},
    },
};

use super::attention::VaeAttention;
use crate::{
    sd::resnet::{ResnetBlock2D, ResnetShape},
    weights::{LoadError, Weights},
};

/// diffusers builds every VAE resnet and norm with this epsilon.
pub(super) const VAE_EPS: f64 = 1e-6;

fn resnet(
    weights: &Weights,
    prefix: &str,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    device: &Device,
) -> Result<ResnetBlock2D, LoadError> {
    ResnetBlock2D::load(
        weights,
        prefix,
        ResnetShape {
            in_channels,
            out_channels,
            temb_channels: None,
            groups,
            eps: VAE_EPS,
        },
        device,
    )
}

/// `Downsample2D` with `padding=0`: zero-pad one pixel right and bottom, then a 3x3 stride-2
/// conv, so `[b, c, h, w]` -> `[b, c, h/2, w/2]`.
#[derive(Debug)]
struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let mut conv = weights.conv2d(
            &format!("{prefix}.conv"),
            channels,
            channels,
            3,
            2,
            0,
            device,
        )?;
        // (top, left, bottom, right): diffusers' `F.pad(x, (0, 1, 0, 1))`.
        conv.padding = PaddingConfig2d::Explicit(0, 0, 1, 1);
        Ok(Self { conv })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D`: nearest-neighbour x2, then a 3x3 conv. `[b, c, h, w]` -> `[b, c, 2h, 2w]`.
#[derive(Debug)]
struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    fn load(
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

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = x.dims();
        let x = interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest)
                .with_output_size([2 * height, 2 * width]),
        );
        self.conv.forward(x)
    }
}

/// `DownEncoderBlock2D`: `resnets.0..n`, then (all but the last block) `downsamplers.0`.
#[derive(Debug)]
pub(super) struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        add_downsample: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let resnets = (0..layers)
            .map(|j| {
                let input = if j == 0 { in_channels } else { out_channels };
                resnet(
                    weights,
                    &format!("{prefix}.resnets.{j}"),
                    input,
                    out_channels,
                    groups,
                    device,
                )
            })
            .collect::<Result<_, _>>()?;
        let downsampler = add_downsample
            .then(|| {
                Downsample2D::load(
                    weights,
                    &format!("{prefix}.downsamplers.0"),
                    out_channels,
                    device,
                )
            })
            .transpose()?;
        Ok(Self {
            resnets,
            downsampler,
        })
    }

    /// `[b, in, h, w]` -> `[b, out, h/2, w/2]` (or `[b, out, h, w]` without downsampler).
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self
            .resnets
            .iter()
            .fold(x, |x, resnet| resnet.forward(x, None));
        match &self.downsampler {
            Some(down) => down.forward(x),
            None => x,
        }
    }
}

/// `UpDecoderBlock2D`: `resnets.0..n`, then (all but the last block) `upsamplers.0`.
#[derive(Debug)]
pub(super) struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        add_upsample: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let resnets = (0..layers)
            .map(|j| {
                let input = if j == 0 { in_channels } else { out_channels };
                resnet(
                    weights,
                    &format!("{prefix}.resnets.{j}"),
                    input,
                    out_channels,
                    groups,
                    device,
                )
            })
            .collect::<Result<_, _>>()?;
        let upsampler = add_upsample
            .then(|| {
                Upsample2D::load(
                    weights,
                    &format!("{prefix}.upsamplers.0"),
                    out_channels,
                    device,
                )
            })
            .transpose()?;
        Ok(Self { resnets, upsampler })
    }

    /// `[b, in, h, w]` -> `[b, out, 2h, 2w]` (or `[b, out, h, w]` without upsampler).
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self
            .resnets
            .iter()
            .fold(x, |x, resnet| resnet.forward(x, None));
        match &self.upsampler {
            Some(up) => up.forward(x),
            None => x,
        }
    }
}

/// `UNetMidBlock2D` with one layer and no time embedding: `resnets.0`, `attentions.0`
/// (unless `mid_block_add_attention` is false), `resnets.1`.
#[derive(Debug)]
pub(super) struct UNetMidBlock2D {
    resnet_in: ResnetBlock2D,
    attention: Option<VaeAttention>,
    resnet_out: ResnetBlock2D,
}

impl UNetMidBlock2D {
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        groups: usize,
        add_attention: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            resnet_in: resnet(
                weights,
                &format!("{prefix}.resnets.0"),
                channels,
                channels,
                groups,
                device,
            )?,
            attention: add_attention
                .then(|| {
                    VaeAttention::load(
                        weights,
                        &format!("{prefix}.attentions.0"),
                        channels,
                        groups,
                        VAE_EPS,
                        device,
                    )
                })
                .transpose()?,
            resnet_out: resnet(
                weights,
                &format!("{prefix}.resnets.1"),
                channels,
                channels,
                groups,
                device,
            )?,
        })
    }

    /// `[b, c, h, w]` -> the same shape.
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnet_in.forward(x, None);
        let x = match &self.attention {
            Some(attention) => attention.forward(x),
            None => x,
        };
        self.resnet_out.forward(x, None)
    }
}
