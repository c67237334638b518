//! Rotary position embeddings with Llama 3's frequency-dependent scaling (transformers'
//! `MllamaRotaryEmbedding` with `_compute_llama3_parameters`).

use burn::tensor::{Device, Tensor, TensorData};

use crate::vlm::mllama::config::RopeScaling;

/// The inverse frequencies of one head (`head_dim / 2` of them). cos/sin are computed on the
/// host per call for the positions in use, so no `max_position_embeddings`-long table is kept.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

/// cos and sin `[seq, head_dim]` of a run of positions, each `cat(freqs, freqs)` as in
/// transformers.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
}

impl RotaryEmbedding {
    /// `rope_theta` and the optional scaling of [`MllamaTextConfig::rope`]; f32 arithmetic as
    /// transformers does it. `rope_type` `"default"` (or no scaling) leaves the frequencies
    /// as they are.
    ///
    /// [`MllamaTextConfig::rope`]: crate::vlm::mllama::config::MllamaTextConfig::rope
    pub fn new(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Self {
        let base = theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
            .collect();
        if let Some(scaling) = scaling.filter(|s| s.rope_type == "llama3") {
            inv_freq = llama3_scaling(&inv_freq, scaling);
        }
        Self { inv_freq }
    }

    /// The frequencies in use, `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos/sin for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> RopeTables {
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let mut cos = Vec::with_capacity(len * dim);
        let mut sin = Vec::with_capacity(len * dim);
        for position in start..start + len {
            let freqs: Vec<f32> = self.inv_freq.iter().map(|f| position as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(freqs.iter().map(|x| x.cos()));
                sin.extend(freqs.iter().map(|x| x.sin()));
            }
        }
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, [len, dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [len, dim]), device),
        }
    }
}

impl RopeTables {
    /// Rotates `x` `[batch, heads, seq, head_dim]` (transformers' `apply_rotary_pos_emb`:
    /// `x * cos + rotate_half(x) * sin`).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, seq, dim] = x.dims();
        let half = dim / 2;
        let rotated = Tensor::cat(
            vec![
                x.clone().narrow(3, half, half).neg(),
                x.clone().narrow(3, 0, half),
            ],
            3,
        );
        let cos = self.cos.clone().reshape([1, 1, seq, dim]);
        let sin = self.sin.clone().reshape([1, 1, seq, dim]);
        x * cos + rotated * sin
    }
}

/// `_compute_llama3_parameters`: long wavelengths (past `original / low_freq_factor`) are
/// divided by `factor`, short ones (under `original / high_freq_factor`) kept, and the band
/// in between interpolated smoothly.
fn llama3_scaling(inv_freq: &[f32], scaling: &RopeScaling) -> Vec<f32> {
    let factor = scaling.factor as f32;
    let low = scaling.low_freq_factor as f32;
    let high = scaling.high_freq_factor as f32;
    let old_context = scaling.original_max_position_embeddings as f32;
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    inv_freq
        .iter()
        .map(|&freq| {
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                (1.0 - smooth) * freq / factor + smooth * freq
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_matches_the_three_bands() {
        let scaling = RopeScaling {
            rope_type: "llama3".into(),
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        // Values from transformers' `_compute_llama3_parameters` with head_dim 8, theta 5e5 and
        // the fixture's scaling: one short wavelength kept, the rest divided by 8.
        let rope = RotaryEmbedding::new(8, 500000.0, Some(&scaling));
        let plain = RotaryEmbedding::new(8, 500000.0, None);
        assert_eq!(rope.inv_freq()[0], plain.inv_freq()[0]);
        for i in 1..4 {
            assert!((rope.inv_freq()[i] * 8.0 - plain.inv_freq()[i]).abs() < 1e-9);
        }
        // A wavelength inside the band (2*pi/0.2 = 31.4, between 16 and 64) is interpolated:
        // smooth = (64 / 31.4 - 1) / 3.
        let mid = llama3_scaling(&[0.2], &scaling)[0];
        let smooth = (64.0 / (2.0 * std::f32::consts::PI / 0.2) - 1.0) / 3.0;
        assert!((mid - ((1.0 - smooth) * 0.2 / 8.0 + smooth * 0.2)).abs() < 1e-7);
    }
}
