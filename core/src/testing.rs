//! Helpers for tests that compare against the reference libraries' golden outputs
//! (`tests/fixtures/`, written by the scripts there).

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};

use crate::weights::Weights;

/// The tiny SD v1.x-shaped pipeline written by `tests/fixtures/make_sd_fixtures.py`.
pub fn sd_tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd-tiny")
}

/// The golden tensors of the tiny SD pipeline.
pub fn sd_golden() -> Weights {
    Weights::from_files(&[sd_tiny_dir().join("golden.safetensors")]).expect("golden outputs load")
}

/// The metadata string `key` of the SD golden file.
pub fn sd_golden_metadata(key: &str) -> String {
    let bytes = std::fs::read(sd_tiny_dir().join("golden.safetensors")).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_else(|| panic!("golden metadata has no `{key}`"))
}

pub fn device() -> Device {
    Device::flex()
}

/// Relative error of `actual` against `expected`: the largest absolute difference divided by
/// the largest absolute expected value (so values near zero do not blow it up).
pub fn relative_error<const D: usize>(actual: Tensor<D>, expected: Tensor<D>) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let scale: f32 = expected.clone().abs().max().into_scalar();
    let diff: f32 = (actual - expected).abs().max().into_scalar();
    diff / scale.max(f32::MIN_POSITIVE)
}

/// Panics unless `actual` matches `expected` within `max_relative` (see [`relative_error`]).
pub fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<D>,
    expected: Tensor<D>,
    max_relative: f32,
) {
    let error = relative_error(actual, expected);
    // Shown with `cargo test -- --nocapture`: the measured errors go into notes.
    eprintln!("{what}: relative error {error:e}");
    assert!(
        error.is_finite() && error <= max_relative,
        "{what}: relative error {error:e} exceeds {max_relative:e}"
    );
}

/// The tiny Llama-3.2-Vision-shaped model written by `tests/fixtures/make_mllama_fixtures.py`.
pub fn mllama_tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mllama-tiny")
}

/// The golden outputs of the tiny Mllama model (`golden.safetensors` in [`mllama_tiny_dir`]).
pub fn mllama_golden_path() -> PathBuf {
    mllama_tiny_dir().join("golden.safetensors")
}

/// The values and shape of an i64 tensor of a golden file.
pub fn golden_i64(file: &std::path::Path, name: &str) -> (Vec<i64>, Vec<usize>) {
    let bytes = std::fs::read(file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name} dtype");
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

/// An i64 tensor of a golden file (`Weights` reads floats only).
pub fn golden_int<const D: usize>(
    file: &std::path::Path,
    name: &str,
    device: &Device,
) -> burn::tensor::Tensor<D, burn::tensor::Int> {
    let (values, shape) = golden_i64(file, name);
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// The token ids stored (as i64) in the tiny Mllama golden tensor `name`.
pub fn mllama_golden_ids(name: &str) -> Vec<u32> {
    golden_i64(&mllama_golden_path(), name)
        .0
        .into_iter()
        .map(|id| id as u32)
        .collect()
}

/// The golden values of the Lavender loss on the tiny Mllama model, written by
/// `tests/fixtures/make_lavender_fixtures.py`.
pub fn lavender_golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/lavender-tiny/golden.safetensors")
}

/// The float tensors of [`lavender_golden_path`].
pub fn lavender_golden() -> Weights {
    Weights::from_files(&[lavender_golden_path()]).expect("lavender golden values load")
}

/// The metadata string `key` of [`lavender_golden_path`].
pub fn lavender_golden_metadata(key: &str) -> String {
    let bytes = std::fs::read(lavender_golden_path()).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_else(|| panic!("lavender golden metadata has no `{key}`"))
}
