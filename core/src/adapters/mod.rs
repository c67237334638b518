//! Adapters: LoRA on the student (Burn's reparameterization, trained here, in PEFT's file
//! layout), PEFT adapter folders merged into base weights, and the weight quantization of the
//! web export.

pub mod lora;
pub mod peft;
pub mod quant;
