//! diffusers `Encoder` (with `double_z`): image `[b, in, H, W]` -> posterior moments
//! `[b, 2 * latent, H/f, W/f]` (mean then log-variance), `f = 2^(blocks - 1)`.

use burn::{
    nn::{GroupNorm, conv::Conv2d},
    tensor::{Device, Tensor, activation::silu},
};

use super::{
    VaeConfig,
    blocks::{DownEncoderBlock2D, UNetMidBlock2D, VAE_EPS},
};
use crate::weights::{LoadError, Weights};

#[derive(Debug)]
pub(super) struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Loads `prefix.*` (`encoder` in an `AutoencoderKL` checkpoint).
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        config: &VaeConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let channels = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let last = *channels.last().expect("validated config has blocks");
        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut output = channels[0];
        for (i, &block_out) in channels.iter().enumerate() {
            let input = output;
            output = block_out;
            down_blocks.push(DownEncoderBlock2D::load(
                weights,
                &format!("{prefix}.down_blocks.{i}"),
                input,
                output,
                config.layers_per_block,
                groups,
                i + 1 < channels.len(),
                device,
            )?);
        }
        Ok(Self {
            conv_in: weights.conv2d(
                &format!("{prefix}.conv_in"),
                config.in_channels,
                channels[0],
                3,
                1,
                1,
                device,
            )?,
            down_blocks,
            mid_block: UNetMidBlock2D::load(
                weights,
                &format!("{prefix}.mid_block"),
                last,
                groups,
                config.mid_block_add_attention,
                device,
            )?,
            conv_norm_out: weights.group_norm(
                &format!("{prefix}.conv_norm_out"),
                groups,
                last,
                VAE_EPS,
                device,
            )?,
            conv_out: weights.conv2d(
                &format!("{prefix}.conv_out"),
                last,
                2 * config.latent_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// `[b, in, H, W]` -> `[b, 2 * latent, H/f, W/f]`.
    pub(super) fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let x = self.conv_in.forward(image);
        let x = self.down_blocks.iter().fold(x, |x, block| block.forward(x));
        let x = self.mid_block.forward(x);
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}
