//! Several samples through the student in one computation: a right-padded batch.
//!
//! Text is padded on the right to the longest sample. The decoder's self-attention is causal,
//! so a real token never sees the padding after it and needs no padding mask; its rotary
//! positions are `0..len` as alone. Padding rows see no tile (their cross-attention mask is 0,
//! so transformers' `full_text_row_masked_out_mask` zeroes their cross-attention output), and
//! their logits and attention rows are dropped before the loss. Images are stacked
//! `[batch, 1, max_tiles, ...]` with each sample's aspect-ratio id and tile mask, so samples
//! with different tile counts share a batch. What each sample gets back is what a batch of one
//! gives: its logits `[1, len, vocab]` and its captured attention, placed on its own tile
//! layout.

use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;

use super::{
    processor::ProcessedImage,
    prompt::{Message, PromptInputs},
    student::{Mllama, StudentError, per_layer_attention},
    text::KvCache,
};
use crate::align::student::{Supervision, TextToImageAttention};

/// One sample's model inputs before the towers run: its tokens and its processed image.
#[derive(Debug, Clone)]
pub struct SampleInputs {
    pub inputs: PromptInputs,
    pub image: ProcessedImage,
}

impl SampleInputs {
    /// Text positions.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

impl Mllama {
    /// A whole conversation for training, processed but not yet run: the tokens (answers
    /// included), the image's tiles, and one label per input id (see
    /// [`Mllama::prepare_supervised`], which also runs the vision tower).
    pub fn process_supervised(
        &self,
        image: &RgbImage,
        messages: &[Message],
        supervision: Supervision,
    ) -> Result<(SampleInputs, Vec<i64>), StudentError> {
        let processed = self.process_image(image)?;
        let (inputs, labels) = self.prompt.encode_conversation(
            messages,
            supervision,
            &[processed.num_tiles],
            processed.aspect_ratio_mask.len(),
            self.model.config.text_config.max_position_embeddings,
        )?;
        Ok((
            SampleInputs {
                inputs,
                image: processed,
            },
            labels,
        ))
    }

    /// The vision tower over the images of `samples`, stacked: `[batch * max_tiles,
    /// tokens_per_tile, hidden]`, sample by sample (what the cross-attention layers read).
    pub fn batch_image_states(&self, samples: &[&SampleInputs]) -> Tensor<3> {
        let device = self.device();
        let batch = samples.len();
        let pixel_values: Vec<Tensor<4>> = samples
            .iter()
            .map(|sample| sample.image.pixel_values.clone())
            .collect();
        let [tiles, channels, height, width] = pixel_values[0].dims();
        let pixel_values =
            Tensor::stack::<5>(pixel_values, 0).reshape([batch, 1, tiles, channels, height, width]);
        let ids: Vec<i64> = samples
            .iter()
            .map(|sample| sample.image.aspect_ratio_id as i64)
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 1]), device);
        let tile_mask: Vec<i64> = samples
            .iter()
            .flat_map(|sample| {
                sample
                    .image
                    .aspect_ratio_mask
                    .iter()
                    .map(|&on| i64::from(on))
            })
            .collect();
        let tile_mask =
            Tensor::<3, Int>::from_data(TensorData::new(tile_mask, [batch, 1, tiles]), device);
        self.model.image_states(pixel_values, ids, tile_mask)
    }

    /// Logits `[1, len, vocab]` and the placed cross-attention of every sample, from one
    /// forward pass over the right-padded batch (module docs). The attention is computed with
    /// an explicit softmax (it is captured), as [`StudentVlm::forward_with_attention`] does.
    ///
    /// [`StudentVlm::forward_with_attention`]: crate::align::student::StudentVlm::forward_with_attention
    pub fn forward_batch_with_attention(
        &self,
        samples: &[&SampleInputs],
    ) -> Vec<(Tensor<3>, TextToImageAttention)> {
        if samples.is_empty() {
            return Vec::new();
        }
        let device = self.device();
        let batch = samples.len();
        let longest = samples.iter().map(|s| s.len()).max().unwrap_or(0);
        let tiles = samples[0].inputs.max_num_tiles;
        let pad = i64::from(self.model.config.text_config.pad_token_id.unwrap_or(0));
        let mut ids = Vec::with_capacity(batch * longest);
        let mut mask = Vec::with_capacity(batch * longest * tiles);
        for sample in samples {
            let inputs = &sample.inputs;
            assert_eq!(
                (inputs.num_images, inputs.max_num_tiles),
                (1, tiles),
                "a batch holds one image per sample, all with the same tile slots"
            );
            ids.extend(inputs.input_ids.iter().map(|&id| i64::from(id)));
            ids.extend(std::iter::repeat_n(pad, longest - inputs.len()));
            mask.extend(inputs.cross_attention_mask.iter().map(|&m| i64::from(m)));
            mask.extend(std::iter::repeat_n(0, (longest - inputs.len()) * tiles));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, longest]), device);
        let mask =
            Tensor::<4, Int>::from_data(TensorData::new(mask, [batch, longest, 1, tiles]), device)
                .float();
        let states = self.batch_image_states(samples);
        let output =
            self.model
                .text
                .forward(ids, Some(states), Some(mask), &mut KvCache::new(), true);
        samples
            .iter()
            .enumerate()
            .map(|(index, sample)| {
                let len = sample.len();
                let logits = output.logits.clone().narrow(0, index, 1).narrow(1, 0, len);
                let captured = output
                    .cross_attention
                    .iter()
                    .map(|(layer, probs)| {
                        (*layer, probs.clone().narrow(0, index, 1).narrow(2, 0, len))
                    })
                    .collect();
                let attention = TextToImageAttention {
                    layers: per_layer_attention(captured),
                    geometry: self.geometry_of(&sample.image),
                };
                (logits, attention)
            })
            .collect()
    }
}
