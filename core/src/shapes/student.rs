//! The student the shapes study trains from scratch: a Llama-3.2-Vision (Mllama) folder without
//! weights, small enough to pre-train on a laptop CPU. Its tokenizer is word-level (one token per
//! word of the shapes language, with and without GPT-2's leading-space mark `Ġ`, as Llama 3's
//! byte-level pre-tokenizer cuts text), with Llama 3's special tokens and the 3.2-Vision chat
//! template, so every command and transformers read it like a released model.
//! `lavender train --full --from-scratch --vlm FOLDER` initialises its weights from config.json.

use serde_json::{Value, json};

/// The words of every caption, question and answer [`super::language`] writes, of the
/// captioning prompt ([`crate::data::conversation::CAPTION_PROMPT`]) and the chat roles the template writes. A test checks that no generated text needs another.
const WORDS: [&str; 42] = [
    "a",
    "and",
    "from",
    "left",
    "right",
    "to",
    "of",
    "above",
    "below",
    "or",
    "what",
    "colour",
    "is",
    "the",
    "shape",
    "object",
    "there",
    "how",
    "many",
    "objects",
    "are",
    "yes",
    "no",
    "two",
    "three",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "user",
    "assistant",
    "system",
    "image",
    "describe",
    "in",
    "single",
    "sentence",
    "as",
    "caption",
];

/// Punctuation and whitespace pieces the byte-level pre-tokenizer cuts from the texts (`Ċ` is
/// a newline in GPT-2's byte alphabet, `Ġ` a space).
const PIECES: [&str; 8] = ["?", ",", ".", "Ġ?", "Ġ,", "Ċ", "ĊĊ", "Ġ"];

/// Llama 3's special tokens, in its order.
pub const SPECIAL_TOKENS: [&str; 9] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
    "<|image|>",
];

/// Llama 3's pre-tokenizer split (tiktoken's). Unlike GPT-2's, it keeps a run of newlines
/// whole whatever follows, so the generation prompt's `\n\n` is the token training saw before
/// the answer.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What an unknown piece becomes (Llama 3 has no unknown token; a word-level model needs one).
const UNKNOWN: &str = "<unk>";

/// Llama-3.2-Vision-Instruct's chat template without its tool and date machinery: the
/// messages between headers, `<|image|>` where an image part is, `<|eot_id|>` after each.
pub const CHAT_TEMPLATE: &str = "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}{%- if message['content'] is string %}{{- message['content'] | trim }}{%- else %}{%- for content in message['content'] %}{%- if content['type'] == 'image' %}{{- '<|image|>' }}{%- elif content['type'] == 'text' %}{{- content['text'] | trim }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// The token strings of the vocabulary, ids in order: the unknown token, the pieces, then
/// every word bare, capitalised, and after a space; the special tokens follow them.
pub fn vocabulary() -> Vec<String> {
    let mut tokens = vec![UNKNOWN.to_string()];
    tokens.extend(PIECES.iter().map(|p| p.to_string()));
    for word in WORDS {
        let capital = format!("{}{}", word[..1].to_uppercase(), &word[1..]);
        for form in [
            word.to_string(),
            capital.clone(),
            format!("Ġ{word}"),
            format!("Ġ{capital}"),
        ] {
            tokens.push(form);
        }
    }
    tokens
}

/// The id of special token `token`: the special tokens follow the `words` of the vocabulary,
/// in [`SPECIAL_TOKENS`]' order.
fn special_token_id(words: usize, token: &str) -> usize {
    words + SPECIAL_TOKENS.iter().position(|t| *t == token).unwrap_or(0)
}

/// `tokenizer.json`: a word-level model over [`vocabulary`] behind Llama 3's pre-tokenizer
/// (its split, then the byte-level alphabet) and byte-level decoder, the special tokens after the vocabulary, and `<|begin_of_text|>`
/// added to every encoding (Llama 3's post-processor).
pub fn tokenizer_json() -> Value {
    let words = vocabulary();
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    let special_id = |token: &str| special_token_id(words.len(), token);
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .map(|token| {
            json!({
                "id": special_id(token), "content": token, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true,
            })
        })
        .collect();
    let bos = "<|begin_of_text|>";
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": LLAMA3_SPLIT},
                    "behavior": "Isolated",
                    "invert": false,
                },
                {
                    "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": false,
                },
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [special_id(bos)], "tokens": [bos]}},
        },
        "decoder": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true,
        },
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNKNOWN},
    })
}

/// The sizes of the study's student: a 64-pixel tile of 8-pixel patches (an 8x8 grid, as the
/// teacher's 16x16 maps are pooled from a 64-pixel image), a 64-wide vision tower and a 128-wide
/// decoder of four layers, two of them cross-attention.
#[derive(Debug, Clone, Copy)]
pub struct StudentSize {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_hidden: usize,
    pub text_hidden: usize,
}

impl Default for StudentSize {
    fn default() -> Self {
        Self {
            image_size: 64,
            patch_size: 8,
            vision_hidden: 64,
            text_hidden: 128,
        }
    }
}

/// `config.json` (transformers' `MllamaConfig` field names) for `size`.
pub fn config_json(size: StudentSize) -> Value {
    let words = vocabulary().len();
    let id = |token: &str| special_token_id(words, token);
    json!({
        "model_type": "mllama",
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": id("<|image|>"),
        "text_config": {
            "model_type": "mllama_text_model",
            "vocab_size": words + SPECIAL_TOKENS.len(),
            "hidden_size": size.text_hidden,
            "intermediate_size": size.text_hidden * 2,
            "num_hidden_layers": 4,
            "cross_attention_layers": [1, 3],
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 128,
            "rope_theta": 500000.0,
            "rope_scaling": null,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.02,
            "dropout": 0.0,
            "tie_word_embeddings": false,
            "use_cache": true,
            "bos_token_id": id("<|begin_of_text|>"),
            "eos_token_id": [id("<|end_of_text|>"), id("<|eom_id|>"), id("<|eot_id|>")],
            "pad_token_id": id("<|finetune_right_pad_id|>"),
        },
        "vision_config": {
            "model_type": "mllama_vision_model",
            "image_size": size.image_size,
            "patch_size": size.patch_size,
            "hidden_size": size.vision_hidden,
            "intermediate_size": size.vision_hidden * 2,
            "attention_heads": 4,
            "num_hidden_layers": 3,
            "num_global_layers": 1,
            "intermediate_layers_indices": [1],
            "vision_output_dim": size.vision_hidden * 2,
            "max_num_tiles": 1,
            "supported_aspect_ratios": [[1, 1]],
            "num_channels": 3,
            "hidden_act": "gelu",
            "norm_eps": 1e-5,
            "initializer_range": 0.02,
        },
    })
}

/// `preprocessor_config.json`: one tile of `size.image_size` pixels, normalised to [-1, 1].
pub fn preprocessor_json(size: StudentSize) -> Value {
    json!({
        "image_processor_type": "MllamaImageProcessor",
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_pad": true,
        "do_rescale": true,
        "do_resize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "max_image_tiles": 1,
        "resample": 2,
        "rescale_factor": 1.0 / 255.0,
        "size": {"height": size.image_size, "width": size.image_size},
    })
}

/// `tokenizer_config.json`: the special tokens' roles, for transformers.
pub fn tokenizer_config_json() -> Value {
    json!({
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "pad_token": "<|finetune_right_pad_id|>",
        "model_max_length": 128,
        "processor_class": "MllamaProcessor",
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}

/// Every file of the weightless student folder, by name.
pub fn student_files(size: StudentSize) -> Vec<(&'static str, Vec<u8>)> {
    let pretty = |value: Value| {
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    };
    vec![
        ("config.json", pretty(config_json(size))),
        ("tokenizer.json", pretty(tokenizer_json())),
        ("tokenizer_config.json", pretty(tokenizer_config_json())),
        ("chat_template.jinja", CHAT_TEMPLATE.as_bytes().to_vec()),
        ("preprocessor_config.json", pretty(preprocessor_json(size))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{ShapesConfig, Split, generate, language};

    fn tokenizer() -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_bytes(tokenizer_json().to_string()).unwrap()
    }

    /// Every caption, question and answer of a generated dataset is in the vocabulary: no
    /// piece becomes `<unk>`, and decoding gives the text back.
    #[test]
    fn the_shapes_language_has_no_unknown_words() {
        let tokenizer = tokenizer();
        let config = ShapesConfig {
            seed: 3,
            size: 64,
            scenes: [60, 10, 10, 20],
        };
        let mut texts = Vec::new();
        for split in Split::ALL {
            for scene in generate(&config, split) {
                texts.push(language::caption(&scene));
                for question in language::questions(&scene, None) {
                    texts.push(question.text);
                    texts.push(question.answer.to_string());
                }
            }
        }
        texts.push("user\n\nassistant".into());
        texts.push(crate::data::conversation::CAPTION_PROMPT.into());
        for text in &texts {
            let encoding = tokenizer.encode(text.as_str(), false).unwrap();
            assert!(
                !encoding.get_ids().contains(&0),
                "{text:?} has an unknown piece: {:?}",
                encoding.get_tokens()
            );
            assert_eq!(&tokenizer.decode(encoding.get_ids(), true).unwrap(), text);
        }
    }

    /// One token per word, the space kept in the token (so the word rule sees the words
    /// apart when each token is decoded alone), and `<|begin_of_text|>` added first.
    #[test]
    fn words_are_single_tokens() {
        let tokenizer = tokenizer();
        let encoding = tokenizer
            .encode("What colour is the circle?", true)
            .unwrap();
        assert_eq!(
            encoding.get_tokens(),
            [
                "<|begin_of_text|>",
                "What",
                "Ġcolour",
                "Ġis",
                "Ġthe",
                "Ġcircle",
                "?"
            ]
        );
        let alone: Vec<String> = encoding.get_ids()[1..]
            .iter()
            .map(|&id| tokenizer.decode(&[id], true).unwrap())
            .collect();
        assert_eq!(alone, ["What", " colour", " is", " the", " circle", "?"]);
        // The answer after the header's newlines, and the generation prompt that ends with
        // them, cut the newlines the same way.
        let answer = tokenizer
            .encode("assistant<|end_header_id|>\n\nblue", false)
            .unwrap();
        let prompt = tokenizer
            .encode("assistant<|end_header_id|>\n\n", false)
            .unwrap();
        assert_eq!(
            answer.get_tokens(),
            ["assistant", "<|end_header_id|>", "ĊĊ", "blue"]
        );
        assert_eq!(prompt.get_tokens(), &answer.get_tokens()[..3]);
        let image = tokenizer.token_to_id("<|image|>").unwrap() as u64;
        assert_eq!(
            config_json(StudentSize::default())["image_token_index"],
            image
        );
    }
}
