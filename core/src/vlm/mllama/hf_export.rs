//! The student written back as a Hugging Face checkpoint ([`crate::checkpoint`]): what a full
//! fine-tune (or pre-training from scratch) saves, so that transformers, `lavender` and LoRA
//! runs load the result like any released model.

use burn::tensor::Device;

use super::model::MllamaModel;
use crate::checkpoint::{NamedTensor, safetensors_bytes, stored_tensors};

/// Every named parameter of `model` in transformers' layout, sorted by name. Fails on a model
/// that carries LoRA factors (merge them first).
pub fn hf_tensors(model: &MllamaModel) -> Result<Vec<NamedTensor>, String> {
    if model.lora_settings().is_some() {
        return Err("the model carries LoRA factors; merge them first".into());
    }
    stored_tensors(model, |weights| {
        MllamaModel::from_weights(model.config.clone(), weights, &Device::flex())
    })
}

/// [`hf_tensors`] as the bytes of a `model.safetensors`.
pub fn hf_safetensors(model: &MllamaModel) -> Result<Vec<u8>, String> {
    safetensors_bytes(&hf_tensors(model)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checkpoint::tests::assert_same_checkpoint, testing::mllama_tiny_dir};

    /// The fixture (written by transformers) loaded and written back is the fixture: every
    /// tensor under its name, with its shape and exactly its values.
    #[test]
    fn a_loaded_checkpoint_is_written_back_as_it_was() {
        let dir = mllama_tiny_dir();
        let model = MllamaModel::load(&dir, None, &Device::flex()).unwrap();
        let written = hf_safetensors(&model).unwrap();
        assert_same_checkpoint(&written, &dir.join("model.safetensors"));
    }
}
