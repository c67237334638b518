//! Null-text inversion (Mokady et al., "Null-text Inversion for Editing Real Images using
//! Guided Diffusion Models", CVPR 2023): the inversion recipe's regeneration runs with
//! classifier-free guidance, which drifts away from the DDIM-inverted trajectory, so its maps
//! partly describe a regenerated image. Here the unconditional ("null-text") embedding is
//! optimised at every step so that the guided step lands on the inverted trajectory, and the
//! regeneration reconstructs the input; the maps are then recorded along that reconstruction.
//!
//! For timestep `t_i` (`i` from 0, decreasing `t`), starting from the embedding of `""` and
//! carrying the result from one step to the next:
//! 1. `eps_cond` = UNet(z_i, t_i, text), once;
//! 2. up to `inner_steps` times: `eps = eps_u + guidance * (eps_cond - eps_u)` with
//!    `eps_u` = UNet(z_i, t_i, null_i); loss = MSE(DDIM step of z_i with eps, z*_{i+1}), where
//!    `z*` is the inversion's trajectory read backwards; one Adam step on `null_i` (a fresh Adam
//!    per timestep, learning rate `1e-2 * (1 - i / 100)`, betas 0.9 / 0.999, eps 1e-8); stop
//!    early once the loss before the step was below `1e-5 + 2e-5 * i`;
//! 3. the guided step from z_i with the optimised `null_i`, recording the conditional branch's
//!    attention (as the plain recipe's regeneration does) gives z_{i+1}.
//!
//! These are the authors' settings (their notebook: 10 inner steps, the learning rate and the
//! early-stop bound above). A batch optimises each sample's embedding on its own: the loss is
//! the sum of per-sample MSEs and each sample stops on its own loss, so a sample's result does
//! not depend on the others in its batch.

use burn::tensor::{Device, Tensor, TensorData};

use super::{attention::AttentionCapture, teacher::StableDiffusion};

/// The optimiser of the null-text embedding, as the authors set it.
const LEARNING_RATE: f64 = 1e-2;
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
/// The early-stop bound at step `i`: `STOP_LOSS + STOP_LOSS_PER_STEP * i`.
const STOP_LOSS: f64 = 1e-5;
const STOP_LOSS_PER_STEP: f64 = 2e-5;

/// What null-text inversion ends on.
pub struct NullTextRun {
    /// `[batch, 4, h, w]`: the reconstruction's last latent.
    pub latent: Tensor<4>,
    /// The optimised unconditional embeddings, one `[batch, 77, d]` per timestep.
    pub null_embeddings: Vec<Tensor<3>>,
    /// How many Adam steps each timestep took (the most over the batch).
    pub inner_steps_taken: Vec<usize>,
}

impl StableDiffusion {
    /// Null-text inversion (module docs) of `latent` under `cond` (`[batch, 77, d]`), from the
    /// unconditional embedding `uncond`, recording the conditional branch of each guided step
    /// into `capture`. `timesteps` are the run's, decreasing.
    #[allow(clippy::too_many_arguments)]
    pub fn null_text_inversion(
        &self,
        latent: Tensor<4>,
        cond: Tensor<3>,
        uncond: Tensor<3>,
        timesteps: &[usize],
        guidance: f64,
        inner_steps: usize,
        capture: &mut AttentionCapture,
    ) -> NullTextRun {
        let steps = timesteps.len();
        let batch = latent.dims()[0];
        let trajectory = self.invert_trajectory(latent, cond.clone(), steps, timesteps);
        let mut z = trajectory[steps].clone();
        let mut null = uncond;
        let mut null_embeddings = Vec::with_capacity(steps);
        let mut inner_steps_taken = Vec::with_capacity(steps);
        for (i, &t) in timesteps.iter().enumerate() {
            let target = trajectory[steps - i - 1].clone();
            let eps_cond = self.unet.forward(z.clone(), t as f32, cond.clone(), None);
            let stop_below = STOP_LOSS + STOP_LOSS_PER_STEP * i as f64;
            let mut adam = SampleAdam::new(
                &null,
                LEARNING_RATE * (1.0 - i as f64 / 100.0),
                self.device(),
            );
            let mut active = vec![true; batch];
            let mut taken = 0;
            while taken < inner_steps && active.iter().any(|&a| a) {
                let param = null.clone().autodiff().require_grad();
                let eps_uncond = self.unet.forward(z.clone(), t as f32, param.clone(), None);
                let eps = eps_uncond.clone() + (eps_cond.clone() - eps_uncond).mul_scalar(guidance);
                let previous = self.scheduler.step(z.clone(), eps, t, steps);
                // Per-sample MSE [batch]; their sum, so each sample's gradient is its own.
                let per_sample: Tensor<1> = (previous - target.clone())
                    .powi_scalar(2)
                    .reshape([batch as i32, -1])
                    .mean_dim(1)
                    .reshape([batch]);
                let losses: Vec<f32> = per_sample
                    .clone()
                    .without_autodiff()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .expect("f32 losses");
                let gradients = per_sample.sum().backward();
                let gradient = param
                    .grad(&gradients)
                    .expect("the null-text embedding is in the loss")
                    .without_autodiff();
                null = adam.step(null, gradient, &active);
                taken += 1;
                for (active, loss) in active.iter_mut().zip(losses) {
                    if f64::from(loss) < stop_below {
                        *active = false;
                    }
                }
            }
            inner_steps_taken.push(taken);
            // The guided step with the optimised embedding, recorded as the regeneration is.
            z = self.guided_step(z, t, steps, null.clone(), cond.clone(), guidance, capture);
            null_embeddings.push(null.clone());
        }
        NullTextRun {
            latent: z,
            null_embeddings,
            inner_steps_taken,
        }
    }
}

/// PyTorch's Adam (no weight decay, no amsgrad) on a `[batch, ...]` parameter whose samples
/// can be frozen: a frozen sample's values do not change.
struct SampleAdam {
    learning_rate: f64,
    first_moment: Tensor<3>,
    second_moment: Tensor<3>,
    step: i32,
    device: Device,
}

impl SampleAdam {
    fn new(param: &Tensor<3>, learning_rate: f64, device: &Device) -> Self {
        Self {
            learning_rate,
            first_moment: param.zeros_like(),
            second_moment: param.zeros_like(),
            step: 0,
            device: device.clone(),
        }
    }

    /// One step on `param` with `gradient`, applied to the samples marked `active`.
    fn step(&mut self, param: Tensor<3>, gradient: Tensor<3>, active: &[bool]) -> Tensor<3> {
        self.step += 1;
        self.first_moment =
            self.first_moment.clone().mul_scalar(BETA1) + gradient.clone().mul_scalar(1.0 - BETA1);
        self.second_moment = self.second_moment.clone().mul_scalar(BETA2)
            + gradient.powi_scalar(2).mul_scalar(1.0 - BETA2);
        let correction1 = 1.0 - BETA1.powi(self.step);
        let correction2 = 1.0 - BETA2.powi(self.step);
        // As torch.optim.Adam: m / c1 / (sqrt(v) / sqrt(c2) + eps), times the rate.
        let denominator = self
            .second_moment
            .clone()
            .sqrt()
            .div_scalar(correction2.sqrt())
            .add_scalar(ADAM_EPS);
        let update = self
            .first_moment
            .clone()
            .div(denominator)
            .mul_scalar(self.learning_rate / correction1);
        let mask: Vec<f32> = active.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::<3>::from_data(
            TensorData::new(mask, [active.len(), 1, 1]),
            (&self.device, param.dtype()),
        );
        param - update * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sd::teacher::{Recipe, TeacherConfig},
        testing::{assert_close, device, sd_golden, sd_golden_metadata, sd_tiny_dir},
        weights::Weights,
    };

    /// `tests/fixtures/make_null_text_fixture.py`: PyTorch's Adam on the null-text embedding,
    /// 5 DDIM steps, 3 inner steps each.
    fn null_text_golden() -> Weights {
        Weights::from_files(&[sd_tiny_dir().join("null_text.safetensors")]).unwrap()
    }

    fn config() -> TeacherConfig {
        TeacherConfig {
            recipe: Recipe::NullText {
                steps: 5,
                guidance: 7.5,
                inner_steps: 3,
            },
            image_size: 32,
            attn_res: 16,
            map_size: 32,
        }
    }

    /// The optimised embeddings of every step, the reconstruction and the maps match the
    /// reference. Within 1e-3, not the 1e-4 of the other recipes: Adam's first steps move every
    /// element by about the learning rate whatever its gradient's size, so elements whose
    /// gradient is near 0 may move either way on the two sides, and this compounds over the
    /// steps (measured: 1.2e-5 after the first step, 1.1e-4 after the third).
    #[test]
    fn null_text_inversion_matches_the_reference() {
        let device = device();
        let sd = StableDiffusion::load(&sd_tiny_dir(), &device).unwrap();
        let golden = sd_golden();
        let expected = null_text_golden();
        let image = golden.tensor("image", [1, 3, 32, 32], &device).unwrap();
        let prompt = sd_golden_metadata("prompt");

        let latent = sd.encode_images(image.clone());
        let cond = golden
            .tensor::<3>("cond_embeddings", [1, 77, 32], &device)
            .unwrap();
        let uncond = golden
            .tensor::<3>("uncond_embeddings", [1, 77, 32], &device)
            .unwrap();
        let timesteps = sd.scheduler.timesteps(5).unwrap();
        let mut capture = AttentionCapture::at_resolution(16);
        let run = sd.null_text_inversion(latent, cond, uncond, &timesteps, 7.5, 3, &mut capture);
        assert_eq!(run.inner_steps_taken, vec![3; 5]);
        let nulls = expected
            .tensor::<3>("null_embeddings", [5, 77, 32], &device)
            .unwrap();
        for (step, null) in run.null_embeddings.into_iter().enumerate() {
            let reference = nulls.clone().narrow(0, step, 1);
            assert_close(&format!("null embedding {step}"), null, reference, 1e-3);
        }
        let reference = expected
            .tensor::<4>("latent", [1, 4, 16, 16], &device)
            .unwrap();
        assert_close("null-text latent", run.latent, reference, 1e-3);

        let attention = sd
            .attend(image, &[prompt.as_str()], &config(), None)
            .unwrap()
            .remove(0);
        let n = attention.pieces.len();
        let reference = expected
            .tensor::<3>("token_maps", [n, 32, 32], &device)
            .unwrap();
        assert_close(
            "null-text token maps",
            attention.token_maps,
            reference,
            1e-3,
        );
        let words = attention.word_maps.words.len();
        let reference = expected
            .tensor::<3>("word_maps", [words, 32, 32], &device)
            .unwrap();
        assert_close(
            "null-text word maps",
            attention.word_maps.maps,
            reference,
            1e-3,
        );
    }

    /// Each sample of a batch is optimised on its own: a sample's maps do not depend on the
    /// other samples of its batch.
    #[test]
    fn batched_samples_are_optimised_independently() {
        let device = device();
        let sd = StableDiffusion::load(&sd_tiny_dir(), &device).unwrap();
        let image = sd_golden()
            .tensor::<4>("image", [1, 3, 32, 32], &device)
            .unwrap();
        let mut small = config();
        small.recipe = Recipe::NullText {
            steps: 2,
            guidance: 7.5,
            inner_steps: 2,
        };
        let alone = sd
            .attend(image.clone(), &["a dog"], &small, None)
            .unwrap()
            .remove(0);
        let pair = Tensor::cat(vec![image.clone().flip([3]), image], 0);
        let batched = sd
            .attend(pair, &["a red ball", "a dog"], &small, None)
            .unwrap()
            .remove(1);
        assert_close(
            "maps alone vs in a batch",
            batched.word_maps.maps,
            alone.word_maps.maps,
            1e-4,
        );
    }
}
