//! Llama-3.2-Vision (transformers `Mllama`): processor, vision encoder, projector and the text
//! decoder with gated cross-attention layers, loaded from a Hugging Face folder with the
//! released checkpoints' key names (`vision_model.*`, `language_model.model.*`,
//! `language_model.lm_head.*`, `multi_modal_projector.*`).

pub mod bundle;
pub mod bundle_aligner;
pub mod bundle_examples;
pub mod config;
pub mod explore;
pub mod labels;
pub mod lora;
pub mod model;
pub mod processor;
pub mod prompt;
pub mod student;
pub mod text;
pub mod vision;
