//! The VAE mid-block's spatial self-attention: diffusers `Attention` built with
//! `_from_deprecated_attn_block=True`. GroupNorm, then one head as wide as the channels over
//! the `h * w` pixels, biased `to_q` / `to_k` / `to_v` / `to_out.0`, and the input added back
//! (`residual_connection`, rescale factor 1).

use burn::{
    nn::{GroupNorm, Linear},
    tensor::{Device, Tensor},
};

use crate::{
    fused_attention::{Causal, fused_attention},
    weights::{LoadError, Weights},
};

#[derive(burn::module::Module, Debug)]
pub(super) struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

/// Current diffusers key, and the one checkpoints saved before the `Attention` rewrite use
/// (diffusers renames them on load; so do we).
const PROJECTIONS: [(&str, &str); 4] = [
    ("to_q", "query"),
    ("to_k", "key"),
    ("to_v", "value"),
    ("to_out.0", "proj_attn"),
];

impl VaeAttention {
    pub(super) fn load(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let [to_q, to_k, to_v, to_out] = PROJECTIONS.map(|(current, legacy)| {
            let legacy_prefix = format!("{prefix}.{legacy}");
            // A checkpoint with neither name is reported under the current one.
            let name = if !weights.contains(&format!("{prefix}.{current}.weight"))
                && weights.contains(&format!("{legacy_prefix}.weight"))
            {
                legacy_prefix
            } else {
                format!("{prefix}.{current}")
            };
            weights.linear(&name, channels, channels, true, device)
        });
        Ok(Self {
            group_norm: weights.group_norm(
                &format!("{prefix}.group_norm"),
                groups,
                channels,
                eps,
                device,
            )?,
            to_q: to_q?,
            to_k: to_k?,
            to_v: to_v?,
            to_out: to_out?,
        })
    }

    /// `x`: `[batch, channels, h, w]` -> the same shape.
    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = x.dims();
        let pixels = height * width;
        // GroupNorm over `[b, c, h, w]` equals diffusers' GroupNorm over `[b, c, h*w]`.
        let hidden = self
            .group_norm
            .forward(x.clone())
            .reshape([batch, channels, pixels])
            .swap_dims(1, 2); // [b, h*w, c]
        // One head: `[b, 1, h*w, c]`.
        let head = |linear: &Linear| linear.forward(hidden.clone()).unsqueeze_dim::<4>(1);
        let out = fused_attention(
            head(&self.to_q),
            head(&self.to_k),
            head(&self.to_v),
            None,
            Causal::No,
        );
        let out = self.to_out.forward(out.reshape([batch, pixels, channels]));
        out.swap_dims(1, 2)
            .reshape([batch, channels, height, width])
            + x
    }
}
