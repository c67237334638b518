//! The text side of transformers' `MllamaProcessor`: the chat template rendered as
//! `apply_chat_template` renders it, the prompt tokenized without added special tokens (the
//! template writes `<|begin_of_text|>` itself), and the cross-attention mask saying which
//! images' tiles each text position may attend to (`get_cross_attention_token_mask` +
//! `convert_sparse_cross_attention_mask_to_dense`).

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use minijinja::{Environment, Value, value::Serde};
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::{
    vlm::chat_template::{
        TEMPLATE_FUEL, TEMPLATE_NAME, describe, find_chat_template, template_environment,
    },
    weights::{FileSource, LoadError},
};

/// The placeholder the template writes for each image.
pub const IMAGE_TOKEN: &str = "<|image|>";
const DEFAULT_BOS: &str = "<|begin_of_text|>";

/// One chat message in Hugging Face's shape: `{"role": ..., "content": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// A message's `content`: a plain string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// `{"type": "image"}` or `{"type": "text", "text": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Image,
    Text { text: String },
}

impl Message {
    /// A message whose content is a plain string.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Content::Text(text.into()),
        }
    }

    /// A user turn with one image followed by `text`, as Llama 3.2 Vision's examples write it.
    pub fn user_with_image(text: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: Content::Parts(vec![Part::Image, Part::Text { text: text.into() }]),
        }
    }
}

/// A prompt that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error("cannot tokenize the prompt: {0}")]
    Tokenize(String),
    #[error("the prompt has {len} tokens, more than max_position_embeddings = {max}")]
    TooLong { len: usize, max: usize },
    #[error("the prompt has {in_text} {IMAGE_TOKEN} tokens but {given} images were given")]
    ImageCount { in_text: usize, given: usize },
    #[error("an image has {tiles} tiles, more than max_num_tiles = {max}")]
    TooManyTiles { tiles: usize, max: usize },
}

/// A tokenized prompt and its cross-attention mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptInputs {
    pub input_ids: Vec<u32>,
    /// `[seq, num_images, max_num_tiles]` row-major: true where text position `s` may attend
    /// to tile `t` of image `i`.
    pub cross_attention_mask: Vec<bool>,
    pub num_images: usize,
    pub max_num_tiles: usize,
}

impl PromptInputs {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// `[1, seq]`.
    pub fn input_ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = self.input_ids.iter().map(|&id| i64::from(id)).collect();
        Tensor::from_data(TensorData::new(ids, [1, self.input_ids.len()]), device)
    }

    /// `[1, seq, num_images, max_num_tiles]` of 0/1, transformers' `cross_attention_mask`.
    pub fn cross_attention_mask_tensor(&self, device: &Device) -> Tensor<4, Int> {
        let mask: Vec<i64> = self
            .cross_attention_mask
            .iter()
            .map(|&m| i64::from(m))
            .collect();
        let shape = [1, self.len(), self.num_images, self.max_num_tiles];
        Tensor::from_data(TensorData::new(mask, shape), device)
    }
}

/// Chat template + tokenizer of a Mllama checkpoint.
#[derive(Debug, Clone)]
pub struct MllamaPrompt {
    tokenizer: Tokenizer,
    env: Environment<'static>,
    /// Where the template came from, for errors (a file, or `--chat-template`).
    template_origin: String,
    /// Special tokens the template sees (`bos_token`, `eos_token`, ...).
    special_tokens: Vec<(String, String)>,
    bos_token: String,
    image_token_id: u32,
}

impl MllamaPrompt {
    /// Loads `folder/tokenizer.json` and the chat template from `chat_template.json`, else
    /// `tokenizer_config.json`, else `chat_template.jinja`; special tokens from
    /// `tokenizer_config.json` when present.
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        Self::from_source(&FileSource::Folder(folder))
    }

    /// [`load`](Self::load) from a folder or from files in memory.
    pub fn from_source(source: &FileSource<'_>) -> Result<Self, LoadError> {
        let path = source.path("tokenizer.json");
        let tokenizer = Tokenizer::from_bytes(source.read("tokenizer.json")?).map_err(|error| {
            LoadError::Config {
                path: path.clone(),
                reason: error.to_string(),
            }
        })?;
        let image_token_id =
            tokenizer
                .token_to_id(IMAGE_TOKEN)
                .ok_or_else(|| LoadError::Config {
                    path: path.clone(),
                    reason: format!("the vocabulary has no {IMAGE_TOKEN}"),
                })?;

        let config: Option<serde_json::Value> = if source.has("tokenizer_config.json") {
            Some(source.json("tokenizer_config.json")?)
        } else {
            None
        };
        let special_tokens: Vec<(String, String)> =
            ["bos_token", "eos_token", "pad_token", "unk_token"]
                .iter()
                .filter_map(|&key| {
                    let token = config.as_ref()?.get(key)?;
                    // A plain string or an AddedToken dict.
                    let content = token.as_str().or_else(|| token.get("content")?.as_str())?;
                    Some((key.to_string(), content.to_string()))
                })
                .collect();
        let bos_token = special_tokens
            .iter()
            .find(|(key, _)| key == "bos_token")
            .map_or(DEFAULT_BOS.to_string(), |(_, token)| token.clone());

        let (template, template_path) = find_chat_template(source, config.as_ref())?;
        let template_origin = template_path.display().to_string();
        let env = template_environment(template).map_err(|error| LoadError::Config {
            path: template_path,
            reason: error.to_string(),
        })?;
        Ok(Self {
            tokenizer,
            env,
            template_origin,
            special_tokens,
            bos_token,
            image_token_id,
        })
    }

    /// Replaces the chat template (Jinja source); `origin` names it in errors.
    pub fn set_chat_template(
        &mut self,
        source: impl Into<String>,
        origin: impl Into<String>,
    ) -> Result<(), PromptError> {
        let origin = origin.into();
        self.env = template_environment(source.into())
            .map_err(|error| PromptError::Template(format!("{origin}: {error}")))?;
        self.template_origin = origin;
        Ok(())
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// A special token of `tokenizer_config.json` by key (`"pad_token"`, `"eos_token"`, ...).
    pub fn special_token(&self, key: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, token)| token.as_str())
    }

    /// `apply_chat_template(messages, add_generation_prompt)`: the template sees `messages`,
    /// `add_generation_prompt`, `tools` and `documents` (none) and the special tokens.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, PromptError> {
        let origin = &self.template_origin;
        let template_error = |error: minijinja::Error| {
            PromptError::Template(if error.kind() == minijinja::ErrorKind::OutOfFuel {
                format!(
                    "{origin}: rendering this conversation needs more than the template budget \
                     of {TEMPLATE_FUEL} fuel (one per instruction, one per 64 bytes of text): \
                     a loop that does not end, or text that grows without bound ({})",
                    describe(&error)
                )
            } else {
                format!("{origin}: {}", describe(&error))
            })
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        for (key, token) in &self.special_tokens {
            context.push((key, Value::from(token.as_str())));
        }
        if !self
            .special_tokens
            .iter()
            .any(|(key, _)| key == "bos_token")
        {
            context.push(("bos_token", Value::from(self.bos_token.as_str())));
        }
        let context = Value::from_pairs(context);
        template.render(context).map_err(template_error)
    }

    /// `MllamaProcessor(text=prompt, images=..., add_special_tokens=False)`: `num_tiles` has one
    /// entry per image (in prompt order), `max_num_tiles` is the image processor's
    /// `max_image_tiles`. Like the processor, puts `<|begin_of_text|>` in front (after any
    /// leading `<|image|>`s) when the prompt lacks it.
    pub fn encode(
        &self,
        prompt: &str,
        num_tiles: &[usize],
        max_num_tiles: usize,
        max_position_embeddings: usize,
    ) -> Result<PromptInputs, PromptError> {
        let text = with_bos(prompt, &self.bos_token);
        let in_text = text.matches(IMAGE_TOKEN).count();
        if in_text != num_tiles.len() {
            return Err(PromptError::ImageCount {
                in_text,
                given: num_tiles.len(),
            });
        }
        if let Some(&tiles) = num_tiles.iter().find(|&&tiles| tiles > max_num_tiles) {
            return Err(PromptError::TooManyTiles {
                tiles,
                max: max_num_tiles,
            });
        }
        let encoding = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|error| PromptError::Tokenize(error.to_string()))?;
        let input_ids = encoding.get_ids().to_vec();
        if input_ids.len() > max_position_embeddings {
            return Err(PromptError::TooLong {
                len: input_ids.len(),
                max: max_position_embeddings,
            });
        }

        let ranges = cross_attention_ranges(&input_ids, self.image_token_id);
        let seq = input_ids.len();
        let num_images = num_tiles.len();
        let mut cross_attention_mask = vec![false; seq * num_images * max_num_tiles];
        for (image, (&(start, end), &tiles)) in ranges.iter().zip(num_tiles).enumerate() {
            for position in start..end {
                let row = (position * num_images + image) * max_num_tiles;
                cross_attention_mask[row..row + tiles].fill(true);
            }
        }
        Ok(PromptInputs {
            input_ids,
            cross_attention_mask,
            num_images,
            max_num_tiles,
        })
    }

    /// [`render`](Self::render) with the generation prompt, then [`encode`](Self::encode).
    pub fn prepare(
        &self,
        messages: &[Message],
        num_tiles: &[usize],
        max_num_tiles: usize,
        max_position_embeddings: usize,
    ) -> Result<PromptInputs, PromptError> {
        let prompt = self.render(messages, true)?;
        self.encode(&prompt, num_tiles, max_num_tiles, max_position_embeddings)
    }

    /// Token ids back to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, PromptError> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|error| PromptError::Tokenize(error.to_string()))
    }
}

/// transformers' `build_string_from_input`: `bos` goes in front unless the prompt has it
/// somewhere; leading image tokens stay before it.
fn with_bos(prompt: &str, bos: &str) -> String {
    if prompt.contains(bos) {
        return prompt.to_string();
    }
    let mut rest = prompt;
    let mut images = 0;
    while let Some(stripped) = rest.strip_prefix(IMAGE_TOKEN) {
        rest = stripped;
        images += 1;
    }
    format!("{}{bos}{rest}", IMAGE_TOKEN.repeat(images))
}

/// transformers' `get_cross_attention_token_mask`, with the end resolved: per image token, the
/// positions `[start, end)` that attend to it. Each image covers the text up to the next
/// image; a run of adjacent image tokens all cover what follows the run.
pub fn cross_attention_ranges(input_ids: &[u32], image_token_id: u32) -> Vec<(usize, usize)> {
    let locations: Vec<usize> = input_ids
        .iter()
        .enumerate()
        .filter(|&(_, &id)| id == image_token_id)
        .map(|(i, _)| i)
        .collect();
    let mut ranges: Vec<(usize, usize)> = locations
        .iter()
        .zip(locations.iter().skip(1).chain([&input_ids.len()]))
        .map(|(&start, &end)| (start, end))
        .collect();
    let mut last_end = input_ids.len();
    for range in ranges.iter_mut().rev() {
        if range.0 + 1 == range.1 {
            range.1 = last_end;
        }
        last_end = range.1;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, golden_i64, mllama_golden_path, mllama_tiny_dir};
    use crate::vlm::mllama::config::MllamaConfig;

    fn golden_metadata(key: &str) -> String {
        let bytes = std::fs::read(mllama_golden_path()).unwrap();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        metadata.metadata().as_ref().unwrap()[key].clone()
    }

    #[test]
    fn fixture_prompt_and_mask_match_transformers() {
        let dir = mllama_tiny_dir();
        let prompt = MllamaPrompt::load(&dir).unwrap();
        let config = MllamaConfig::load(&dir).unwrap();
        assert_eq!(prompt.image_token_id(), config.image_token_index);

        let messages = [Message::user_with_image("What is in the picture?")];
        let text = prompt.render(&messages, true).unwrap();
        assert_eq!(text, golden_metadata("prompt"));

        let num_tiles: Vec<usize> = serde_json::from_str(&golden_metadata("num_tiles")).unwrap();
        let max_position = config.text_config.max_position_embeddings;
        let inputs = prompt.encode(&text, &num_tiles, 4, max_position).unwrap();

        let (ids, shape) = golden_i64(&mllama_golden_path(), "input_ids");
        assert_eq!(shape, vec![1, inputs.len()]);
        let ours: Vec<i64> = inputs.input_ids.iter().map(|&id| i64::from(id)).collect();
        assert_eq!(ours, ids);

        let (mask, shape) = golden_i64(&mllama_golden_path(), "cross_attention_mask");
        assert_eq!(shape, vec![1, inputs.len(), 1, 4]);
        let ours: Vec<i64> = inputs
            .cross_attention_mask
            .iter()
            .map(|&m| i64::from(m))
            .collect();
        assert_eq!(ours, mask);

        // The tensors carry the same values in transformers' shapes.
        let tensor = inputs.cross_attention_mask_tensor(&device());
        assert_eq!(tensor.dims(), [1, inputs.len(), 1, 4]);
        let back: Vec<i64> = tensor
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        assert_eq!(back, mask);
        let back: Vec<i64> = inputs
            .input_ids_tensor(&device())
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        assert_eq!(back, ids);

        // `prepare` is render + encode.
        assert_eq!(
            prompt
                .prepare(&messages, &num_tiles, 4, max_position)
                .unwrap(),
            inputs
        );
    }

    #[test]
    fn string_content_is_trimmed_and_bos_added_when_missing() {
        let prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        let text = prompt
            .render(&[Message::text("user", "  Describe it.\n")], false)
            .unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDescribe it.<|eot_id|>"
        );
        assert_eq!(
            with_bos("<|image|><|image|>Hi", "<|begin_of_text|>"),
            "<|image|><|image|><|begin_of_text|>Hi"
        );
        assert_eq!(
            with_bos("x<|begin_of_text|>", "<|begin_of_text|>"),
            "x<|begin_of_text|>"
        );
        // A raw prompt gets the same ids once bos is put in front.
        let raw = prompt
            .encode("<|image|>What is in the picture?", &[1], 4, 256)
            .unwrap();
        let full = prompt
            .encode(
                "<|image|><|begin_of_text|>What is in the picture?",
                &[1],
                4,
                256,
            )
            .unwrap();
        assert_eq!(raw, full);
    }

    #[test]
    fn ranges_follow_transformers_for_several_images() {
        const I: u32 = 9;
        // Images at 0, 1 (adjacent: both cover through to the next image) and 4.
        let ids = [I, I, 5, 6, I, 7];
        assert_eq!(
            cross_attention_ranges(&ids, I),
            vec![(0, 4), (1, 4), (4, 6)]
        );
        assert_eq!(cross_attention_ranges(&[1, 2, I], I), vec![(2, 3)]);
        assert!(cross_attention_ranges(&[1, 2], I).is_empty());
        // Trailing adjacent images cover to the end.
        assert_eq!(cross_attention_ranges(&[1, I, I], I), vec![(1, 3), (2, 3)]);
    }

    #[test]
    fn dense_mask_marks_each_images_tiles() {
        let prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        let inputs = prompt
            .encode("<|begin_of_text|><|image|>dog<|image|>cat", &[2, 3], 4, 256)
            .unwrap();
        let image = prompt.image_token_id();
        let first = inputs.input_ids.iter().position(|&id| id == image).unwrap();
        let second = inputs
            .input_ids
            .iter()
            .rposition(|&id| id == image)
            .unwrap();
        for s in 0..inputs.len() {
            for i in 0..2 {
                let row = &inputs.cross_attention_mask[(s * 2 + i) * 4..(s * 2 + i + 1) * 4];
                let (attends, tiles) = match i {
                    0 => (s >= first && s < second, 2),
                    _ => (s >= second, 3),
                };
                let expected: Vec<bool> = (0..4).map(|t| attends && t < tiles).collect();
                assert_eq!(row, expected.as_slice(), "position {s} image {i}");
            }
        }
    }

    #[test]
    fn bad_prompts_are_errors() {
        let mut prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        let messages = [Message::user_with_image("What is in the picture?")];
        assert!(matches!(
            prompt.prepare(&messages, &[2], 4, 10),
            Err(PromptError::TooLong { len: 29, max: 10 })
        ));
        assert!(matches!(
            prompt.prepare(&messages, &[], 4, 256),
            Err(PromptError::ImageCount {
                in_text: 1,
                given: 0
            })
        ));
        assert!(matches!(
            prompt.prepare(&messages, &[5], 4, 256),
            Err(PromptError::TooManyTiles { tiles: 5, max: 4 })
        ));

        prompt
            .set_chat_template("{{ raise_exception('no system role') }}", "test")
            .unwrap();
        match prompt.render(&messages, true) {
            Err(PromptError::Template(reason)) => assert!(reason.contains("no system role")),
            other => panic!("expected a template error, got {other:?}"),
        }
        assert!(matches!(
            prompt.set_chat_template("{% for %}", "test"),
            Err(PromptError::Template(_))
        ));
    }

    #[test]
    fn template_helpers_behave_like_python() {
        let mut prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        prompt
            .set_chat_template(concat!(
                "{{ messages[0].content | tojson }}|{{ messages[0].content | tojson(indent=2) }}|",
                "{{ messages[0] | tojson }}|{{ ' <a&b> '.strip() }}|{{ 'abc'.startswith('ab') }}|",
                "{{ messages[0].get('missing', 'd') }}|{{ '\x1f x \x1f' | trim }}"
            ), "test")
            .unwrap();
        let messages = [Message::user_with_image("é \"q\"")];
        let text = prompt.render(&messages, false).unwrap();
        // transformers' `_compile_jinja_template(...).render(messages=...)` gives exactly this.
        assert_eq!(
            text,
            concat!(
                r#"[{"type": "image"}, {"type": "text", "text": "é \"q\""}]|"#,
                "[\n  {\n    \"type\": \"image\"\n  },\n  {\n    \"type\": \"text\",\n",
                "    \"text\": \"é \\\"q\\\"\"\n  }\n]|",
                r#"{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "é \"q\""}]}|"#,
                "<a&b>|True|d|x"
            )
        );
    }

    /// Templates that used to hang (nested `range`) or grow a string until the allocator
    /// aborted (6.6 GB) stop on the budget with an error naming the template's file.
    #[test]
    fn hostile_templates_stop_on_their_budget() {
        let dir = mllama_tiny_dir();
        let messages = [Message::user_with_image("What is in the picture?")];
        for (what, template) in [
            (
                "nested loops",
                "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
            ),
            (
                "a doubled string",
                "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            ),
            (
                "repetition",
                "{% set a = 'x' * 90000000 %}{% set b = a ~ a %}{{ b | length }}",
            ),
            (
                "a squared replace",
                "{% set s = 'a' * 20000 %}{{ s | replace('a', s) | length }}",
            ),
            (
                "a huge indent",
                "{{ messages | tojson(indent=1000000000) | length }}",
            ),
        ] {
            let mut prompt = MllamaPrompt::load(&dir).unwrap();
            prompt
                .set_chat_template(template, "bundle/chat_template.json")
                .unwrap();
            match prompt.render(&messages, true) {
                Err(PromptError::Template(reason)) => assert!(
                    reason.starts_with("bundle/chat_template.json: ")
                        && reason.contains("template budget"),
                    "{what}: {reason}"
                ),
                other => panic!("{what}: expected a budget error, got {other:?}"),
            }
        }
    }

    /// A namespace stored inside itself made printing recurse until the stack overflowed (the
    /// process aborted; found by the fuzz suite): refused when the template is set, while the
    /// namespace flags real templates use keep working.
    #[test]
    fn namespaces_are_used_through_their_attributes_only() {
        let mut prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        for template in [
            "{% set ns = namespace(s='ab') %}{% for i in range(2) %}{% set ns.s = ns,s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns.me }}",
            "{% set ns = namespace() %}{% set alias = ns %}{% set alias.me = 1 %}",
            "{% set box = [namespace()] %}{{ box }}",
            "{% set n = namespace %}{% set ns = n() %}",
        ] {
            match prompt.set_chat_template(template, "hostile.jinja") {
                Err(PromptError::Template(reason)) => assert!(
                    reason.starts_with("hostile.jinja: ") && reason.contains("recurse without end"),
                    "{template}: {reason}"
                ),
                other => panic!("{template}: expected a refusal, got {other:?}"),
            }
        }
        // A template that does not tokenize is an error (the check used to loop on it).
        assert!(
            prompt
                .set_chat_template("{% set ns = namespace() %}{{ 'unclosed", "broken.jinja")
                .is_err()
        );
        // transformers-style flags: allowed, and they render as Jinja2 renders them.
        prompt
            .set_chat_template(
                "{%- set ns = namespace(found=false, count=0) -%}\
                 {%- for message in messages -%}{%- if message['role'] == 'user' -%}\
                 {%- set ns.found = true -%}{%- set ns.count = ns['count'] + 1 -%}{%- endif -%}\
                 {%- endfor -%}{{ ns.found }} {{ ns.count }}",
                "flags.jinja",
            )
            .unwrap();
        let messages = [
            Message::user_with_image("hi"),
            Message::text("assistant", "yo"),
        ];
        assert_eq!(prompt.render(&messages, false).unwrap(), "True 1");
    }

    /// The fixture's template (Llama 3.2 Vision's turns and image tokens): a ten-turn
    /// conversation of 100 KB uses a small fraction of the budget.
    #[test]
    fn the_budget_is_far_above_real_use() {
        let prompt = MllamaPrompt::load(&mllama_tiny_dir()).unwrap();
        let long = "word ".repeat(2000);
        let mut messages = vec![Message::user_with_image(&long)];
        for turn in 0..9 {
            let role = if turn % 2 == 0 { "assistant" } else { "user" };
            messages.push(Message::text(role, &long));
        }
        let template = prompt.env.get_template(TEMPLATE_NAME).unwrap();
        let context = minijinja::context! {
            messages => Value::from(Serde(&messages)),
            add_generation_prompt => true,
            bos_token => "<|begin_of_text|>",
        };
        let captured = template.render_captured(context).unwrap();
        assert!(
            captured.output().len() > 100_000,
            "{}",
            captured.output().len()
        );
        let (consumed, _) = captured.state().fuel_levels().unwrap();
        assert!(
            consumed < TEMPLATE_FUEL / 50,
            "{consumed} of {TEMPLATE_FUEL}"
        );
    }
}
