//! Llama-3.2-Vision as a student: model, processor and prompt together, from one folder. Turns
//! an image and a conversation into model inputs, generates, and captures the cross-attention
//! that Lavender aligns, placed on the image grid: the family's implementation of the method's
//! [`StudentVlm`], so it lives with the model.

use std::path::Path;

use burn::{
    module::Module,
    tensor::{Device, Tensor},
};
use image::RgbImage;

use super::{
    batch::SampleInputs,
    config::MllamaConfig,
    model::MllamaModel,
    processor::{MllamaImageProcessor, PreprocessError, ProcessedImage},
    prompt::{Message, MllamaPrompt, PromptError, PromptInputs},
    text::{KvCache, Sampler},
};
use crate::{
    align::{
        grid::TileGeometry,
        student::{StudentVlm, Supervision, TextToImageAttention},
    },
    weights::{FileSource, LoadError, Weights},
};

#[derive(Debug, thiserror::Error)]
pub enum StudentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the image: {0}")]
    Image(#[from] PreprocessError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{0}")]
    Input(String),
}

/// One image and conversation, ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub inputs: PromptInputs,
    pub image: ProcessedImage,
    /// `[tiles, tokens_per_tile, hidden]`: what the cross-attention layers read.
    pub states: Tensor<3>,
    /// `[1, seq, 1, max_tiles]` of 0/1.
    pub mask: Tensor<4>,
}

/// A Burn module whose parameters are the model's, so a trainer can hold it (with the
/// tokenizer and processor it needs for its inputs) inside the module it optimises.
#[derive(Module, Debug)]
pub struct Mllama {
    pub model: MllamaModel,
    #[module(skip)]
    pub prompt: MllamaPrompt,
    #[module(skip)]
    pub processor: MllamaImageProcessor,
    #[module(skip)]
    device: Device,
}

impl Mllama {
    /// Loads `folder` (config, weights, tokenizer, chat template, processor config), with an
    /// optional PEFT LoRA adapter merged in.
    pub fn load(
        folder: &Path,
        adapter: Option<&Path>,
        device: &Device,
    ) -> Result<Self, StudentError> {
        for file in ["config.json", "tokenizer.json"] {
            if !folder.join(file).is_file() {
                return Err(StudentError::Load(LoadError::Config {
                    path: folder.to_path_buf(),
                    reason: format!("missing {file}: not a Hugging Face Mllama folder"),
                }));
            }
        }
        let model = MllamaModel::load(folder, adapter, device)?;
        Ok(Self::assemble(model, &FileSource::Folder(folder))?)
    }

    /// A model of `folder`'s config.json with fresh weights ([`Weights::fresh`], drawn from the
    /// device's seeded generator) for training from scratch, with the folder's tokenizer, chat
    /// template and processor; the folder needs no safetensors.
    pub fn from_scratch(folder: &Path, device: &Device) -> Result<Self, StudentError> {
        let config = MllamaConfig::load(folder)?;
        let model = MllamaModel::from_weights(config, &Weights::fresh(), device)?;
        Ok(Self::assemble(model, &FileSource::Folder(folder))?)
    }

    /// The student of `model` with the tokenizer, chat template and processor of `source`.
    pub(crate) fn assemble(model: MllamaModel, source: &FileSource<'_>) -> Result<Self, LoadError> {
        let prompt = MllamaPrompt::from_source(source)?;
        let processor = MllamaImageProcessor::from_source(source)?;
        if prompt.image_token_id() != model.config.image_token_index {
            return Err(LoadError::Config {
                path: source.path("tokenizer.json"),
                reason: format!(
                    "the tokenizer's <|image|> is {}, the config's image_token_index {}",
                    prompt.image_token_id(),
                    model.config.image_token_index
                ),
            });
        }
        let vision = &model.config.vision_config;
        if processor.tile_size() != vision.image_size
            || processor.max_image_tiles != vision.max_num_tiles
        {
            return Err(LoadError::Config {
                path: source.path("preprocessor_config.json"),
                reason: format!(
                    "tiles of {} pixels, at most {}, but the vision model takes {} pixels, at most {}",
                    processor.tile_size(),
                    processor.max_image_tiles,
                    vision.image_size,
                    vision.max_num_tiles
                ),
            });
        }
        let device = model.devices()[0].clone();
        Ok(Self {
            model,
            prompt,
            processor,
            device,
        })
    }

    /// Processes the image, renders and tokenizes the conversation, and runs the vision tower.
    pub fn prepare(
        &self,
        image: &RgbImage,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Prepared, StudentError> {
        self.prepare_with(image, |processed| {
            let rendered = self.prompt.render(messages, add_generation_prompt)?;
            Ok(self.prompt.encode(
                &rendered,
                &[processed.num_tiles],
                processed.aspect_ratio_mask.len(),
                self.model.config.text_config.max_position_embeddings,
            )?)
        })
    }

    /// A whole conversation (answers included) for training: [`prepare`](Self::prepare)
    /// without the generation prompt, and one label per input id (-100 outside the assistant's
    /// turns, see [`super::labels`]).
    pub fn prepare_conversation(
        &self,
        image: &RgbImage,
        messages: &[Message],
    ) -> Result<(Prepared, Vec<i64>), StudentError> {
        self.prepare_supervised(image, messages, Supervision::Answers)
    }

    /// [`Mllama::prepare_conversation`] with the labels of `supervision`.
    pub fn prepare_supervised(
        &self,
        image: &RgbImage,
        messages: &[Message],
        supervision: Supervision,
    ) -> Result<(Prepared, Vec<i64>), StudentError> {
        let (sample, labels) = self.process_supervised(image, messages, supervision)?;
        Ok((self.run_vision(sample), labels))
    }

    /// Processes the image, tokenizes with `encode` (given the processed image) and runs the
    /// vision tower.
    fn prepare_with(
        &self,
        image: &RgbImage,
        encode: impl FnOnce(&ProcessedImage) -> Result<PromptInputs, StudentError>,
    ) -> Result<Prepared, StudentError> {
        let processed = self.process_image(image)?;
        let inputs = encode(&processed)?;
        Ok(self.run_vision(SampleInputs {
            inputs,
            image: processed,
        }))
    }

    /// A processed sample with its vision tower run: ready for the decoder.
    fn run_vision(&self, sample: SampleInputs) -> Prepared {
        let states = self.batch_image_states(&[&sample]);
        let SampleInputs { inputs, image } = sample;
        let mask = inputs.cross_attention_mask_tensor(&self.device).float();
        Prepared {
            inputs,
            image,
            states,
            mask,
        }
    }

    /// The image as the processor tiles it, on the model's device.
    pub(crate) fn process_image(&self, image: &RgbImage) -> Result<ProcessedImage, StudentError> {
        let vision = &self.model.config.vision_config;
        Ok(self
            .processor
            .preprocess(image, &vision.supported_aspect_ratios, &self.device)?)
    }

    /// Generates after the prepared prompt, calling `on_token` as tokens come; stops at the
    /// config's stop tokens (the stop token is returned last).
    pub fn generate(
        &self,
        prepared: &Prepared,
        max_new_tokens: usize,
        sampler: &Sampler,
        on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, StudentError> {
        let text = &self.model.config.text_config;
        let room = text
            .max_position_embeddings
            .saturating_sub(prepared.inputs.input_ids.len());
        if max_new_tokens > room {
            return Err(StudentError::Input(format!(
                "{max_new_tokens} new tokens do not fit: the prompt has {} of {} positions",
                prepared.inputs.input_ids.len(),
                text.max_position_embeddings
            )));
        }
        Ok(self.model.text.generate_streaming(
            &prepared.inputs.input_ids,
            Some(prepared.states.clone()),
            Some(prepared.mask.clone()),
            max_new_tokens,
            &text.stop_tokens(),
            sampler,
            on_token,
        ))
    }

    /// The cross-attention probabilities of every cross-attention layer for the prepared
    /// sequence: `(layer, [heads, seq, max_tiles * tokens_per_tile])`.
    pub fn cross_attention(&self, prepared: &Prepared) -> Vec<(usize, Tensor<3>)> {
        self.forward_with_attention(prepared).1.layers
    }

    /// The same student with its model replaced by `change(model)` (LoRA factors applied,
    /// merged, moved): the tokenizer, processor and device stay.
    pub fn try_map_model<E>(
        self,
        change: impl FnOnce(MllamaModel) -> Result<MllamaModel, E>,
    ) -> Result<Self, E> {
        let Self {
            model,
            prompt,
            processor,
            device,
        } = self;
        Ok(Self {
            model: change(model)?,
            prompt,
            processor,
            device,
        })
    }

    /// The same student on `device` (weights copied there, possibly to another backend).
    pub fn into_device(self, device: &Device) -> Self {
        let Self {
            model,
            prompt,
            processor,
            ..
        } = self;
        Self {
            model: model.to_device(device),
            prompt,
            processor,
            device: device.clone(),
        }
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tile layout of the prepared image.
    pub fn geometry(&self, prepared: &Prepared) -> TileGeometry {
        self.geometry_of(&prepared.image)
    }

    /// The tile layout of a processed image.
    pub fn geometry_of(&self, image: &ProcessedImage) -> TileGeometry {
        TileGeometry {
            tokens_per_tile: self.model.config.vision_config.tokens_per_tile(),
            max_tiles: image.aspect_ratio_mask.len(),
            tiles: image.tiles,
            tile_size: self.processor.tile_size(),
            resized: image.resized,
        }
    }
}

/// The decoder's captured cross-attention, `(layer, [1, heads, seq, keys])` of a batch of
/// one, as `(layer, [heads, seq, keys])`.
pub(crate) fn per_layer_attention(captured: Vec<(usize, Tensor<4>)>) -> Vec<(usize, Tensor<3>)> {
    captured
        .into_iter()
        .map(|(layer, probs)| {
            let [_, heads, seq, keys] = probs.dims();
            (layer, probs.reshape([heads, seq, keys]))
        })
        .collect()
}

impl StudentVlm for Mllama {
    type Prepared = Prepared;

    fn forward_with_attention(&self, prepared: &Prepared) -> (Tensor<3>, TextToImageAttention) {
        let output = self.model.text.forward(
            prepared.inputs.input_ids_tensor(&self.device),
            Some(prepared.states.clone()),
            Some(prepared.mask.clone()),
            &mut KvCache::new(),
            true,
        );
        let attention = TextToImageAttention {
            layers: per_layer_attention(output.cross_attention),
            geometry: self.geometry(prepared),
        };
        (output.logits, attention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::grid::GridMode;
    use crate::testing::{device, mllama_golden_ids, mllama_golden_path, mllama_tiny_dir};

    fn student() -> Mllama {
        Mllama::load(&mllama_tiny_dir(), None, &device()).unwrap()
    }

    /// The fixture image with the fixture question, prepared by `student`.
    fn prepared(student: &Mllama) -> Prepared {
        let image = image::open(mllama_tiny_dir().join("image.png"))
            .unwrap()
            .to_rgb8();
        student
            .prepare(
                &image,
                &[Message::user_with_image("What is in the picture?")],
                true,
            )
            .unwrap()
    }

    /// The whole path from an image file and a question to transformers' greedy answer.
    #[test]
    fn image_and_question_give_the_reference_answer() {
        let student = student();
        let prepared = prepared(&student);
        let mut streamed = Vec::new();
        let tokens = student
            .generate(&prepared, 16, &Sampler::greedy(), |token| {
                streamed.push(token)
            })
            .unwrap();
        let expected = mllama_golden_ids("generated_stop");
        assert_eq!(tokens, expected);
        assert_eq!(streamed, expected);

        let attention = student.cross_attention(&prepared);
        assert_eq!(
            attention
                .iter()
                .map(|(layer, _)| *layer)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        let maps = student.grid_maps(&prepared, &attention, 8, GridMode::Corrected);
        assert_eq!(maps.dims(), [29, 8, 8]);
        // Each query's probabilities over patches are positive and at most 1 after the
        // class tokens are dropped.
        let values: Vec<f32> = maps.into_data().try_to_vec().unwrap();
        assert!(values.iter().all(|&v| v > 0.0 && v <= 1.0));
    }

    /// The family-independent interface: one pass, transformers' logits, attention with geometry.
    #[test]
    fn student_interface_gives_logits_and_placed_attention() {
        let student = student();
        let prepared = prepared(&student);
        let (logits, attention) = student.forward_with_attention(&prepared);
        let golden = crate::weights::Weights::from_files(&[mllama_golden_path()]).unwrap();
        let expected = golden.tensor("logits", [1, 29, 374], &device()).unwrap();
        crate::testing::assert_close("logits via StudentVlm", logits, expected, 1e-4);
        assert_eq!(attention.geometry.tiles, [1, 2]);
        assert_eq!(attention.geometry.resized, [50, 100]);
        assert_eq!(attention.layers.len(), 2);
    }

    #[test]
    fn too_many_new_tokens_is_an_error() {
        let student = student();
        let prepared = prepared(&student);
        let error = student
            .generate(&prepared, 1000, &Sampler::greedy(), |_| {})
            .unwrap_err();
        assert!(error.to_string().contains("do not fit"), "{error}");
    }

    #[test]
    fn a_folder_without_a_model_is_named() {
        let error = Mllama::load(&crate::testing::sd_tiny_dir(), None, &device()).unwrap_err();
        assert!(error.to_string().contains("missing config.json"), "{error}");
    }
}
