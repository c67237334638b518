//! How a student word finds the teacher's. Both sides' words come from the project's one word
//! rule (`maps::words`: runs of letters and digits in the token texts, lower-cased), so the
//! student's Llama-3 tokens and the teacher's CLIP tokens give the same words for the same text
//! and can be matched as strings ([`teacher_row`]).

use crate::maps::words::normalise_word;

/// Words the reference never matches.
const PUNCTUATION: [&str; 15] = [
    ".", ",", "!", "?", ";", ":", "-", "(", ")", "[", "]", "{", "}", "\"", "'",
];

/// The row of the teacher's map for the student's keyed `word`: the teacher word equal to it,
/// or `None` when there is none or when `word` is empty or punctuation (the reference never
/// matches those). The one matching rule of `L_att` and of the explorer's teacher-student
/// comparison ([`teacher_word_row`]), so the two cannot drift.
pub fn teacher_row(teacher_words: &[String], word: &str) -> Option<usize> {
    if word.is_empty() || PUNCTUATION.contains(&word) {
        return None;
    }
    teacher_words.iter().position(|t| t == word)
}

/// The row of the teacher's map for a word as shown (`"Dog."`): [`teacher_row`] after the word
/// is keyed as training keys the student's answer words ([`normalise_word`]), so the
/// explorer's `"Dog."` finds the teacher's `"dog"`.
pub fn teacher_word_row(teacher_words: &[String], word: &str) -> Option<usize> {
    teacher_row(teacher_words, &normalise_word(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        maps::words::{WORD_RULE_TEXT, WORD_RULE_WORDS, group_words, word_spans},
        testing::mllama_tiny_dir,
    };

    /// The word rule on the student's Llama-3 tokens, each decoded alone as the loss decodes
    /// them: the same words as on CLIP's tokens (`sd::tokenizer` tests) although the two cut
    /// the text differently (Llama-3's pre-tokenizer keeps "-haired" and "'s" whole and cuts
    /// "1234" into "123" + "4"; the tiny vocabulary then spells most of them letter by letter).
    #[test]
    fn llama_tokens_follow_the_word_rule() {
        let tokenizer =
            tokenizers::Tokenizer::from_file(mllama_tiny_dir().join("tokenizer.json")).unwrap();
        let ids = tokenizer
            .encode(WORD_RULE_TEXT, false)
            .unwrap()
            .get_ids()
            .to_vec();
        let texts: Vec<String> = ids
            .iter()
            .map(|&id| tokenizer.decode(&[id], true).unwrap())
            .collect();
        assert!(
            texts
                .iter()
                .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
                .count()
                >= 2,
            "Llama-3 cuts numbers into groups of three: {texts:?}"
        );
        assert_eq!(group_words(&texts).words, WORD_RULE_WORDS);
    }

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leading_spaces_open_words_and_pieces_join() {
        let groups = group_words(&texts(&[
            "A", " zeb", "ra", " and", " a", " Dog", ".", " !",
        ]));
        assert_eq!(groups.words, texts(&["a", "zebra", "and", "dog"]));
        // The "." after "Dog" is no part of it.
        assert_eq!(
            groups.members,
            vec![vec![0, 4], vec![1, 2], vec![3], vec![5]]
        );
    }

    #[test]
    fn invisible_tokens_end_words_and_belong_to_none() {
        let groups = group_words(&texts(&["\n\n", "A", "\n", "dog", ".", ""]));
        assert_eq!(groups.words, texts(&["a", "dog"]));
        assert_eq!(groups.members, vec![vec![1], vec![3]]);
    }

    #[test]
    fn teacher_words_match_as_training_matches_them() {
        let teacher = texts(&["a", "brown", "dog", "-"]);
        assert_eq!(teacher_word_row(&teacher, "dog"), Some(2));
        assert_eq!(teacher_word_row(&teacher, "Dog"), Some(2));
        assert_eq!(teacher_word_row(&teacher, "dog."), Some(2));
        assert_eq!(teacher_word_row(&teacher, " BROWN,"), Some(1));
        assert_eq!(teacher_word_row(&teacher, "dogs"), None);
        assert_eq!(teacher_word_row(&teacher, "-"), None);
        assert_eq!(teacher_word_row(&teacher, "."), None);
        assert_eq!(teacher_word_row(&teacher, ""), None);
        assert_eq!(teacher_word_row(&texts(&[""]), ""), None);
        assert_eq!(teacher_row(&teacher, "-"), None);
    }

    #[test]
    fn spans_keep_occurrences_apart_and_their_visible_text() {
        let spans = word_spans(&texts(&["A", " zeb", "ra", "\n", " a", " Dog", "."]));
        let pairs: Vec<(&str, &[usize])> = spans
            .iter()
            .map(|span| (span.text.as_str(), span.tokens.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("A", &[0][..]),
                ("zebra", &[1, 2][..]),
                ("a", &[4][..]),
                ("Dog", &[5][..])
            ]
        );
    }
}
