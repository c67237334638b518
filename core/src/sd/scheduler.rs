//! DDIM (diffusers `DDIMScheduler`) for SD v1.x: the noise schedule, the timesteps of an
//! N-step run, the deterministic (eta = 0) step and its inversion.
//!
//! SD v1.4 ships a `PNDMScheduler` config; it shares the fields read here, so any SD v1.x
//! `scheduler/scheduler_config.json` loads.

use std::path::Path;

use burn::tensor::Tensor;
use serde::Deserialize;

use crate::weights::{LoadError, read_json};

/// The fields of `scheduler_config.json` DDIM needs (diffusers names and defaults).
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    #[serde(default = "default_spacing")]
    pub timestep_spacing: String,
}

fn default_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_true() -> bool {
    true
}
fn default_prediction_type() -> String {
    "epsilon".into()
}
fn default_spacing() -> String {
    "leading".into()
}

/// The DDIM schedule: `alphas_cumprod` and how N inference steps map onto it.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f64>,
    /// Alpha used "before" timestep 0 (the last denoising step, the first inversion step).
    final_alpha_cumprod: f64,
    steps_offset: usize,
}

impl DdimScheduler {
    /// Reads `folder/scheduler_config.json`.
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        let path = folder.join("scheduler_config.json");
        let config: SchedulerConfig = read_json(&path)?;
        Self::new(&config).map_err(|reason| LoadError::Config { path, reason })
    }

    /// Builds the schedule; only what SD v1.x uses is supported.
    pub fn new(config: &SchedulerConfig) -> Result<Self, String> {
        let n = config.num_train_timesteps;
        if n < 2 {
            return Err(format!("num_train_timesteps must be at least 2, got {n}"));
        }
        let betas: Vec<f64> = match config.beta_schedule.as_str() {
            "linear" => linspace(config.beta_start, config.beta_end, n),
            "scaled_linear" => linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            other => {
                return Err(format!(
                    "beta_schedule `{other}` is not supported (linear, scaled_linear)"
                ));
            }
        };
        if config.prediction_type != "epsilon" {
            return Err(format!(
                "prediction_type `{}` is not supported: SD v1.x predicts epsilon",
                config.prediction_type
            ));
        }
        if config.timestep_spacing != "leading" {
            return Err(format!(
                "timestep_spacing `{}` is not supported (leading)",
                config.timestep_spacing
            ));
        }
        let mut product = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|beta| {
                product *= 1.0 - beta;
                product
            })
            .collect();
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            alphas_cumprod,
            final_alpha_cumprod,
            steps_offset: config.steps_offset,
        })
    }

    /// The cumulative product of `1 - beta` over the training timesteps.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `alphas_cumprod[t]`, or the final alpha for `t < 0`.
    pub fn alpha(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// The distance between consecutive timesteps of an N-step run.
    pub fn step_ratio(&self, steps: usize) -> usize {
        self.alphas_cumprod.len() / steps
    }

    /// Timesteps of an N-step run, in denoising (decreasing) order: "leading" spacing plus
    /// `steps_offset`, as diffusers' `set_timesteps`.
    pub fn timesteps(&self, steps: usize) -> Result<Vec<usize>, String> {
        let n = self.alphas_cumprod.len();
        if steps == 0 || steps > n {
            return Err(format!("steps must be between 1 and {n}, got {steps}"));
        }
        let ratio = self.step_ratio(steps);
        Ok((0..steps)
            .rev()
            .map(|i| (i * ratio + self.steps_offset).min(n - 1))
            .collect())
    }

    /// One deterministic DDIM step from `t` to `t - ratio` (eta = 0):
    /// `z' = sqrt(a_prev) * (z - sqrt(1 - a_t) eps) / sqrt(a_t) + sqrt(1 - a_prev) eps`.
    pub fn step(&self, sample: Tensor<4>, eps: Tensor<4>, t: usize, steps: usize) -> Tensor<4> {
        let from = self.alpha(t as i64);
        let to = self.alpha(t as i64 - self.step_ratio(steps) as i64);
        move_between(sample, eps, from, to)
    }

    /// One DDIM inversion step onto `t` from `t - ratio` (null-text inversion's `next_step`):
    /// `z' = sqrt(a_t) * (z - sqrt(1 - a_prev) eps) / sqrt(a_prev) + sqrt(1 - a_t) eps`, where
    /// `eps` was predicted at `t`.
    pub fn invert_step(
        &self,
        sample: Tensor<4>,
        eps: Tensor<4>,
        t: usize,
        steps: usize,
    ) -> Tensor<4> {
        let from = self.alpha(t as i64 - self.step_ratio(steps) as i64);
        let to = self.alpha(t as i64);
        move_between(sample, eps, from, to)
    }

    /// `q(z_t | z_0)`: `sqrt(a_t) z_0 + sqrt(1 - a_t) noise`.
    pub fn add_noise(&self, latent: Tensor<4>, noise: Tensor<4>, t: usize) -> Tensor<4> {
        let alpha = self.alpha(t as i64);
        latent.mul_scalar(alpha.sqrt()) + noise.mul_scalar((1.0 - alpha).sqrt())
    }
}

/// Moves a latent from noise level `from` to `to` along the predicted noise `eps`.
fn move_between(sample: Tensor<4>, eps: Tensor<4>, from: f64, to: f64) -> Tensor<4> {
    let predicted_x0 =
        (sample - eps.clone().mul_scalar((1.0 - from).sqrt())).div_scalar(from.sqrt());
    predicted_x0.mul_scalar(to.sqrt()) + eps.mul_scalar((1.0 - to).sqrt())
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;

    fn sd_v1() -> DdimScheduler {
        DdimScheduler::load(&crate::testing::sd_tiny_dir().join("scheduler")).unwrap()
    }

    /// Hand-computed from the scaled_linear definition: beta_0 = 0.00085, beta_999 = 0.012.
    #[test]
    fn schedule_matches_hand_computed_values() {
        let scheduler = sd_v1();
        let alphas = scheduler.alphas_cumprod();
        assert_eq!(alphas.len(), 1000);
        assert!((alphas[0] - (1.0 - 0.00085)).abs() < 1e-12);
        let beta_1 = (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) / 999.0).powi(2);
        assert!((alphas[1] - (1.0 - 0.00085) * (1.0 - beta_1)).abs() < 1e-12);
        // set_alpha_to_one = false: the final alpha is alphas_cumprod[0].
        assert_eq!(scheduler.alpha(-19), alphas[0]);
    }

    #[test]
    fn schedule_matches_diffusers() {
        let golden = crate::testing::sd_golden();
        let expected: Vec<f32> = golden
            .tensor::<1>("alphas_cumprod", [1000], &Device::flex())
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        for (t, (ours, theirs)) in sd_v1().alphas_cumprod().iter().zip(expected).enumerate() {
            assert!(
                (*ours as f32 - theirs).abs() <= 1e-6 * theirs.abs().max(1e-3),
                "alphas_cumprod[{t}]: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn timesteps_are_leading_with_offset() {
        let scheduler = sd_v1();
        assert_eq!(scheduler.timesteps(5).unwrap(), vec![801, 601, 401, 201, 1]);
        let fifty = scheduler.timesteps(50).unwrap();
        assert_eq!(fifty.len(), 50);
        assert_eq!((fifty[0], fifty[49]), (981, 1));
        let golden: Vec<usize> =
            serde_json::from_str(&crate::testing::sd_golden_metadata("timesteps")).unwrap();
        assert_eq!(scheduler.timesteps(5).unwrap(), golden);
        assert!(scheduler.timesteps(0).is_err());
        assert!(scheduler.timesteps(1001).is_err());
    }

    /// An inversion step undoes a denoising step for the same eps.
    #[test]
    fn inversion_inverts_a_step() {
        let scheduler = sd_v1();
        let device = Device::flex();
        let z = Tensor::<4>::from_floats([[[[0.3, -1.2], [0.7, 2.0]]]], &device);
        let eps = Tensor::<4>::from_floats([[[[0.1, 0.4], [-0.5, 0.9]]]], &device);
        let back =
            scheduler.invert_step(scheduler.step(z.clone(), eps.clone(), 401, 5), eps, 401, 5);
        let error: f32 = (back - z).abs().max().into_scalar();
        assert!(error < 1e-5, "{error}");
    }

    /// The DDIM update with hand-computed alphas: t = 1 -> t_prev < 0 uses alphas_cumprod[0].
    #[test]
    fn last_step_uses_the_final_alpha() {
        let scheduler = sd_v1();
        let device = Device::flex();
        let (a_t, a_prev) = (scheduler.alpha(1), scheduler.alpha(0));
        let z = Tensor::<4>::from_floats([[[[1.0]]]], &device);
        let eps = Tensor::<4>::from_floats([[[[0.5]]]], &device);
        let expected = a_prev.sqrt() * (1.0 - (1.0 - a_t).sqrt() * 0.5) / a_t.sqrt()
            + (1.0 - a_prev).sqrt() * 0.5;
        let got: f32 = scheduler.step(z, eps, 1, 5).into_scalar();
        assert!((got as f64 - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let mut config: SchedulerConfig = serde_json::from_str("{}").unwrap();
        config.beta_schedule = "squaredcos_cap_v2".into();
        assert!(
            DdimScheduler::new(&config)
                .unwrap_err()
                .contains("squaredcos_cap_v2")
        );
        config.beta_schedule = "linear".into();
        config.prediction_type = "v_prediction".into();
        assert!(
            DdimScheduler::new(&config)
                .unwrap_err()
                .contains("v_prediction")
        );
    }
}
