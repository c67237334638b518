//! The student's answer tokens as words: Llama-3's byte-level BPE marks a word's start with a
//! leading space, so a token whose text starts with whitespace opens a new word. Words are
//! lower-cased, punctuation-only words dropped and repeated words merged, as on the teacher's
//! side ([`crate::sd::words`]), so the two sides' words can be matched as strings. A token
//! with no visible text (`"\n\n"`, a special token decoded as `""`) ends the current word and
//! belongs to none.

use crate::sd::words::WordGroups;

/// Groups decoded token texts (`" zeb"`, `"ra"`) into words.
pub fn group_answer_words(token_texts: &[String]) -> WordGroups {
    let mut groups = WordGroups {
        words: Vec::new(),
        members: Vec::new(),
    };
    let mut spans: Vec<(String, Vec<usize>)> = Vec::new();
    let mut word_open = false;
    for (index, text) in token_texts.iter().enumerate() {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            word_open = false;
            continue;
        }
        let starts_word = text.starts_with(char::is_whitespace) || !word_open;
        word_open = true;
        // Punctuation attached to a word ("dog.") ends it; it is not part of it.
        if starts_word {
            spans.push((trimmed.to_string(), vec![index]));
        } else if let Some((word, members)) = spans.last_mut() {
            word.push_str(trimmed);
            members.push(index);
        }
    }
    for (word, members) in spans {
        let word = normalise_word(&word);
        if word.is_empty() {
            continue;
        }
        match groups.words.iter().position(|w| *w == word) {
            Some(existing) => groups.members[existing].extend(members),
            None => {
                groups.words.push(word);
                groups.members.push(members);
            }
        }
    }
    groups
}

/// A word as the student's answer words are keyed: lower-cased, with the punctuation (and
/// whitespace) around it removed (`"Dog."` -> `"dog"`); empty when nothing alphanumeric is left.
pub fn normalise_word(text: &str) -> String {
    text.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
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
}
