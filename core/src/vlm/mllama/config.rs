//! `config.json` of a Mllama checkpoint, with transformers' field names. Both the released
//! layout (transformers 4.45: `rope_theta` + `rope_scaling`) and transformers 5's
//! (`rope_parameters`) are read.

use std::path::Path;

use serde::Deserialize;

use crate::weights::{FileSource, LoadError};

/// A Llama-3.2-Vision folder's `config.json` (transformers' `MllamaConfig`, field names kept):
/// the vision tower's (tile size, patches, layers, heads) and the text decoder's (width, layers,
/// heads, cross-attention layers, vocabulary) settings.
#[derive(Debug, Clone, Deserialize)]
pub struct MllamaConfig {
    pub vision_config: MllamaVisionConfig,
    pub text_config: MllamaTextConfig,
    /// Id of `<|image|>` in the text.
    pub image_token_index: u32,
    /// `mllama` (checked: another architecture is refused by name).
    #[serde(default)]
    pub model_type: Option<String>,
}

impl MllamaConfig {
    /// Reads `folder/config.json` and checks the shapes are consistent.
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        Self::from_source(&FileSource::Folder(folder))
    }

    /// Reads `config.json` from `source` and checks the shapes are consistent.
    pub fn from_source(source: &FileSource<'_>) -> Result<Self, LoadError> {
        let config: Self = source.json("config.json")?;
        config.check().map_err(|reason| LoadError::Config {
            path: source.path("config.json"),
            reason,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(kind) = &self.model_type
            && kind != "mllama"
        {
            return Err(format!(
                "unknown architecture `{kind}`: this is not a Llama-3.2-Vision (mllama) model"
            ));
        }
        let v = &self.vision_config;
        let t = &self.text_config;
        // Sizes first, against bounds far above any released model, so that a hostile or
        // mistyped config is refused before anything is allocated from it.
        for (field, value, max) in [
            ("text_config.hidden_size", t.hidden_size, 1 << 16),
            (
                "text_config.intermediate_size",
                t.intermediate_size,
                1 << 18,
            ),
            ("text_config.num_hidden_layers", t.num_hidden_layers, 1024),
            ("text_config.vocab_size", t.vocab_size, 1 << 22),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
                1 << 24,
            ),
            ("vision_config.hidden_size", v.hidden_size, 1 << 16),
            (
                "vision_config.intermediate_size",
                v.intermediate_size,
                1 << 18,
            ),
            ("vision_config.num_hidden_layers", v.num_hidden_layers, 1024),
            ("vision_config.num_global_layers", v.num_global_layers, 1024),
            ("vision_config.image_size", v.image_size, 4096),
            ("vision_config.patch_size", v.patch_size, 4096),
            ("vision_config.max_num_tiles", v.max_num_tiles, 64),
            ("vision_config.num_channels", v.num_channels, 16),
        ] {
            if value == 0 || value > max {
                return Err(format!("{field} = {value} is out of range (1 to {max})"));
            }
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.attention_heads == 0 || !v.hidden_size.is_multiple_of(v.attention_heads) {
            return Err(format!(
                "vision hidden_size {} is not divisible by attention_heads {}",
                v.hidden_size, v.attention_heads
            ));
        }
        if v.vision_output_dim != v.hidden_size * (1 + v.intermediate_layers_indices.len()) {
            return Err(format!(
                "vision_output_dim {} != hidden_size {} x (1 + {} intermediate layers)",
                v.vision_output_dim,
                v.hidden_size,
                v.intermediate_layers_indices.len()
            ));
        }
        if let Some(bad) = v
            .intermediate_layers_indices
            .iter()
            .find(|&&i| i >= v.num_hidden_layers)
        {
            return Err(format!(
                "intermediate layer {bad} is past the {} vision layers",
                v.num_hidden_layers
            ));
        }
        if t.num_attention_heads == 0
            || t.num_key_value_heads == 0
            || !t.hidden_size.is_multiple_of(t.num_attention_heads)
            || !t.num_attention_heads.is_multiple_of(t.num_key_value_heads)
        {
            return Err(format!(
                "text heads: hidden {} / heads {} / kv heads {} do not divide",
                t.hidden_size, t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if let Some(bad) = t
            .cross_attention_layers
            .iter()
            .find(|&&i| i >= t.num_hidden_layers)
        {
            return Err(format!(
                "cross-attention layer {bad} is past the {} text layers",
                t.num_hidden_layers
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MllamaVisionConfig {
    pub hidden_size: usize,
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// Local (per-tile) layers.
    pub num_hidden_layers: usize,
    /// Gated global layers after the local ones.
    pub num_global_layers: usize,
    #[serde(alias = "num_attention_heads")]
    pub attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub intermediate_size: usize,
    /// `hidden_size x (1 + intermediate layers)`: the final state and the intermediate ones.
    pub vision_output_dim: usize,
    /// Tile side in pixels (560 in the released model).
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_max_tiles")]
    pub max_num_tiles: usize,
    pub intermediate_layers_indices: Vec<usize>,
    /// `[tiles high, tiles wide]` per aspect-ratio id (ids start at 1; 0 is padding).
    pub supported_aspect_ratios: Vec<[usize; 2]>,
}

impl MllamaVisionConfig {
    /// Patches per tile side (40 in the released model).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per tile: the patches plus the class token.
    pub fn tokens_per_tile(&self) -> usize {
        self.patches_per_side() * self.patches_per_side() + 1
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MllamaTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    /// Indices of the layers that are gated cross-attention layers (no self-attention).
    pub cross_attention_layers: Vec<usize>,
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: TokenIds,
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeScaling>,
    /// transformers 5's spelling of `rope_theta` + `rope_scaling`.
    rope_parameters: Option<RopeParameters>,
}

impl MllamaTextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// RoPE base frequency and the Llama-3 scaling, from either config layout.
    pub fn rope(&self) -> (f64, Option<RopeScaling>) {
        match &self.rope_parameters {
            Some(parameters) => (
                parameters.rope_theta,
                (parameters.scaling.rope_type != "default").then(|| parameters.scaling.clone()),
            ),
            None => (
                self.rope_theta.unwrap_or(500_000.0),
                self.rope_scaling.clone(),
            ),
        }
    }

    /// The tokens that end generation.
    pub fn stop_tokens(&self) -> Vec<u32> {
        match &self.eos_token_id {
            TokenIds::None => Vec::new(),
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// Llama 3's frequency-dependent RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(default = "default_rope_type", alias = "type")]
    pub rope_type: String,
    #[serde(default = "default_one")]
    pub factor: f64,
    #[serde(default = "default_one")]
    pub low_freq_factor: f64,
    #[serde(default = "default_four")]
    pub high_freq_factor: f64,
    #[serde(default = "default_original_max")]
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct RopeParameters {
    rope_theta: f64,
    #[serde(flatten)]
    scaling: RopeScaling,
}

/// `eos_token_id`: absent, one id or a list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    #[default]
    None,
    One(u32),
    Many(Vec<u32>),
}

fn default_gelu() -> String {
    "gelu".into()
}
fn default_silu() -> String {
    "silu".into()
}
fn default_channels() -> usize {
    3
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_rms_eps() -> f64 {
    1e-5
}
fn default_max_tiles() -> usize {
    4
}
fn default_rope_type() -> String {
    "default".into()
}
fn default_one() -> f64 {
    1.0
}
fn default_four() -> f64 {
    4.0
}
fn default_original_max() -> usize {
    8192
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mllama-tiny")
    }

    #[test]
    fn sizes_out_of_range_are_refused_before_anything_is_allocated() {
        let dir = std::env::temp_dir().join(format!("lavender-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixture_config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
                .unwrap();
        for (section, field, value, expected) in [
            (
                "text_config",
                "hidden_size",
                1u64 << 40,
                "text_config.hidden_size = 1099511627776 is out of range",
            ),
            (
                "text_config",
                "max_position_embeddings",
                0,
                "text_config.max_position_embeddings = 0",
            ),
            (
                "vision_config",
                "image_size",
                1_000_000,
                "vision_config.image_size = 1000000",
            ),
            (
                "vision_config",
                "patch_size",
                0,
                "vision_config.patch_size = 0",
            ),
            (
                "vision_config",
                "patch_size",
                15,
                "not a multiple of patch_size 15",
            ),
        ] {
            let mut config = fixture_config.clone();
            config[section][field] = value.into();
            std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
            let error = MllamaConfig::load(&dir).unwrap_err().to_string();
            assert!(error.contains(expected), "{field}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("lavender-arch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
                .unwrap();
        config["model_type"] = "llava".into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let error = MllamaConfig::load(&dir).unwrap_err().to_string();
        assert!(error.contains("unknown architecture `llava`"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fixture_config_reads_in_both_layouts() {
        let config = MllamaConfig::load(&fixture()).unwrap();
        assert_eq!(config.text_config.cross_attention_layers, vec![1, 3]);
        assert_eq!(config.vision_config.tokens_per_tile(), 17);
        let (theta, scaling) = config.text_config.rope();
        let scaling = scaling.unwrap();
        assert_eq!(
            (theta, scaling.rope_type.as_str(), scaling.factor),
            (500000.0, "llama3", 8.0)
        );
        assert_eq!(config.text_config.stop_tokens().len(), 3);

        // transformers 5's layout.
        let v5: MllamaTextConfig = serde_json::from_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "intermediate_size": 16, "max_position_embeddings": 32,
                "cross_attention_layers": [1], "eos_token_id": 3,
                "rope_parameters": {"rope_theta": 10000.0, "rope_type": "llama3", "factor": 2.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}"#,
        )
        .unwrap();
        let (theta, scaling) = v5.rope();
        assert_eq!((theta, scaling.unwrap().factor), (10000.0, 2.0));
        assert_eq!(v5.stop_tokens(), vec![3]);
    }
}
