//! Which token rows make up each word: the one word rule of the project, shared by the
//! teacher's CLIP tokens and the student's Llama tokens, and the one way a word's key is
//! written.
//!
//! **A word is a maximal run of letters and digits** (Unicode alphanumeric) in the text the
//! tokens spell; everything else (whitespace, punctuation, apostrophes, hyphens) separates
//! words and belongs to none. A token belongs to every word that one of its characters is in.
//! Words are keyed lower-cased. So, on both tokenizers, `"The red-haired dog's 1234 bikes."`
//! has the words `the, red, haired, dog, s, 1234, bikes`: the trailing `"."` is no part of
//! `bikes`, a hyphen or an apostrophe splits (CLIP's pre-tokenizer splits there too, and
//! Llama-3's `"-haired"` token joins `haired`), and a number is one word although CLIP
//! cuts it into single digits and Llama-3 into groups of three. Tokenizers only decide the
//! token texts ([`word_spans`] takes them): each CLIP token's text in the prompt, from its
//! offsets (`sd::tokenizer`), and each Llama-3 answer token decoded alone (`align::words`).
//!
//! Byte-level BPE can split one multi-byte character over two tokens, each of which then
//! decodes to U+FFFD; the replacement character counts as a letter inside a run that has a
//! real letter or digit, so such a word stays one (a run of U+FFFD alone is no word).

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

/// A text whose words exercise the rule on both tokenizers (module docs), and its words.
#[cfg(test)]
pub(crate) const WORD_RULE_TEXT: &str = "The red-haired Dog's 1234 bikes, near WATER.";
#[cfg(test)]
pub(crate) const WORD_RULE_WORDS: [&str; 9] = [
    "the", "red", "haired", "dog", "s", "1234", "bikes", "near", "water",
];

/// One occurrence of a word: its text as written and the indices of the tokens that hold its
/// characters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordSpan {
    pub text: String,
    pub tokens: Vec<usize>,
}

/// Whether `c` is part of a word (module docs): a letter or digit, or the replacement
/// character of a split multi-byte letter.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == char::REPLACEMENT_CHARACTER
}

/// The word occurrences, in order, of the text that `token_texts` spell when joined (module
/// docs): maximal runs of [`is_word_char`] that hold a letter or digit, each with the tokens
/// its characters come from.
pub fn word_spans<S: AsRef<str>>(token_texts: &[S]) -> Vec<WordSpan> {
    let mut spans: Vec<WordSpan> = Vec::new();
    let mut open = false;
    for (index, text) in token_texts.iter().enumerate() {
        for c in text.as_ref().chars() {
            if !is_word_char(c) {
                open = false;
                continue;
            }
            match spans.last_mut() {
                Some(span) if open => {
                    span.text.push(c);
                    if span.tokens.last() != Some(&index) {
                        span.tokens.push(index);
                    }
                }
                _ => spans.push(WordSpan {
                    text: c.to_string(),
                    tokens: vec![index],
                }),
            }
            open = true;
        }
    }
    spans.retain(|span| span.text.chars().any(char::is_alphanumeric));
    spans
}

/// The words of `token_texts` ([`word_spans`]) keyed by [`normalise_word`], repeated words
/// merged into one entry whose members are all their tokens.
pub fn group_words<S: AsRef<str>>(token_texts: &[S]) -> WordGroups {
    let mut groups = WordGroups::default();
    for span in word_spans(token_texts) {
        groups.add(normalise_word(&span.text), span.tokens);
    }
    groups
}

/// A word as it is keyed on both sides: lower-cased, with the punctuation (and whitespace)
/// around it removed (`"Dog."` -> `"dog"`); empty when nothing alphanumeric is left. On a
/// [`WordSpan`]'s text, which holds only word characters, this is the lower-casing.
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

    fn spans(texts: &[&str]) -> Vec<(String, Vec<usize>)> {
        word_spans(texts)
            .into_iter()
            .map(|span| (span.text, span.tokens))
            .collect()
    }

    fn pair(text: &str, tokens: &[usize]) -> (String, Vec<usize>) {
        (text.to_string(), tokens.to_vec())
    }

    /// Trailing punctuation, hyphens, possessives, numbers cut into pieces, case, invisible
    /// tokens: Llama-3-like token texts.
    #[test]
    fn words_are_runs_of_letters_and_digits() {
        let texts = [
            "The", " red", "-haired", " Dog", "'s", " ", "123", "4", " bikes", ".\n\n", "", " a",
            " zeb", "ra",
        ];
        assert_eq!(
            spans(&texts),
            [
                pair("The", &[0]),
                pair("red", &[1]),
                pair("haired", &[2]),
                pair("Dog", &[3]),
                pair("s", &[4]),
                pair("1234", &[6, 7]),
                pair("bikes", &[8]),
                pair("a", &[11]),
                pair("zebra", &[12, 13]),
            ]
        );
        let groups = group_words(&texts);
        assert_eq!(
            groups.words,
            strings(&[
                "the", "red", "haired", "dog", "s", "1234", "bikes", "a", "zebra"
            ])
        );
    }

    /// One token can hold the end of one word and the start of the next; it belongs to both.
    /// A multi-byte letter split over two tokens (each decoded as U+FFFD) stays in its word.
    #[test]
    fn tokens_across_words_and_split_letters() {
        assert_eq!(
            spans(&["dog", "s,c", "at"]),
            [pair("dogs", &[0, 1]), pair("cat", &[1, 2])]
        );
        assert_eq!(
            spans(&[" caf", "\u{FFFD}", "\u{FFFD}", " au", " lait"]),
            [
                pair("caf\u{FFFD}\u{FFFD}", &[0, 1, 2]),
                pair("au", &[3]),
                pair("lait", &[4])
            ]
        );
        assert!(spans(&["", " ", "!?", "\n", "\u{FFFD}"]).is_empty());
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
