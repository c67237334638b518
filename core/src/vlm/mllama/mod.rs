//! Llama-3.2-Vision (transformers `Mllama`): processor, vision encoder, projector and the text
//! decoder with gated cross-attention layers, loaded from a Hugging Face folder with the
//! released checkpoints' key names (`vision_model.*`, `language_model.model.*`,
//! `language_model.lm_head.*`, `multi_modal_projector.*`).

pub mod batch;
#[cfg(test)]
mod batch_parity;
pub mod config;
pub mod hf_export;
pub mod labels;
#[cfg(test)]
mod lora_parity;
#[cfg(test)]
mod loss_parity;
pub mod model;
pub mod processor;
pub mod prompt;
pub mod student;
pub mod text;
pub mod vision;
