//! The teacher: a Stable Diffusion v1.x pipeline loaded from a diffusers folder, and the recipes
//! that turn an (image, text) pair into per-token and per-word cross-attention maps.
//!
//! Default recipe (`Recipe::Inversion`), exactly as `tests/fixtures/make_sd_fixtures.py`:
//! 1. latent = VAE posterior mean x scaling factor; text and the empty string encoded;
//! 2. DDIM inversion under the text over the run's timesteps in increasing order;
//! 3. regeneration in decreasing order with classifier-free guidance, recording the conditional
//!    branch's attn2 probabilities of down/up layers whose maps are `attn_res x attn_res`;
//! 4. mean over heads, layers and steps, bilinear (half-pixel) resize to `map_size`;
//! 5. prompt tokens only; words by the project's one rule on the tokens' texts
//!    ([`crate::maps::words`]), merged by mean and min-max
//!    normalised ([`crate::maps`]).
//!
//! `Recipe::Noise` replaces 2-3 by one conditional pass per timestep on the noised latent.
//! `Recipe::NullText` optimises the unconditional embedding of each step of 3 so that the
//! regeneration reconstructs the input ([`crate::sd::null_text`]); the plain recipe's
//! regeneration drifts, so its maps partly describe a regenerated image.

use std::path::Path;

use burn::tensor::{
    Device, Distribution, Int, Tensor, TensorData,
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
};
use serde::{Deserialize, Serialize};

use super::{
    attention::AttentionCapture,
    clip_text::ClipTextModel,
    scheduler::DdimScheduler,
    tokenizer::{ClipTokenizer, ClipTokens, MAX_LENGTH},
    unet::{PerBlock, UNet2DConditionModel, UNetConfig},
    vae::AutoencoderKl,
};
use crate::{
    maps::{
        WordMaps,
        words::{group_words, word_maps},
    },
    weights::LoadError,
};

/// How the attention maps are obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "recipe", rename_all = "snake_case")]
pub enum Recipe {
    /// DDIM inversion, then CFG regeneration with capture.
    Inversion { steps: usize, guidance: f64 },
    /// One conditional UNet pass per timestep on the latent noised with seeded Gaussian noise.
    Noise { timesteps: Vec<usize>, seed: u64 },
    /// DDIM inversion, then null-text optimisation at every step so that the CFG regeneration
    /// reconstructs the input, recording along it ([`crate::sd::null_text`]).
    NullText {
        steps: usize,
        guidance: f64,
        inner_steps: usize,
    },
}

/// Every parameter of the extraction; written into each output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherConfig {
    #[serde(flatten)]
    pub recipe: Recipe,
    /// Images are squashed to this square size before the VAE.
    pub image_size: usize,
    /// Side of the attention maps that are recorded (query length `attn_res^2`).
    pub attn_res: usize,
    /// Side of the output maps.
    pub map_size: usize,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            recipe: Recipe::Inversion {
                steps: 50,
                guidance: 7.5,
            },
            image_size: 512,
            attn_res: 16,
            map_size: 32,
        }
    }
}

/// What the teacher extracts from one (image, text) pair.
#[derive(Debug, Clone)]
pub struct TeacherAttention {
    /// The 77 CLIP ids of the text.
    pub token_ids: Vec<u32>,
    /// The prompt's BPE pieces (no start, end or padding tokens).
    pub pieces: Vec<String>,
    /// `[pieces, map_size, map_size]`: mean probabilities, not normalised.
    pub token_maps: Tensor<3>,
    /// Lower-cased words (punctuation dropped, duplicates merged) and their maps
    /// `[words, map_size, map_size]`, each min-max normalised.
    pub word_maps: WordMaps,
    /// `[1, 4, h, w]` (scaled): what the teacher ended on. The regenerated latent for the
    /// inversion recipe, the VAE latent for the noise recipe; see [`StableDiffusion::decode`].
    pub latent: Tensor<4>,
}

#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Input(String),
}

/// SD v1.x: tokenizer, text encoder, VAE, UNet and DDIM.
#[derive(Debug)]
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub vae: AutoencoderKl,
    pub unet: UNet2DConditionModel,
    pub scheduler: DdimScheduler,
    unet_config: UNetConfig,
    device: Device,
}

impl StableDiffusion {
    /// Loads `folder/{tokenizer,text_encoder,vae,unet,scheduler}`.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, LoadError> {
        if !folder.is_dir() {
            return Err(LoadError::Config {
                path: folder.to_path_buf(),
                reason: "not a folder (expected a diffusers SD v1.x folder with unet/, vae/, \
                         text_encoder/, tokenizer/, scheduler/)"
                    .to_string(),
            });
        }
        let sd = Self {
            tokenizer: ClipTokenizer::load(&folder.join("tokenizer"))?,
            text_encoder: ClipTextModel::load(&folder.join("text_encoder"), device)?,
            vae: AutoencoderKl::load(&folder.join("vae"), device)?,
            unet: UNet2DConditionModel::load(&folder.join("unet"), device)?,
            scheduler: DdimScheduler::load(&folder.join("scheduler"))?,
            unet_config: UNetConfig::from_file(&folder.join("unet/config.json"))?,
            device: device.clone(),
        };
        sd.check_parts_fit(folder)?;
        Ok(sd)
    }

    /// The components of a folder must belong together (an SD 2 text encoder beside an SD 1
    /// UNet would otherwise fail deep inside a matmul).
    fn check_parts_fit(&self, folder: &Path) -> Result<(), LoadError> {
        let text = self.text_encoder.config();
        let vae = self.vae.config();
        let unet = &self.unet_config;
        let mismatch = |reason: String| {
            Err(LoadError::Config {
                path: folder.to_path_buf(),
                reason,
            })
        };
        let context_dims: Vec<usize> = match &unet.cross_attention_dim {
            PerBlock::All(dim) => vec![*dim],
            PerBlock::Each(dims) => dims.clone(),
        };
        if context_dims.iter().any(|&dim| dim != text.hidden_size) {
            return mismatch(format!(
                "the text encoder is {} wide but the UNet attends to {context_dims:?}",
                text.hidden_size
            ));
        }
        if vae.latent_channels != unet.in_channels || vae.latent_channels != unet.out_channels {
            return mismatch(format!(
                "the VAE has {} latent channels, the UNet takes {} and returns {}",
                vae.latent_channels, unet.in_channels, unet.out_channels
            ));
        }
        if self.tokenizer.vocab_size() > text.vocab_size {
            return mismatch(format!(
                "the tokenizer has {} tokens, the text encoder embeds {}",
                self.tokenizer.vocab_size(),
                text.vocab_size
            ));
        }
        if text.max_position_embeddings < MAX_LENGTH {
            return mismatch(format!(
                "the text encoder has {} positions, SD needs {MAX_LENGTH}",
                text.max_position_embeddings
            ));
        }
        Ok(())
    }

    /// Sides of the maps recorded by down/up cross-attention layers for a square image.
    pub fn cross_attention_resolutions(&self, image_size: usize) -> Vec<usize> {
        let unet = &self.unet_config;
        let mut side = image_size / self.vae.config().downscale_factor();
        // Each down block works at one side; its stride-2 downsampler rounds up.
        let sides: Vec<usize> = (0..unet.down_block_types.len())
            .map(|_| {
                let here = side;
                side = side.div_ceil(2);
                here
            })
            .collect();
        let mut found: Vec<usize> = unet
            .down_block_types
            .iter()
            .zip(&sides)
            .chain(unet.up_block_types.iter().zip(sides.iter().rev()))
            .filter(|(kind, _)| kind.contains("CrossAttn"))
            .map(|(_, &side)| side)
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Tokenises texts into ids `[batch, 77]`.
    fn encode_texts(&self, texts: &[&str]) -> Result<(Vec<ClipTokens>, Tensor<3>), TeacherError> {
        let tokens: Vec<ClipTokens> = texts
            .iter()
            .map(|text| {
                self.tokenizer.encode(text).map_err(|error| {
                    TeacherError::Input(format!("cannot tokenise {text:?}: {error}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let ids: Vec<i64> = tokens
            .iter()
            .flat_map(|t| t.ids.iter().map(|&id| id as i64))
            .collect();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [texts.len(), 77]), &self.device);
        let embeddings = self.text_encoder.forward(ids);
        Ok((tokens, embeddings))
    }

    /// VAE latents `[batch, 4, h, w]` (scaled) of images `[batch, 3, H, W]` in [-1, 1].
    pub fn encode_images(&self, images: Tensor<4>) -> Tensor<4> {
        self.vae
            .encode_mean(images)
            .mul_scalar(self.vae.scaling_factor())
    }

    /// Images `[batch, 3, H, W]` in [-1, 1] from scaled latents `[batch, 4, h, w]`.
    pub fn decode(&self, latent: Tensor<4>) -> Tensor<4> {
        self.vae
            .decode(latent.div_scalar(self.vae.scaling_factor()))
            .clamp(-1.0, 1.0)
    }

    /// DDIM inversion of `latent` under `context` over an N-step run.
    pub fn invert(
        &self,
        latent: Tensor<4>,
        context: Tensor<3>,
        steps: usize,
    ) -> Result<Tensor<4>, TeacherError> {
        let timesteps = self
            .scheduler
            .timesteps(steps)
            .map_err(TeacherError::Input)?;
        let mut trajectory = self.invert_trajectory(latent, context, steps, &timesteps);
        Ok(trajectory
            .pop()
            .expect("the trajectory starts with the latent"))
    }

    /// DDIM inversion of `latent` under `context` over the run's `timesteps` (decreasing, as
    /// the scheduler gives them), keeping every latent: `[z*_0 = latent, z*_1, ...,
    /// z*_steps]`, in increasing noise.
    pub fn invert_trajectory(
        &self,
        latent: Tensor<4>,
        context: Tensor<3>,
        steps: usize,
        timesteps: &[usize],
    ) -> Vec<Tensor<4>> {
        let mut trajectory = Vec::with_capacity(steps + 1);
        trajectory.push(latent);
        for &t in timesteps.iter().rev() {
            let z = trajectory.last().expect("starts with the latent").clone();
            let eps = self
                .unet
                .forward(z.clone(), t as f32, context.clone(), None);
            trajectory.push(self.scheduler.invert_step(z, eps, t, steps));
        }
        trajectory
    }

    /// One DDIM step of a regeneration with classifier-free guidance from `z` (`[batch, 4, h,
    /// w]`) at timestep `t`: the UNet on `[z; z]` under `[uncond; cond]`, recording into
    /// `capture` (the caller keeps the conditional half), `eps_u + guidance * (eps_c - eps_u)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn guided_step(
        &self,
        z: Tensor<4>,
        t: usize,
        steps: usize,
        uncond: Tensor<3>,
        cond: Tensor<3>,
        guidance: f64,
        capture: &mut AttentionCapture,
    ) -> Tensor<4> {
        let batch = z.dims()[0];
        let both = Tensor::cat(vec![z.clone(), z.clone()], 0);
        let context = Tensor::cat(vec![uncond, cond], 0);
        let eps = self.unet.forward(both, t as f32, context, Some(capture));
        let eps_uncond = eps.clone().narrow(0, 0, batch);
        let eps_cond = eps.narrow(0, batch, batch);
        let eps = eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(guidance);
        self.scheduler.step(z, eps, t, steps)
    }

    /// Per-token and per-word maps for each (image, text) pair. `images`: `[batch, 3, S, S]` in
    /// [-1, 1] at `config.image_size`. `noise` (`[timesteps, batch, 4, h, w]`) replaces the
    /// seeded noise of `Recipe::Noise` (for tests against the reference).
    pub fn attend(
        &self,
        images: Tensor<4>,
        texts: &[&str],
        config: &TeacherConfig,
        noise: Option<Tensor<5>>,
    ) -> Result<Vec<TeacherAttention>, TeacherError> {
        let [batch, _, height, width] = images.dims();
        if batch != texts.len() {
            return Err(TeacherError::Input(format!(
                "{batch} images but {} texts",
                texts.len()
            )));
        }
        if height != config.image_size || width != config.image_size {
            return Err(TeacherError::Input(format!(
                "images are {height}x{width}, the recipe expects {0}x{0}",
                config.image_size
            )));
        }
        if config.attn_res == 0 || config.map_size == 0 {
            return Err(TeacherError::Input(
                "attn_res and map_size must be positive".into(),
            ));
        }
        let factor = self.vae.config().downscale_factor();
        if config.image_size < 8 * factor || !config.image_size.is_multiple_of(factor) {
            return Err(TeacherError::Input(format!(
                "image size {} must be a multiple of the VAE's factor {factor} and at least {}",
                config.image_size,
                8 * factor
            )));
        }
        let sides = self.cross_attention_resolutions(config.image_size);
        if !sides.contains(&config.attn_res) {
            return Err(TeacherError::Input(format!(
                "no down/up cross-attention layer has {0}x{0} maps at image size {1} \
                 (they have {sides:?}); choose another attn_res",
                config.attn_res, config.image_size
            )));
        }
        let latent = self.encode_images(images);
        let (tokens, cond) = self.encode_texts(texts)?;
        if let Some(empty) = tokens.iter().position(|t| t.prompt_len == 0) {
            return Err(TeacherError::Input(format!(
                "text {:?} has no tokens",
                texts[empty]
            )));
        }
        let mut capture = AttentionCapture::at_resolution(config.attn_res);

        // The latents each recipe ends on, returned so a person can see what the teacher saw.
        let mut final_latent = latent.clone();
        let probs = match &config.recipe {
            Recipe::Inversion { steps, guidance } => {
                let (_, uncond) = self.encode_texts(&vec![""; batch])?;
                let timesteps = self
                    .scheduler
                    .timesteps(*steps)
                    .map_err(TeacherError::Input)?;
                let mut z = self.invert(latent, cond.clone(), *steps)?;
                for &t in &timesteps {
                    z = self.guided_step(
                        z,
                        t,
                        *steps,
                        uncond.clone(),
                        cond.clone(),
                        *guidance,
                        &mut capture,
                    );
                }
                final_latent = z;
                // The conditional half of the [uncond; cond] batch.
                capture.mean().map(|mean| mean.narrow(0, batch, batch))
            }
            Recipe::NullText {
                steps,
                guidance,
                inner_steps,
            } => {
                let (_, uncond) = self.encode_texts(&vec![""; batch])?;
                let timesteps = self
                    .scheduler
                    .timesteps(*steps)
                    .map_err(TeacherError::Input)?;
                let run = self.null_text_inversion(
                    latent,
                    cond.clone(),
                    uncond,
                    &timesteps,
                    *guidance,
                    *inner_steps,
                    &mut capture,
                );
                final_latent = run.latent;
                capture.mean().map(|mean| mean.narrow(0, batch, batch))
            }
            Recipe::Noise { timesteps, seed } => {
                if timesteps.is_empty() {
                    return Err(TeacherError::Input(
                        "the noise recipe needs timesteps".into(),
                    ));
                }
                let train_steps = self.scheduler.alphas_cumprod().len();
                if let Some(bad) = timesteps.iter().find(|&&t| t >= train_steps) {
                    return Err(TeacherError::Input(format!(
                        "timestep {bad} is outside 0..{train_steps}"
                    )));
                }
                // Every sample gets the same seeded draw, so its maps do not depend on
                // --batch or on its place in a batch.
                let noise = match noise {
                    Some(noise) => noise,
                    None => {
                        self.device.seed(*seed);
                        let [_, c, h, w] = latent.dims();
                        Tensor::random(
                            [timesteps.len(), 1, c, h, w],
                            Distribution::Normal(0.0, 1.0),
                            &self.device,
                        )
                    }
                };
                let [_, noise_batch, c, h, w] = noise.dims();
                if noise_batch != 1 && noise_batch != batch {
                    return Err(TeacherError::Input(format!(
                        "noise has batch {noise_batch}, expected 1 or {batch}"
                    )));
                }
                for (index, &t) in timesteps.iter().enumerate() {
                    let noise_t = noise
                        .clone()
                        .narrow(0, index, 1)
                        .reshape([noise_batch, c, h, w])
                        .repeat_dim(0, batch / noise_batch);
                    let noisy = self.scheduler.add_noise(latent.clone(), noise_t, t);
                    self.unet
                        .forward(noisy, t as f32, cond.clone(), Some(&mut capture));
                }
                capture.mean()
            }
        };
        let probs = probs.ok_or_else(|| {
            TeacherError::Input(format!(
                "no cross-attention layer recorded {0}x{0} maps",
                config.attn_res
            ))
        })?;

        // [batch, r*r, 77] -> [batch, 77, r, r] -> [batch, 77, S, S]
        let r = config.attn_res;
        let maps = probs.swap_dims(1, 2).reshape([batch, 77, r, r]);
        let maps = interpolate(
            maps,
            // Half-pixel bilinear, as PyTorch's align_corners=False (Burn defaults to true).
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([config.map_size, config.map_size]),
        );

        let mut outputs = Vec::with_capacity(batch);
        for (index, tokens) in tokens.into_iter().enumerate() {
            let n = tokens.prompt_len;
            let token_maps = maps.clone().narrow(0, index, 1).narrow(1, 1, n).reshape([
                n,
                config.map_size,
                config.map_size,
            ]);
            let groups = group_words(&tokens.texts);
            let maps = word_maps(token_maps.clone(), &groups);
            outputs.push(TeacherAttention {
                token_ids: tokens.ids,
                pieces: tokens.pieces,
                token_maps,
                word_maps: WordMaps {
                    words: groups.words,
                    maps,
                },
                latent: final_latent.clone().narrow(0, index, 1),
            });
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, sd_golden, sd_golden_metadata, sd_tiny_dir};

    fn fixture() -> (StableDiffusion, Tensor<4>, String) {
        let sd = StableDiffusion::load(&sd_tiny_dir(), &device()).unwrap();
        let image = sd_golden()
            .tensor("image", [1, 3, 32, 32], &device())
            .unwrap();
        (sd, image, sd_golden_metadata("prompt"))
    }

    fn tiny_config(recipe: Recipe) -> TeacherConfig {
        TeacherConfig {
            recipe,
            image_size: 32,
            attn_res: 16,
            map_size: 32,
        }
    }

    #[test]
    fn inversion_recipe_matches_the_reference() {
        let (sd, image, prompt) = fixture();
        let golden = sd_golden();
        let config = tiny_config(Recipe::Inversion {
            steps: 5,
            guidance: 7.5,
        });

        let latent = sd.encode_images(image.clone());
        let (_, cond) = sd.encode_texts(&[prompt.as_str()]).unwrap();
        let inverted = sd.invert(latent, cond, 5).unwrap();
        let expected = golden
            .tensor("inverted_latent", [1, 4, 16, 16], &device())
            .unwrap();
        assert_close("inverted latent", inverted, expected, 1e-4);

        let maps = sd
            .attend(image, &[prompt.as_str()], &config, None)
            .unwrap()
            .remove(0);
        let expected = golden
            .tensor("regenerated_latent", [1, 4, 16, 16], &device())
            .unwrap();
        assert_close("regenerated latent", maps.latent.clone(), expected, 1e-4);
        let pieces: Vec<String> = serde_json::from_str(&sd_golden_metadata("tokens")).unwrap();
        let words: Vec<String> = serde_json::from_str(&sd_golden_metadata("words")).unwrap();
        assert_eq!(maps.pieces, pieces);
        assert_eq!(maps.word_maps.words, words);
        let n = pieces.len();
        let expected = golden.tensor("token_maps", [n, 32, 32], &device()).unwrap();
        assert_close("token maps", maps.token_maps, expected, 1e-4);
        let expected = golden
            .tensor("word_maps", [words.len(), 32, 32], &device())
            .unwrap();
        assert_close("word maps", maps.word_maps.maps, expected, 1e-4);
    }

    #[test]
    fn noise_recipe_matches_the_reference() {
        let (sd, image, prompt) = fixture();
        let golden = sd_golden();
        let timesteps: Vec<usize> =
            serde_json::from_str(&sd_golden_metadata("noise_timesteps")).unwrap();
        let noise = golden
            .tensor("noise", [timesteps.len(), 1, 4, 16, 16], &device())
            .unwrap();
        let config = tiny_config(Recipe::Noise { timesteps, seed: 0 });
        let maps = sd
            .attend(image, &[prompt.as_str()], &config, Some(noise))
            .unwrap()
            .remove(0);
        let n = maps.pieces.len();
        let expected = golden
            .tensor("noise_token_maps", [n, 32, 32], &device())
            .unwrap();
        assert_close("noise token maps", maps.token_maps, expected, 1e-4);
        let w = maps.word_maps.words.len();
        let expected = golden
            .tensor("noise_word_maps", [w, 32, 32], &device())
            .unwrap();
        assert_close("noise word maps", maps.word_maps.maps, expected, 1e-4);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (sd, image, _) = fixture();
        let config = tiny_config(Recipe::Inversion {
            steps: 2,
            guidance: 7.5,
        });
        let error = sd
            .attend(image.clone(), &["a", "b"], &config, None)
            .unwrap_err();
        assert!(
            error.to_string().contains("1 images but 2 texts"),
            "{error}"
        );
        let error = sd.attend(image.clone(), &[""], &config, None).unwrap_err();
        assert!(error.to_string().contains("no tokens"), "{error}");
        let mut wrong_res = config.clone();
        wrong_res.attn_res = 5;
        let error = sd
            .attend(image.clone(), &["a dog"], &wrong_res, None)
            .unwrap_err();
        assert!(error.to_string().contains("they have [8, 16]"), "{error}");
        let mut small = config.clone();
        small.image_size = 8;
        let tiny_image = Tensor::<4>::zeros([1, 3, 8, 8], &device());
        let error = sd.attend(tiny_image, &["a dog"], &small, None).unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
    }

    /// Down/up cross-attention sides of the fixture UNet (two cross-attention levels).
    #[test]
    fn cross_attention_sides_follow_the_unet() {
        let (sd, _, _) = fixture();
        assert_eq!(sd.cross_attention_resolutions(32), vec![8, 16]);
        assert_eq!(sd.cross_attention_resolutions(40), vec![10, 20]);
    }

    /// Every part of the teacher is a Burn module whose every parameter learns: one backward
    /// through text encoder -> UNet (noise prediction) and VAE encode -> decode
    /// (reconstruction) reaches all of them, as training a teacher here needs.
    #[test]
    fn every_teacher_parameter_receives_a_gradient() {
        use burn::module::{Module, ModuleVisitor, Param};
        use burn::tensor::Distribution;
        let device = Device::flex().autodiff();
        device.seed(5);
        let sd = StableDiffusion::load(&sd_tiny_dir(), &device).unwrap();
        let tokens = sd.tokenizer.encode("a red circle").unwrap();
        let ids: Vec<i64> = tokens.ids.iter().map(|&id| i64::from(id)).collect();
        let length = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, length]), &device);
        let context = sd.text_encoder.forward(ids);
        let image = Tensor::<4>::random([1, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
        let latent = sd.vae.encode_mean(image.clone());
        let noise = Tensor::<4>::random(latent.dims(), Distribution::Normal(0.0, 1.0), &device);
        let predicted = sd.unet.forward(
            latent.clone().detach() + noise.clone(),
            300.0,
            context,
            None,
        );
        let loss = (predicted - noise).powi_scalar(2).mean()
            + (sd.vae.decode(latent) - image).powi_scalar(2).mean();
        let grads = loss.backward();

        struct Count<'a>(&'a burn::tensor::Gradients, usize, Vec<String>);
        impl ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                match param.grad(self.0) {
                    Some(grad) if grad.clone().abs().sum().into_scalar::<f32>() > 0.0 => {
                        self.1 += 1
                    }
                    _ => self.2.push(format!("{:?}", param.shape())),
                }
            }
        }
        for (part, count) in [
            ("text encoder", {
                let mut c = Count(&grads, 0, Vec::new());
                sd.text_encoder.visit(&mut c);
                c
            }),
            ("unet", {
                let mut c = Count(&grads, 0, Vec::new());
                sd.unet.visit(&mut c);
                c
            }),
            ("vae", {
                let mut c = Count(&grads, 0, Vec::new());
                sd.vae.visit(&mut c);
                c
            }),
        ] {
            assert!(count.1 > 10, "{part}: {} parameters learn", count.1);
            assert!(count.2.is_empty(), "{part}: no gradient for {:?}", count.2);
        }
    }
}
