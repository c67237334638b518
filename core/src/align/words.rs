//! The student's tokens as words, and how a student word finds the teacher's.
//!
//! Llama-3's byte-level BPE marks a word's start with a leading space, so a token whose text
//! starts with whitespace opens a new word ([`word_spans`], the one rule training and the
//! explorer share). A token with no visible text (`"\n\n"`, a special token decoded as `""`)
//! ends the current word and belongs to none. For the loss, words are then keyed as the
//! teacher's are ([`normalise_word`]: lower-cased, punctuation around them removed),
//! punctuation-only words dropped and repeated words merged ([`group_answer_words`]), so the
//! two sides' words can be matched as strings ([`teacher_row`]).

use crate::maps::words::{WordGroups, normalise_word};

/// Words the reference never matches.
const PUNCTUATION: [&str; 15] = [
    ".", ",", "!", "?", ";", ":", "-", "(", ")", "[", "]", "{", "}", "\"", "'",
];

/// One occurrence of a word: its visible text (the tokens' trimmed texts joined) and the
/// indices of its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordSpan {
    pub text: String,
    pub tokens: Vec<usize>,
}

/// Cuts decoded token texts (`" zeb"`, `"ra"`) into word occurrences, in order.
pub fn word_spans(token_texts: &[String]) -> Vec<WordSpan> {
    let mut spans: Vec<WordSpan> = Vec::new();
    let mut word_open = false;
    for (index, text) in token_texts.iter().enumerate() {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            word_open = false;
            continue;
        }
        let starts_word = text.starts_with(char::is_whitespace) || !word_open;
        word_open = true;
        match spans.last_mut() {
            Some(span) if !starts_word => {
                span.text.push_str(trimmed);
                span.tokens.push(index);
            }
            _ => spans.push(WordSpan {
                text: trimmed.to_string(),
                tokens: vec![index],
            }),
        }
    }
    spans
}

/// Groups decoded token texts into the loss's words: [`word_spans`], keyed by
/// [`normalise_word`], punctuation-only words dropped, repeated words merged.
pub fn group_answer_words(token_texts: &[String]) -> WordGroups {
    let mut groups = WordGroups::default();
    for span in word_spans(token_texts) {
        let word = normalise_word(&span.text);
        if !word.is_empty() {
            groups.add(word, span.tokens);
        }
    }
    groups
}

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

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leading_spaces_open_words_and_pieces_join() {
        let groups = group_answer_words(&texts(&[
            "A", " zeb", "ra", " and", " a", " Dog", ".", " !",
        ]));
        assert_eq!(groups.words, texts(&["a", "zebra", "and", "dog"]));
        assert_eq!(
            groups.members,
            vec![vec![0, 4], vec![1, 2], vec![3], vec![5, 6]]
        );
    }

    #[test]
    fn invisible_tokens_end_words_and_belong_to_none() {
        let groups = group_answer_words(&texts(&["\n\n", "A", "\n", "dog", ".", ""]));
        assert_eq!(groups.words, texts(&["a", "dog"]));
        assert_eq!(groups.members, vec![vec![1], vec![3, 4]]);
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
                ("Dog.", &[5, 6][..])
            ]
        );
    }
}
