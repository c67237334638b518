//! diffusers `Decoder` (group norm, no spatial norm): latent `[b, latent, h, w]` -> image
//! `[b, out, h*f, w*f]`, `f = 2^(blocks - 1)`.

use burn::{
    nn::{GroupNorm, conv::Conv2d},
    tensor::{Device, Tensor, activation::silu},
};

use super::{
    VaeConfig,
    blocks::{UNetMidBlock2D, UpDecoderBlock2D, VAE_EPS},
};
use crate::weights::{LoadError, Weights};

#[derive(Debug)]
pub(super) struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Loads `prefix.*` (`decoder` in an `AutoencoderKL` checkpoint).
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        config: &VaeConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let groups = config.norm_num_groups;
        // Up blocks run from the widest channel count back to the narrowest.
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let widest = reversed[0];
        let narrowest = *reversed.last().expect("validated config has blocks");
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut output = widest;
        for (i, &block_out) in reversed.iter().enumerate() {
            let input = output;
            output = block_out;
            up_blocks.push(UpDecoderBlock2D::load(
                weights,
                &format!("{prefix}.up_blocks.{i}"),
                input,
                output,
                // The decoder has one resnet more per block than the encoder.
                config.layers_per_block + 1,
                groups,
                i + 1 < reversed.len(),
                device,
            )?);
        }
        Ok(Self {
            conv_in: weights.conv2d(
                &format!("{prefix}.conv_in"),
                config.latent_channels,
                widest,
                3,
                1,
                1,
                device,
            )?,
            mid_block: UNetMidBlock2D::load(
                weights,
                &format!("{prefix}.mid_block"),
                widest,
                groups,
                config.mid_block_add_attention,
                device,
            )?,
            up_blocks,
            conv_norm_out: weights.group_norm(
                &format!("{prefix}.conv_norm_out"),
                groups,
                narrowest,
                VAE_EPS,
                device,
            )?,
            conv_out: weights.conv2d(
                &format!("{prefix}.conv_out"),
                narrowest,
                config.out_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// `[b, latent, h, w]` -> `[b, out, h*f, w*f]`.
    pub(super) fn forward(&self, latent: Tensor<4>) -> Tensor<4> {
        let x = self.conv_in.forward(latent);
        let x = self.mid_block.forward(x);
        let x = self.up_blocks.iter().fold(x, |x, block| block.forward(x));
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}
