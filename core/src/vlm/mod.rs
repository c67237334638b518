//! The student: vision-language models whose text-to-image attention Lavender aligns.
//! Llama-3.2-Vision (Mllama) first; a second family is one more folder here.

pub mod mllama;
