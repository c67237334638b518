//! The Stable Diffusion v1.x teacher: CLIP text encoder, VAE, UNet with cross-attention
//! capture, DDIM, and the per-word attention recipe. Models load from a diffusers folder
//! (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) with diffusers' key names.

pub mod attention;
pub mod clip_text;
pub mod null_text;
pub mod preprocess;
pub mod resnet;
pub mod sampling;
pub mod save;
pub mod scheduler;
pub mod teacher;
pub mod tokenizer;
pub mod training;
pub mod unet;
pub mod vae;
