//! A right-padded batch through the student (`batch.rs`) against the same samples one at a
//! time and against transformers + peft on the same padded batch
//! (`tests/fixtures/make_batch_fixture.py`): three samples of different text lengths and tile
//! counts, the fixture adapter as trainable LoRA, the Lavender fixture's Aligner.

use std::collections::HashMap;

use burn::tensor::{Device, Tensor};
use image::RgbImage;

use super::{prompt::Message, student::Mllama};
use crate::{
    adapters::lora::{LoraSettings, apply_lora, load_peft_factors, lora_gradients},
    align::{
        aligner::{Aligner, tests::fixture_aligner},
        loss::{LavenderLoss, LossConfig, lavender_loss},
        student::{StudentVlm, Supervision},
    },
    maps::WordMaps,
    testing::{mllama_tiny_dir, relative_error},
    weights::Weights,
};

#[derive(serde::Deserialize)]
struct Sample {
    question: String,
    answer: String,
    teacher_words: Vec<String>,
}

fn fixture_dir() -> std::path::PathBuf {
    mllama_tiny_dir().join("../batch-tiny")
}

fn golden() -> Weights {
    Weights::from_files(&[fixture_dir().join("golden.safetensors")]).unwrap()
}

fn metadata(key: &str) -> String {
    let bytes = std::fs::read(fixture_dir().join("golden.safetensors")).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    metadata.metadata().as_ref().unwrap()[key].clone()
}

/// The samples: image, messages, teacher maps.
fn samples(device: &Device) -> Vec<(RgbImage, Vec<Message>, WordMaps)> {
    let samples: Vec<Sample> = serde_json::from_str(&metadata("samples")).unwrap();
    let golden = golden();
    samples
        .into_iter()
        .enumerate()
        .map(|(index, sample)| {
            let image = image::open(fixture_dir().join(format!("image_{index}.png")))
                .unwrap()
                .to_rgb8();
            let messages = vec![
                Message::user_with_image(sample.question),
                Message::text("assistant", sample.answer),
            ];
            let words = sample.teacher_words.len();
            let maps = golden
                .tensor(&format!("teacher_maps_{index}"), [words, 32, 32], device)
                .unwrap();
            let teacher = WordMaps {
                words: sample.teacher_words,
                maps,
            };
            (image, messages, teacher)
        })
        .collect()
}

/// The tiny model with the fixture adapter as trainable LoRA factors.
fn student(device: &Device) -> Mllama {
    let dir = mllama_tiny_dir();
    Mllama::load(&dir, None, device)
        .unwrap()
        .try_map_model(|model| {
            apply_lora(model, &LoraSettings::default())
                .and_then(|model| load_peft_factors(model, &dir.join("adapter")))
        })
        .unwrap()
}

fn loss_of(
    student: &Mllama,
    aligner: &Aligner,
    logits: Tensor<3>,
    attention: &crate::align::student::TextToImageAttention,
    labels: &[i64],
    teacher: &WordMaps,
) -> LavenderLoss {
    lavender_loss(
        logits,
        attention,
        labels,
        teacher,
        Some(aligner),
        student.prompt.tokenizer(),
        &LossConfig::default(),
    )
    .unwrap()
}

fn value(tensor: &Tensor<1>) -> f32 {
    tensor.clone().into_scalar::<f32>()
}

/// The mean of the losses, back-propagated: the Aligner's and the LoRA factors' gradients.
fn gradients(
    student: &Mllama,
    aligner: &Aligner,
    losses: &[LavenderLoss],
) -> HashMap<String, Tensor<2>> {
    let total = losses
        .iter()
        .map(|loss| loss.total.clone())
        .reduce(|a, b| a + b)
        .unwrap()
        .div_scalar(losses.len() as f64);
    let grads = total.backward();
    let mut out: HashMap<String, Tensor<2>> = aligner
        .gradients(&grads)
        .into_iter()
        .map(|(name, grad)| {
            let dims = grad.dims();
            (
                format!("aligner.{name}"),
                grad.reshape([dims[0], dims[1] * dims[2] * dims[3]]),
            )
        })
        .collect();
    for (module, a, b) in lora_gradients(&student.model, &grads) {
        out.insert(format!("{module}.lora_A"), a);
        out.insert(format!("{module}.lora_B"), b);
    }
    out
}

/// The batch gives each sample the loss it has alone (≤ 1e-5) and the same gradients
/// (≤ 1e-4), and the losses are transformers + peft's on the same padded batch (≤ 1e-4).
#[test]
fn a_padded_batch_is_its_samples_one_by_one_and_pytorchs_batch() {
    let device = Device::flex().autodiff();
    let student = student(&device);
    let aligner = fixture_aligner(&device);
    let samples = samples(&device);

    // One forward pass over the padded batch.
    let processed: Vec<_> = samples
        .iter()
        .map(|(image, messages, _)| {
            student
                .process_supervised(image, messages, Supervision::Answers)
                .unwrap()
        })
        .collect();
    let lengths: Vec<usize> = processed.iter().map(|(inputs, _)| inputs.len()).collect();
    assert_eq!(
        lengths,
        serde_json::from_str::<Vec<usize>>(&metadata("lengths")).unwrap()
    );
    let tiles: Vec<[usize; 2]> = processed
        .iter()
        .map(|(inputs, _)| inputs.image.tiles)
        .collect();
    assert_eq!(
        tiles,
        [[1, 2], [2, 1], [1, 1]],
        "the samples' tile layouts differ"
    );
    let refs: Vec<_> = processed.iter().map(|(inputs, _)| inputs).collect();
    let batched: Vec<LavenderLoss> = student
        .forward_batch_with_attention(&refs)
        .into_iter()
        .zip(processed.iter().zip(&samples))
        .map(|((logits, attention), ((_, labels), (_, _, teacher)))| {
            loss_of(&student, &aligner, logits, &attention, labels, teacher)
        })
        .collect();

    // Each sample alone.
    let alone: Vec<LavenderLoss> = samples
        .iter()
        .map(|(image, messages, teacher)| {
            let (prepared, labels) = student
                .prepare_supervised(image, messages, Supervision::Answers)
                .unwrap();
            let (logits, attention) = student.forward_with_attention(&prepared);
            loss_of(&student, &aligner, logits, &attention, &labels, teacher)
        })
        .collect();

    let golden = golden();
    let matched: Vec<usize> = serde_json::from_str(&metadata("matched")).unwrap();
    for (index, (batch, one)) in batched.iter().zip(&alone).enumerate() {
        assert_eq!(batch.matched.len(), matched[index], "sample {index}");
        for (what, b, o) in [
            ("ce", &batch.ce, &one.ce),
            ("align", &batch.align, &one.align),
            ("total", &batch.total, &one.total),
        ] {
            let (b, o) = (value(b), value(o));
            assert!(
                (b - o).abs() <= 1e-5 * o.abs(),
                "sample {index} {what}: {b} in the batch, {o} alone"
            );
            let expected: f32 = golden
                .tensor::<1>(&format!("{what}_{index}"), [1], &Device::flex())
                .unwrap()
                .into_scalar();
            assert!(
                (b - expected).abs() <= 1e-4 * expected.abs(),
                "sample {index} {what}: {b} here, {expected} in PyTorch's batch"
            );
        }
    }

    let batch_grads = gradients(&student, &aligner, &batched);
    let alone_grads = gradients(&student, &aligner, &alone);
    assert_eq!(batch_grads.len(), alone_grads.len());
    assert!(batch_grads.len() > 40, "{} gradients", batch_grads.len());
    for (name, grad) in batch_grads {
        if name == "aligner.head.bias" {
            continue; // 0 up to rounding: min-max cancels a constant (loss_parity.rs)
        }
        let one = alone_grads[&name].clone();
        let error = relative_error(grad, one);
        assert!(error <= 1e-4, "{name}: relative error {error}");
    }
}
