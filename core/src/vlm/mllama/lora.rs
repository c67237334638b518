//! LoRA on the Mllama student with Burn's built-in reparameterization, and its factors in PEFT's
//! layout.
//!
//! [`apply_lora`] freezes every parameter and gives the weight of each targeted `Linear` two
//! trainable factors, `a` `[in, r]` and `b` `[r, out]` (Burn's `Linear` weight is `[in, out]`,
//! the transpose of PyTorch's), so the layer uses `W + (alpha / r) * a @ b`. Targets are matched
//! as PEFT matches `target_modules`: by the last segment of the module name, in both towers
//! (`q_proj` is the vision encoders' and the text self- and cross-attention's). Unlike PEFT,
//! Burn's LoRA has no dropout on the layer input, and it initialises `a` from N(0, 1/r) where
//! PEFT uses Kaiming-uniform (`b` is zero in both, so a fresh adapter changes nothing).
//!
//! PEFT stores `lora_A.weight` `[r, in]` = `a` transposed and `lora_B.weight` `[out, r]` = `b`
//! transposed, under `base_model.model.<module>`. [`load_peft_factors`] reads the module names
//! in the released checkpoints' naming (`language_model.model.layers...`, as the published
//! Lavender adapters have them) and in transformers 5's (`model.language_model.layers...`).
//! [`export_peft`] writes transformers 5's, which is what peft 0.21 saves and loads for
//! transformers 5's `MllamaForConditionalGeneration`: it does not load vision factors saved
//! under the released `vision_model.*` names (they are reported missing and stay zero).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use burn::{
    module::{Lora, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup},
    tensor::Tensor,
};
use safetensors::{Dtype, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::model::{MllamaModel, released_key};
use crate::{adapters::peft::PeftAdapter, weights::LoadError};

/// Rank, scaling and target modules of a LoRA (PEFT's `r`, `lora_alpha`, `target_modules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSettings {
    pub r: usize,
    pub alpha: f64,
    /// Module names matched against the last segment of each `Linear`'s name
    /// (`q_proj`, `v_proj`, `fc1`, `multi_modal_projector`, ...).
    pub target_modules: Vec<String>,
}

impl Default for LoraSettings {
    /// Lavender's adapters: r 8, alpha 32 on the attention queries and values.
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 32.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

impl LoraSettings {
    /// `alpha / r`, the factor on `a @ b`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// An adapter folder's two files, to be written by the caller.
#[derive(Debug, Clone)]
pub struct PeftExport {
    pub adapter_config_json: String,
    pub adapter_model_safetensors: Vec<u8>,
}

fn lora_error(path: impl Into<PathBuf>, reason: String) -> LoadError {
    LoadError::Config {
        path: path.into(),
        reason,
    }
}

/// Gives the weight of every `Linear` whose name ends in one of `settings.target_modules`
/// trainable LoRA factors and freezes all other parameters. Fails if nothing matches or the
/// model already carries a LoRA.
pub fn apply_lora(model: MllamaModel, settings: &LoraSettings) -> Result<MllamaModel, LoadError> {
    let error = |reason: String| lora_error("LoRA settings", reason);
    if settings.r == 0 || !settings.alpha.is_finite() {
        return Err(error(format!(
            "r must be positive and alpha finite (r {}, alpha {})",
            settings.r, settings.alpha
        )));
    }
    if let Some(existing) = &model.lora {
        return Err(error(format!(
            "the model already carries a LoRA (r {}, alpha {}); merge it first",
            existing.r, existing.alpha
        )));
    }
    let targets: Vec<String> = linear_weights(&model)
        .into_iter()
        .filter(|linear| {
            let module = linear.module.rsplit('.').next().unwrap_or_default();
            settings.target_modules.iter().any(|t| t == module)
        })
        .map(|linear| linear.path)
        .collect();
    if targets.is_empty() {
        return Err(error(format!(
            "target_modules {:?} match no linear layer of the model",
            settings.target_modules
        )));
    }
    let lora =
        Lora::new(settings.r, settings.alpha).set_param_group(ParamGroup::from_paths(targets));
    let mut model = model.apply_lora(lora);
    model.lora = Some(settings.clone());
    Ok(model)
}

/// QLoRA: [`apply_lora`] over a quantized base. Every `Linear` weight but the `lm_head` is
/// quantized with `scheme`
/// (min-max calibration) and frozen; the targets get factors of `factor_dtype` (default f32),
/// which meet the activations in the layer's dtype. Burn still composes a dense
/// `dequantize(W) + scale * a @ b` per layer in the forward and backward passes.
pub fn apply_qlora(
    model: MllamaModel,
    settings: &LoraSettings,
    scheme: burn::tensor::quantization::QuantScheme,
    factor_dtype: Option<burn::tensor::FloatDType>,
) -> Result<MllamaModel, LoadError> {
    let error = |reason: String| lora_error("QLoRA settings", reason);
    if model.lora.is_some() {
        return Err(error(
            "the model already carries a LoRA; merge it first".into(),
        ));
    }
    let linears: Vec<LinearWeight> = linear_weights(&model);
    let targets: Vec<String> = linears
        .iter()
        .filter(|linear| {
            let module = linear.module.rsplit('.').next().unwrap_or_default();
            settings.target_modules.iter().any(|t| t == module)
        })
        .map(|linear| linear.path.clone())
        .collect();
    if settings.r == 0 || targets.is_empty() {
        return Err(error(format!(
            "r {} and target_modules {:?} give no LoRA",
            settings.r, settings.target_modules
        )));
    }
    let mut quantizer =
        burn::module::Quantizer::new(burn::tensor::quantization::Calibration::MinMax, scheme);
    // The output projection stays dense, as in QLoRA's reference (bitsandbytes) set-up.
    quantizer.set_param_group(ParamGroup::from_paths(
        linears
            .into_iter()
            .filter(|linear| !linear.module.ends_with("lm_head"))
            .map(|linear| linear.path)
            .collect(),
    ));
    let mut lora =
        Lora::new(settings.r, settings.alpha).set_param_group(ParamGroup::from_paths(targets));
    if let Some(dtype) = factor_dtype {
        lora = lora.set_dtype(dtype);
    }
    let mut model = model.apply_qlora(burn::module::QLora::new(lora, quantizer));
    model.lora = Some(settings.clone());
    Ok(model)
}

/// Sets the LoRA factors of a model [`apply_lora`] prepared from the PEFT adapter folder
/// `adapter_dir` (`adapter_config.json` + `adapter_model.safetensors`).
pub fn load_peft_factors(model: MllamaModel, adapter_dir: &Path) -> Result<MllamaModel, LoadError> {
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
pub fn set_peft_factors(
    model: MllamaModel,
    adapter: &PeftAdapter,
) -> Result<MllamaModel, LoadError> {
    let error = |reason: String| lora_error("adapter_model.safetensors", reason);
    let Some(settings) = model.lora.clone() else {
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

    let mut pairs = adapter.pairs(released_key);
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
pub fn export_peft(
    model: &MllamaModel,
    settings: &LoraSettings,
    base_model_name_or_path: Option<&str>,
) -> Result<PeftExport, LoadError> {
    let error = |reason: String| lora_error("PEFT export", reason);
    match &model.lora {
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
        let prefix = format!("base_model.model.{}", transformers5_module(&factors.module));
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

/// Folds the LoRA factors into dense weights (`W + (alpha / r) * a @ b`) for inference; the
/// result has no factors and runs as fast as the base model.
pub fn merge_lora(model: MllamaModel) -> MllamaModel {
    let mut model = model.materialize();
    model.lora = None;
    model
}

/// A module name in the released checkpoints' naming (`language_model.model.layers.0.self_attn
/// .q_proj`) to transformers 5's (`model.language_model.layers.0.self_attn.q_proj`), the inverse
/// of [`released_key`].
fn transformers5_module(released: &str) -> String {
    for (old, new) in [
        ("vision_model.", "model.vision_model."),
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head", "lm_head"),
        ("multi_modal_projector", "model.multi_modal_projector"),
    ] {
        if let Some(rest) = released.strip_prefix(old) {
            return format!("{new}{rest}");
        }
    }
    released.to_string()
}

/// A Burn module path (`text.layers.1.CrossAttention.cross_attn.q_proj`) to the released
/// checkpoints' module name (`language_model.model.layers.1.cross_attn.q_proj`).
fn released_module(burn_path: &str) -> String {
    let segments: Vec<&str> = burn_path.split('.').collect();
    match segments.as_slice() {
        ["vision", rest @ ..] => format!("vision_model.{}", rest.join(".")),
        ["projector", "linear"] => "multi_modal_projector".into(),
        ["projector", rest @ ..] => format!("multi_modal_projector.{}", rest.join(".")),
        ["text", "lm_head"] => "language_model.lm_head".into(),
        // The decoder layer enum's variant name is a path segment in Burn, not in PyTorch.
        ["text", "layers", index, _variant, rest @ ..] => {
            format!("language_model.model.layers.{index}.{}", rest.join("."))
        }
        ["text", rest @ ..] => format!("language_model.model.{}", rest.join(".")),
        _ => burn_path.to_string(),
    }
}

/// Tracks the module path as Burn's visitors and mappers enter and leave modules.
#[derive(Default)]
struct PathStack {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    fn path(&self) -> String {
        self.names.join(".")
    }
}

/// A `Linear` weight: its Burn parameter path and released module name (without `.weight`).
struct LinearWeight {
    path: String,
    module: String,
}

fn linear_weights(model: &MllamaModel) -> Vec<LinearWeight> {
    struct Collect {
        stack: PathStack,
        found: Vec<LinearWeight>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.exit();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            let is_linear_weight = D == 2
                && self.stack.names.last().is_some_and(|n| n == "weight")
                && self
                    .stack
                    .containers
                    .last()
                    .is_some_and(|c| c == "Struct:Linear");
            if is_linear_weight {
                let path = self.stack.path();
                let module = released_module(path.trim_end_matches(".weight"));
                self.found.push(LinearWeight { path, module });
            }
        }
    }
    let mut collect = Collect {
        stack: PathStack::default(),
        found: Vec::new(),
    };
    model.visit(&mut collect);
    collect.found
}

/// The LoRA factors of one weight: `a` `[in, r]`, `b` `[r, out]`.
struct Factors {
    /// Burn path of the adapted weight (`...q_proj.weight`).
    path: String,
    /// Released module name (`...q_proj`).
    module: String,
    a: Tensor<2>,
    b: Tensor<2>,
    a_shape: [usize; 2],
    b_shape: [usize; 2],
}

/// Every LoRA'd weight's factors, in the model's order.
fn lora_factors(model: &MllamaModel) -> Vec<Factors> {
    collect_factors(model, None)
}

/// Trainable LoRA parameters: the elements of every `a` and `b` factor.
pub fn lora_factor_count(model: &MllamaModel) -> usize {
    lora_factors(model)
        .iter()
        .map(|f| f.a_shape.iter().product::<usize>() + f.b_shape.iter().product::<usize>())
        .sum()
}

/// The gradients of every LoRA'd weight's factors in `grads` (a backward pass through `model`
/// on an autodiff device), in PEFT's layout: `(released module name, d lora_A [r, in],
/// d lora_B [out, r])`. Factors that received no gradient are left out.
pub fn lora_gradients(
    model: &MllamaModel,
    grads: &burn::tensor::Gradients,
) -> Vec<(String, Tensor<2>, Tensor<2>)> {
    collect_factors(model, Some(grads))
        .into_iter()
        .map(|factors| (factors.module, factors.a.transpose(), factors.b.transpose()))
        .collect()
}

/// The factors (or, given `grads`, their gradients) of every LoRA'd weight.
fn collect_factors(model: &MllamaModel, grads: Option<&burn::tensor::Gradients>) -> Vec<Factors> {
    struct Collect<'g> {
        grads: Option<&'g burn::tensor::Gradients>,
        stack: PathStack,
        found: BTreeMap<String, (Option<Tensor<2>>, Option<Tensor<2>>)>,
        order: Vec<String>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // `<weight path>.lora.a` / `.lora.b`: Burn's LoRA surfaces its factors there.
            let names = &self.stack.names;
            let n = names.len();
            if D != 2 || n < 3 || names[n - 2] != "lora" {
                return;
            }
            let owner = names[..n - 2].join(".");
            let value = match self.grads {
                // The gradient is keyed by the parameter's own node: read it before any reshape.
                Some(grads) => match param.val().grad(grads) {
                    Some(gradient) => gradient,
                    None => return,
                },
                None => param.val(),
            };
            let dims = value.dims().to_vec();
            let tensor: Tensor<2> = value.reshape([dims[0], dims[1]]);
            let entry = self.found.entry(owner.clone()).or_insert_with(|| {
                self.order.push(owner);
                (None, None)
            });
            match names[n - 1].as_str() {
                "a" => entry.0 = Some(tensor),
                "b" => entry.1 = Some(tensor),
                _ => {}
            }
        }
    }
    let mut collect = Collect {
        grads,
        stack: PathStack::default(),
        found: BTreeMap::new(),
        order: Vec::new(),
    };
    model.visit(&mut collect);
    collect
        .order
        .into_iter()
        .filter_map(|path| {
            let (a, b) = collect.found.remove(&path)?;
            let (a, b) = (a?, b?);
            Some(Factors {
                module: released_module(path.trim_end_matches(".weight")),
                a_shape: a.dims(),
                b_shape: b.dims(),
                path,
                a,
                b,
            })
        })
        .collect()
}

/// Replaces the parameters at the given paths, keeping their ids, device and trainability.
struct SetFactors {
    path: Vec<String>,
    values: HashMap<String, Tensor<2>>,
}

impl ModuleMapper for SetFactors {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 2 {
            return param;
        }
        match self.values.remove(&self.path.join(".")) {
            Some(value) => {
                let mut shape = [0; D];
                shape.copy_from_slice(&value.dims());
                let id = param.id;
                param.transform_for_load(value.reshape(shape), id)
            }
            None => param,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::{
        module::ParamId,
        optim::{AdamWConfig, GradientsParams},
        tensor::Device,
    };

    use super::*;
    use crate::{
        testing::{assert_close, device, mllama_golden_path, mllama_tiny_dir},
        vlm::mllama::model::tests::{full_pass_logits, inputs},
        weights::Weights,
    };

    fn fixture_adapter() -> PathBuf {
        mllama_tiny_dir().join("adapter")
    }

    fn base_model(device: &Device) -> MllamaModel {
        MllamaModel::load(&mllama_tiny_dir(), None, device).unwrap()
    }

    fn lora_model(device: &Device) -> MllamaModel {
        apply_lora(base_model(device), &LoraSettings::default()).unwrap()
    }

    fn golden_logits_adapter(device: &Device) -> Tensor<3> {
        Weights::from_files(&[mllama_golden_path()])
            .unwrap()
            .tensor("logits_adapter", [1, 29, 374], device)
            .unwrap()
    }

    fn values(tensor: Tensor<2>) -> Vec<f32> {
        tensor.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    /// Every float parameter's path and id.
    fn param_ids(model: &MllamaModel) -> Vec<(String, ParamId)> {
        struct Collect {
            stack: PathStack,
            found: Vec<(String, ParamId)>,
        }
        impl ModuleVisitor for Collect {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.stack.enter(name, container_type);
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.stack.exit();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.found.push((self.stack.path(), param.id));
            }
        }
        let mut collect = Collect {
            stack: PathStack::default(),
            found: Vec::new(),
        };
        model.visit(&mut collect);
        collect.found
    }

    /// The stored (base) values of the parameter at `wanted`.
    fn param_values(model: &MllamaModel, wanted: &str) -> Vec<f32> {
        struct Find<'a> {
            stack: PathStack,
            wanted: &'a str,
            found: Option<Vec<f32>>,
        }
        impl ModuleVisitor for Find<'_> {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.stack.enter(name, container_type);
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.stack.exit();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.stack.path() == self.wanted {
                    let data = param.val().into_data().convert::<f32>();
                    self.found = Some(data.try_into_vec().unwrap());
                }
            }
        }
        let mut find = Find {
            stack: PathStack::default(),
            wanted,
            found: None,
        };
        model.visit(&mut find);
        find.found
            .unwrap_or_else(|| panic!("no parameter {wanted}"))
    }

    #[test]
    fn targets_are_the_modules_peft_adapts() {
        let model = lora_model(&device());
        let mut ours: Vec<String> = lora_factors(&model).into_iter().map(|f| f.module).collect();
        ours.sort();
        // peft chose these for target_modules [q_proj, v_proj] when it wrote the fixture.
        let adapter = PeftAdapter::load(&fixture_adapter()).unwrap();
        let theirs: Vec<String> = adapter
            .pairs(released_key)
            .into_keys()
            .map(|name| name.trim_end_matches(".weight").to_string())
            .collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 20, "q and v of 5 vision and 5 text layers");
        assert!(ours.contains(&"language_model.model.layers.1.cross_attn.q_proj".to_string()));
    }

    /// Burn's LoRA with the fixture's factors computes peft's logits, unmerged and merged.
    #[test]
    fn peft_factors_give_peft_logits() {
        let d = device();
        let model = load_peft_factors(lora_model(&d), &fixture_adapter()).unwrap();
        let logits = full_pass_logits(&model, &inputs(&model));
        assert_close("LoRA logits", logits, golden_logits_adapter(&d), 1e-4);

        let merged = merge_lora(model);
        assert!(merged.lora_settings().is_none());
        assert!(lora_factors(&merged).is_empty());
        let logits = full_pass_logits(&merged, &inputs(&merged));
        assert_close(
            "merged LoRA logits",
            logits,
            golden_logits_adapter(&d),
            1e-4,
        );
    }

    /// QLoRA on an 8-bit base (blocks of 16) with the fixture's factors stays within the
    /// quantization error of peft's logits, and gradients reach the 40 factors.
    #[test]
    fn qlora_on_an_8_bit_base_keeps_the_logits_and_trains_the_factors() {
        use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
        let device = Device::flex().autodiff();
        let scheme = QuantScheme::default()
            .with_value(QuantValue::Q8S)
            .with_store(QuantStore::PackedU32(0))
            .per_block([16], ScaleDtype::F32);
        let model = apply_qlora(base_model(&device), &LoraSettings::default(), scheme, None)
            .and_then(|model| load_peft_factors(model, &fixture_adapter()))
            .unwrap();
        let logits = full_pass_logits(&model, &inputs(&model));
        // 8-bit weights: 1.4e-3 of the logits' range measured; 1e-2 allowed.
        assert_close(
            "QLoRA logits",
            logits.clone(),
            golden_logits_adapter(&device),
            1e-2,
        );
        let grads = logits.sum().backward();
        assert_eq!(lora_gradients(&model, &grads).len(), 20);
    }

    #[test]
    fn gradients_reach_only_the_factors_and_a_step_moves_only_them() {
        let device = Device::flex().autodiff();
        let model = load_peft_factors(lora_model(&device), &fixture_adapter()).unwrap();
        let loss = full_pass_logits(&model, &inputs(&model)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);

        let params = param_ids(&model);
        let (factors, bases): (Vec<_>, Vec<_>) =
            params.iter().partition(|(path, _)| path.contains(".lora."));
        assert_eq!(factors.len(), 40, "a and b of 20 layers");
        assert_eq!(grads.len(), 40, "gradients for the factors only");
        for (path, id) in &factors {
            let grad = grads
                .get::<2>(*id)
                .unwrap_or_else(|| panic!("no gradient for {path}"));
            let norm: f32 = grad.abs().sum().into_scalar();
            assert!(norm > 0.0, "zero gradient for {path}");
        }
        assert!(bases.len() > 100, "{} base parameters", bases.len());

        let before = lora_factors(&model);
        let base_weight = |m: &MllamaModel| param_values(m, "text.lm_head.weight");
        let lm_head = base_weight(&model);
        let mut optim = AdamWConfig::new().init();
        let stepped = optim.step(1e-2, model, grads);
        let after = lora_factors(&stepped);
        assert_eq!(before.len(), after.len());
        for (old, new) in before.into_iter().zip(after) {
            assert_ne!(values(old.a), values(new.a), "{} a did not move", old.path);
        }
        assert_eq!(lm_head, base_weight(&stepped), "frozen lm_head moved");
    }

    #[test]
    fn export_is_the_fixture_under_transformers_5_names_and_round_trips() {
        let d = device();
        let model = load_peft_factors(lora_model(&d), &fixture_adapter()).unwrap();
        let export = export_peft(&model, &LoraSettings::default(), Some("mllama-tiny")).unwrap();

        let exported =
            Weights::from_bytes("export", export.adapter_model_safetensors.clone()).unwrap();
        let fixture =
            Weights::from_files(&[fixture_adapter().join("adapter_model.safetensors")]).unwrap();
        let mut names: Vec<&str> = fixture.names().collect();
        names.sort();
        assert_eq!(exported.names().count(), names.len());
        for name in names {
            let module = name.strip_prefix("base_model.model.").unwrap();
            let (module, suffix) = module.split_once(".lora_").unwrap();
            let renamed = format!(
                "base_model.model.{}.lora_{suffix}",
                transformers5_module(module)
            );
            let shape: [usize; 2] = fixture.shape(name).unwrap().try_into().unwrap();
            assert_eq!(
                values(exported.tensor(&renamed, shape, &d).unwrap()),
                values(fixture.tensor(name, shape, &d).unwrap()),
                "{renamed}"
            );
        }
        assert!(
            exported
                .names()
                .any(|n| n == "base_model.model.model.vision_model.transformer.layers.0.self_attn.q_proj.lora_A.weight")
        );

        let config: serde_json::Value = serde_json::from_str(&export.adapter_config_json).unwrap();
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["r"], 8);
        assert_eq!(config["lora_alpha"], 32.0);
        assert_eq!(config["base_model_name_or_path"], "mllama-tiny");

        let adapter = PeftAdapter::from_bytes(
            Path::new("export"),
            &export.adapter_config_json,
            export.adapter_model_safetensors,
        )
        .unwrap();
        let again = set_peft_factors(lora_model(&d), &adapter).unwrap();
        let (ours, theirs) = (lora_factors(&model), lora_factors(&again));
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.into_iter().zip(theirs) {
            assert_eq!(ours.path, theirs.path);
            assert_eq!(values(ours.a), values(theirs.a), "{} a", ours.path);
            assert_eq!(values(ours.b), values(theirs.b), "{} b", ours.path);
        }
    }

    #[test]
    fn mismatches_are_errors_that_say_what() {
        let d = device();
        let error = apply_lora(
            base_model(&d),
            &LoraSettings {
                target_modules: vec!["nope".into()],
                ..LoraSettings::default()
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("nope"), "{error}");

        let error = load_peft_factors(base_model(&d), &fixture_adapter()).unwrap_err();
        assert!(error.to_string().contains("apply_lora first"), "{error}");

        let half_alpha = apply_lora(
            base_model(&d),
            &LoraSettings {
                alpha: 16.0,
                ..LoraSettings::default()
            },
        )
        .unwrap();
        let error = load_peft_factors(half_alpha, &fixture_adapter()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("scale is 4") && message.contains("is 2"),
            "{message}"
        );

        let more = apply_lora(
            base_model(&d),
            &LoraSettings {
                target_modules: vec!["q_proj".into(), "v_proj".into(), "o_proj".into()],
                ..LoraSettings::default()
            },
        )
        .unwrap();
        let error = load_peft_factors(more, &fixture_adapter()).unwrap_err();
        assert!(error.to_string().contains("o_proj"), "{error}");

        let fewer = apply_lora(
            base_model(&d),
            &LoraSettings {
                target_modules: vec!["q_proj".into()],
                ..LoraSettings::default()
            },
        )
        .unwrap();
        let error = load_peft_factors(fewer, &fixture_adapter()).unwrap_err();
        assert!(error.to_string().contains("v_proj"), "{error}");

        let error = apply_lora(lora_model(&d), &LoraSettings::default()).unwrap_err();
        assert!(error.to_string().contains("already"), "{error}");
        let error = export_peft(&base_model(&d), &LoraSettings::default(), None).unwrap_err();
        assert!(error.to_string().contains("no LoRA"), "{error}");
    }

    /// The committed export (`tests/fixtures/lavender-tiny/exported-adapter/`): what
    /// [`exported_adapter_model`] exports, and PEFT's logits with it (`peft_logits`, written by
    /// `tests/fixtures/check_peft_export.py --golden`).
    fn exported_adapter_dir() -> PathBuf {
        mllama_tiny_dir().join("../lavender-tiny/exported-adapter")
    }

    /// Settings other than the fixture adapter's (r 8, alpha 32, q and v), so the export's
    /// r, scale and targets are checked against PEFT too.
    fn exported_adapter_settings() -> LoraSettings {
        LoraSettings {
            r: 4,
            alpha: 8.0,
            target_modules: vec!["v_proj".into()],
        }
    }

    /// The base model with [`exported_adapter_settings`] and factors from a fixed formula
    /// (exact in f32, so the same bits on every machine): values `k / 500` for `k` in
    /// `-100..=100`, in a fixed scramble.
    fn exported_adapter_model(device: &Device) -> MllamaModel {
        let model = apply_lora(base_model(device), &exported_adapter_settings()).unwrap();
        let mut values = HashMap::new();
        let mut counter: u64 = 0;
        for factors in lora_factors(&model) {
            for (suffix, shape) in [("a", factors.a_shape), ("b", factors.b_shape)] {
                let data: Vec<f32> = (0..shape[0] * shape[1])
                    .map(|_| {
                        counter += 1;
                        ((counter * 7919) % 201) as f32 / 500.0 - 0.2
                    })
                    .collect();
                let tensor = Tensor::from_data(burn::tensor::TensorData::new(data, shape), device);
                values.insert(format!("{}.lora.{suffix}", factors.path), tensor);
            }
        }
        let mut setter = SetFactors {
            path: Vec::new(),
            values,
        };
        let model = model.map(&mut setter);
        assert!(setter.values.is_empty(), "every factor found its parameter");
        model
    }

    /// Writes [`exported_adapter_dir`]'s adapter; then run
    /// `/tmp/fixtures-venv/bin/python tests/fixtures/check_peft_export.py --golden`.
    #[test]
    #[ignore = "rewrites the committed exported-adapter fixture"]
    fn write_exported_adapter_fixture() {
        let export = export_peft(
            &exported_adapter_model(&device()),
            &exported_adapter_settings(),
            Some("mllama-tiny"),
        )
        .unwrap();
        let out = exported_adapter_dir();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("adapter_config.json"), &export.adapter_config_json).unwrap();
        std::fs::write(
            out.join("adapter_model.safetensors"),
            &export.adapter_model_safetensors,
        )
        .unwrap();
        eprintln!("wrote {}", out.display());
    }

    /// The export of fixed factors is the committed one (factor bytes equal, the same
    /// config), and that export, loaded back, gives PEFT's logits with it.
    #[test]
    fn peft_export_matches_the_committed_fixture_and_peft() {
        let d = device();
        let dir = exported_adapter_dir();
        let export = export_peft(
            &exported_adapter_model(&d),
            &exported_adapter_settings(),
            Some("mllama-tiny"),
        )
        .unwrap();
        let committed = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        assert!(
            export.adapter_model_safetensors == committed,
            "the export differs from the committed adapter_model.safetensors"
        );
        let config = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
        let committed_config = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
        assert_eq!(
            config(&export.adapter_config_json),
            config(&committed_config)
        );

        let model = apply_lora(base_model(&d), &exported_adapter_settings()).unwrap();
        let model = load_peft_factors(model, &dir).unwrap();
        assert_eq!(
            lora_factors(&model).len(),
            10,
            "v of 5 vision and 5 text layers"
        );
        let logits = full_pass_logits(&model, &inputs(&model));
        let peft = Weights::from_files(&[dir.join("peft_logits.safetensors")])
            .unwrap()
            .tensor("logits", [1, 29, 374], &d)
            .unwrap();
        // Not vacuous: the factors move PEFT's logits well away from the base model's.
        let base = Weights::from_files(&[mllama_golden_path()])
            .unwrap()
            .tensor("logits", [1, 29, 374], &d)
            .unwrap();
        let moved = crate::testing::relative_error(base, peft.clone());
        assert!(
            moved > 1e-2,
            "the adapter barely changes the logits: {moved:e}"
        );
        assert_close("exported adapter logits against PEFT's", logits, peft, 1e-4);
    }

    /// Writes an exported adapter (the fixture's factors after one AdamW step, so not the
    /// fixture) and this crate's logits with it to `$LAVENDER_PEFT_EXPORT` (default
    /// `/tmp/lavender-peft-export`) for `tests/fixtures/check_peft_export.py`.
    #[test]
    #[ignore = "writes files for the by-hand Python check"]
    fn write_export_for_the_python_check() {
        let out = PathBuf::from(
            std::env::var("LAVENDER_PEFT_EXPORT")
                .unwrap_or_else(|_| "/tmp/lavender-peft-export".into()),
        );
        let device = Device::flex().autodiff();
        let model = load_peft_factors(lora_model(&device), &fixture_adapter()).unwrap();
        let loss = full_pass_logits(&model, &inputs(&model)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = AdamWConfig::new().init().step(5e-2, model, grads);

        let settings = LoraSettings::default();
        let export = export_peft(&model, &settings, Some("mllama-tiny")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("adapter_config.json"), &export.adapter_config_json).unwrap();
        std::fs::write(
            out.join("adapter_model.safetensors"),
            &export.adapter_model_safetensors,
        )
        .unwrap();
        let logits = full_pass_logits(&model, &inputs(&model));
        let shape = logits.dims().to_vec();
        let logits: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, shape, &bytes).unwrap();
        let file = safetensors::serialize([("logits", view)], None).unwrap();
        std::fs::write(out.join("logits.safetensors"), file).unwrap();
        eprintln!("wrote {}", out.display());
    }
}
