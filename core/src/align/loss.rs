//! The Lavender loss (lavender-method.md §4.1): `CE + lambda * L_att`, where CE is the
//! next-token cross-entropy on the supervised labels and `L_att` the mean over the words both
//! sides have of the per-pixel MSE between the teacher's word map and the student's.
//!
//! Student word maps come from the per-position maps ([`super::student_maps::token_maps`]):
//!
//! - [`Positions::Answer`] (default): the supervised positions only; row `i` is keyed by the
//!   ground-truth token it predicts, `labels[i + 1]`; token texts grouped into lower-cased whole
//!   words ([`group_answer_words`]), pieces merged by mean, then min-max per word.
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
    student_maps::{Aggregation, StudentMapsError, token_maps},
    words::group_answer_words,
};
use crate::{
    sd::words::{WordGroups, word_maps},
    vlm::{TextToImageAttention, mllama::labels::IGNORE_INDEX},
};

/// The reference's loss scale (`sd_xattn_loss_scale`).
pub const DEFAULT_LAMBDA: f64 = 10.0;
/// The side of the maps compared (the teacher stores 32 x 32).
pub const DEFAULT_MAP_SIZE: usize = 32;
/// Words the reference never matches.
const PUNCTUATION: [&str; 15] = [
    ".", ",", "!", "?", ";", ":", "-", "(", ")", "[", "]", "{", "}", "\"", "'",
];

/// Which student positions give word maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positions {
    /// Supervised positions keyed by the ground-truth next token, whole lower-cased words.
    #[default]
    Answer,
    /// All positions keyed by the predicted token's exact text, as the reference.
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    pub lambda: f64,
    pub map_size: usize,
    pub grid: GridMode,
    pub aggregation: Aggregation,
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

/// Maps keyed by word: `maps` is `[words, size, size]`, row `i` the map of `words[i]`.
#[derive(Debug, Clone)]
pub struct WordMaps {
    pub words: Vec<String>,
    pub maps: Tensor<3>,
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
    let mut groups = group_answer_words(&texts);
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
    let mut groups = WordGroups {
        words: Vec::new(),
        members: Vec::new(),
    };
    for (position, &id) in predicted.iter().enumerate() {
        let key = decode(tokenizer, id as u32)?.trim().to_string();
        match groups.words.iter().position(|word| *word == key) {
            Some(existing) => groups.members[existing].push(position),
            None => {
                groups.words.push(key);
                groups.members.push(vec![position]);
            }
        }
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

/// The row of the teacher's map for the student's `word`: the teacher word equal to it, or
/// `None` when there is none or when `word` is empty or punctuation (the reference never
/// matches those). The one matching rule of `L_att` and of the explorer's teacher-student
/// comparison (`vlm::mllama::bundle_examples::teacher_word_row`), so the two cannot drift.
pub fn teacher_row(teacher_words: &[String], word: &str) -> Option<usize> {
    if word.is_empty() || PUNCTUATION.contains(&word) {
        return None;
    }
    teacher_words.iter().position(|t| t == word)
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
    use burn::tensor::Device;

    use super::*;
    use crate::{
        align::aligner::tests::fixture_aligner,
        testing::{
            assert_close, device, golden_i64, lavender_golden, lavender_golden_metadata,
            lavender_golden_path, mllama_tiny_dir,
        },
        vlm::{
            StudentVlm,
            mllama::{prompt::Message, student::Mllama},
        },
    };

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn teacher(device: &Device) -> WordMaps {
        let words: Vec<String> =
            serde_json::from_str(&lavender_golden_metadata("teacher_words")).unwrap();
        let maps = lavender_golden()
            .tensor("teacher_maps", [words.len(), 32, 32], device)
            .unwrap();
        WordMaps { words, maps }
    }

    /// The fixture sample (the tiny model with its adapter merged, the fixture image, question
    /// and answer) through one forward pass: the student, labels, logits and attention.
    fn fixture_pass(device: &Device) -> (Mllama, Vec<i64>, Tensor<3>, TextToImageAttention) {
        let dir = mllama_tiny_dir();
        let student = Mllama::load(&dir, Some(&dir.join("adapter")), device).unwrap();
        let (labels, logits, attention) = fixture_forward(&student);
        (student, labels, logits, attention)
    }

    /// The fixture image, question and answer through `student`: labels, logits, attention.
    fn fixture_forward(student: &Mllama) -> (Vec<i64>, Tensor<3>, TextToImageAttention) {
        let image = image::open(mllama_tiny_dir().join("image.png"))
            .unwrap()
            .to_rgb8();
        let messages = [
            Message::user_with_image("What is in the picture?"),
            Message::text(
                "assistant",
                "A brown dog rides a red skateboard near the water.",
            ),
        ];
        let (prepared, labels) = student.prepare_conversation(&image, &messages).unwrap();
        let (logits, attention) = student.forward_with_attention(&prepared);
        (labels, logits, attention)
    }

    fn scalar(name: &str, device: &Device) -> Tensor<1> {
        lavender_golden().tensor(name, [1], device).unwrap()
    }

    /// The fixture sample through the tiny model with its adapter merged, on an autodiff
    /// device: labels, CE, word maps, L_att, total and the Aligner's gradients against torch
    /// (tests/fixtures/make_lavender_fixtures.py).
    #[test]
    fn loss_and_aligner_gradients_match_torch() {
        let device = Device::flex().autodiff();
        let (student, labels, logits, attention) = fixture_pass(&device);
        assert_eq!(labels, golden_i64(&lavender_golden_path(), "labels").0);
        let aligner = fixture_aligner(&device);
        let teacher = teacher(&device);
        let tokenizer = student.prompt.tokenizer();

        let loss = lavender_loss(
            logits.clone(),
            &attention,
            &labels,
            &teacher,
            Some(&aligner),
            tokenizer,
            &LossConfig::default(),
        )
        .unwrap();
        let words: Vec<String> =
            serde_json::from_str(&lavender_golden_metadata("student_words")).unwrap();
        assert_eq!(loss.student.words, words);
        assert_eq!(loss.matched, strings(&["dog", "red", "skateboard"]));
        let expected_maps = lavender_golden()
            .tensor("student_maps", [words.len(), 32, 32], &device)
            .unwrap();
        assert_close(
            "student_maps",
            loss.student.maps.clone(),
            expected_maps,
            1e-4,
        );
        assert_close("ce", loss.ce.clone(), scalar("ce", &device), 1e-4);
        assert_close("align", loss.align.clone(), scalar("align", &device), 1e-4);
        assert_close("total", loss.total.clone(), scalar("total", &device), 1e-4);

        let grads = loss.total.backward();
        let gradients = aligner.gradients(&grads);
        let golden = lavender_golden();
        for (name, parameter) in aligner.named_parameters() {
            let expected = golden
                .tensor::<4>(&format!("grad.aligner.{name}"), parameter.dims(), &device)
                .or_else(|_| {
                    golden
                        .tensor::<1>(&format!("grad.aligner.{name}"), [1], &device)
                        .map(|t| t.reshape([1, 1, 1, 1]))
                })
                .unwrap();
            let actual = gradients[&name].clone();
            if name == "head.bias" {
                // Min-max normalisation cancels a constant shift: the gradient is 0 up to
                // rounding on both sides.
                let error: f32 = (actual - expected).abs().max().into_scalar();
                assert!(error < 1e-6, "grad head.bias differs by {error}");
            } else {
                assert_close(&format!("grad.aligner.{name}"), actual, expected, 1e-4);
            }
        }

        // The reference's positions: every row keyed by its predicted token.
        let reference = lavender_loss(
            logits,
            &attention,
            &labels,
            &teacher,
            Some(&aligner),
            tokenizer,
            &LossConfig {
                positions: Positions::Reference,
                ..LossConfig::default()
            },
        )
        .unwrap();
        let reference_words: Vec<String> =
            serde_json::from_str(&lavender_golden_metadata("reference_words")).unwrap();
        assert_eq!(reference.student.words, reference_words);
        assert_eq!(
            reference.matched.len().to_string(),
            lavender_golden_metadata("reference_matched")
        );
        assert_close(
            "reference_align",
            reference.align,
            scalar("reference_align", &device),
            1e-4,
        );
    }

    /// The same loss through the base model with the fixture adapter as Burn LoRA factors (not
    /// merged): the factors' gradients match PEFT's (torch autograd through peft's LoRA layers).
    #[test]
    fn lora_gradients_match_peft() {
        use crate::vlm::mllama::lora::{
            LoraSettings, apply_lora, load_peft_factors, lora_gradients,
        };

        let device = Device::flex().autodiff();
        let dir = mllama_tiny_dir();
        let student = Mllama::load(&dir, None, &device)
            .unwrap()
            .try_map_model(|model| {
                let model = apply_lora(model, &LoraSettings::default())?;
                load_peft_factors(model, &dir.join("adapter"))
            })
            .unwrap();
        let (labels, logits, attention) = fixture_forward(&student);
        let aligner = fixture_aligner(&device);
        let loss = lavender_loss(
            logits,
            &attention,
            &labels,
            &teacher(&device),
            Some(&aligner),
            student.prompt.tokenizer(),
            &LossConfig::default(),
        )
        .unwrap();
        assert_close("total", loss.total.clone(), scalar("total", &device), 1e-4);

        let grads = loss.total.backward();
        let gradients = lora_gradients(&student.model, &grads);
        assert_eq!(gradients.len(), 20, "every LoRA'd weight gets a gradient");
        let names: Vec<String> =
            serde_json::from_str(&lavender_golden_metadata("lora_gradients")).unwrap();
        let golden = lavender_golden();
        let mut checked = 0;
        for (module, grad_a, grad_b) in gradients {
            for (factor, actual) in [("lora_A", grad_a), ("lora_B", grad_b)] {
                let key = format!("base_model.model.{module}.{factor}.weight");
                if !names.contains(&key) {
                    continue;
                }
                let expected = golden
                    .tensor::<2>(&format!("grad.{key}"), actual.dims(), &device)
                    .unwrap();
                assert_close(&format!("grad {key}"), actual, expected, 1e-4);
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            names.len(),
            "every golden LoRA gradient was compared"
        );
    }

    /// The other aggregations and the reference's (legacy) grid give torch's L_att too.
    #[test]
    fn aggregation_and_grid_variants_match_torch() {
        let device = device();
        let (student, labels, logits, attention) = fixture_pass(&device);
        let aligner = fixture_aligner(&device);
        let teacher = teacher(&device);
        for (name, aggregation, grid) in [
            (
                "align_mean_first",
                Aggregation::MeanFirst,
                GridMode::Corrected,
            ),
            ("align_max_max", Aggregation::MaxMax, GridMode::Corrected),
            (
                "align_legacy",
                Aggregation::AlignerPerLayer,
                GridMode::Legacy,
            ),
        ] {
            let config = LossConfig {
                aggregation,
                grid,
                ..LossConfig::default()
            };
            let loss = lavender_loss(
                logits.clone(),
                &attention,
                &labels,
                &teacher,
                Some(&aligner),
                student.prompt.tokenizer(),
                &config,
            )
            .unwrap();
            assert_eq!(loss.matched.len(), 3, "{name}");
            assert_close(name, loss.align, scalar(name, &device), 1e-4);
        }
    }

    /// Row i is keyed by labels[i + 1]; unsupervised rows and the text-less tokens ("\n\n",
    /// <|eot_id|>) give no word.
    #[test]
    fn answer_words_are_keyed_by_the_next_label() {
        let device = device();
        let tokenizer = crate::vlm::mllama::prompt::MllamaPrompt::load(&mllama_tiny_dir())
            .unwrap()
            .tokenizer()
            .clone();
        let id = |text: &str| tokenizer.token_to_id(text).unwrap();
        let (dog, red, eot) = (id("Ġdog"), id("Ġred"), id("<|eot_id|>"));
        // Four positions: row 0 predicts labels[1] = " dog", row 1 " red", row 2 <|eot_id|>
        // (no text, no word), row 3 nothing (it is last); labels[0] belongs to no row.
        let labels = vec![IGNORE_INDEX, i64::from(dog), i64::from(red), i64::from(eot)];
        let maps: Vec<f32> = (0..4)
            .flat_map(|row| [row as f32, 0.0, 0.0, 10.0 * row as f32])
            .collect();
        let token_maps = Tensor::<3>::from_data(TensorData::new(maps, [4, 2, 2]), &device);
        let words = answer_word_maps(token_maps, &labels, &tokenizer).unwrap();
        assert_eq!(words.words, strings(&["dog", "red"]));
        // " dog": row 0's flat map [0, 0, 0, 0] -> 0; " red": row 1's [1, 0, 0, 10] -> [0.1, 0,
        // 0, 1].
        let values: Vec<f32> = words.maps.into_data().try_to_vec().unwrap();
        assert_eq!(values.len(), 8);
        for (value, expected) in values.iter().zip([0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 1.0]) {
            assert!((value - expected).abs() < 1e-5, "{values:?}");
        }
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
