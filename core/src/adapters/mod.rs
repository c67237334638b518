//! Adapters trained elsewhere: PEFT LoRA folders, applied to a base model's weights.

pub mod peft;
