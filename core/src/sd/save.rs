//! The teacher's parts written back in diffusers layout ([`crate::checkpoint`]): a UNet's,
//! VAE's or text encoder's parameters under the names diffusers and transformers load, so a
//! teacher trained here is a `StableDiffusionPipeline` folder like a released one.

use burn::tensor::Device;

use super::{
    clip_text::ClipTextModel,
    unet::{UNet2DConditionModel, UNetConfig},
    vae::AutoencoderKl,
};
use crate::checkpoint::{NamedTensor, stored_tensors};

/// `unet/diffusion_pytorch_model.safetensors`'s tensors; `config` is the one `unet` was built
/// from.
pub fn unet_tensors(
    unet: &UNet2DConditionModel,
    config: &UNetConfig,
) -> Result<Vec<NamedTensor>, String> {
    stored_tensors(unet, |weights| {
        UNet2DConditionModel::from_weights(config, weights, &Device::flex())
    })
}

/// `vae/diffusion_pytorch_model.safetensors`'s tensors.
pub fn vae_tensors(vae: &AutoencoderKl) -> Result<Vec<NamedTensor>, String> {
    stored_tensors(vae, |weights| {
        AutoencoderKl::from_weights(vae.config().clone(), weights, &Device::flex())
    })
}

/// `text_encoder/model.safetensors`'s tensors (keys under `text_model.`, as SD v1.x's).
pub fn text_encoder_tensors(encoder: &ClipTextModel) -> Result<Vec<NamedTensor>, String> {
    stored_tensors(encoder, |weights| {
        ClipTextModel::from_weights(weights, encoder.config().clone(), &Device::flex())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        checkpoint::{safetensors_bytes, tests::assert_same_checkpoint},
        testing::sd_tiny_dir,
    };

    /// Each part of the fixture (written by diffusers and transformers), loaded and written
    /// back, is its file: every tensor, name, shape and value.
    #[test]
    fn the_fixture_parts_are_written_back_as_they_were() {
        let dir = sd_tiny_dir();
        let device = Device::flex();
        let unet = UNet2DConditionModel::load(&dir.join("unet"), &device).unwrap();
        let config = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
        assert_same_checkpoint(
            &safetensors_bytes(&unet_tensors(&unet, &config).unwrap()).unwrap(),
            &dir.join("unet/diffusion_pytorch_model.safetensors"),
        );
        let vae = AutoencoderKl::load(&dir.join("vae"), &device).unwrap();
        assert_same_checkpoint(
            &safetensors_bytes(&vae_tensors(&vae).unwrap()).unwrap(),
            &dir.join("vae/diffusion_pytorch_model.safetensors"),
        );
        let encoder = ClipTextModel::load(&dir.join("text_encoder"), &device).unwrap();
        assert_same_checkpoint(
            &safetensors_bytes(&text_encoder_tensors(&encoder).unwrap()).unwrap(),
            &dir.join("text_encoder/model.safetensors"),
        );
    }
}
