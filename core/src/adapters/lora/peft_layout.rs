//! LoRA factors in PEFT's file layout. PEFT stores `lora_A.weight` `[r, in]` = `a` transposed
//! and `lora_B.weight` `[out, r]` = `b` transposed, under `base_model.model.<module>`.
//! [`load_peft_factors`] reads the module names in the released checkpoints' naming
//! (`language_model.model.layers...`, as the published Lavender adapters have them) and in
//! transformers 5's (`model.language_model.layers...`). [`export_peft`] writes transformers 5's,
//! which is what peft 0.21 saves and loads for transformers 5's
//! `MllamaForConditionalGeneration`: it does not load vision factors saved under the released
//! `vision_model.*` names (they are reported missing and stay zero).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use burn::tensor::Tensor;
use safetensors::{Dtype, tensor::TensorView};

use super::{LoraModel, LoraSettings, SetFactors, lora_error, lora_factors};
use crate::{adapters::peft::PeftAdapter, weights::LoadError};

/// An adapter folder's two files, to be written by the caller.
#[derive(Debug, Clone)]
pub struct PeftExport {
    pub adapter_config_json: String,
    pub adapter_model_safetensors: Vec<u8>,
}

/// Sets the LoRA factors of a model [`apply_lora`] prepared from the PEFT adapter folder
/// `adapter_dir` (`adapter_config.json` + `adapter_model.safetensors`).
pub fn load_peft_factors<M: LoraModel>(model: M, adapter_dir: &Path) -> Result<M, LoadError> {
    let adapter = PeftAdapter::load(adapter_dir).map_err(|error| {
        lora_error(
            adapter_dir,
            format!("cannot read the PEFT adapter: {error}"),
        )
    })?;
    set_peft_factors(model, &adapter).map_err(|error| lora_error(adapter_dir, error.to_string()))
}

/// [`load_peft_factors`] from an adapter already read. The adapter must adapt exactly the
/// model's LoRA layers, with the same rank and scale.
pub fn set_peft_factors<M: LoraModel>(model: M, adapter: &PeftAdapter) -> Result<M, LoadError> {
    let error = |reason: String| lora_error("adapter_model.safetensors", reason);
    let Some(settings) = model.lora().cloned() else {
        return Err(error(
            "the model has no LoRA factors: apply_lora first".into(),
        ));
    };
    let config = &adapter.config;
    if config.r != settings.r {
        return Err(error(format!(
            "the adapter's r is {}, the model's LoRA has r {}",
            config.r, settings.r
        )));
    }
    let (theirs, ours) = (adapter.scale(), settings.scale());
    if (theirs - ours).abs() > 1e-9 * ours.abs().max(1.0) {
        return Err(error(format!(
            "the adapter's scale is {theirs} (lora_alpha {}, r {}{}), the model's LoRA scale \
             alpha / r is {ours} (alpha {}, r {})",
            config.lora_alpha,
            config.r,
            if config.use_rslora { ", rsLoRA" } else { "" },
            settings.alpha,
            settings.r
        )));
    }

    let mut pairs = adapter.pairs(M::released_key);
    let device = model.devices()[0].clone();
    let mut values = HashMap::new();
    for factors in lora_factors(&model) {
        let weight = format!("{}.weight", factors.module);
        let Some((a_name, b_name)) = pairs.remove(&weight) else {
            return Err(error(format!(
                "the adapter has no lora_A/lora_B for `{}` (LoRA'd in the model as `{}`)",
                factors.module, factors.path
            )));
        };
        let [d_in, r] = factors.a_shape;
        let [_, d_out] = factors.b_shape;
        // PEFT's [r, in] and [out, r] are the transposes of Burn's a [in, r] and b [r, out].
        let a: Tensor<2> = adapter.weights().tensor(&a_name, [r, d_in], &device)?;
        let b: Tensor<2> = adapter.weights().tensor(&b_name, [d_out, r], &device)?;
        values.insert(format!("{}.lora.a", factors.path), a.transpose());
        values.insert(format!("{}.lora.b", factors.path), b.transpose());
    }
    if let Some(extra) = pairs.keys().next() {
        return Err(error(format!(
            "the adapter adapts `{extra}`, which has no LoRA in the model (target_modules {:?})",
            settings.target_modules
        )));
    }
    let mut setter = SetFactors {
        path: Vec::new(),
        values,
    };
    let model = model.map(&mut setter);
    debug_assert!(setter.values.is_empty(), "every factor found its parameter");
    Ok(model)
}

/// The model's LoRA factors as a PEFT adapter folder that `peft.PeftModel.from_pretrained` loads
/// onto transformers 5's `MllamaForConditionalGeneration`: f32 `lora_A.weight` `[r, in]` and
/// `lora_B.weight` `[out, r]` under transformers 5's module names, and an `adapter_config.json`
/// with `settings` (which must be the model's), no dropout, no bias and
/// `base_model_name_or_path` (`null` when not given).
pub fn export_peft<M: LoraModel>(
    model: &M,
    settings: &LoraSettings,
    base_model_name_or_path: Option<&str>,
) -> Result<PeftExport, LoadError> {
    let error = |reason: String| lora_error("PEFT export", reason);
    match model.lora() {
        None => return Err(error("the model has no LoRA factors".into())),
        Some(ours) if ours.r != settings.r || ours.scale() != settings.scale() => {
            return Err(error(format!(
                "settings r {} alpha {} differ from the model's LoRA (r {}, alpha {})",
                settings.r, settings.alpha, ours.r, ours.alpha
            )));
        }
        Some(_) => {}
    }
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for factors in lora_factors(model) {
        let prefix = format!("base_model.model.{}", M::peft_module(&factors.module));
        // Transposed on the device; PEFT wants [r, in] and [out, r].
        for (suffix, tensor) in [
            ("lora_A.weight", factors.a.transpose()),
            ("lora_B.weight", factors.b.transpose()),
        ] {
            let shape = tensor.dims().to_vec();
            let values: Vec<f32> = tensor
                .into_data()
                .convert::<f32>()
                .try_into_vec()
                .map_err(|e| error(format!("{prefix}.{suffix}: {e:?}")))?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.insert(format!("{prefix}.{suffix}"), (shape, bytes));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| error(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let adapter_model_safetensors = safetensors::serialize(views, Some(metadata))
        .map_err(|e| error(format!("serialising the factors: {e}")))?;

    let mut targets = settings.target_modules.clone();
    targets.sort();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
    });
    Ok(PeftExport {
        adapter_config_json: serde_json::to_string_pretty(&config).expect("JSON values"),
        adapter_model_safetensors,
    })
}
