//! LoRA on a student model with Burn's built-in reparameterization.
//!
//! [`apply_lora`] freezes every parameter and gives the weight of each targeted `Linear` two
//! trainable factors, `a` `[in, r]` and `b` `[r, out]` (Burn's `Linear` weight is `[in, out]`,
//! the transpose of PyTorch's), so the layer uses `W + (alpha / r) * a @ b`. Targets are matched
//! as PEFT matches `target_modules`: by the last segment of the module name, in both towers
//! (`q_proj` is the vision encoders' and the text self- and cross-attention's). `a` is
//! initialised as PEFT does (Kaiming-uniform) and `b` to zero, so a fresh adapter changes
//! nothing. Unlike PEFT, Burn's LoRA has no dropout on the layer input.
//!
//! The factors in PEFT's file layout (load, set, export) are [`peft_layout`]'s.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use burn::{
    module::{Lora, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup},
    tensor::{Distribution, Tensor},
};
use serde::{Deserialize, Serialize};

pub use peft_layout::{PeftExport, export_peft, load_peft_factors, set_peft_factors};

use crate::weights::LoadError;

pub mod peft_layout;

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

/// What LoRA needs of a model besides its Burn modules: the LoRA it carries, and the names its
/// layers have in the model's checkpoints and in PEFT's files. A model family implements it
/// with its own key names (Llama-3.2-Vision: `vlm::mllama::model`), so nothing here knows one.
pub trait LoraModel: Module + Sized {
    /// The LoRA this model carries; `None` for a dense model.
    fn lora(&self) -> Option<&LoraSettings>;

    fn set_lora(&mut self, lora: Option<LoraSettings>);

    /// A Burn module path (`text.layers.1.CrossAttention.cross_attn.q_proj`) as the released
    /// checkpoints name the module (`language_model.model.layers.1.cross_attn.q_proj`).
    fn checkpoint_module(burn_path: &str) -> String;

    /// A module name or key in any naming a PEFT file may use, in the released checkpoints'.
    fn released_key(name: &str) -> String;

    /// A released module name as current PEFT saves it (what [`export_peft`] writes).
    fn peft_module(released: &str) -> String;
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
pub fn apply_lora<M: LoraModel>(model: M, settings: &LoraSettings) -> Result<M, LoadError> {
    let error = |reason: String| lora_error("LoRA settings", reason);
    if settings.r == 0 || !settings.alpha.is_finite() {
        return Err(error(format!(
            "r must be positive and alpha finite (r {}, alpha {})",
            settings.r, settings.alpha
        )));
    }
    if let Some(existing) = model.lora() {
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
    let mut model = peft_init(model.apply_lora(lora));
    model.set_lora(Some(settings.clone()));
    Ok(model)
}

/// PEFT's initialisation of every `a` factor (`lora_A`: `nn.init.kaiming_uniform_` with
/// `a = sqrt(5)`): uniform in `(-1/sqrt(in), 1/sqrt(in))` for a layer of `in` inputs, drawn
/// from the device's seeded generator. Burn draws `a` from N(0, 1/r) for every layer, 8-14x
/// larger on Llama-3.2-Vision; Adam normalises `b`'s gradient, so the first updates scale with
/// `a`. `b` stays zero, as in both, so a fresh adapter changes nothing.
fn peft_init<M: LoraModel>(model: M) -> M {
    let mut values = HashMap::new();
    for factors in lora_factors(&model) {
        let [inputs, rank] = factors.a_shape;
        let bound = 1.0 / (inputs as f64).sqrt();
        let fresh = Tensor::<2>::random(
            [inputs, rank],
            Distribution::Uniform(-bound, bound),
            &factors.a.device(),
        )
        .cast(factors.a.dtype());
        values.insert(format!("{}.lora.a", factors.path), fresh);
    }
    model.map(&mut SetFactors {
        path: Vec::new(),
        values,
    })
}

/// QLoRA: [`apply_lora`] over a quantized base. Every `Linear` weight but the `lm_head` is
/// quantized with `scheme`
/// (min-max calibration) and frozen; the targets get factors of `factor_dtype` (default f32),
/// which meet the activations in the layer's dtype. Burn still composes a dense
/// `dequantize(W) + scale * a @ b` per layer in the forward and backward passes.
pub fn apply_qlora<M: LoraModel>(
    model: M,
    settings: &LoraSettings,
    scheme: burn::tensor::quantization::QuantScheme,
    factor_dtype: Option<burn::tensor::FloatDType>,
) -> Result<M, LoadError> {
    let error = |reason: String| lora_error("QLoRA settings", reason);
    if model.lora().is_some() {
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
    let mut model = peft_init(model.apply_qlora(burn::module::QLora::new(lora, quantizer)));
    model.set_lora(Some(settings.clone()));
    Ok(model)
}

/// Folds the LoRA factors into dense weights (`W + (alpha / r) * a @ b`) for inference; the
/// result has no factors and runs as fast as the base model.
pub fn merge_lora<M: LoraModel>(model: M) -> M {
    let mut model = model.materialize();
    model.set_lora(None);
    model
}

/// Tracks the module path as Burn's visitors and mappers enter and leave modules.
#[derive(Default)]
pub(crate) struct PathStack {
    pub(crate) names: Vec<String>,
    pub(crate) containers: Vec<String>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    pub(crate) fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    pub(crate) fn path(&self) -> String {
        self.names.join(".")
    }
}

/// A `Linear` weight: its Burn parameter path and released module name (without `.weight`).
struct LinearWeight {
    path: String,
    module: String,
}

fn linear_weights<M: LoraModel>(model: &M) -> Vec<LinearWeight> {
    struct Collect {
        stack: PathStack,
        found: Vec<String>,
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
                self.found.push(self.stack.path());
            }
        }
    }
    let mut collect = Collect {
        stack: PathStack::default(),
        found: Vec::new(),
    };
    model.visit(&mut collect);
    collect
        .found
        .into_iter()
        .map(|path| LinearWeight {
            module: M::checkpoint_module(path.trim_end_matches(".weight")),
            path,
        })
        .collect()
}

/// The LoRA factors of one weight: `a` `[in, r]`, `b` `[r, out]`.
pub(crate) struct Factors {
    /// Burn path of the adapted weight (`...q_proj.weight`).
    pub(crate) path: String,
    /// Released module name (`...q_proj`).
    pub(crate) module: String,
    pub(crate) a: Tensor<2>,
    pub(crate) b: Tensor<2>,
    pub(crate) a_shape: [usize; 2],
    pub(crate) b_shape: [usize; 2],
}

/// Every LoRA'd weight's factors, in the model's order.
pub(crate) fn lora_factors<M: LoraModel>(model: &M) -> Vec<Factors> {
    collect_factors(model, None)
}

/// Trainable LoRA parameters: the elements of every `a` and `b` factor.
pub fn lora_factor_count<M: LoraModel>(model: &M) -> usize {
    lora_factors(model)
        .iter()
        .map(|f| f.a_shape.iter().product::<usize>() + f.b_shape.iter().product::<usize>())
        .sum()
}

/// The gradients of every LoRA'd weight's factors in `grads` (a backward pass through `model`
/// on an autodiff device), in PEFT's layout: `(released module name, d lora_A [r, in],
/// d lora_B [out, r])`. Factors that received no gradient are left out.
pub fn lora_gradients<M: LoraModel>(
    model: &M,
    grads: &burn::tensor::Gradients,
) -> Vec<(String, Tensor<2>, Tensor<2>)> {
    collect_factors(model, Some(grads))
        .into_iter()
        .map(|factors| (factors.module, factors.a.transpose(), factors.b.transpose()))
        .collect()
}

/// The factors (or, given `grads`, their gradients) of every LoRA'd weight.
fn collect_factors<M: LoraModel>(
    model: &M,
    grads: Option<&burn::tensor::Gradients>,
) -> Vec<Factors> {
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
                module: M::checkpoint_module(path.trim_end_matches(".weight")),
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
pub(crate) struct SetFactors {
    pub(crate) path: Vec<String>,
    pub(crate) values: HashMap<String, Tensor<2>>,
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
