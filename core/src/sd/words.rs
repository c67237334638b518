//! From CLIP prompt tokens to words: the pieces of a word (a run of tokens ending in one that
//! carries `</w>`) are merged by mean, words are lower-cased, a word that occurs twice is one
//! entry (its occurrences averaged), punctuation-only words are dropped, and each word map is
//! min-max normalised.

use burn::tensor::{Int, Tensor, TensorData};

use super::tokenizer::ends_word;

/// Added to the range in min-max normalisation so a flat map stays finite.
pub const NORMALISE_EPS: f32 = 1e-6;

/// Which prompt tokens make up each word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordGroups {
    /// Lower-cased words in order of first appearance.
    pub words: Vec<String>,
    /// For each word, the indices (into the prompt tokens) of all its pieces, all occurrences.
    pub members: Vec<Vec<usize>>,
}

/// Groups BPE pieces (`"ze"`, `"bra</w>"`) into words; `to_text` turns a word's pieces into its
/// text (byte-level decoding, `</w>` removed).
pub fn group_words(pieces: &[String], to_text: impl Fn(&[String]) -> String) -> WordGroups {
    let mut groups = WordGroups {
        words: Vec::new(),
        members: Vec::new(),
    };
    let mut start = 0;
    for (index, piece) in pieces.iter().enumerate() {
        let ends_word = ends_word(piece) || index + 1 == pieces.len();
        if !ends_word {
            continue;
        }
        let text = to_text(&pieces[start..=index]).trim().to_lowercase();
        let span = start..=index;
        start = index + 1;
        if !text.chars().any(char::is_alphanumeric) {
            continue;
        }
        match groups.words.iter().position(|word| *word == text) {
            Some(existing) => groups.members[existing].extend(span),
            None => {
                groups.words.push(text);
                groups.members.push(span.collect());
            }
        }
    }
    groups
}

/// Word maps `[words, h, w]` from token maps `[tokens, h, w]`: mean of each word's pieces,
/// then min-max normalised per word.
pub fn word_maps(token_maps: Tensor<3>, groups: &WordGroups) -> Tensor<3> {
    mean_rows_normalised(token_maps, &groups.members)
}

/// One map per entry of `members` from maps `[rows, h, w]`: the mean of the rows it lists, then
/// min-max normalised; `[members, h, w]`. What a word's map is, on either side of the method.
pub fn mean_rows_normalised(maps: Tensor<3>, members: &[Vec<usize>]) -> Tensor<3> {
    let device = maps.device();
    let means: Vec<Tensor<3>> = members
        .iter()
        .map(|rows| {
            let indices = Tensor::<1, Int>::from_data(
                TensorData::new(
                    rows.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [rows.len()],
                ),
                &device,
            );
            min_max_normalise(maps.clone().select(0, indices).mean_dim(0))
        })
        .collect();
    if means.is_empty() {
        let [_, h, w] = maps.dims();
        return Tensor::zeros([0, h, w], &device);
    }
    Tensor::cat(means, 0)
}

/// `(m - min) / (max - min + eps)` over the whole map `[1, h, w]`.
pub fn min_max_normalise(map: Tensor<3>) -> Tensor<3> {
    let min = map.clone().min();
    let max = map.clone().max();
    let range = (max - min.clone()).add_scalar(NORMALISE_EPS);
    (map - min.unsqueeze()).div(range.unsqueeze())
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    fn plain(pieces: &[String]) -> String {
        pieces.concat().replace("</w>", "")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pieces_merge_duplicates_join_and_punctuation_drops() {
        let pieces = strings(&[
            "a</w>", "Ze", "bra</w>", ",</w>", "a</w>", "dog</w>", "!</w>",
        ]);
        let groups = group_words(&pieces, plain);
        assert_eq!(groups.words, strings(&["a", "zebra", "dog"]));
        assert_eq!(groups.members, vec![vec![0, 4], vec![1, 2], vec![5]]);
    }

    #[test]
    fn word_maps_are_means_then_min_max() {
        let device = Device::flex();
        // Three tokens of 1x2 maps.
        let token_maps =
            Tensor::<3>::from_floats([[[1.0, 3.0]], [[3.0, 1.0]], [[0.0, 2.0]]], &device);
        let groups = WordGroups {
            words: strings(&["ab", "c"]),
            members: vec![vec![0, 1], vec![2]],
        };
        let maps: Vec<f32> = word_maps(token_maps, &groups)
            .into_data()
            .try_to_vec()
            .unwrap();
        // "ab": mean [2, 2] is flat -> 0 / eps = 0; "c": [0, 2] -> [0, 2 / (2 + eps)].
        assert_eq!(maps[..2], [0.0, 0.0]);
        assert_eq!(maps[2], 0.0);
        assert!((maps[3] - 2.0 / (2.0 + NORMALISE_EPS)).abs() < 1e-7);
    }
}
