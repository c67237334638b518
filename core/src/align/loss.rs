//! The Lavender loss (`docs/method.md`, "The loss"): `CE + lambda * L_att`, where CE is the
//! next-token cross-entropy on the supervised labels and `L_att` the mean over the words both
//! sides have of the per-pixel MSE between the teacher's word map and the student's.
//!
//! Student word maps come from the per-position maps ([`super::student_maps::token_maps`]):
//!
//! - [`Positions::Answer`] (default): the supervised positions only; row `i` is keyed by the
//!   ground-truth token it predicts, `labels[i + 1]`; token texts grouped into lower-cased whole
//!   words by the project's one word rule ([`group_words`]), pieces merged by mean, then
//!   min-max per word.
//! - [`Positions::Reference`]: the reference's `compute_perword_attention_dict`: every row,
//!   keyed by the exact text of its argmax prediction (special tokens -> `""`), not
//!   lower-cased.
//!
//! Words that are empty or punctuation, or whose student map has mean 0, are dropped; with no
//! word left `L_att` is 0 (the reference adds a constant lambda there).

use burn::tensor::{DType, Int, Tensor, TensorData, activation::log_softmax};
use tokenizers::Tokenizer;

use super::{
    aligner::Aligner,
    grid::GridMode,
    student::{IGNORE_INDEX, TextToImageAttention},
    student_maps::{Aggregation, StudentMapsError, token_maps},
    words::teacher_row,
};
use crate::maps::{
    WordMaps,
    words::{WordGroups, group_words, word_maps},
};

/// The reference's loss scale (`sd_xattn_loss_scale`).
pub const DEFAULT_LAMBDA: f64 = 10.0;
/// The side of the maps compared (the teacher stores 32 x 32).
pub const DEFAULT_MAP_SIZE: usize = 32;
/// Which student positions give word maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positions {
    /// Supervised positions keyed by the ground-truth next token, whole lower-cased words.
    #[default]
    Answer,
    /// All positions keyed by the predicted token's exact text, as the reference.
    Reference,
}

/// How the Lavender loss is computed ([`lavender_loss`]); the default is the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// The weight of `L_att` ([`DEFAULT_LAMBDA`]); 0 is plain SFT through the same path.
    pub lambda: f64,
    /// The side `S` of the compared maps `[words, S, S]`: the teacher's must equal it.
    pub map_size: usize,
    /// How the student's attention is placed on the image grid.
    pub grid: GridMode,
    /// How layers and heads become one map per position.
    pub aggregation: Aggregation,
    /// Which positions give the student's word maps, keyed by what.
    pub positions: Positions,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda: DEFAULT_LAMBDA,
            map_size: DEFAULT_MAP_SIZE,
            grid: GridMode::Corrected,
            aggregation: Aggregation::AlignerPerLayer,
            positions: Positions::Answer,
        }
    }
}

/// The loss of one sample and what it was made of.
#[derive(Debug, Clone)]
pub struct LavenderLoss {
    /// `[1]`: `ce + lambda * align`, differentiable.
    pub total: Tensor<1>,
    /// `[1]`: the cross-entropy, f32.
    pub ce: Tensor<1>,
    /// `[1]`: `L_att`, 0 when no word matched.
    pub align: Tensor<1>,
    /// Words that took part in `L_att`.
    pub matched: Vec<String>,
    /// The student's word maps, all words (matched or not).
    pub student: WordMaps,
}

#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("{0}")]
    Shape(String),
    #[error("cannot decode token {id}: {reason}")]
    Decode { id: u32, reason: String },
    #[error(transparent)]
    StudentMaps(#[from] StudentMapsError),
}

/// HF's causal-LM loss of one sequence: `logits` `[1, seq, vocab]` (row `i` predicts
/// `labels[i + 1]`), mean over the labels that are not [`IGNORE_INDEX`], in f32. `[1]`; 0 when
/// nothing is supervised (HF gives NaN there).
pub fn cross_entropy(logits: Tensor<3>, labels: &[i64]) -> Result<Tensor<1>, LossError> {
    let [batch, seq, vocab] = logits.dims();
    if batch != 1 || labels.len() != seq {
        return Err(LossError::Shape(format!(
            "logits {:?} do not fit {} labels of one sequence",
            [batch, seq, vocab],
            labels.len()
        )));
    }
    let (rows, targets): (Vec<i64>, Vec<i64>) = (0..seq.saturating_sub(1))
        .filter(|&i| labels[i + 1] != IGNORE_INDEX)
        .map(|i| (i as i64, labels[i + 1]))
        .unzip();
    if let Some(bad) = targets.iter().find(|&&t| t < 0 || t as usize >= vocab) {
        return Err(LossError::Shape(format!(
            "label {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let device = logits.device();
    if rows.is_empty() {
        return Ok(Tensor::zeros([1], (&device, DType::F32)));
    }
    let count = rows.len();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [count]), &device);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [count, 1]), &device);
    let log_probs = log_softmax(
        logits
            .reshape([seq, vocab])
            .select(0, rows)
            .cast(DType::F32),
        1,
    );
    Ok(log_probs.gather(1, targets).mean().neg())
}

fn decode(tokenizer: &Tokenizer, id: u32) -> Result<String, LossError> {
    tokenizer
        .decode(&[id], true)
        .map_err(|error| LossError::Decode {
            id,
            reason: error.to_string(),
        })
}

/// [`Positions::Answer`] word maps from per-position maps `[seq, s, s]` and the labels.
pub fn answer_word_maps(
    token_maps: Tensor<3>,
    labels: &[i64],
    tokenizer: &Tokenizer,
) -> Result<WordMaps, LossError> {
    check_rows(&token_maps, labels.len())?;
    let keyed: Vec<(usize, u32)> = (0..labels.len().saturating_sub(1))
        .filter(|&i| labels[i + 1] != IGNORE_INDEX)
        .map(|i| (i, labels[i + 1] as u32))
        .collect();
    let texts = keyed
        .iter()
        .map(|&(_, id)| decode(tokenizer, id))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups = group_words(&texts);
    // Members index the keyed positions; the maps are indexed by sequence position.
    for members in &mut groups.members {
        for member in members.iter_mut() {
            *member = keyed[*member].0;
        }
    }
    Ok(WordMaps {
        maps: word_maps(token_maps, &groups),
        words: groups.words,
    })
}

/// [`Positions::Reference`] word maps from per-position maps `[seq, s, s]` and the logits
/// `[1, seq, vocab]` of the same pass.
pub fn reference_word_maps(
    token_maps: Tensor<3>,
    logits: Tensor<3>,
    tokenizer: &Tokenizer,
) -> Result<WordMaps, LossError> {
    let [_, seq, vocab] = logits.dims();
    check_rows(&token_maps, seq)?;
    let predicted: Vec<i64> = logits
        .reshape([seq, vocab])
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|error| LossError::Shape(format!("{error:?}")))?;
    let mut groups = WordGroups::default();
    for (position, &id) in predicted.iter().enumerate() {
        let key = decode(tokenizer, id as u32)?.trim().to_string();
        groups.add(key, [position]);
    }
    Ok(WordMaps {
        maps: word_maps(token_maps, &groups),
        words: groups.words,
    })
}

fn check_rows(token_maps: &Tensor<3>, seq: usize) -> Result<(), LossError> {
    let [rows, _, _] = token_maps.dims();
    if rows != seq {
        return Err(LossError::Shape(format!(
            "{rows} token maps for a sequence of {seq}"
        )));
    }
    Ok(())
}

/// `L_att` `[1]` and the words it used: the mean over words in both `student` and `teacher`
/// (not empty, not punctuation, student map mean not 0) of the per-pixel squared error.
/// Teacher maps are `[words, s, s]` in `[0, 1]`, the student's the same size.
pub fn alignment_loss(
    student: &WordMaps,
    teacher: &WordMaps,
) -> Result<(Tensor<1>, Vec<String>), LossError> {
    let [_, h, w] = student.maps.dims();
    let [_, th, tw] = teacher.maps.dims();
    if [h, w] != [th, tw] {
        return Err(LossError::Shape(format!(
            "student maps are {h}x{w}, teacher maps {th}x{tw}"
        )));
    }
    let device = student.maps.device();
    let zero = || Tensor::<1>::zeros([1], (&device, student.maps.dtype()));
    if student.words.is_empty() {
        return Ok((zero(), Vec::new()));
    }
    // The reference drops maps whose mean is exactly 0 (a map with nothing in it).
    let means: Vec<f32> = student
        .maps
        .clone()
        .reshape([student.words.len(), h * w])
        .mean_dim(1)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|error| LossError::Shape(format!("{error:?}")))?;
    let mut student_rows = Vec::new();
    let mut teacher_rows = Vec::new();
    let mut matched = Vec::new();
    for (row, word) in student.words.iter().enumerate() {
        if means[row] == 0.0 {
            continue;
        }
        if let Some(teacher_row) = teacher_row(&teacher.words, word) {
            student_rows.push(row as i64);
            teacher_rows.push(teacher_row as i64);
            matched.push(word.clone());
        }
    }
    if matched.is_empty() {
        return Ok((zero(), matched));
    }
    let index = |rows: Vec<i64>| {
        let n = rows.len();
        Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device)
    };
    let student_maps = student.maps.clone().select(0, index(student_rows));
    let teacher_maps = teacher.maps.clone().select(0, index(teacher_rows));
    // All maps have h * w pixels, so the mean over pairs of per-pair means is the overall mean.
    let loss = (teacher_maps - student_maps).powi_scalar(2).mean();
    Ok((loss, matched))
}

/// The whole loss of one sample from one forward pass: `logits` `[1, seq, vocab]`, the
/// captured `attention`, one label per position, the teacher's word maps (`[words, s, s]`,
/// `s = config.map_size`), the Aligner (unless the aggregation has none) and the tokenizer.
pub fn lavender_loss(
    logits: Tensor<3>,
    attention: &TextToImageAttention,
    labels: &[i64],
    teacher: &WordMaps,
    aligner: Option<&Aligner>,
    tokenizer: &Tokenizer,
    config: &LossConfig,
) -> Result<LavenderLoss, LossError> {
    let ce = cross_entropy(logits.clone(), labels)?;
    let maps = token_maps(
        attention,
        aligner,
        config.aggregation,
        config.grid,
        config.map_size,
    )?;
    let student = match config.positions {
        Positions::Answer => answer_word_maps(maps, labels, tokenizer)?,
        Positions::Reference => reference_word_maps(maps, logits, tokenizer)?,
    };
    let (align, matched) = alignment_loss(&student, teacher)?;
    let total = ce.clone() + align.clone().cast(DType::F32).mul_scalar(config.lambda);
    Ok(LavenderLoss {
        total,
        ce,
        align,
        matched,
        student,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::device;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// No matching word: L_att is exactly 0 and the total is the cross-entropy, no constant.
    #[test]
    fn no_match_gives_zero_alignment_loss() {
        let device = device();
        let student = WordMaps {
            words: strings(&["dog", ".", ""]),
            maps: Tensor::ones([3, 2, 2], &device),
        };
        let teacher = WordMaps {
            words: strings(&["cat", ".", ""]),
            maps: Tensor::zeros([3, 2, 2], &device),
        };
        let (loss, matched) = alignment_loss(&student, &teacher).unwrap();
        assert!(matched.is_empty());
        assert_eq!(loss.into_scalar::<f32>(), 0.0);

        // A match with a zero-mean student map is dropped too; one real match counts alone.
        let student = WordMaps {
            words: strings(&["dog", "cat"]),
            maps: Tensor::from_floats(
                [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]],
                &device,
            ),
        };
        let teacher = WordMaps {
            words: strings(&["cat", "dog"]),
            maps: Tensor::from_floats(
                [[[0.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]],
                &device,
            ),
        };
        let (loss, matched) = alignment_loss(&student, &teacher).unwrap();
        assert_eq!(matched, strings(&["cat"]));
        assert_eq!(loss.into_scalar::<f32>(), 0.25);
    }

    /// CE by hand: two supervised positions of a 2-token vocabulary.
    #[test]
    fn cross_entropy_is_shifted_and_skips_ignored_labels() {
        let device = device();
        let logits = Tensor::<3>::from_floats([[[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]]], &device);
        let labels = [5, 0, 1];
        let ce: f32 = cross_entropy(logits.clone(), &labels)
            .unwrap()
            .into_scalar();
        // Row 0 predicts 0 of (0, 0): ln 2; row 1 predicts 1 of (2, 0): ln(1 + e^2).
        let expected = (2f32.ln() + (1.0 + 2f32.exp()).ln()) / 2.0;
        assert!((ce - expected).abs() < 1e-6, "{ce} != {expected}");
        let none: f32 = cross_entropy(logits.clone(), &[0, IGNORE_INDEX, IGNORE_INDEX])
            .unwrap()
            .into_scalar();
        assert_eq!(none, 0.0);
        assert!(cross_entropy(logits, &[0, 1]).is_err());
    }
}
