//! A whole answer's per-word maps, as `lavender attend` draws them: the cross-attention averaged
//! over heads and layers, placed on the image grid, read at the positions that predict each
//! word.

use burn::tensor::Tensor;

use image::RgbImage;

use crate::{
    align::grid::{GridMode, attention_to_grid, legacy_attention_to_grid},
    maps::words::{group_words, word_maps},
    vlm::mllama::{
        prompt::Message,
        student::{Mllama, Prepared, StudentError},
    },
};

impl Mllama {
    /// Per-token maps `[seq, size, size]`: the cross-attention averaged over heads and layers,
    /// placed on the image grid.
    pub fn grid_maps(
        &self,
        prepared: &Prepared,
        attention: &[(usize, Tensor<3>)],
        size: usize,
        mode: GridMode,
    ) -> Tensor<3> {
        let layers: Vec<Tensor<2>> = attention
            .iter()
            .map(|(_, probs)| {
                let [_, seq, keys] = probs.dims();
                probs.clone().mean_dim(0).reshape([seq, keys])
            })
            .collect();
        let count = layers.len().max(1) as f32;
        let mean = layers
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("Mllama has cross-attention layers")
            .div_scalar(count);
        match mode {
            GridMode::Corrected => attention_to_grid(mean, &self.geometry(prepared), size),
            GridMode::Legacy => legacy_attention_to_grid(
                mean,
                &self.geometry(prepared),
                &prepared.image.aspect_ratio_mask,
                size,
            ),
        }
    }

    /// Per-word maps of an answer: `prepared` holds the conversation with the answer as the
    /// assistant's turn, `answer` its token positions. A token's map is the head- and layer-mean
    /// grid map of the position that predicts it (the one before it), as training keys them
    /// (`docs/method.md`, "Word keying"): where the model looked while producing the word. Maps are
    /// merged per word and min-max normalised.
    pub fn answer_word_maps(
        &self,
        prepared: &Prepared,
        answer: std::ops::Range<usize>,
        size: usize,
        mode: GridMode,
    ) -> Result<(Vec<String>, Tensor<3>), StudentError> {
        let ids = &prepared.inputs.input_ids;
        if answer.is_empty() || answer.start == 0 || answer.end > ids.len() {
            return Err(StudentError::Input(format!(
                "answer positions {answer:?} are outside the {} tokens",
                ids.len()
            )));
        }
        let texts = ids[answer.clone()]
            .iter()
            .map(|&id| self.prompt.decode(&[id], false))
            .collect::<Result<Vec<_>, _>>()?;
        let groups = group_words(&texts);
        let attention = self.cross_attention(prepared);
        let maps = self.grid_maps(prepared, &attention, size, mode).narrow(
            0,
            answer.start - 1,
            answer.len(),
        );
        Ok((groups.words.clone(), word_maps(maps, &groups)))
    }

    /// Per-word maps of `answer` to `question` about `image` ([`Mllama::answer_word_maps`]):
    /// the conversation with the answer as the assistant's turn, the answer's tokens those
    /// after the generation prompt up to the end of its turn. What `lavender attend` draws and
    /// `lavender point --vlm` scores.
    pub fn answer_maps(
        &self,
        image: &RgbImage,
        question: &str,
        answer: &str,
        size: usize,
        mode: GridMode,
    ) -> Result<(Vec<String>, Tensor<3>), StudentError> {
        if answer.trim().is_empty() {
            return Err(StudentError::Input("the answer is empty".into()));
        }
        let prefix = self
            .prepare(image, &[Message::user_with_image(question)], true)?
            .inputs
            .input_ids;
        let conversation = [
            Message::user_with_image(question),
            Message::text("assistant", answer),
        ];
        let full = self.prepare(image, &conversation, false)?;
        let ids = &full.inputs.input_ids;
        if !ids.starts_with(&prefix) {
            return Err(StudentError::Input(
                "the chat template does not place the answer after its generation prompt".into(),
            ));
        }
        let stops = self.model.config.text_config.stop_tokens();
        let end = ids[prefix.len()..]
            .iter()
            .position(|id| stops.contains(id))
            .map_or(ids.len(), |offset| prefix.len() + offset);
        self.answer_word_maps(&full, prefix.len()..end, size, mode)
    }
}
