//! diffusers `Encoder` (with `double_z`) and `Decoder` (group norm, no spatial norm), which
//! mirror each other around their `UNetMidBlock2D`:
//!
//! - encoder: image `[b, in, H, W]` -> `conv_in` -> `down_blocks` -> `mid_block` -> posterior
//!   moments `[b, 2 * latent, H/f, W/f]` (mean then log-variance);
//! - decoder: latent `[b, latent, h, w]` -> `conv_in` -> `mid_block` -> `up_blocks` -> image
//!   `[b, out, h*f, w*f]`;
//!
//! both ending in `conv_norm_out` -> SiLU -> `conv_out`, with `f = 2^(blocks - 1)`.

use burn::{
    nn::{GroupNorm, conv::Conv2d},
    tensor::{Device, Tensor, activation::silu},
};

use super::{
    VaeConfig,
    blocks::{Direction, UNetMidBlock2D, VAE_EPS, VaeBlock2D},
};
use crate::weights::{LoadError, Weights};

/// The VAE's encoder ([`Direction::Down`]) or decoder ([`Direction::Up`]).
#[derive(burn::module::Module, Debug)]
pub(super) struct Coder {
    #[module(skip)]
    direction: Direction,
    conv_in: Conv2d,
    /// `down_blocks` or `up_blocks`, in the order they run.
    blocks: Vec<VaeBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Coder {
    /// Loads `prefix.*` (`encoder` or `decoder` in an `AutoencoderKL` checkpoint).
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        config: &VaeConfig,
        direction: Direction,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let groups = config.norm_num_groups;
        let mut channels = config.block_out_channels.clone();
        let (in_channels, out_channels, layers, blocks_name) = match direction {
            Direction::Down => (
                config.in_channels,
                2 * config.latent_channels,
                config.layers_per_block,
                "down_blocks",
            ),
            Direction::Up => {
                // Up blocks run from the widest channel count back to the narrowest.
                channels.reverse();
                (
                    config.latent_channels,
                    config.out_channels,
                    // The decoder has one resnet more per block than the encoder.
                    config.layers_per_block + 1,
                    "up_blocks",
                )
            }
        };
        let first = channels[0];
        let last = *channels.last().expect("validated config has blocks");
        let mut blocks = Vec::with_capacity(channels.len());
        let mut output = first;
        for (i, &block_out) in channels.iter().enumerate() {
            let input = output;
            output = block_out;
            blocks.push(VaeBlock2D::load(
                weights,
                &format!("{prefix}.{blocks_name}.{i}"),
                input,
                output,
                layers,
                groups,
                (i + 1 < channels.len()).then_some(direction),
                device,
            )?);
        }
        // The mid block works at the lowest resolution: after the encoder's last block, before
        // the decoder's first.
        let mid_channels = *config
            .block_out_channels
            .last()
            .expect("validated config has blocks");
        Ok(Self {
            direction,
            conv_in: weights.conv2d(
                &format!("{prefix}.conv_in"),
                in_channels,
                first,
                3,
                1,
                1,
                device,
            )?,
            blocks,
            mid_block: UNetMidBlock2D::load(
                weights,
                &format!("{prefix}.mid_block"),
                mid_channels,
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
                out_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// Encoder: `[b, in, H, W]` -> `[b, 2 * latent, H/f, W/f]`; decoder: `[b, latent, h, w]`
    /// -> `[b, out, h*f, w*f]`.
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv_in.forward(x);
        let blocks = |x| self.blocks.iter().fold(x, |x, block| block.forward(x));
        let x = match self.direction {
            Direction::Down => self.mid_block.forward(blocks(x)),
            Direction::Up => blocks(self.mid_block.forward(x)),
        };
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}
