//! Adapters trained elsewhere: PEFT LoRA folders, applied to a base model's weights; and the
//! weight quantization of the web export.

pub mod peft;
pub mod quant;
