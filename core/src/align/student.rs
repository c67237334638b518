//! What the method needs from a student model, defined here so that the method depends on no
//! model: a model family implements [`StudentVlm`] (Llama-3.2-Vision in `vlm::mllama`), and
//! everything in `align` works on what it returns.

use burn::tensor::Tensor;

use super::grid::TileGeometry;

/// The label of a position the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Which tokens of a training conversation the cross-entropy learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Supervision {
    /// The assistant's answers and their end tokens: what the reference's collators intend.
    #[default]
    Answers,
    /// Every token but the assistant headers, padding and image tokens: what the reference's
    /// Flickr30k and RLAIF-V collators actually do (their prompt test never fires), and so
    /// what the paper's runs on those datasets learned.
    All,
}

/// A student's text-to-image attention for one sequence, with what places it on the image.
#[derive(Debug, Clone)]
pub struct TextToImageAttention {
    /// `(layer index, [heads, seq, image keys])` softmax probabilities of each aligned layer.
    pub layers: Vec<(usize, Tensor<3>)>,
    /// How the image keys were cut into tiles and patches.
    pub geometry: TileGeometry,
}

/// What the method needs from a model family: one forward pass giving the logits and the
/// attention of the layers it aligns.
pub trait StudentVlm {
    /// An image and a conversation, ready for the model.
    type Prepared;

    /// Logits `[1, seq, vocab]` and the text-to-image attention of the same pass.
    fn forward_with_attention(
        &self,
        prepared: &Self::Prepared,
    ) -> (Tensor<3>, TextToImageAttention);
}
