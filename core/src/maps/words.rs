//! Which token rows make up each word, and the one way a word's key is written. The rules
//! that cut tokens into words are the tokenizers' (`sd::words` for CLIP's `</w>` pieces,
//! `align::words` for Llama-3's leading spaces); both produce a [`WordGroups`].

use burn::tensor::Tensor;

use super::normalise::mean_rows_normalised;

/// Which rows (token positions) make up each word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordGroups {
    /// Words in order of first appearance, each once.
    pub words: Vec<String>,
    /// For each word, the rows of all its pieces, all occurrences.
    pub members: Vec<Vec<usize>>,
}

impl WordGroups {
    /// Adds `rows` to `word`'s members, making it a new word when it is not there yet: a word
    /// that occurs twice is one entry, its occurrences averaged.
    pub fn add(&mut self, word: String, rows: impl IntoIterator<Item = usize>) {
        match self.words.iter().position(|existing| *existing == word) {
            Some(index) => self.members[index].extend(rows),
            None => {
                self.words.push(word);
                self.members.push(rows.into_iter().collect());
            }
        }
    }
}

/// A word as it is keyed on both sides: lower-cased, with the punctuation (and whitespace)
/// around it removed (`"Dog."` -> `"dog"`); empty when nothing alphanumeric is left.
pub fn normalise_word(text: &str) -> String {
    text.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// Word maps `[words, h, w]` from token maps `[tokens, h, w]`: the mean of each word's rows,
/// then min-max normalised per word.
pub fn word_maps(token_maps: Tensor<3>, groups: &WordGroups) -> Tensor<3> {
    mean_rows_normalised(token_maps, &groups.members)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::maps::normalise::NORMALISE_EPS;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repeated_words_are_one_entry() {
        let mut groups = WordGroups::default();
        groups.add("a".into(), [0]);
        groups.add("dog".into(), [1, 2]);
        groups.add("a".into(), [3]);
        assert_eq!(groups.words, strings(&["a", "dog"]));
        assert_eq!(groups.members, vec![vec![0, 3], vec![1, 2]]);
    }

    #[test]
    fn words_are_lower_cased_and_trimmed_of_punctuation() {
        assert_eq!(normalise_word(" Dog."), "dog");
        assert_eq!(normalise_word("(BROWN,"), "brown");
        assert_eq!(normalise_word("!?"), "");
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
