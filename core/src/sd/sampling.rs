//! diffusers `Downsample2D` / `Upsample2D` with a convolution, as the UNet and the VAE both use
//! them between resolutions (`downsamplers.0` / `upsamplers.0` of a block).

use burn::{
    nn::{PaddingConfig2d, conv::Conv2d},
    tensor::{
        Device, Tensor,
        module::interpolate,
        ops::{InterpolateMode, InterpolateOptions},
    },
};

use crate::weights::{LoadError, Weights};

/// diffusers `Downsample2D` with a convolution: conv3x3 with stride 2. With
/// `padding = 0` (the VAE, or the UNet's `downsample_padding = 0`) diffusers pads only right
/// and bottom by one.
#[derive(burn::module::Module, Debug)]
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
            // (top, left, bottom, right): diffusers' `F.pad(x, (0, 1, 0, 1))`.
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
#[derive(burn::module::Module, Debug)]
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

    /// `[b, c, h, w]` -> `[b, c, 2h, 2w]`, or `[b, c, size[0], size[1]]` when given a size
    /// (diffusers' `upsample_size`: the UNet's skip connection when the latent was not
    /// divisible).
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let size = size.unwrap_or_else(|| {
            let [_, _, height, width] = x.dims();
            [2 * height, 2 * width]
        });
        let x = interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(size),
        );
        self.conv.forward(x)
    }
}
