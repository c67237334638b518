//! Scoring a generated answer: exact match after the usual normalisation (SQuAD's: lower case,
//! punctuation and the articles a / an / the removed, whitespace collapsed), and VLMEvalKit's
//! rule for reading a multiple-choice letter out of free text.

/// The answer normalised for exact match: lower-cased, punctuation removed, the articles
/// `a`, `an`, `the` dropped, whitespace collapsed (`"The Red ball."` -> `"red ball"`).
pub fn normalise_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let without_punctuation: String = lower
        .chars()
        .map(|c| if c.is_ascii_punctuation() { ' ' } else { c })
        .collect();
    without_punctuation
        .split_whitespace()
        .filter(|word| !matches!(*word, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `prediction` equals `answer` after [`normalise_answer`].
pub fn exact_match(prediction: &str, answer: &str) -> bool {
    normalise_answer(prediction) == normalise_answer(answer)
}

/// The option a free-text `prediction` chooses among `choices` (`(letter, text)`), as
/// VLMEvalKit's `can_infer` reads it, or `None` when it cannot tell:
/// 1. the prediction with `.()[],:;!*#{}` turned into spaces, split on whitespace: if exactly
///    one of the letters is one of the pieces, that letter;
/// 2. otherwise, if exactly one option's text (lower-cased) occurs in the lower-cased
///    prediction, that option.
pub fn choose_option(prediction: &str, choices: &[(char, String)]) -> Option<char> {
    let spaced: String = prediction
        .chars()
        .map(|c| if ".()[],:;!*#{}".contains(c) { ' ' } else { c })
        .collect();
    let pieces: Vec<&str> = spaced.split_whitespace().collect();
    let named: Vec<char> = choices
        .iter()
        .map(|(letter, _)| *letter)
        .filter(|letter| {
            let letter = letter.to_string();
            pieces.contains(&letter.as_str())
        })
        .collect();
    if let [letter] = named[..] {
        return Some(letter);
    }
    let lower = prediction.to_lowercase();
    let quoted: Vec<char> = choices
        .iter()
        .filter(|(_, text)| {
            let text = text.trim().to_lowercase();
            !text.is_empty() && lower.contains(&text)
        })
        .map(|(letter, _)| *letter)
        .collect();
    match quoted[..] {
        [letter] => Some(letter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_normalised_as_squad_does() {
        assert_eq!(normalise_answer("The Red ball."), "red ball");
        assert_eq!(normalise_answer("  an   apple, a pear!"), "apple pear");
        assert_eq!(normalise_answer("Theory"), "theory");
        assert!(exact_match("Red.", "red"));
        assert!(exact_match("the left", "Left"));
        assert!(!exact_match("red ball", "red"));
        assert!(!exact_match("", "red"));
    }

    fn abcd() -> Vec<(char, String)> {
        [
            "a red circle",
            "a blue square",
            "a green triangle",
            "nothing",
        ]
        .iter()
        .zip(['A', 'B', 'C', 'D'])
        .map(|(text, letter)| (letter, text.to_string()))
        .collect()
    }

    #[test]
    fn letters_are_read_as_vlmevalkit_reads_them() {
        let choices = abcd();
        assert_eq!(choose_option("B", &choices), Some('B'));
        assert_eq!(choose_option("(C) a green triangle", &choices), Some('C'));
        assert_eq!(choose_option("The answer is D.", &choices), Some('D'));
        assert_eq!(choose_option("B: a blue square", &choices), Some('B'));
        // Two letters named: undecided by letter, and no option text quoted.
        assert_eq!(choose_option("A or B", &choices), None);
        // No letter: the one option whose text is quoted.
        assert_eq!(
            choose_option("I see a blue square there", &choices),
            Some('B')
        );
        // Lower-case letters are not letters; two option texts quoted is undecided.
        assert_eq!(choose_option("b", &choices), None);
        assert_eq!(
            choose_option("a red circle and a blue square", &choices),
            None
        );
        assert_eq!(choose_option("", &choices), None);
    }
}
