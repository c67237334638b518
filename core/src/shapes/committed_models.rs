//! The study's committed teacher and student (`native/models/`), read here as diffusers and
//! transformers read them: `tests/fixtures/make_shapes_goldens.py` loads both folders with the
//! reference libraries (`StableDiffusionPipeline.from_pretrained`,
//! `MllamaForConditionalGeneration` and `MllamaProcessor`) and stores their outputs on a scene
//! of the validation split.

use std::path::PathBuf;

use burn::tensor::{Int, Tensor};

use crate::{
    sd::{
        clip_text::ClipTextModel, tokenizer::ClipTokenizer, unet::UNet2DConditionModel,
        vae::AutoencoderKl,
    },
    testing::{assert_close, device, golden_i64, golden_int},
    vlm::mllama::{prompt::Message, student::Mllama, text::KvCache},
    weights::Weights,
};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../native/models")
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/shapes-models/golden.safetensors")
}

fn metadata(key: &str) -> String {
    let bytes = std::fs::read(golden_path()).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap()
}

fn scene() -> image::RgbImage {
    let path = golden_path().with_file_name("scene.png");
    image::open(path).unwrap().to_rgb8()
}

/// Tokenizer, text encoder, UNet and VAE encoder of the committed teacher (f16 weights) give
/// diffusers' outputs: the same token ids, and f32 results within 1e-4 relative error.
#[test]
fn committed_teacher_matches_diffusers() {
    let device = device();
    let teacher = models().join("shapes-teacher");
    let golden = Weights::from_files(&[golden_path()]).unwrap();
    let tokenizer = ClipTokenizer::load(&teacher.join("tokenizer")).unwrap();
    let ids = tokenizer
        .encode(&metadata("caption"))
        .unwrap()
        .to_tensor(&device);
    let (expected_ids, _) = golden_i64(&golden_path(), "teacher_input_ids");
    let ours: Vec<i64> = ids.clone().into_data().iter::<i64>().collect();
    assert_eq!(ours, expected_ids);

    let text = ClipTextModel::load(&teacher.join("text_encoder"), &device).unwrap();
    let context = text.forward(ids);
    let expected = golden
        .tensor::<3>("teacher_context", context.dims(), &device)
        .unwrap();
    assert_close("text encoder", context, expected.clone(), 1e-4);

    let unet = UNet2DConditionModel::load(&teacher.join("unet"), &device).unwrap();
    let latents = golden
        .tensor::<4>("teacher_latents", [1, 4, 16, 16], &device)
        .unwrap();
    let noise = unet.forward(latents, 500.0, expected, None);
    let expected = golden
        .tensor::<4>("teacher_noise", [1, 4, 16, 16], &device)
        .unwrap();
    assert_close("UNet", noise, expected, 1e-4);

    let vae = AutoencoderKl::load(&teacher.join("vae"), &device).unwrap();
    let image = golden
        .tensor::<4>("teacher_image", [1, 3, 64, 64], &device)
        .unwrap();
    let expected = golden
        .tensor::<4>("teacher_vae_mean", [1, 4, 16, 16], &device)
        .unwrap();
    assert_close("VAE encoder", vae.encode_mean(image), expected, 1e-4);
}

/// The committed student's processor, chat template, word-level tokenizer and model give
/// transformers' input ids and logits for a question and its answer about the scene.
#[test]
fn committed_student_matches_transformers() {
    let device = device();
    let student = Mllama::load(&models().join("shapes-student"), None, &device).unwrap();
    let messages = [
        Message::user_with_image(metadata("question").as_str()),
        Message::text("assistant", metadata("answer").as_str()),
    ];
    let (prepared, _) = student.prepare_conversation(&scene(), &messages).unwrap();
    let (expected_ids, _) = golden_i64(&golden_path(), "student_input_ids");
    let ids: Vec<i64> = prepared
        .inputs
        .input_ids
        .iter()
        .map(|&id| id as i64)
        .collect();
    assert_eq!(ids, expected_ids);

    let golden = Weights::from_files(&[golden_path()]).unwrap();
    let input_ids: Tensor<2, Int> = golden_int(&golden_path(), "student_input_ids", &device);
    let logits = student
        .model
        .text
        .forward(
            input_ids,
            Some(prepared.states),
            Some(prepared.mask),
            &mut KvCache::new(),
            false,
        )
        .logits;
    let expected = golden
        .tensor::<3>("student_logits", logits.dims(), &device)
        .unwrap();
    assert_close("student logits", logits, expected, 1e-4);
}
