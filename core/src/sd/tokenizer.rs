//! CLIP's byte-level BPE tokenizer as SD v1.x feeds it to the text encoder: `<|startoftext|>`,
//! the prompt's tokens (truncated), `<|endoftext|>`, padded to 77 with `<|endoftext|>`.
//!
//! A diffusers `tokenizer/` folder has either a `tokenizer.json` or only CLIP's `vocab.json` +
//! `merges.txt` (SD v1.4); from the latter we build what transformers' `CLIPTokenizer`
//! builds (`convert_slow_tokenizer.py`, `CLIPConverter`).

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::{
    AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
    decoders::byte_level::ByteLevel,
    models::bpe::{BPE, Merges, Vocab},
    normalizers::{
        Lowercase, NFC, Replace, Sequence as NormalizerSequence, replace::ReplacePattern,
    },
    pre_tokenizers::{
        sequence::Sequence as PreTokenizerSequence,
        split::{Split, SplitPattern},
    },
};

use crate::weights::{LoadError, read_json};

/// SD v1.x's text length: CLIP's `max_position_embeddings`.
pub const MAX_LENGTH: usize = 77;

pub(crate) const START: &str = "<|startoftext|>";
pub(crate) const END: &str = "<|endoftext|>";
/// Marks the last piece of a word in CLIP's vocabulary.
const END_OF_WORD: &str = "</w>";
/// CLIP's word split (transformers 5 `CLIPTokenizer`: the converter's pattern with the two
/// special tokens in front, so a literal special token stays one piece).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The tokenizer could not encode a prompt.
#[derive(Debug, thiserror::Error)]
#[error("cannot tokenize the prompt: {0}")]
pub struct TokenizeError(String);

/// One prompt, tokenized for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTokens {
    /// `<|startoftext|>`, the prompt's tokens, `<|endoftext|>`, then `<|endoftext|>` padding:
    /// always [`MAX_LENGTH`] long.
    pub ids: Vec<u32>,
    /// How many prompt tokens there are (`ids[1..1 + prompt_len]`), after truncation.
    pub prompt_len: usize,
    /// The prompt tokens' vocabulary strings (`"dog</w>"`, `"skate"`), `prompt_len` of them.
    pub pieces: Vec<String>,
    /// Each prompt token's text in the prompt as written, with the text up to the next token
    /// (whitespace) after it, `prompt_len` of them: they join to the prompt (less leading
    /// whitespace and truncated text). The word rule reads these (`maps::words`), not the
    /// pieces, because CLIP cuts `"42"` into `4</w>`, `2</w>`, which decode as `"4 2"`.
    pub texts: Vec<String>,
}

impl ClipTokens {
    /// The ids as the text encoder's input: `[1, MAX_LENGTH]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = self.ids.iter().map(|&id| i64::from(id)).collect();
        Tensor::from_data(TensorData::new(ids, [1, self.ids.len()]), device)
    }
}

/// CLIP's tokenizer with SD's framing and padding.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    start_id: u32,
    end_id: u32,
}

impl ClipTokenizer {
    /// Loads `folder/tokenizer.json`, or builds the tokenizer from `folder/vocab.json` and
    /// `folder/merges.txt`.
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        let json = folder.join("tokenizer.json");
        let mut tokenizer = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|error| LoadError::Config {
                path: json.clone(),
                reason: error.to_string(),
            })?
        } else {
            from_vocab_and_merges(folder)?
        };
        // Framing, truncation and padding are done in `encode`; a tokenizer.json may carry
        // its own, which would double them.
        tokenizer
            .with_truncation(None)
            .map_err(|error| LoadError::Config {
                path: folder.to_path_buf(),
                reason: error.to_string(),
            })?
            .with_padding(None);
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| LoadError::Config {
                    path: folder.to_path_buf(),
                    reason: format!("the vocabulary has no `{token}`"),
                })
        };
        let (start_id, end_id) = (id(START)?, id(END)?);
        Ok(Self {
            tokenizer,
            start_id,
            end_id,
        })
    }

    /// Tokenizes `text` as SD does: start token, at most `MAX_LENGTH - 2` prompt tokens, end
    /// token, end-token padding.
    pub fn encode(&self, text: &str) -> Result<ClipTokens, TokenizeError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| TokenizeError(error.to_string()))?;
        let prompt_len = encoding.len().min(MAX_LENGTH - 2);
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(self.start_id);
        ids.extend_from_slice(&encoding.get_ids()[..prompt_len]);
        ids.push(self.end_id);
        ids.resize(MAX_LENGTH, self.end_id);
        Ok(ClipTokens {
            ids,
            prompt_len,
            pieces: encoding.get_tokens()[..prompt_len].to_vec(),
            texts: token_texts(text, &encoding.get_offsets()[..prompt_len]),
        })
    }

    /// Number of entries in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of `<|startoftext|>`.
    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    /// The id of `<|endoftext|>`, which also pads.
    pub fn end_id(&self) -> u32 {
        self.end_id
    }
}

/// The text of each token from its byte `offsets` in `text`: from its start to the next
/// token's start (the last one to its own end). Pieces of one character (byte-level BPE of a
/// multi-byte letter) share offsets: the first gets `""`, the last the character.
fn token_texts(text: &str, offsets: &[(usize, usize)]) -> Vec<String> {
    (0..offsets.len())
        .map(|index| {
            let start = offsets[index].0;
            let end = offsets
                .get(index + 1)
                .map_or(offsets[index].1, |next| next.0);
            text.get(start..end.max(start))
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Whether `piece` ends a word (carries CLIP's `</w>`).
pub fn ends_word(piece: &str) -> bool {
    piece.ends_with(END_OF_WORD)
}

/// transformers' `CLIPConverter`: NFC, runs of whitespace to one space, lowercase; CLIP's word
/// split then byte-level; BPE with `</w>` ending each word; byte-level decoding.
fn from_vocab_and_merges(folder: &Path) -> Result<Tokenizer, LoadError> {
    let vocab_path = folder.join("vocab.json");
    let merges_path = folder.join("merges.txt");
    let vocab: Vocab = read_json::<std::collections::HashMap<String, u32>>(&vocab_path)?
        .into_iter()
        .collect();
    let merges = read_merges(&merges_path)?;
    let config_error = |path: &Path, error: tokenizers::Error| LoadError::Config {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(END.to_string())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD.to_string())
        .fuse_unk(false)
        .build()
        .map_err(|error| config_error(&merges_path, error))?;

    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".to_string()), " ")
        .map_err(|error| config_error(folder, error))?;
    let normalizer = NormalizerSequence::new(vec![
        NormalizerWrapper::from(NFC),
        NormalizerWrapper::from(whitespace),
        NormalizerWrapper::from(Lowercase),
    ]);
    let split = Split::new(
        SplitPattern::Regex(SPLIT_PATTERN.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|error| config_error(folder, error))?;
    let pre_tokenizer = PreTokenizerSequence::new(vec![
        PreTokenizerWrapper::from(split),
        PreTokenizerWrapper::from(ByteLevel::new(false, true, true)),
    ]);

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|error| config_error(folder, error))?
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_decoder(Some(ByteLevel::default()));
    // As in transformers: the special tokens match literally in the prompt, before
    // normalisation.
    tokenizer
        .add_special_tokens([AddedToken::from(START, true), AddedToken::from(END, true)])
        .map_err(|error| config_error(folder, error))?;
    Ok(tokenizer)
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair per line, by rank.
fn read_merges(path: &Path) -> Result<Merges, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with("#version") && !line.is_empty())
        .map(
            |(index, line)| match line.split(' ').collect::<Vec<_>>()[..] {
                [left, right] => Ok((left.to_string(), right.to_string())),
                _ => Err(LoadError::Config {
                    path: path.to_path_buf(),
                    reason: format!("line {} is not a `left right` merge: {line:?}", index + 1),
                }),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::words::{WORD_RULE_TEXT, WORD_RULE_WORDS, group_words};
    use crate::testing::{sd_golden_metadata, sd_tiny_dir};

    /// The int64 tensor `name` of the golden file, as u32 ids.
    fn golden_ids(name: &str) -> Vec<u32> {
        let bytes = std::fs::read(sd_tiny_dir().join("golden.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name} dtype");
        assert_eq!(view.shape(), [1, MAX_LENGTH], "{name} shape");
        view.data()
            .chunks_exact(8)
            .map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
            .collect()
    }

    fn tokenizer() -> ClipTokenizer {
        ClipTokenizer::load(&sd_tiny_dir().join("tokenizer")).unwrap()
    }

    #[test]
    fn prompt_matches_transformers() {
        let tokens = tokenizer().encode(&sd_golden_metadata("prompt")).unwrap();
        assert_eq!(tokens.ids, golden_ids("cond_input_ids"));
        let pieces: Vec<String> = serde_json::from_str(&sd_golden_metadata("tokens")).unwrap();
        assert_eq!(tokens.pieces, pieces);
        assert_eq!(tokens.prompt_len, pieces.len());
    }

    #[test]
    fn empty_prompt_matches_transformers() {
        let tokens = tokenizer().encode("").unwrap();
        assert_eq!(tokens.ids, golden_ids("uncond_input_ids"));
        assert_eq!(tokens.prompt_len, 0);
        assert!(tokens.pieces.is_empty());
    }

    #[test]
    fn tokenizer_json_loads_the_same() {
        let built = tokenizer();
        let folder =
            std::env::temp_dir().join(format!("lavender-clip-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        built
            .tokenizer
            .save(folder.join("tokenizer.json"), false)
            .unwrap();
        let loaded = ClipTokenizer::load(&folder);
        std::fs::remove_dir_all(&folder).unwrap();
        let prompt = sd_golden_metadata("prompt");
        assert_eq!(
            loaded.unwrap().encode(&prompt).unwrap(),
            built.encode(&prompt).unwrap()
        );
    }

    #[test]
    fn long_prompts_are_truncated_to_77() {
        let tokenizer = tokenizer();
        let tokens = tokenizer.encode(&"dog ".repeat(100)).unwrap();
        assert_eq!(tokens.ids.len(), MAX_LENGTH);
        assert_eq!(tokens.prompt_len, MAX_LENGTH - 2);
        assert_eq!(tokens.ids[0], tokenizer.start_id());
        assert_eq!(tokens.ids[MAX_LENGTH - 1], tokenizer.end_id());
    }

    /// The token texts join to the prompt, and the words the teacher keys its maps by are
    /// the reference script's (`tests/fixtures/make_sd_fixtures.py`, the same rule).
    #[test]
    fn token_texts_give_the_fixture_words() {
        let prompt = sd_golden_metadata("prompt");
        let tokens = tokenizer().encode(&prompt).unwrap();
        assert_eq!(tokens.texts.len(), tokens.prompt_len);
        assert_eq!(tokens.texts.concat(), prompt.trim());
        let words: Vec<String> = serde_json::from_str(&sd_golden_metadata("words")).unwrap();
        assert_eq!(group_words(&tokens.texts).words, words);
    }

    /// The word rule on CLIP's tokens (`maps::words`): the trailing "." is no part of "water",
    /// hyphens and possessives split (CLIP's pre-tokenizer splits there), the digits CLIP
    /// cuts "42" into are one word, case is folded. The student's Llama-3 tokenizer gives the
    /// same words for this text (`vlm::mllama::prompt` tests).
    #[test]
    fn clip_tokens_follow_the_word_rule() {
        let tokens = tokenizer().encode(WORD_RULE_TEXT).unwrap();
        assert_eq!(
            tokens
                .pieces
                .iter()
                .filter(|p| p.starts_with('4') || p.starts_with('2'))
                .count(),
            2,
            "CLIP cuts 42 into single digits: {:?}",
            tokens.pieces
        );
        assert_eq!(group_words(&tokens.texts).words, WORD_RULE_WORDS);
    }
}
