//! What the browser explorer shows: every word of the prompt and of a generated answer, and each
//! word's map on the image grid for a chosen cross-attention layer and head (or their mean, or
//! their maximum). As in training (`align::loss`; `docs/method.md`, "Word keying"), a token's map
//! is read at the position that predicts it (the one before it); a word's map is the mean of its
//! tokens' maps, min-max normalised. Unlike [`Mllama::answer_word_maps`], repeated words stay
//! separate: each occurrence is its own button.
//!
//! Besides those plain attention maps, [`Mllama::sequence_word_maps_aggregated`] gives a
//! word's map as training's alignment loss sees it: all layers combined by one of the
//! [`Aggregation`]s (the trained Aligner's, when the bundle carries it).
//!
//! Nothing here reads a tensor back: the caller reads the maps (asynchronously in a browser).
//!
//! A whole answer's maps for the CLI's `attend` are [`answer`]'s.

pub mod answer;

use burn::tensor::{Int, Tensor, TensorData};

use crate::{
    align::{
        aligner::Aligner,
        grid::{GridMode, attention_to_grid},
        student::TextToImageAttention,
        student_maps::{Aggregation, StudentMapsError, token_maps},
    },
    maps::{
        normalise::{Normalisation, mean_rows, min_max_per_map},
        words::word_spans,
    },
    vlm::mllama::{
        student::{Mllama, Prepared, per_layer_attention},
        text::KvCache,
    },
};

/// Which part of the conversation a word comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordSource {
    Prompt,
    Answer,
}

/// One word occurrence: its text as shown and its token positions in the whole sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceWord {
    pub text: String,
    pub source: WordSource,
    pub positions: Vec<usize>,
}

/// A layer or head choice: the mean over all of them, their element-wise maximum, or one by
/// its index in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pick {
    #[default]
    Mean,
    /// The largest probability any of them gives each (token, image token) pair: shows where
    /// some head or layer looks, which the mean dilutes when the others look elsewhere.
    Max,
    One(usize),
}

/// The cross-attention of the prompt followed by an answer, captured in one pass.
#[derive(Debug, Clone)]
pub struct SequenceAttention {
    /// `(decoder layer index, [heads, seq, max_tiles * tokens_per_tile])`.
    pub layers: Vec<(usize, Tensor<3>)>,
    pub seq_len: usize,
}

impl SequenceAttention {
    pub fn heads(&self) -> usize {
        self.layers.first().map_or(0, |(_, probs)| probs.dims()[0])
    }
}

impl Mllama {
    /// One capturing pass over the prepared prompt followed by `answer` (generated tokens, the
    /// stop token left out). The answer's tokens see the image as the prompt's last token did,
    /// as during generation.
    pub fn sequence_attention(&self, prepared: &Prepared, answer: &[u32]) -> SequenceAttention {
        let device = self.device();
        let ids: Vec<i64> = prepared
            .inputs
            .input_ids
            .iter()
            .chain(answer)
            .map(|&id| i64::from(id))
            .collect();
        let seq_len = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq_len]), device);
        let mask = if answer.is_empty() {
            prepared.mask.clone()
        } else {
            let rows = prepared.mask.dims()[1];
            let last = prepared.mask.clone().narrow(1, rows - 1, 1);
            Tensor::cat(
                vec![prepared.mask.clone(), last.repeat_dim(1, answer.len())],
                1,
            )
        };
        let output = self.model.text.forward(
            ids,
            Some(prepared.states.clone()),
            Some(mask),
            &mut KvCache::new(),
            true,
        );
        SequenceAttention {
            layers: per_layer_attention(output.cross_attention),
            seq_len,
        }
    }

    /// The words of the user's `prompt_text` (found in the prepared prompt's tokens) and of
    /// `answer` (the tokens after the prompt), in order.
    pub fn sequence_words(
        &self,
        prepared: &Prepared,
        prompt_text: &str,
        answer: &[u32],
    ) -> Vec<SequenceWord> {
        let decode = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&id| self.prompt.decode(&[id], false).unwrap_or_default())
                .collect()
        };
        let ids = &prepared.inputs.input_ids;
        let texts = decode(ids);
        let mut words = Vec::new();
        if let Some(range) = find_text_tokens(&texts, prompt_text) {
            // Position 0 has no predecessor to read a map from.
            let start = range.start.max(1);
            words.extend(group_occurrences(
                &texts[start..range.end],
                start,
                WordSource::Prompt,
            ));
        }
        words.extend(group_occurrences(
            &decode(answer),
            ids.len(),
            WordSource::Answer,
        ));
        words
    }

    /// Maps `[words, size, size]` of `words` for the chosen layer and head of `attention`,
    /// brought to `[0, 1]` by `normalisation` (per word, or one range for all of them).
    #[allow(clippy::too_many_arguments)]
    pub fn sequence_word_maps(
        &self,
        prepared: &Prepared,
        attention: &SequenceAttention,
        words: &[SequenceWord],
        layer: Pick,
        head: Pick,
        normalisation: Normalisation,
        size: usize,
    ) -> Tensor<3> {
        let pick_head = |probs: &Tensor<3>| -> Tensor<2> {
            let [heads, seq, keys] = probs.dims();
            match head {
                Pick::Mean => probs.clone().mean_dim(0).reshape([seq, keys]),
                Pick::Max => probs.clone().max_dim(0).reshape([seq, keys]),
                Pick::One(h) => probs
                    .clone()
                    .narrow(0, h.min(heads - 1), 1)
                    .reshape([seq, keys]),
            }
        };
        let per_token = match layer {
            Pick::One(l) => pick_head(&attention.layers[l.min(attention.layers.len() - 1)].1),
            Pick::Mean => {
                let count = attention.layers.len().max(1) as f32;
                attention
                    .layers
                    .iter()
                    .map(|(_, probs)| pick_head(probs))
                    .reduce(|a, b| a + b)
                    .expect("Mllama has cross-attention layers")
                    .div_scalar(count)
            }
            Pick::Max => attention
                .layers
                .iter()
                .map(|(_, probs)| pick_head(probs))
                .reduce(Tensor::max_pair)
                .expect("Mllama has cross-attention layers"),
        };
        let grid = attention_to_grid(per_token, &self.geometry(prepared), size);
        // A word is read at the positions that predict its tokens; position 0 (the
        // beginning-of-text token) is never a word's.
        let predecessors: Vec<Vec<usize>> = words
            .iter()
            .map(|word| word.positions.iter().map(|&p| p - 1).collect())
            .collect();
        normalisation.apply(mean_rows(grid, &predecessors))
    }

    /// Word `word`'s maps `[layers * heads, size, size]` for every captured cross-attention
    /// layer and head (layer-major), each min-max normalised: what [`Self::sequence_word_maps`]
    /// gives that word for `Pick::One(layer)` and `Pick::One(head)`, in one pass instead of
    /// `layers * heads` (the grid mapping is linear, so the mean over the word's positions is
    /// taken first, on `heads` rows per layer instead of the whole sequence).
    ///
    /// Errors: [`StudentMapsError::Position`] for a position with no predecessor in the
    /// sequence, [`StudentMapsError::NoPositions`] for a word without positions.
    pub fn word_head_maps(
        &self,
        prepared: &Prepared,
        attention: &SequenceAttention,
        word: &SequenceWord,
        size: usize,
    ) -> Result<Tensor<3>, StudentMapsError> {
        let device = self.device();
        let rows = predecessor_rows(word, sequence_rows(attention))?;
        let count = rows.len();
        let rows = Tensor::<1, Int>::from_data(
            TensorData::new(rows.into_iter().map(|r| r as i64).collect(), [count]),
            device,
        );
        let per_layer: Vec<Tensor<2>> = attention
            .layers
            .iter()
            .map(|(_, probs)| {
                let [heads, _, keys] = probs.dims();
                probs
                    .clone()
                    .select(1, rows.clone())
                    .mean_dim(1)
                    .reshape([heads, keys])
            })
            .collect();
        if per_layer.is_empty() {
            return Ok(Tensor::zeros([0, size, size], device));
        }
        let grid = attention_to_grid(Tensor::cat(per_layer, 0), &self.geometry(prepared), size);
        Ok(min_max_per_map(grid))
    }

    /// Maps `[words, size, size]` of `words` with one of training's aggregations
    /// ([`token_maps`] over all captured cross-attention layers, corrected grid), each word's
    /// map read at the positions that predict it exactly as [`Mllama::sequence_word_maps`]
    /// does (mean over its pieces, then min-max normalised), so the explorer's "Aligner" maps
    /// are what the alignment loss compares with the teacher.
    ///
    /// Only the positions some word reads are aggregated: every position's map is computed on
    /// its own (the Aligner's instance norm and the min-max are per map), so this equals
    /// selecting rows of `token_maps` over the whole sequence, at a fraction of the work (the
    /// Aligner runs on `layers x positions` maps of `heads` channels).
    ///
    /// Errors: [`StudentMapsError::NoAligner`] when `aggregation` needs an Aligner and there is
    /// none, [`StudentMapsError::AlignerHeads`] when it does not take the model's heads,
    /// [`StudentMapsError::Position`] for a word position with no predecessor in the sequence,
    /// [`StudentMapsError::NoPositions`] for a word without positions.
    #[allow(clippy::too_many_arguments)]
    pub fn sequence_word_maps_aggregated(
        &self,
        prepared: &Prepared,
        attention: &SequenceAttention,
        words: &[SequenceWord],
        aligner: Option<&Aligner>,
        aggregation: Aggregation,
        normalisation: Normalisation,
        size: usize,
    ) -> Result<Tensor<3>, StudentMapsError> {
        let device = self.device();
        if aggregation.needs_aligner() && aligner.is_none() {
            return Err(StudentMapsError::NoAligner(aggregation));
        }
        let seq = sequence_rows(attention);
        // The rows each word reads, and the distinct rows to aggregate (in first-use order).
        let mut rows: Vec<usize> = Vec::new();
        let mut word_rows: Vec<Vec<usize>> = Vec::with_capacity(words.len());
        for word in words {
            let indices = predecessor_rows(word, seq)?
                .into_iter()
                .map(|row| match rows.iter().position(|&r| r == row) {
                    Some(index) => index,
                    None => {
                        rows.push(row);
                        rows.len() - 1
                    }
                })
                .collect();
            word_rows.push(indices);
        }
        if words.is_empty() {
            return Ok(Tensor::zeros([0, size, size], device));
        }
        let count = rows.len();
        let selected = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect(), [count]),
            device,
        );
        let reduced = TextToImageAttention {
            layers: attention
                .layers
                .iter()
                .map(|(layer, probs)| (*layer, probs.clone().select(1, selected.clone())))
                .collect(),
            geometry: self.geometry(prepared),
        };
        let maps = token_maps(&reduced, aligner, aggregation, GridMode::Corrected, size)?;
        Ok(normalisation.apply(mean_rows(maps, &word_rows)))
    }
}

/// The sequence length the captured attention has rows for.
fn sequence_rows(attention: &SequenceAttention) -> usize {
    attention
        .layers
        .first()
        .map_or(attention.seq_len, |(_, probs)| probs.dims()[1])
}

/// The attention rows `word` is read at (the positions before its tokens), checked against a
/// sequence of `seq` rows.
fn predecessor_rows(word: &SequenceWord, seq: usize) -> Result<Vec<usize>, StudentMapsError> {
    if word.positions.is_empty() {
        return Err(StudentMapsError::NoPositions(word.text.clone()));
    }
    word.positions
        .iter()
        .map(|&position| {
            if position == 0 || position > seq {
                Err(StudentMapsError::Position {
                    word: word.text.clone(),
                    position,
                    seq,
                })
            } else {
                Ok(position - 1)
            }
        })
        .collect()
}

/// The token range whose decoded texts cover the last occurrence of `text` in their
/// concatenation.
fn find_text_tokens(texts: &[String], text: &str) -> Option<std::ops::Range<usize>> {
    let needle = text.trim();
    if needle.is_empty() {
        return None;
    }
    let mut starts = Vec::with_capacity(texts.len());
    let mut joined = String::new();
    for piece in texts {
        starts.push(joined.len());
        joined.push_str(piece);
    }
    let begin = joined.rfind(needle)?;
    let end = begin + needle.len();
    let first = starts.iter().rposition(|&s| s <= begin)?;
    let last = starts.iter().rposition(|&s| s < end)?;
    Some(first..last + 1)
}

/// Words of consecutive token `texts` (the first at sequence position `offset`), cut by the
/// rule training uses ([`word_spans`]); each occurrence stays its own word.
fn group_occurrences(texts: &[String], offset: usize, source: WordSource) -> Vec<SequenceWord> {
    word_spans(texts)
        .into_iter()
        .map(|span| SequenceWord {
            text: span.text,
            source,
            positions: span.tokens.iter().map(|&index| offset + index).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{device, mllama_tiny_dir},
        vlm::mllama::{prompt::Message, text::Sampler},
    };

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prompt_text_is_found_across_tokens() {
        let texts = strings(&[
            "<|start|>",
            "user",
            "\n\n",
            "What",
            " is",
            " it",
            "?",
            "<|eot|>",
        ]);
        assert_eq!(find_text_tokens(&texts, "What is it?"), Some(3..7));
        assert_eq!(find_text_tokens(&texts, "missing"), None);
    }

    #[test]
    fn occurrences_keep_repeats_and_merge_pieces() {
        let texts = strings(&[" a", " zeb", "ra", " and", " a", "\n", "dog", "."]);
        let words = group_occurrences(&texts, 10, WordSource::Answer);
        let shown: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(shown, ["a", "zebra", "and", "a", "dog"]);
        assert_eq!(words[1].positions, vec![11, 12]);
        assert_eq!(words[4].positions, vec![16]);
    }

    /// The fixture model, its prompt and greedy answer: the prepared prompt, the question and
    /// the answer tokens (stop tokens left out).
    fn fixture_answer() -> (Mllama, Prepared, &'static str, Vec<u32>) {
        let dir = mllama_tiny_dir();
        let student = Mllama::load(&dir, None, &device()).unwrap();
        let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
        // "Dog" is three tokens of the tiny vocabulary ("D", "o", "g").
        let question = "What is in the picture of a Dog?";
        let prepared = student
            .prepare(&image, &[Message::user_with_image(question)], true)
            .unwrap();
        let stops = student.model.config.text_config.stop_tokens();
        let answer: Vec<u32> = student
            .generate(&prepared, 8, &Sampler::greedy(), |_| {})
            .unwrap()
            .into_iter()
            .filter(|t| !stops.contains(t))
            .collect();
        (student, prepared, question, answer)
    }

    /// The fixture prompt and its greedy answer give word buttons with maps in [0, 1].
    #[test]
    fn words_and_maps_of_a_generated_answer() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        let prompt_words: Vec<&str> = words
            .iter()
            .filter(|w| w.source == WordSource::Prompt)
            .map(|w| w.text.as_str())
            .collect();
        assert_eq!(
            prompt_words,
            ["What", "is", "in", "the", "picture", "of", "a", "Dog"]
        );
        let attention = student.sequence_attention(&prepared, &answer);
        assert_eq!(attention.seq_len, prepared.inputs.len() + answer.len());
        assert_eq!(attention.heads(), 4);
        for (layer, head) in [
            (Pick::Mean, Pick::Mean),
            (Pick::One(1), Pick::One(3)),
            (Pick::Max, Pick::Max),
        ] {
            let maps = student.sequence_word_maps(
                &prepared,
                &attention,
                &words,
                layer,
                head,
                Normalisation::PerMap,
                8,
            );
            assert_eq!(maps.dims(), [words.len(), 8, 8]);
            let values: Vec<f32> = maps.into_data().try_to_vec().unwrap();
            assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    /// Largest absolute difference of two equally long value lists.
    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    }

    /// Shared normalisation is one affine map for all words: its maps span [0, 1] together,
    /// and each, min-max normalised again on its own, is the per-word map. On the fixture the
    /// words' strengths differ, so some word stays below the top of the range.
    #[test]
    fn shared_normalisation_scales_all_words_together() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        let attention = student.sequence_attention(&prepared, &answer);
        let maps = |normalisation| {
            student.sequence_word_maps(
                &prepared,
                &attention,
                &words,
                Pick::One(1),
                Pick::Mean,
                normalisation,
                8,
            )
        };
        let per_map: Vec<f32> = maps(Normalisation::PerMap)
            .into_data()
            .try_to_vec()
            .unwrap();
        let shared = maps(Normalisation::Shared);
        let renormalised: Vec<f32> = min_max_per_map(shared.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let shared: Vec<f32> = shared.into_data().try_to_vec().unwrap();
        let error = max_difference(&renormalised, &per_map);
        assert!(error < 1e-4, "renormalised shared maps differ by {error}");
        let min = shared.iter().copied().fold(f32::MAX, f32::min);
        let max = shared.iter().copied().fold(f32::MIN, f32::max);
        // The top is range / (range + eps) with the fixture's small attention range.
        assert!(min.abs() < 1e-6 && (max - 1.0).abs() < 1e-4, "{min} {max}");
        let word_peaks: Vec<f32> = shared
            .chunks(64)
            .map(|map| map.iter().copied().fold(f32::MIN, f32::max))
            .collect();
        assert!(
            word_peaks.iter().any(|&peak| peak < 0.9),
            "every word peaks near 1: {word_peaks:?}"
        );
    }

    /// The layer x head grid of one word, made in one pass, equals that word's map from
    /// `sequence_word_maps` for every single layer and head; a bad word is an error.
    #[test]
    fn head_maps_of_a_word_are_its_single_layer_and_head_maps() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        let attention = student.sequence_attention(&prepared, &answer);
        let (layers, heads) = (attention.layers.len(), attention.heads());
        // A word of several pieces ("Dog") checks the mean over pieces.
        let index = words
            .iter()
            .position(|w| w.positions.len() > 1)
            .expect("a word of several tokens");
        let grid: Vec<f32> = student
            .word_head_maps(&prepared, &attention, &words[index], 8)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(grid.len(), layers * heads * 64);
        for layer in 0..layers {
            for head in 0..heads {
                let expected: Vec<f32> = student
                    .sequence_word_maps(
                        &prepared,
                        &attention,
                        &words,
                        Pick::One(layer),
                        Pick::One(head),
                        Normalisation::PerMap,
                        8,
                    )
                    .narrow(0, index, 1)
                    .into_data()
                    .try_to_vec()
                    .unwrap();
                let cell = (layer * heads + head) * 64;
                let error = max_difference(&grid[cell..cell + 64], &expected);
                assert!(error < 1e-5, "layer {layer} head {head}: differ by {error}");
            }
        }
        let odd = SequenceWord {
            text: "odd".into(),
            source: WordSource::Answer,
            positions: vec![0],
        };
        assert!(matches!(
            student.word_head_maps(&prepared, &attention, &odd, 8),
            Err(StudentMapsError::Position { position: 0, .. })
        ));
    }

    /// Word maps computed by hand from `token_maps` over the whole sequence: each word's rows
    /// (the positions before its tokens) averaged, then min-max normalised, `[words * s * s]`.
    fn explicit_word_maps(
        student: &Mllama,
        prepared: &Prepared,
        attention: &SequenceAttention,
        words: &[SequenceWord],
        aligner: Option<&Aligner>,
        aggregation: Aggregation,
        size: usize,
    ) -> Vec<f32> {
        let all = TextToImageAttention {
            layers: attention.layers.clone(),
            geometry: student.geometry(prepared),
        };
        let rows: Vec<f32> = token_maps(&all, aligner, aggregation, GridMode::Corrected, size)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let plane = size * size;
        let mut out = Vec::with_capacity(words.len() * plane);
        for word in words {
            let mean: Vec<f32> = (0..plane)
                .map(|i| {
                    let sum: f32 = word
                        .positions
                        .iter()
                        .map(|&p| rows[(p - 1) * plane + i])
                        .sum();
                    sum / word.positions.len() as f32
                })
                .collect();
            let min = mean.iter().copied().fold(f32::MAX, f32::min);
            let max = mean.iter().copied().fold(f32::MIN, f32::max);
            let range = max - min + crate::maps::normalise::NORMALISE_EPS;
            out.extend(mean.iter().map(|v| (v - min) / range));
        }
        out
    }

    /// Every aggregation's word maps equal the explicit computation from `token_maps` rows,
    /// with the fixture's trained-shape Aligner (4 heads, as the tiny model) where one is
    /// needed; the aggregations differ from each other.
    #[test]
    fn aggregated_word_maps_are_token_maps_read_as_training_reads_them() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        // A word of several pieces ("Dog") checks the mean over pieces.
        assert!(words.iter().any(|w| w.positions.len() > 1), "{words:?}");
        let attention = student.sequence_attention(&prepared, &answer);
        let aligner = crate::align::aligner::tests::fixture_aligner(student.device());
        let mut seen: Vec<Vec<f32>> = Vec::new();
        for aggregation in Aggregation::ALL {
            let aligner = aggregation.needs_aligner().then_some(&aligner);
            let actual: Vec<f32> = student
                .sequence_word_maps_aggregated(
                    &prepared,
                    &attention,
                    &words,
                    aligner,
                    aggregation,
                    Normalisation::PerMap,
                    8,
                )
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            let expected = explicit_word_maps(
                &student,
                &prepared,
                &attention,
                &words,
                aligner,
                aggregation,
                8,
            );
            assert_eq!(actual.len(), words.len() * 64);
            let error = actual
                .iter()
                .zip(&expected)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(error < 1e-5, "{aggregation}: maps differ by {error}");
            assert!(actual.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(!seen.contains(&actual), "{aggregation} repeats another");
            seen.push(actual);
        }
        let none: Vec<SequenceWord> = Vec::new();
        let empty = student
            .sequence_word_maps_aggregated(
                &prepared,
                &attention,
                &none,
                None,
                Aggregation::MaxMax,
                Normalisation::PerMap,
                8,
            )
            .unwrap();
        assert_eq!(empty.dims(), [0, 8, 8]);
    }

    /// The Aligner aggregations without an Aligner, and words whose map cannot be read, are
    /// errors, not panics.
    #[test]
    fn aggregated_word_maps_refuse_what_they_cannot_compute() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        let attention = student.sequence_attention(&prepared, &answer);
        let maps = |words: &[SequenceWord], aligner: Option<&Aligner>, aggregation| {
            student.sequence_word_maps_aggregated(
                &prepared,
                &attention,
                words,
                aligner,
                aggregation,
                Normalisation::PerMap,
                8,
            )
        };
        for aggregation in [Aggregation::AlignerPerLayer, Aggregation::MeanFirst] {
            assert!(matches!(
                maps(&words, None, aggregation),
                Err(StudentMapsError::NoAligner(a)) if a == aggregation
            ));
        }
        let wrong = crate::align::aligner::AlignerConfig::new(3)
            .with_hidden(4)
            .init(student.device());
        assert!(matches!(
            maps(&words, Some(&wrong), Aggregation::AlignerPerLayer),
            Err(StudentMapsError::AlignerHeads {
                aligner: 3,
                attention: 4
            })
        ));
        let word = |positions: Vec<usize>| SequenceWord {
            text: "odd".into(),
            source: WordSource::Answer,
            positions,
        };
        for positions in [vec![0], vec![attention.seq_len + 1]] {
            let error = maps(&[word(positions)], None, Aggregation::MaxMax).unwrap_err();
            assert!(
                matches!(error, StudentMapsError::Position { .. }),
                "{error}"
            );
            assert!(error.to_string().contains("word `odd`"), "{error}");
        }
        assert!(matches!(
            maps(&[word(vec![])], None, Aggregation::MaxMax),
            Err(StudentMapsError::NoPositions(_))
        ));
        // The last position is readable: its predecessor is in the sequence.
        maps(&[word(vec![attention.seq_len])], None, Aggregation::MaxMax).unwrap();
    }

    /// `Pick::Max` is the element-wise maximum of the captured probabilities: its maps equal
    /// those of a one-layer, one-head attention holding that maximum, computed here by hand.
    #[test]
    fn max_picks_the_largest_probability_over_heads_and_layers() {
        let (student, prepared, question, answer) = fixture_answer();
        let words = student.sequence_words(&prepared, question, &answer);
        let attention = student.sequence_attention(&prepared, &answer);
        let [heads, seq, keys] = attention.layers[0].1.dims();
        let values: Vec<Vec<f32>> = attention
            .layers
            .iter()
            .map(|(_, probs)| probs.clone().into_data().try_to_vec().unwrap())
            .collect();
        let plane = seq * keys;
        let max_over_heads = |layer: &[f32]| -> Vec<f32> {
            (0..plane)
                .map(|i| {
                    (0..heads)
                        .map(|h| layer[h * plane + i])
                        .fold(f32::MIN, f32::max)
                })
                .collect()
        };
        let head_of = |layer: &[f32], h: usize| layer[h * plane..(h + 1) * plane].to_vec();
        let max_over_layers = |per_layer: Vec<Vec<f32>>| -> Vec<f32> {
            (0..plane)
                .map(|i| per_layer.iter().map(|l| l[i]).fold(f32::MIN, f32::max))
                .collect()
        };
        let maps = |layer: Pick, head: Pick, attention: &SequenceAttention| -> Vec<f32> {
            student
                .sequence_word_maps(
                    &prepared,
                    attention,
                    &words,
                    layer,
                    head,
                    Normalisation::PerMap,
                    8,
                )
                .into_data()
                .try_to_vec()
                .unwrap()
        };
        let single = |probs: Vec<f32>| SequenceAttention {
            layers: vec![(
                attention.layers[0].0,
                Tensor::from_data(TensorData::new(probs, [1, seq, keys]), student.device()),
            )],
            seq_len: seq,
        };
        let cases = [
            (
                Pick::Max,
                Pick::Max,
                max_over_layers(values.iter().map(|l| max_over_heads(l)).collect()),
            ),
            (Pick::One(1), Pick::Max, max_over_heads(&values[1])),
            (
                Pick::Max,
                Pick::One(2),
                max_over_layers(values.iter().map(|l| head_of(l, 2)).collect()),
            ),
        ];
        for (layer, head, expected) in cases {
            let actual = maps(layer, head, &attention);
            let expected = maps(Pick::One(0), Pick::One(0), &single(expected));
            assert_eq!(actual.len(), words.len() * 64);
            let error = actual
                .iter()
                .zip(&expected)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(error < 1e-6, "{layer:?} {head:?}: maps differ by {error}");
        }
        // The maximum is not the mean: the choice matters.
        assert_ne!(
            maps(Pick::Max, Pick::Max, &attention),
            maps(Pick::Mean, Pick::Mean, &attention)
        );
    }
}
