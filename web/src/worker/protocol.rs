//! The messages between explorers on the page and the inference worker. Each message is a
//! plain JS object: `explorer` (which explorer it is for), `header` (the request or reply as
//! JSON), and the payloads that would be wasteful as JSON: `bytes` (`Uint8Array`s, moved, not
//! copied), `floats` (`Float32Array`s) and `files` (`File`s the user picked, cloned by the
//! browser without reading them).

use js_sys::{Array, Float32Array, Object, Reflect, Uint8Array};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wasm_bindgen::{JsCast, JsValue};

/// What an explorer asks of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Load a bundle from `url` (absolute), or from the message's `files` when `url` is
    /// `None`, onto WebGPU (or the CPU when `force_cpu` or WebGPU is unavailable).
    /// `max_buffer` imitates a smaller adapter's buffer limit. `load` numbers the request: a
    /// newer one supersedes it, and every reply about it carries it.
    Load {
        load: u64,
        url: Option<String>,
        force_cpu: bool,
        max_buffer: Option<u64>,
    },
    /// Answer `prompt` about the image in `bytes[0]` (RGB8, `width` x `height`), streaming
    /// tokens, then send the maps for `layer` / `head`. A newer run stops an older one.
    Run {
        run: u64,
        prompt: String,
        max_new_tokens: usize,
        width: u32,
        height: u32,
        choice: MapChoice,
    },
    /// The maps of run `run`'s words for another choice.
    Maps { run: u64, choice: MapChoice },
    /// Word `word`'s map of run `run` for every cross-attention layer and head (the
    /// explorer's layer × head grid).
    HeadMaps { run: u64, word: usize },
    /// Stop run `run` (the explorer moved on: a new picture).
    Stop { run: u64 },
    /// Stop whatever runs for this explorer and drop its model (it was unmounted).
    Close,
}

/// What the worker tells an explorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// The worker has started and takes requests (explorer 0: for the page).
    Ready,
    /// The backend the model runs on, and why it is the CPU when it is.
    Backend {
        load: u64,
        backend: String,
        reason: Option<String>,
    },
    Status {
        load: u64,
        message: String,
    },
    Progress {
        load: u64,
        done: u64,
        total: u64,
        file: String,
    },
    /// The model is ready. `bytes` holds each example's image (PNG) and `floats` its teacher
    /// maps (`[words, side, side]`), in the order of `examples`. `aligner`: the bundle carries
    /// the trained Aligner, so the Aligner aggregations are available.
    Loaded {
        load: u64,
        message: String,
        took_ms: f64,
        map_size: usize,
        examples: Vec<ExampleInfo>,
        aligner: bool,
        /// The model is another explorer's copy on this page (the same bundle URL and
        /// backend), not a second download.
        shared: bool,
    },
    LoadFailed {
        load: u64,
        message: String,
    },
    /// The answer so far.
    Token {
        run: u64,
        token_ids: Vec<u32>,
        answer: String,
    },
    /// The answer is complete; its words (prompt first) and the attention's layout.
    Answered {
        run: u64,
        first_token_ms: Option<f64>,
        tokens_per_s: Option<f64>,
        layers: Vec<usize>,
        heads: usize,
        words: Vec<WordInfo>,
    },
    /// `floats[0]`: the maps `[words, size, size]` for this choice.
    Maps {
        run: u64,
        size: usize,
        choice: MapChoice,
    },
    /// `floats[0]`: word `word`'s maps `[layers, heads, size, size]`, one per cross-attention
    /// layer and head.
    HeadMaps {
        run: u64,
        word: usize,
        layers: usize,
        heads: usize,
        size: usize,
    },
    HeadMapsFailed {
        run: u64,
        word: usize,
        message: String,
    },
    RunFailed {
        run: u64,
        message: String,
    },
    /// The answer stands, but its maps for `choice` could not be made.
    MapsFailed {
        run: u64,
        choice: MapChoice,
        message: String,
    },
    /// A request could not reach the worker (the worker itself is fine).
    SendFailed {
        message: String,
    },
    /// The worker's WebAssembly trapped (a panic): everything it held is gone.
    Panic {
        message: String,
    },
}

/// How a word's map is made: `aggregation` is `grid` (the attention of one layer / head, or
/// their mean or max, on the image grid) or one of training's aggregations
/// (`aligner-per-layer`, `mean-first`, `max-max`); `layer` and `head` (`mean`, `max` or an
/// index) apply to `grid`; `normalisation` (`per-map` or `shared`) scales each word's map on
/// its own or all of them together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapChoice {
    pub aggregation: String,
    pub layer: String,
    pub head: String,
    pub normalisation: String,
}

/// `aggregation` of the plain attention grid.
pub const GRID: &str = "grid";

/// A word of the prompt or the answer, as the explorer shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordInfo {
    pub text: String,
    pub answer: bool,
    /// Sequence positions of its tokens.
    pub positions: Vec<usize>,
}

/// An example image of the bundle, with its SD teacher maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleInfo {
    pub id: String,
    pub caption: String,
    pub words: Vec<String>,
    pub side: usize,
}

/// A message with its payloads.
#[derive(Debug, Default)]
pub struct Envelope<T> {
    pub explorer: u32,
    pub body: T,
    pub bytes: Vec<Vec<u8>>,
    pub floats: Vec<Vec<f32>>,
    pub files: Vec<web_sys::File>,
}

impl<T: Serialize + DeserializeOwned> Envelope<T> {
    pub fn new(explorer: u32, body: T) -> Self {
        Self {
            explorer,
            body,
            bytes: Vec::new(),
            floats: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The JS message and the buffers to transfer with it.
    pub fn to_js(&self) -> (JsValue, Array) {
        let message = Object::new();
        let transfer = Array::new();
        let set = |name: &str, value: &JsValue| {
            let _ = Reflect::set(&message, &JsValue::from_str(name), value);
        };
        set("explorer", &JsValue::from(self.explorer));
        let header = serde_json::to_string(&self.body).expect("protocol messages serialise");
        set("header", &JsValue::from_str(&header));
        let bytes = Array::new();
        for chunk in &self.bytes {
            let array = Uint8Array::from(chunk.as_slice());
            transfer.push(&array.buffer());
            bytes.push(&array);
        }
        set("bytes", &bytes);
        let floats = Array::new();
        for chunk in &self.floats {
            let array = Float32Array::from(chunk.as_slice());
            transfer.push(&array.buffer());
            floats.push(&array);
        }
        set("floats", &floats);
        let files = Array::new();
        for file in &self.files {
            files.push(file);
        }
        set("files", &files);
        (message.into(), transfer)
    }

    pub fn from_js(message: &JsValue) -> Result<Self, String> {
        let get = |name: &str| Reflect::get(message, &JsValue::from_str(name)).ok();
        let explorer = get("explorer")
            .and_then(|value| value.as_f64())
            .ok_or("a message without `explorer`")? as u32;
        let header = get("header")
            .and_then(|value| value.as_string())
            .ok_or("a message without `header`")?;
        let body = serde_json::from_str(&header)
            .map_err(|error| format!("bad message {header}: {error}"))?;
        let list = |name: &str| -> Vec<JsValue> {
            get(name)
                .and_then(|value| value.dyn_into::<Array>().ok())
                .map(|array| array.iter().collect())
                .unwrap_or_default()
        };
        Ok(Self {
            explorer,
            body,
            bytes: list("bytes")
                .into_iter()
                .map(|value| value.unchecked_into::<Uint8Array>().to_vec())
                .collect(),
            floats: list("floats")
                .into_iter()
                .map(|value| value.unchecked_into::<Float32Array>().to_vec())
                .collect(),
            files: list("files")
                .into_iter()
                .filter_map(|value| value.dyn_into::<web_sys::File>().ok())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_keep_their_shape_as_json() {
        let request = Request::Run {
            run: 3,
            prompt: "What?".into(),
            max_new_tokens: 8,
            width: 2,
            height: 1,
            choice: MapChoice {
                aggregation: GRID.into(),
                layer: "mean".into(),
                head: "1".into(),
                normalisation: "shared".into(),
            },
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.starts_with(r#"{"kind":"run","run":3,"#), "{json}");
        assert!(
            json.contains(r#""choice":{"aggregation":"grid","layer":"mean","head":"1","normalisation":"shared"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        let reply: Reply = serde_json::from_str(r#"{"kind":"ready"}"#).unwrap();
        assert_eq!(reply, Reply::Ready);
    }
}
