//! The Lavender loss of the Llama-3.2-Vision student against PyTorch + peft on the tiny fixture
//! (`tests/fixtures/make_lavender_fixtures.py`): the method's parity tests that need a real
//! student, kept here so that `align` itself depends on no model.

use burn::tensor::{Device, Tensor, TensorData};

use super::{prompt::Message, student::Mllama};
use crate::{
    align::{
        aligner::tests::fixture_aligner,
        grid::GridMode,
        loss::{LossConfig, Positions, answer_word_maps, lavender_loss},
        student::{IGNORE_INDEX, StudentVlm, TextToImageAttention},
        student_maps::Aggregation,
    },
    maps::WordMaps,
    testing::{
        assert_close, device, golden_i64, lavender_golden, lavender_golden_metadata,
        lavender_golden_path, mllama_tiny_dir,
    },
};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn teacher(device: &Device) -> WordMaps {
    let words: Vec<String> =
        serde_json::from_str(&lavender_golden_metadata("teacher_words")).unwrap();
    let maps = lavender_golden()
        .tensor("teacher_maps", [words.len(), 32, 32], device)
        .unwrap();
    WordMaps { words, maps }
}

/// The fixture sample (the tiny model with its adapter merged, the fixture image, question
/// and answer) through one forward pass: the student, labels, logits and attention.
fn fixture_pass(device: &Device) -> (Mllama, Vec<i64>, Tensor<3>, TextToImageAttention) {
    let dir = mllama_tiny_dir();
    let student = Mllama::load(&dir, Some(&dir.join("adapter")), device).unwrap();
    let (labels, logits, attention) = fixture_forward(&student);
    (student, labels, logits, attention)
}

/// The fixture image, question and answer through `student`: labels, logits, attention.
fn fixture_forward(student: &Mllama) -> (Vec<i64>, Tensor<3>, TextToImageAttention) {
    let image = image::open(mllama_tiny_dir().join("image.png"))
        .unwrap()
        .to_rgb8();
    let messages = [
        Message::user_with_image("What is in the picture?"),
        Message::text(
            "assistant",
            "A brown dog rides a red skateboard near the water.",
        ),
    ];
    let (prepared, labels) = student.prepare_conversation(&image, &messages).unwrap();
    let (logits, attention) = student.forward_with_attention(&prepared);
    (labels, logits, attention)
}

fn scalar(name: &str, device: &Device) -> Tensor<1> {
    lavender_golden().tensor(name, [1], device).unwrap()
}

/// The fixture sample through the tiny model with its adapter merged, on an autodiff
/// device: labels, CE, word maps, L_att, total and the Aligner's gradients against torch
/// (tests/fixtures/make_lavender_fixtures.py).
#[test]
fn loss_and_aligner_gradients_match_torch() {
    let device = Device::flex().autodiff();
    let (student, labels, logits, attention) = fixture_pass(&device);
    assert_eq!(labels, golden_i64(&lavender_golden_path(), "labels").0);
    let aligner = fixture_aligner(&device);
    let teacher = teacher(&device);
    let tokenizer = student.prompt.tokenizer();

    let loss = lavender_loss(
        logits.clone(),
        &attention,
        &labels,
        &teacher,
        Some(&aligner),
        tokenizer,
        &LossConfig::default(),
    )
    .unwrap();
    let words: Vec<String> =
        serde_json::from_str(&lavender_golden_metadata("student_words")).unwrap();
    assert_eq!(loss.student.words, words);
    assert_eq!(loss.matched, strings(&["dog", "red", "skateboard"]));
    let expected_maps = lavender_golden()
        .tensor("student_maps", [words.len(), 32, 32], &device)
        .unwrap();
    assert_close(
        "student_maps",
        loss.student.maps.clone(),
        expected_maps,
        1e-4,
    );
    assert_close("ce", loss.ce.clone(), scalar("ce", &device), 1e-4);
    assert_close("align", loss.align.clone(), scalar("align", &device), 1e-4);
    assert_close("total", loss.total.clone(), scalar("total", &device), 1e-4);

    let grads = loss.total.backward();
    let gradients = aligner.gradients(&grads);
    let golden = lavender_golden();
    for (name, parameter) in aligner.named_parameters() {
        let expected = golden
            .tensor::<4>(&format!("grad.aligner.{name}"), parameter.dims(), &device)
            .or_else(|_| {
                golden
                    .tensor::<1>(&format!("grad.aligner.{name}"), [1], &device)
                    .map(|t| t.reshape([1, 1, 1, 1]))
            })
            .unwrap();
        let actual = gradients[&name].clone();
        if name == "head.bias" {
            // Min-max normalisation cancels a constant shift: the true gradient is 0, and
            // each side holds only its rounding, so each is compared with 0.
            let actual: f32 = actual.abs().max().into_scalar();
            let expected: f32 = expected.abs().max().into_scalar();
            assert!(
                actual < 1e-6 && expected < 1e-6,
                "grad head.bias is {actual} here and {expected} in PyTorch, not 0"
            );
        } else {
            assert_close(&format!("grad.aligner.{name}"), actual, expected, 1e-4);
        }
    }

    // The reference's positions: every row keyed by its predicted token.
    let reference = lavender_loss(
        logits,
        &attention,
        &labels,
        &teacher,
        Some(&aligner),
        tokenizer,
        &LossConfig {
            positions: Positions::Reference,
            ..LossConfig::default()
        },
    )
    .unwrap();
    let reference_words: Vec<String> =
        serde_json::from_str(&lavender_golden_metadata("reference_words")).unwrap();
    assert_eq!(reference.student.words, reference_words);
    assert_eq!(
        reference.matched.len().to_string(),
        lavender_golden_metadata("reference_matched")
    );
    assert_close(
        "reference_align",
        reference.align,
        scalar("reference_align", &device),
        1e-4,
    );
}

/// The same loss through the base model with the fixture adapter as Burn LoRA factors (not
/// merged): the factors' gradients match PEFT's (torch autograd through peft's LoRA layers).
#[test]
fn lora_gradients_match_peft() {
    use crate::adapters::lora::{LoraSettings, apply_lora, load_peft_factors, lora_gradients};

    let device = Device::flex().autodiff();
    let dir = mllama_tiny_dir();
    let student = Mllama::load(&dir, None, &device)
        .unwrap()
        .try_map_model(|model| {
            let model = apply_lora(model, &LoraSettings::default())?;
            load_peft_factors(model, &dir.join("adapter"))
        })
        .unwrap();
    let (labels, logits, attention) = fixture_forward(&student);
    let aligner = fixture_aligner(&device);
    let loss = lavender_loss(
        logits,
        &attention,
        &labels,
        &teacher(&device),
        Some(&aligner),
        student.prompt.tokenizer(),
        &LossConfig::default(),
    )
    .unwrap();
    assert_close("total", loss.total.clone(), scalar("total", &device), 1e-4);

    let grads = loss.total.backward();
    let gradients = lora_gradients(&student.model, &grads);
    assert_eq!(gradients.len(), 20, "every LoRA'd weight gets a gradient");
    let names: Vec<String> =
        serde_json::from_str(&lavender_golden_metadata("lora_gradients")).unwrap();
    let golden = lavender_golden();
    let mut checked = 0;
    for (module, grad_a, grad_b) in gradients {
        for (factor, actual) in [("lora_A", grad_a), ("lora_B", grad_b)] {
            let key = format!("base_model.model.{module}.{factor}.weight");
            if !names.contains(&key) {
                continue;
            }
            let expected = golden
                .tensor::<2>(&format!("grad.{key}"), actual.dims(), &device)
                .unwrap();
            assert_close(&format!("grad {key}"), actual, expected, 1e-4);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        names.len(),
        "every golden LoRA gradient was compared"
    );
}

/// The other aggregations and the reference's (legacy) grid give torch's L_att too.
#[test]
fn aggregation_and_grid_variants_match_torch() {
    let device = device();
    let (student, labels, logits, attention) = fixture_pass(&device);
    let aligner = fixture_aligner(&device);
    let teacher = teacher(&device);
    for (name, aggregation, grid) in [
        (
            "align_mean_first",
            Aggregation::MeanFirst,
            GridMode::Corrected,
        ),
        ("align_max_max", Aggregation::MaxMax, GridMode::Corrected),
        (
            "align_legacy",
            Aggregation::AlignerPerLayer,
            GridMode::Legacy,
        ),
    ] {
        let config = LossConfig {
            aggregation,
            grid,
            ..LossConfig::default()
        };
        let loss = lavender_loss(
            logits.clone(),
            &attention,
            &labels,
            &teacher,
            Some(&aligner),
            student.prompt.tokenizer(),
            &config,
        )
        .unwrap();
        assert_eq!(loss.matched.len(), 3, "{name}");
        assert_close(name, loss.align, scalar(name, &device), 1e-4);
    }
}

/// Row i is keyed by labels[i + 1]; unsupervised rows and the text-less tokens ("\n\n",
/// <|eot_id|>) give no word.
#[test]
fn answer_words_are_keyed_by_the_next_label() {
    let device = device();
    let tokenizer = super::prompt::MllamaPrompt::load(&mllama_tiny_dir())
        .unwrap()
        .tokenizer()
        .clone();
    let id = |text: &str| tokenizer.token_to_id(text).unwrap();
    let (dog, red, eot) = (id("Ġdog"), id("Ġred"), id("<|eot_id|>"));
    // Four positions: row 0 predicts labels[1] = " dog", row 1 " red", row 2 <|eot_id|>
    // (no text, no word), row 3 nothing (it is last); labels[0] belongs to no row.
    let labels = vec![IGNORE_INDEX, i64::from(dog), i64::from(red), i64::from(eot)];
    let maps: Vec<f32> = (0..4)
        .flat_map(|row| [row as f32, 0.0, 0.0, 10.0 * row as f32])
        .collect();
    let token_maps = Tensor::<3>::from_data(TensorData::new(maps, [4, 2, 2]), &device);
    let words = answer_word_maps(token_maps, &labels, &tokenizer).unwrap();
    assert_eq!(words.words, strings(&["dog", "red"]));
    // " dog": row 0's flat map [0, 0, 0, 0] -> 0; " red": row 1's [1, 0, 0, 10] -> [0.1, 0,
    // 0, 1].
    let values: Vec<f32> = words.maps.into_data().try_to_vec().unwrap();
    assert_eq!(values.len(), 8);
    for (value, expected) in values.iter().zip([0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 1.0]) {
        assert!((value - expected).abs() < 1e-5, "{values:?}");
    }
}
