//! The teacher recipe's flags, shared by `attend-sd` and `extract`. Defaults are the recipe's.

use clap::{Args, ValueEnum};
use lavender_core::sd::teacher::{Recipe, TeacherConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecipeKind {
    /// DDIM inversion under the text, then CFG regeneration recording attention (faithful, slow).
    Inversion,
    /// One conditional pass per timestep on the noised latent (cheap, for large datasets).
    Noise,
    /// Inversion whose regeneration reconstructs the input: the unconditional embedding is
    /// optimised at every step (null-text inversion; about 11x the UNet work at 10 inner steps).
    NullText,
}

#[derive(Debug, Clone, Args)]
pub struct TeacherArgs {
    /// How the attention is obtained.
    #[arg(long, value_enum, default_value_t = RecipeKind::Inversion)]
    pub recipe: RecipeKind,

    /// DDIM steps of inversion and of regeneration (inversion and null-text recipes).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// Classifier-free guidance scale of the regeneration (inversion and null-text recipes).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,

    /// Adam steps on the null-text embedding per DDIM step, at most (null-text recipe; the
    /// authors' 10).
    #[arg(long, default_value_t = 10)]
    pub inner_steps: usize,

    /// Timesteps at which the latent is noised (noise recipe).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300, 500, 700, 900])]
    pub timesteps: Vec<usize>,

    /// Seed of the Gaussian noise (noise recipe).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Images are squashed to this square size (pixels) before the VAE.
    #[arg(long, default_value_t = 512)]
    pub image_size: usize,

    /// Side of the cross-attention maps recorded (16 gives 16x16 maps at 512 px).
    #[arg(long, default_value_t = 16)]
    pub attn_res: usize,

    /// Side of the output maps.
    #[arg(long, default_value_t = 32)]
    pub map_size: usize,
}

impl TeacherArgs {
    /// The recipe these flags describe, checked.
    pub fn config(&self) -> anyhow::Result<TeacherConfig> {
        // Bounds far above SD's 512 px, 16x16 and 32x32, checked before anything is allocated.
        anyhow::ensure!(
            (1..=4096).contains(&self.image_size),
            "--image-size must be 1 to 4096 pixels (SD v1.x: 512)"
        );
        anyhow::ensure!(
            (1..=512).contains(&self.attn_res),
            "--attn-res must be 1 to 512 (SD v1.x at 512 px: 16)"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.map_size),
            "--map-size must be 1 to 1024 (Lavender: 32)"
        );
        let recipe = match self.recipe {
            RecipeKind::Inversion => {
                anyhow::ensure!(self.steps > 0, "--steps must be positive");
                anyhow::ensure!(self.guidance.is_finite(), "--guidance must be a number");
                Recipe::Inversion {
                    steps: self.steps,
                    guidance: self.guidance,
                }
            }
            RecipeKind::NullText => {
                anyhow::ensure!(self.steps > 0, "--steps must be positive");
                anyhow::ensure!(self.guidance.is_finite(), "--guidance must be a number");
                anyhow::ensure!(self.inner_steps > 0, "--inner-steps must be positive");
                Recipe::NullText {
                    steps: self.steps,
                    guidance: self.guidance,
                    inner_steps: self.inner_steps,
                }
            }
            RecipeKind::Noise => {
                anyhow::ensure!(
                    !self.timesteps.is_empty(),
                    "--timesteps needs at least one value"
                );
                Recipe::Noise {
                    timesteps: self.timesteps.clone(),
                    seed: self.seed,
                }
            }
        };
        Ok(TeacherConfig {
            recipe,
            image_size: self.image_size,
            attn_res: self.attn_res,
            map_size: self.map_size,
        })
    }
}
