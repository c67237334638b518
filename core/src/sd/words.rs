//! From CLIP prompt tokens to words: the pieces of a word (a run of tokens ending in one that
//! carries `</w>`) are merged, words are lower-cased, a word that occurs twice is one entry and
//! punctuation-only words are dropped. Only the CLIP rule is here; the maps of the words are
//! made as on the student's side ([`crate::maps::words::word_maps`]).

use super::tokenizer::ends_word;
use crate::maps::words::WordGroups;

/// Groups BPE pieces (`"ze"`, `"bra</w>"`) into words; `to_text` turns a word's pieces into its
/// text (byte-level decoding, `</w>` removed).
pub fn group_words(pieces: &[String], to_text: impl Fn(&[String]) -> String) -> WordGroups {
    let mut groups = WordGroups::default();
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
        groups.add(text, span);
    }
    groups
}

#[cfg(test)]
mod tests {
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
}
