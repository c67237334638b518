//! Training labels for a whole conversation, as the reference's collators mask them (llama-recipes'
//! `tokenize_dialogs`, `docs/method.md`, "Supervised tokens"): only the assistant's turns are
//! learned. Per input id:
//!
//! - `-100` for everything before the first header, the system and user turns (header,
//!   content, `<|eot_id|>`), every `<|start_header_id|>role<|end_header_id|>` header, `<|image|>`
//!   and the pad token;
//! - the id itself for an assistant turn's content (everything after its `<|end_header_id|>`,
//!   so the `"\n\n"` the template writes there too) up to and including its `<|eot_id|>`.
//!
//! The reference masks a segment up to an `<|eot_id|>` when it holds a system or user header,
//! so other roles (`ipython`, `tool`) would be learned there; here only assistant turns are.

use super::prompt::{Message, MllamaPrompt, PromptError, PromptInputs};

use crate::align::student::{IGNORE_INDEX, Supervision};

/// The special token ids the masking reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelTokens {
    pub start_header: u32,
    pub end_header: u32,
    pub eot: u32,
    pub image: u32,
    pub pad: Option<u32>,
}

/// Labels for `ids` under `supervision`; `role_of` turns a header's role tokens (between
/// `<|start_header_id|>` and `<|end_header_id|>`) into its text.
pub fn conversation_labels(
    ids: &[u32],
    tokens: &LabelTokens,
    supervision: Supervision,
    role_of: impl Fn(&[u32]) -> String,
) -> Vec<i64> {
    match supervision {
        Supervision::Answers => answer_labels(ids, tokens, role_of),
        Supervision::All => all_but_assistant_headers(ids, tokens, role_of),
    }
}

/// Only the assistant turns' contents and end tokens.
fn answer_labels(
    ids: &[u32],
    tokens: &LabelTokens,
    role_of: impl Fn(&[u32]) -> String,
) -> Vec<i64> {
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    let mut in_assistant_turn = false;
    let mut header_start: Option<usize> = None;
    for (position, &id) in ids.iter().enumerate() {
        if let Some(start) = header_start {
            if id == tokens.end_header {
                in_assistant_turn = role_of(&ids[start + 1..position]).trim() == "assistant";
                header_start = None;
            }
            continue;
        }
        if id == tokens.start_header {
            header_start = Some(position);
            in_assistant_turn = false;
            continue;
        }
        let ignored = id == tokens.image || Some(id) == tokens.pad;
        if in_assistant_turn && !ignored {
            labels[position] = i64::from(id);
        }
        if id == tokens.eot {
            in_assistant_turn = false;
        }
    }
    labels
}

/// The reference's Flickr30k / RLAIF-V labels: every id is its own label but the
/// `<|start_header_id|>assistant<|end_header_id|>` triples, padding and `<|image|>`.
fn all_but_assistant_headers(
    ids: &[u32],
    tokens: &LabelTokens,
    role_of: impl Fn(&[u32]) -> String,
) -> Vec<i64> {
    let mut labels: Vec<i64> = ids
        .iter()
        .map(|&id| {
            if id == tokens.image || Some(id) == tokens.pad {
                IGNORE_INDEX
            } else {
                i64::from(id)
            }
        })
        .collect();
    let mut header_start: Option<usize> = None;
    for (position, &id) in ids.iter().enumerate() {
        if id == tokens.start_header {
            header_start = Some(position);
        } else if id == tokens.end_header
            && let Some(start) = header_start.take()
            && role_of(&ids[start + 1..position]).trim() == "assistant"
        {
            labels[start..=position].fill(IGNORE_INDEX);
        }
    }
    labels
}

impl MllamaPrompt {
    /// The special token ids of this tokenizer that the label masking reads.
    pub fn label_tokens(&self) -> Result<LabelTokens, PromptError> {
        let tokenizer = self.tokenizer();
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                PromptError::Tokenize(format!("the vocabulary has no {token} to mask labels by"))
            })
        };
        Ok(LabelTokens {
            start_header: id("<|start_header_id|>")?,
            end_header: id("<|end_header_id|>")?,
            eot: id("<|eot_id|>")?,
            image: self.image_token_id(),
            pad: self
                .special_token("pad_token")
                .and_then(|token| tokenizer.token_to_id(token)),
        })
    }

    /// A whole conversation (the assistant's answers included) for training: the template
    /// rendered without the generation prompt, encoded as [`encode`](Self::encode) does, and
    /// one label per input id ([`conversation_labels`] under `supervision`).
    pub fn encode_conversation(
        &self,
        messages: &[Message],
        supervision: Supervision,
        num_tiles: &[usize],
        max_num_tiles: usize,
        max_position_embeddings: usize,
    ) -> Result<(PromptInputs, Vec<i64>), PromptError> {
        let text = self.render(messages, false)?;
        let inputs = self.encode(&text, num_tiles, max_num_tiles, max_position_embeddings)?;
        let tokens = self.label_tokens()?;
        let labels = conversation_labels(&inputs.input_ids, &tokens, supervision, |role| {
            self.decode(role, false).unwrap_or_default()
        });
        Ok((inputs, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{golden_i64, mllama_tiny_dir};

    fn lavender_golden() -> std::path::PathBuf {
        mllama_tiny_dir().join("../lavender-tiny/golden.safetensors")
    }

    #[test]
    fn fixture_conversation_labels_match_the_reference_collator() {
        let prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        let messages = [
            Message::user_with_image("What is in the picture?"),
            Message::text(
                "assistant",
                "A brown dog rides a red skateboard near the water.",
            ),
        ];
        let (inputs, labels) = prompt
            .encode_conversation(&messages, Supervision::Answers, &[2], 4, 256)
            .unwrap();
        let (ids, _) = golden_i64(&lavender_golden(), "input_ids");
        let ours: Vec<i64> = inputs.input_ids.iter().map(|&id| i64::from(id)).collect();
        assert_eq!(ours, ids);
        let (expected, _) = golden_i64(&lavender_golden(), "labels");
        assert_eq!(labels, expected);
    }

    /// Special ids by hand: 1 = start, 2 = end header, 3 = eot, 9 = image, 0 = pad.
    const TOKENS: LabelTokens = LabelTokens {
        start_header: 1,
        end_header: 2,
        eot: 3,
        image: 9,
        pad: Some(0),
    };

    /// Role tokens by hand: 50 (system), 51 (user), 52 (assistant).
    fn role(ids: &[u32]) -> String {
        match ids {
            [50] => "system",
            [51] => "user",
            [52] => " assistant",
            _ => "other",
        }
        .to_string()
    }

    /// System, user and assistant turns twice over, by hand.
    #[test]
    fn only_assistant_content_and_its_eot_are_learned() {
        let ids = [
            7, // bos
            1, 50, 2, 20, 3, // system
            1, 51, 2, 9, 21, 3, // user with image
            1, 52, 2, 22, 23, 9, 3, // assistant (a stray image token)
            1, 51, 2, 24, 3, // user
            1, 52, 2, 25, 3, // assistant
            0, 0, // pad
        ];
        let labels = conversation_labels(&ids, &TOKENS, Supervision::Answers, role);
        let m = IGNORE_INDEX;
        #[rustfmt::skip]
        let expected = vec![
            m,
            m, m, m, m, m,
            m, m, m, m, m, m,
            m, m, m, 22, 23, m, 3,
            m, m, m, m, m,
            m, m, m, 25, 3,
            m, m,
        ];
        assert_eq!(labels, expected);
    }

    /// The same conversation as the reference's Flickr30k / RLAIF-V collators label it: all
    /// but the assistant headers' three tokens, padding and image tokens.
    #[test]
    fn supervising_all_masks_only_assistant_headers_padding_and_images() {
        let ids = [
            7, // bos
            1, 50, 2, 20, 3, // system
            1, 51, 2, 9, 21, 3, // user with image
            1, 52, 2, 22, 23, 9, 3, // assistant (a stray image token)
            0, 0, // pad
        ];
        let labels = conversation_labels(&ids, &TOKENS, Supervision::All, role);
        let m = IGNORE_INDEX;
        #[rustfmt::skip]
        let expected = vec![
            7,
            1, 50, 2, 20, 3,
            1, 51, 2, m, 21, 3,
            m, m, m, 22, 23, m, 3,
            m, m,
        ];
        assert_eq!(labels, expected);
    }
}
