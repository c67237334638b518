//! LoRA on the tiny Llama-3.2-Vision fixture against PEFT: targets, logits, gradients and the
//! export; kept with the model so that `adapters` depends on no model.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use burn::{
    module::{Module, ModuleVisitor, Param, ParamId},
    optim::{AdamWConfig, GradientsParams},
    tensor::{Device, Tensor},
};
use safetensors::{Dtype, tensor::TensorView};

use super::model::{
    MllamaModel, released_key,
    tests::{full_pass_logits, inputs},
    transformers5_key,
};
use crate::{
    adapters::{
        lora::{PathStack, SetFactors, lora_factors, *},
        peft::PeftAdapter,
    },
    testing::{assert_close, device, mllama_golden_path, mllama_tiny_dir},
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

/// A fresh LoRA's `a` factors are PEFT's Kaiming-uniform (`a = sqrt(5)`): uniform in
/// `(-1/sqrt(in), 1/sqrt(in))` for each layer's `in`, so std `1/sqrt(3 in)`; checked per tower.
/// Burn's own N(0, 1/r) would fail both checks (std 0.125 against 0.102 here). `b` is zero.
#[test]
fn fresh_factors_follow_peft_initialisation() {
    let d = device();
    d.seed(7);
    let model = lora_model(&d);
    let mut towers: std::collections::BTreeMap<String, (usize, Vec<f32>)> = Default::default();
    for factors in lora_factors(&model) {
        let tower = if factors.module.starts_with("vision_model.") {
            "vision"
        } else {
            "text"
        };
        let [inputs, rank] = factors.a_shape;
        assert_eq!(rank, 8, "{}", factors.module);
        assert!(
            values(factors.b).iter().all(|&v| v == 0.0),
            "{}",
            factors.module
        );
        let entry = towers
            .entry(tower.to_string())
            .or_insert((inputs, Vec::new()));
        assert_eq!(entry.0, inputs, "one input width per tower");
        entry.1.extend(values(factors.a));
    }
    assert_eq!(towers.len(), 2);
    for (tower, (inputs, a)) in towers {
        let bound = 1.0 / (inputs as f32).sqrt();
        assert!(
            a.iter().all(|v| v.abs() <= bound),
            "{tower}: a value beyond {bound}"
        );
        let n = a.len() as f32;
        let mean = a.iter().sum::<f32>() / n;
        let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        let expected = bound / 3f32.sqrt();
        // Thousands of draws: the sample std is within a few per cent of the uniform's.
        assert!(
            (std - expected).abs() < 0.1 * expected,
            "{tower} ({inputs} inputs, {} values): std {std}, PEFT's {expected}",
            a.len()
        );
        assert!(mean.abs() < 0.1 * expected, "{tower}: mean {mean}");
    }
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

    let exported = Weights::from_bytes("export", export.adapter_model_safetensors.clone()).unwrap();
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
            transformers5_key(module)
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
