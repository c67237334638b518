//! Evaluating a student on questions with known answers (`lavender eval`): the questions as
//! [`EvalItem`]s from the project's data specs or a VLMEvalKit TSV ([`vlmeval_tsv`]), the
//! prompt a multiple-choice question is asked with, and the scoring ([`score`]).

pub mod score;
#[cfg(feature = "vlmeval")]
pub mod vlmeval_tsv;

use std::collections::BTreeMap;

use crate::data::{Conversation, ImageSource, Role};

/// Where an item's image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalImage {
    /// A file or a parquet row, as the data specs give it.
    Source(ImageSource),
    /// Encoded bytes (a VLMEvalKit TSV's base64 column, decoded).
    Bytes(Vec<u8>),
}

/// One question about one image, with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalItem {
    pub id: String,
    pub image: EvalImage,
    pub question: String,
    /// The expected answer: text, or an option's letter for a multiple-choice question.
    pub answer: String,
    /// `(letter, text)` of each option, in order; empty for an open question.
    pub choices: Vec<(char, String)>,
    pub category: Option<String>,
}

impl EvalItem {
    /// The first user turn asks, the first assistant turn answers.
    pub fn from_conversation(conversation: &Conversation) -> Option<Self> {
        let turn = |role: Role| {
            conversation
                .turns
                .iter()
                .find(|turn| turn.role == role)
                .map(|turn| turn.content.clone())
        };
        Some(Self {
            id: conversation.id.clone(),
            image: EvalImage::Source(conversation.image.clone()),
            question: turn(Role::User)?,
            answer: turn(Role::Assistant)?,
            choices: Vec::new(),
            category: conversation.category.clone(),
        })
    }

    /// The user's message: the question, and for a multiple-choice question its options and
    /// how to answer (LLaVA's multiple-choice prompt).
    pub fn prompt(&self) -> String {
        if self.choices.is_empty() {
            return self.question.clone();
        }
        let mut prompt = format!("{}\nOptions:", self.question);
        for (letter, text) in &self.choices {
            prompt.push_str(&format!("\n{letter}. {text}"));
        }
        prompt.push_str("\nAnswer with the option's letter from the given choices directly.");
        prompt
    }

    /// Whether `prediction` answers correctly: the option it chooses
    /// ([`score::choose_option`]) is the answer's letter, or for an open question an exact
    /// match ([`score::exact_match`]).
    pub fn is_correct(&self, prediction: &str) -> bool {
        if self.choices.is_empty() {
            score::exact_match(prediction, &self.answer)
        } else {
            let expected = self.answer.trim().chars().next();
            score::choose_option(prediction, &self.choices).is_some_and(|c| Some(c) == expected)
        }
    }
}

/// Accuracy over all items and per category.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// `category -> (count, correct, accuracy)`; empty when no item has a category.
    pub categories: BTreeMap<String, CategoryScore>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CategoryScore {
    pub count: usize,
    pub correct: usize,
    pub accuracy: f64,
}

impl Summary {
    /// The summary of `(item, correct)` results.
    pub fn of<'a>(results: impl IntoIterator<Item = (&'a EvalItem, bool)>) -> Self {
        let mut summary = Self::default();
        for (item, correct) in results {
            summary.count += 1;
            summary.correct += usize::from(correct);
            if let Some(category) = &item.category {
                let entry = summary.categories.entry(category.clone()).or_default();
                entry.count += 1;
                entry.correct += usize::from(correct);
            }
        }
        let ratio = |correct: usize, count: usize| {
            if count == 0 {
                0.0
            } else {
                correct as f64 / count as f64
            }
        };
        summary.accuracy = ratio(summary.correct, summary.count);
        for score in summary.categories.values_mut() {
            score.accuracy = ratio(score.correct, score.count);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(answer: &str, choices: &[(char, &str)], category: Option<&str>) -> EvalItem {
        EvalItem {
            id: "1".into(),
            image: EvalImage::Bytes(Vec::new()),
            question: "What is it?".into(),
            answer: answer.into(),
            choices: choices.iter().map(|(l, t)| (*l, t.to_string())).collect(),
            category: category.map(str::to_string),
        }
    }

    #[test]
    fn open_and_multiple_choice_items_are_scored() {
        let open = item("a red ball", &[], None);
        assert_eq!(open.prompt(), "What is it?");
        assert!(open.is_correct("Red ball."));
        assert!(!open.is_correct("ball"));
        let choice = item("B", &[('A', "cat"), ('B', "dog")], Some("animals"));
        assert_eq!(
            choice.prompt(),
            "What is it?\nOptions:\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
        );
        assert!(choice.is_correct("B"));
        assert!(choice.is_correct("It is a dog"));
        assert!(!choice.is_correct("A"));
        assert!(!choice.is_correct("cat or dog"));
    }

    #[test]
    fn the_summary_splits_by_category() {
        let a = item("x", &[], Some("colour"));
        let b = item("y", &[], Some("shape"));
        let summary = Summary::of([(&a, true), (&a, false), (&b, true), (&b, true)]);
        assert_eq!((summary.count, summary.correct), (4, 3));
        assert_eq!(summary.accuracy, 0.75);
        assert_eq!(summary.categories["colour"].accuracy, 0.5);
        assert_eq!(summary.categories["shape"].count, 2);
    }
}
