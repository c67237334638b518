//! The whole Llama-3.2-Vision model: vision tower, projector and text decoder, loaded from a
//! Hugging Face folder (one file or shards with `model.safetensors.index.json`), optionally
//! with a PEFT LoRA adapter merged into its weights.

use std::path::Path;

use burn::{
    module::Module,
    tensor::{Device, Int, Tensor},
};

use super::{
    config::MllamaConfig,
    text::MllamaTextModel,
    vision::{MllamaVisionModel, MultiModalProjector},
};
use crate::{
    adapters::{
        lora::{LoraModel, LoraSettings},
        peft::PeftAdapter,
    },
    weights::{LoadError, Weights, component_weight_files},
};

/// transformers' `MllamaForConditionalGeneration`: the vision encoder and the projector turn the
/// processor's pixels `[batch, images, tiles, 3, size, size]` into the image states
/// `[images x tiles, tokens_per_tile, text hidden]` ([`MllamaModel::image_states`]; 560 px tiles
/// of 40x40 patches plus a class token, 1601 tokens, for the 11B model), and the text decoder
/// gives logits `[batch, seq, vocab]`, its gated cross-attention layers reading those states.
/// Weights keep the released checkpoints' key names.
#[derive(Module, Debug)]
pub struct MllamaModel {
    #[module(skip)]
    pub config: MllamaConfig,
    /// `vision_model.*`.
    pub vision: MllamaVisionModel,
    /// `multi_modal_projector.*`.
    pub projector: MultiModalProjector,
    /// `language_model.*`.
    pub text: MllamaTextModel,
    /// The LoRA this model carries ([`crate::adapters::lora::apply_lora`]); `None` for a dense
    /// model.
    #[module(skip)]
    pub(crate) lora: Option<LoraSettings>,
}

impl MllamaModel {
    /// Loads `folder`; with `adapter`, merges that PEFT LoRA folder into the weights first.
    pub fn load(folder: &Path, adapter: Option<&Path>, device: &Device) -> Result<Self, LoadError> {
        let config = MllamaConfig::load(folder)?;
        let mut weights = Weights::from_files(&component_weight_files(folder)?)?;
        if let Some(adapter) = adapter {
            let adapter_error = |error: LoadError| LoadError::Config {
                path: adapter.to_path_buf(),
                reason: format!("{error}"),
            };
            PeftAdapter::load(adapter)
                .and_then(|peft| peft.merge_into(&mut weights, released_key))
                .map_err(adapter_error)?;
        }
        Self::from_weights(config, &weights, device)
    }

    pub fn from_weights(
        config: MllamaConfig,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let vision = MllamaVisionModel::from_weights(
            &config.vision_config,
            weights,
            "vision_model",
            device,
        )?;
        let projector = MultiModalProjector::from_weights(
            weights,
            "multi_modal_projector",
            config.vision_config.vision_output_dim,
            config.text_config.hidden_size,
            device,
        )?;
        let text =
            MllamaTextModel::from_weights(&config.text_config, weights, "language_model", device)?;
        Ok(Self {
            config,
            vision,
            projector,
            text,
            lora: None,
        })
    }

    /// The rank, alpha and targets of the LoRA factors this model carries, if any.
    pub fn lora_settings(&self) -> Option<&LoraSettings> {
        self.lora.as_ref()
    }

    /// The states the cross-attention layers read, `[images x tiles, tokens_per_tile, hidden]`,
    /// from the processor's `pixel_values` `[batch, images, tiles, 3, size, size]`.
    pub fn image_states(
        &self,
        pixel_values: Tensor<6>,
        aspect_ratio_ids: Tensor<2, Int>,
        aspect_ratio_mask: Tensor<3, Int>,
    ) -> Tensor<3> {
        self.projector.forward(self.vision.forward(
            pixel_values,
            aspect_ratio_ids,
            aspect_ratio_mask,
        ))
    }
}

/// LoRA on Mllama: its key names in the released checkpoints and in PEFT's current files.
impl LoraModel for MllamaModel {
    fn lora(&self) -> Option<&LoraSettings> {
        self.lora.as_ref()
    }

    fn set_lora(&mut self, lora: Option<LoraSettings>) {
        self.lora = lora;
    }

    fn checkpoint_module(burn_path: &str) -> String {
        released_module(burn_path)
    }

    fn released_key(name: &str) -> String {
        released_key(name)
    }

    /// peft 0.21 saves and loads transformers 5's names for `MllamaForConditionalGeneration`.
    fn peft_module(released: &str) -> String {
        transformers5_key(released)
    }
}

/// The checkpoint key prefixes of transformers 5 and of the released checkpoints (transformers
/// 4.x), one table for both directions.
const KEY_PREFIXES: [(&str, &str); 4] = [
    ("model.vision_model.", "vision_model."),
    ("model.language_model.", "language_model.model."),
    ("model.multi_modal_projector", "multi_modal_projector"),
    ("lm_head", "language_model.lm_head"),
];

/// A transformers 5 key or module name (`model.language_model.layers.0...`) in the released
/// checkpoints' naming (`language_model.model.layers.0...`); other names are kept.
pub fn released_key(name: &str) -> String {
    swap_prefix(name, |(transformers5, released)| (transformers5, released))
}

/// A released checkpoint key or module name in transformers 5's naming; the inverse of
/// [`released_key`].
pub fn transformers5_key(name: &str) -> String {
    swap_prefix(name, |(transformers5, released)| (released, transformers5))
}

fn swap_prefix(
    name: &str,
    direction: fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> String {
    for pair in KEY_PREFIXES {
        let (from, to) = direction(pair);
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    name.to_string()
}

/// A Burn module path (`text.layers.1.CrossAttention.cross_attn.q_proj`) to the released
/// checkpoints' module name (`language_model.model.layers.1.cross_attn.q_proj`).
fn released_module(burn_path: &str) -> String {
    let segments: Vec<&str> = burn_path.split('.').collect();
    match segments.as_slice() {
        ["vision", rest @ ..] => format!("vision_model.{}", rest.join(".")),
        ["projector", "linear"] => "multi_modal_projector".into(),
        ["projector", rest @ ..] => format!("multi_modal_projector.{}", rest.join(".")),
        ["text", "lm_head"] => "language_model.lm_head".into(),
        // The decoder layer enum's variant name is a path segment in Burn, not in PyTorch.
        ["text", "layers", index, _variant, rest @ ..] => {
            format!("language_model.model.layers.{index}.{}", rest.join("."))
        }
        ["text", rest @ ..] => format!("language_model.model.{}", rest.join(".")),
        _ => burn_path.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        testing::{
            assert_close, device, golden_int, mllama_golden_ids as golden_tokens,
            mllama_golden_path, mllama_tiny_dir,
        },
        vlm::mllama::text::{KvCache, Sampler},
    };

    pub(crate) struct Inputs {
        pub(crate) states: Tensor<3>,
        pub(crate) input_ids: Tensor<2, Int>,
        pub(crate) ids: Vec<u32>,
        pub(crate) mask: Tensor<4>,
    }

    /// The golden prompt through `model`'s vision tower, on `model`'s device.
    pub(crate) fn inputs(model: &MllamaModel) -> Inputs {
        let golden_path = mllama_golden_path();
        let golden = Weights::from_files(&[&golden_path]).unwrap();
        let d = model.devices()[0].clone();
        let pixels = golden
            .tensor("pixel_values", [1, 1, 4, 3, 56, 56], &d)
            .unwrap();
        let states = model.image_states(
            pixels,
            golden_int(&golden_path, "aspect_ratio_ids", &d),
            golden_int(&golden_path, "aspect_ratio_mask", &d),
        );
        let input_ids: Tensor<2, Int> = golden_int(&golden_path, "input_ids", &d);
        let ids = input_ids
            .clone()
            .into_data()
            .iter::<i64>()
            .map(|id| id as u32)
            .collect();
        let mask = golden_int::<4>(&golden_path, "cross_attention_mask", &d).float();
        Inputs {
            states,
            input_ids,
            ids,
            mask,
        }
    }

    /// Logits of one pass over the whole prompt, without cache reuse or capture.
    pub(crate) fn full_pass_logits(model: &MllamaModel, inputs: &Inputs) -> Tensor<3> {
        model
            .text
            .forward(
                inputs.input_ids.clone(),
                Some(inputs.states.clone()),
                Some(inputs.mask.clone()),
                &mut KvCache::new(),
                false,
            )
            .logits
    }

    /// Image -> vision -> projector -> text, end to end, against transformers.
    #[test]
    fn full_model_matches_transformers() {
        let model = MllamaModel::load(&mllama_tiny_dir(), None, &device()).unwrap();
        let inputs = inputs(&model);
        let logits = full_pass_logits(&model, &inputs);
        let golden = Weights::from_files(&[mllama_golden_path()]).unwrap();
        let expected = golden.tensor("logits", [1, 29, 374], &device()).unwrap();
        assert_close("logits", logits, expected, 1e-4);
        let stops = model.config.text_config.stop_tokens();
        let generated = model.text.generate(
            &inputs.ids,
            Some(inputs.states),
            Some(inputs.mask),
            16,
            &stops,
            &Sampler::greedy(),
        );
        assert_eq!(generated, golden_tokens("generated_stop"));
    }

    /// The PEFT adapter merged into the base weights gives peft's logits and greedy tokens.
    #[test]
    fn adapter_matches_peft() {
        let dir = mllama_tiny_dir();
        let model = MllamaModel::load(&dir, Some(&dir.join("adapter")), &device()).unwrap();
        let inputs = inputs(&model);
        let logits = full_pass_logits(&model, &inputs);
        let golden = Weights::from_files(&[dir.join("golden.safetensors")]).unwrap();
        let expected = golden
            .tensor("logits_adapter", [1, 29, 374], &device())
            .unwrap();
        assert_close("logits with adapter", logits, expected, 1e-4);
        let generated = model.text.generate(
            &inputs.ids,
            Some(inputs.states),
            Some(inputs.mask),
            16,
            &[],
            &Sampler::greedy(),
        );
        assert_eq!(generated, golden_tokens("generated_adapter"));
    }

    #[test]
    fn adapter_for_another_model_is_refused_by_name() {
        let dir = mllama_tiny_dir();
        let error = MllamaModel::load(
            &dir,
            Some(&crate::testing::sd_tiny_dir().join("unet")),
            &device(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("adapter_config.json"), "{error}");
    }

    #[test]
    fn transformers_5_names_map_to_released_keys() {
        assert_eq!(
            released_key("model.language_model.layers.0.self_attn.q_proj.weight"),
            "language_model.model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(
            released_key("lm_head.weight"),
            "language_model.lm_head.weight"
        );
        assert_eq!(
            released_key("vision_model.patch_embedding.weight"),
            "vision_model.patch_embedding.weight"
        );
    }
}
