//! The students: vision-language models whose text-to-image attention Lavender aligns.
//! Llama-3.2-Vision (Mllama) first; a second family is one more folder here implementing
//! [`crate::align::student::StudentVlm`].

pub(crate) mod chat_template;
pub mod mllama;
