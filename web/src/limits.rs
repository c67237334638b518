//! Whether a model fits the WebGPU adapter: every weight tensor lives in one storage buffer,
//! and browsers cap a buffer (`maxStorageBufferBindingSize`, often 128 MiB, `maxBufferSize`
//! 256 MiB). A model whose largest tensor exceeds the cap cannot run on that adapter; this is
//! checked from the bundle's config before its weights are downloaded, so the page says so
//! at once instead of failing deep inside wgpu after the download.

use std::collections::BTreeMap;

use js_sys::{Promise, Reflect};
use lavender_core::{
    bundle::{BundleFiles, WEIGHTS_FILE},
    vlm::mllama::config::MllamaConfig,
    weights::FileSource,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// The adapter's buffer caps in bytes (the smaller of the two that bind a weight).
pub async fn adapter_buffer_limit() -> Option<u64> {
    let navigator = js::navigator()?;
    let gpu = Reflect::get(&navigator, &JsValue::from_str("gpu")).ok()?;
    if gpu.is_undefined() || gpu.is_null() {
        return None;
    }
    let request = Reflect::get(&gpu, &JsValue::from_str("requestAdapter"))
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let promise: Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = JsFuture::from(promise).await.ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return None;
    }
    let limits = Reflect::get(&adapter, &JsValue::from_str("limits")).ok()?;
    let read = |name: &str| {
        Reflect::get(&limits, &JsValue::from_str(name))
            .ok()
            .and_then(|value| value.as_f64())
    };
    let binding = read("maxStorageBufferBindingSize")?;
    let buffer = read("maxBufferSize").unwrap_or(binding);
    Some(binding.min(buffer) as u64)
}

/// The largest weight tensor's size in bytes (f32: the token table, which is never
/// quantized, or a dense lm_head / feed-forward matrix as the upper bound).
pub fn largest_tensor_bytes(config: &MllamaConfig) -> u64 {
    let text = &config.text_config;
    let vision = &config.vision_config;
    let f32_bytes = |a: usize, b: usize| (a as u64) * (b as u64) * 4;
    [
        // The token table: vocab_size + 8 rows (transformers' padding).
        f32_bytes(text.vocab_size + 8, text.hidden_size),
        f32_bytes(text.hidden_size, text.intermediate_size),
        f32_bytes(vision.hidden_size, vision.intermediate_size),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// `Err` with a message for the page when the model of bundle `files` has a weight larger than
/// `limit` bytes, read from its config (the weights need not be there yet).
pub fn check_bundle_fits(files: &BundleFiles, limit: u64) -> Result<(), String> {
    let small: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter(|(name, _)| *name != WEIGHTS_FILE)
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect();
    let config = MllamaConfig::from_source(&FileSource::Memory {
        label: files.label(),
        files: &small,
    })
    .map_err(|error| error.to_string())?;
    check_fits(&config, limit)
}

/// `Err` with a message for the page when `config`'s largest tensor exceeds `limit` bytes.
pub fn check_fits(config: &MllamaConfig, limit: u64) -> Result<(), String> {
    let largest = largest_tensor_bytes(config);
    if largest > limit {
        return Err(format!(
            "this model is too large for the WebGPU adapter: its largest weight needs {} but a \
             buffer may hold at most {} here (maxStorageBufferBindingSize). Try a smaller model, \
             or the CPU backend (?backend=cpu).",
            mib(largest),
            mib(limit)
        ));
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
