//! A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`), merged into
//! a base model's weights: `W <- W + (lora_alpha / r) * B @ A` for every adapted linear layer
//! (`alpha / sqrt(r)` with `use_rslora`). PEFT stores `A` as `[r, in]` and `B` as `[out, r]`,
//! under `base_model.model.<module>.lora_{A,B}.weight`.
//!
//! Module paths are accepted in the released checkpoints' naming (`language_model.model.*`, as
//! the published Lavender adapters have it) and in transformers 5's (`model.language_model.*`),
//! mapped by the caller's `to_base_key`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::tensor::{Device, Tensor};
use serde::Deserialize;

use crate::weights::{LoadError, Weights, read_json};

#[derive(Debug, Clone, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub peft_type: Option<String>,
    #[serde(default)]
    pub target_modules: TargetModules,
    /// Per-module ranks and alphas, and DoRA: not applied here, so an adapter that uses them
    /// is refused by name rather than merged wrongly.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub use_dora: bool,
}

/// `target_modules`: a list of module names or a regex string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    #[default]
    None,
    List(Vec<String>),
    Regex(String),
}

#[derive(Debug)]
pub struct PeftAdapter {
    pub config: LoraConfig,
    weights: Weights,
}

impl PeftAdapter {
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        let config_path = folder.join("adapter_config.json");
        let config: LoraConfig = read_json(&config_path)?;
        let weights = Weights::from_files(&[folder.join("adapter_model.safetensors")])?;
        Self::new(config, weights, config_path)
    }

    /// An adapter already in memory: `adapter_config.json` text and `adapter_model.safetensors`
    /// bytes; `label` names it in errors.
    pub fn from_bytes(
        label: &Path,
        config_json: &str,
        safetensors: Vec<u8>,
    ) -> Result<Self, LoadError> {
        let config_path = label.join("adapter_config.json");
        let config: LoraConfig =
            serde_json::from_str(config_json).map_err(|error| LoadError::Config {
                path: config_path.clone(),
                reason: error.to_string(),
            })?;
        let weights = Weights::from_bytes(label.join("adapter_model.safetensors"), safetensors)?;
        Self::new(config, weights, config_path)
    }

    fn new(config: LoraConfig, weights: Weights, config_path: PathBuf) -> Result<Self, LoadError> {
        if let Some(kind) = &config.peft_type
            && kind != "LORA"
        {
            return Err(LoadError::Config {
                path: config_path,
                reason: format!("peft_type {kind} is not supported (LORA)"),
            });
        }
        if config.r == 0 {
            return Err(LoadError::Config {
                path: config_path,
                reason: "r must be positive".into(),
            });
        }
        let unsupported = [
            ("rank_pattern", !config.rank_pattern.is_empty()),
            ("alpha_pattern", !config.alpha_pattern.is_empty()),
            ("use_dora", config.use_dora),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, used)| *used) {
            return Err(LoadError::Config {
                path: config_path,
                reason: format!(
                    "`{field}` is set: per-module ranks or alphas and DoRA are not supported \
                     (one r and lora_alpha for every module, plain LoRA)"
                ),
            });
        }
        Ok(Self { config, weights })
    }

    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        let r = self.config.r as f64;
        if self.config.use_rslora {
            self.config.lora_alpha / r.sqrt()
        } else {
            self.config.lora_alpha / r
        }
    }

    /// The adapter's tensors (`lora_A` `[r, in]`, `lora_B` `[out, r]`).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The adapted modules: base weight name (after `to_base_key`) -> the adapter's `A` and
    /// `B` names.
    pub fn pairs(
        &self,
        to_base_key: impl Fn(&str) -> String,
    ) -> BTreeMap<String, (String, String)> {
        self.weights
            .names()
            .filter_map(|name| {
                let module = name
                    .strip_prefix("base_model.model.")?
                    .strip_suffix(".lora_A.weight")?;
                Some((
                    to_base_key(&format!("{module}.weight")),
                    (name.to_string(), name.replace(".lora_A.", ".lora_B.")),
                ))
            })
            .collect()
    }

    /// Merges the adapter into `base`. Every adapted module must exist in `base` with a
    /// matching shape; otherwise the error names it. Returns how many layers were merged.
    pub fn merge_into(
        &self,
        base: &mut Weights,
        to_base_key: impl Fn(&str) -> String,
    ) -> Result<usize, LoadError> {
        let device = Device::flex();
        let pairs = self.pairs(to_base_key);
        if pairs.is_empty() {
            return Err(LoadError::Config {
                path: "adapter_model.safetensors".into(),
                reason: "no `base_model.model.*.lora_A.weight` tensors: not a PEFT LoRA adapter"
                    .into(),
            });
        }
        let r = self.config.r;
        for (base_name, (a_name, b_name)) in &pairs {
            let base_shape = match base.shape(base_name) {
                Ok(shape) => shape.to_vec(),
                Err(_) => {
                    return Err(LoadError::Config {
                        path: "adapter_model.safetensors".into(),
                        reason: format!(
                            "the adapter targets `{base_name}`, which the base model does not have"
                        ),
                    });
                }
            };
            let [out_dim, in_dim] = base_shape[..] else {
                return Err(LoadError::Config {
                    path: "adapter_model.safetensors".into(),
                    reason: format!("`{base_name}` is not a linear weight: {base_shape:?}"),
                });
            };
            let a: Tensor<2> = self.weights.tensor(a_name, [r, in_dim], &device)?;
            let b: Tensor<2> = self.weights.tensor(b_name, [out_dim, r], &device)?;
            let weight: Tensor<2> = base.tensor(base_name, [out_dim, in_dim], &device)?;
            let merged = weight + b.matmul(a).mul_scalar(self.scale());
            let values: Vec<f32> = merged
                .into_data()
                .try_to_vec()
                .expect("f32 tensor on the CPU");
            base.set(base_name, vec![out_dim, in_dim], values);
        }
        Ok(pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> String {
        format!(
            r#"{{"peft_type": "LORA", "r": 8, "lora_alpha": 32, "target_modules": ["q_proj"]{extra}}}"#
        )
    }

    /// Options PEFT applies but this merge would ignore are refused by name; their empty
    /// defaults (as PEFT writes them) are accepted.
    #[test]
    fn unsupported_peft_options_are_refused_by_name() {
        let label = Path::new("adapter");
        let empty = safetensors::serialize(
            std::iter::empty::<(&str, safetensors::tensor::TensorView<'_>)>(),
            None,
        )
        .unwrap();
        for (extra, field) in [
            (r#", "rank_pattern": {"q_proj": 4}"#, "rank_pattern"),
            (r#", "alpha_pattern": {"v_proj": 16}"#, "alpha_pattern"),
            (r#", "use_dora": true"#, "use_dora"),
        ] {
            let error = PeftAdapter::from_bytes(label, &config(extra), empty.clone()).unwrap_err();
            assert!(
                error.to_string().contains(&format!("`{field}` is set")),
                "{error}"
            );
        }
        let defaults = r#", "rank_pattern": {}, "alpha_pattern": {}, "use_dora": false"#;
        assert!(PeftAdapter::from_bytes(label, &config(defaults), empty).is_ok());
    }
}
