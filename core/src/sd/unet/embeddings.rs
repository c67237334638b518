//! The UNet's timestep conditioning: diffusers `Timesteps` (sinusoidal features) and
//! `TimestepEmbedding` (`linear_1` -> SiLU -> `linear_2`).

use burn::{
    nn::Linear,
    tensor::{Device, Tensor, TensorData, activation::silu},
};

use crate::weights::{LoadError, Weights};

/// diffusers `Timesteps` / `get_timestep_embedding` with `scale = 1`, `max_period = 10000`.
#[derive(Debug, Clone)]
pub struct Timesteps {
    num_channels: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
}

impl Timesteps {
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f32) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// The features of one timestep: `[1, num_channels]`.
    ///
    /// They are a handful of numbers, so they are computed on the host, in f32 and in the
    /// order of operations PyTorch uses, to follow the reference as closely as rounding allows
    /// (the arguments reach ~1000 radians, where a last-bit difference in a frequency shows).
    pub fn forward(&self, timestep: f32, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.features(timestep), [1, self.num_channels]),
            device,
        )
    }

    /// The features of one timestep per batch element (training draws one for each):
    /// `[timesteps, num_channels]`.
    pub fn forward_each(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let values: Vec<f32> = timesteps.iter().flat_map(|&t| self.features(t)).collect();
        Tensor::from_data(
            TensorData::new(values, [timesteps.len(), self.num_channels]),
            device,
        )
    }

    fn features(&self, timestep: f32) -> Vec<f32> {
        let half = self.num_channels / 2;
        let log_period = -(10000f64.ln() as f32);
        let denominator = half as f32 - self.downscale_freq_shift;
        let args: Vec<f32> = (0..half)
            .map(|i| timestep * (log_period * i as f32 / denominator).exp())
            .collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        let mut values: Vec<f32> = if self.flip_sin_to_cos {
            cos.chain(sin).collect()
        } else {
            sin.chain(cos).collect()
        };
        // An odd width is zero-padded at the end.
        values.resize(self.num_channels, 0.0);
        values
    }
}

/// diffusers `TimestepEmbedding` with SiLU and no conditioning projection.
#[derive(burn::module::Module, Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `prefix.linear_1` (`in_channels -> time_embed_dim`) and `prefix.linear_2`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_channels: usize,
        time_embed_dim: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            linear_1: weights.linear(
                &format!("{prefix}.linear_1"),
                in_channels,
                time_embed_dim,
                true,
                device,
            )?,
            linear_2: weights.linear(
                &format!("{prefix}.linear_2"),
                time_embed_dim,
                time_embed_dim,
                true,
                device,
            )?,
        })
    }

    /// `[batch, in_channels]` -> `[batch, time_embed_dim]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::device;

    #[test]
    fn timestep_features_follow_diffusers_layout() {
        let device = device();
        // t = 0: sin = 0, cos = 1; flipped puts cos first.
        let flipped: Vec<f32> = Timesteps::new(6, true, 0.0)
            .forward(0.0, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(flipped, vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        let plain: Vec<f32> = Timesteps::new(7, false, 1.0)
            .forward(0.0, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(plain, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
        // The first frequency is 1, so the first features are cos(t), sin(t).
        let at_two: Vec<f32> = Timesteps::new(4, true, 0.0)
            .forward(2.0, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!((at_two[0] - 2f32.cos()).abs() < 1e-7);
        assert!((at_two[2] - 2f32.sin()).abs() < 1e-7);
        // The second frequency is 10000^(-1/2) = 0.01.
        assert!((at_two[3] - 0.02f32.sin()).abs() < 1e-7);
    }
}
