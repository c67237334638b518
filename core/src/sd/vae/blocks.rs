//! The VAE's building blocks as diffusers names them: `DownEncoderBlock2D` /
//! `UpDecoderBlock2D` (one type, [`VaeBlock2D`]) and `UNetMidBlock2D` (without time
//! embedding). Their `Downsample2D` / `Upsample2D` are the UNet's ([`crate::sd::sampling`]).

use burn::tensor::{Device, Tensor};

use super::attention::VaeAttention;
use crate::{
    sd::{
        resnet::{ResnetBlock2D, ResnetShape, stack_inputs},
        sampling::{Downsample2D, Upsample2D},
    },
    weights::{LoadError, Weights},
};

/// diffusers builds every VAE resnet and norm with this epsilon.
pub(super) const VAE_EPS: f64 = 1e-6;

/// Every VAE resnet: no time embedding, [`VAE_EPS`].
fn resnet_shape(in_channels: usize, out_channels: usize, groups: usize) -> ResnetShape {
    ResnetShape {
        in_channels,
        out_channels,
        temb_channels: None,
        groups,
        eps: VAE_EPS,
    }
}

/// Which way the resolution goes: down in the encoder, up in the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Down,
    Up,
}

#[derive(burn::module::Module, Debug)]
enum Sampler {
    Down(Downsample2D),
    Up(Upsample2D),
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`, which differ only in their sampler:
/// `resnets.0..n`, then (all but the last block) `downsamplers.0` / `upsamplers.0`.
#[derive(burn::module::Module, Debug)]
pub(super) struct VaeBlock2D {
    resnets: Vec<ResnetBlock2D>,
    sampler: Option<Sampler>,
}

impl VaeBlock2D {
    /// `sample` is `Some` for all but the last block of a half: the way it resamples.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        sample: Option<Direction>,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let shapes = stack_inputs(in_channels, out_channels, layers)
            .map(|input| resnet_shape(input, out_channels, groups));
        let resnets = ResnetBlock2D::load_stack(weights, prefix, shapes, device)?;
        let sampler = match sample {
            None => None,
            // diffusers' `Downsample2D(padding=0)`: pad only right and bottom.
            Some(Direction::Down) => Some(Sampler::Down(Downsample2D::load(
                weights,
                &format!("{prefix}.downsamplers.0"),
                out_channels,
                0,
                device,
            )?)),
            Some(Direction::Up) => Some(Sampler::Up(Upsample2D::load(
                weights,
                &format!("{prefix}.upsamplers.0"),
                out_channels,
                device,
            )?)),
        };
        Ok(Self { resnets, sampler })
    }

    /// `[b, in, h, w]` -> `[b, out, h/2, w/2]` or `[b, out, 2h, 2w]` (or `[b, out, h, w]`
    /// without sampler).
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self
            .resnets
            .iter()
            .fold(x, |x, resnet| resnet.forward(x, None));
        match &self.sampler {
            Some(Sampler::Down(down)) => down.forward(x),
            Some(Sampler::Up(up)) => up.forward(x, None),
            None => x,
        }
    }
}

/// `UNetMidBlock2D` with one layer and no time embedding: `resnets.0`, `attentions.0`
/// (unless `mid_block_add_attention` is false), `resnets.1`.
#[derive(burn::module::Module, Debug)]
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
            resnet_in: ResnetBlock2D::load(
                weights,
                &format!("{prefix}.resnets.0"),
                resnet_shape(channels, channels, groups),
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
            resnet_out: ResnetBlock2D::load(
                weights,
                &format!("{prefix}.resnets.1"),
                resnet_shape(channels, channels, groups),
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
