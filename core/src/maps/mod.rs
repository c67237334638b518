//! Per-word attention maps, the currency of the method: the teacher extracts them, the store
//! keeps them, the students produce them and the loss compares them. One type
//! ([`WordMaps`]) for all four, and one home for what every side does to them: grouping tokens
//! into words ([`words`]), the mean-then-min-max normalisation ([`normalise`]), resizing
//! ([`resize`]), the per-pixel comparison ([`compare`]), the pointing game against
//! ground-truth masks ([`pointing`]) and the pictures ([`picture`]).
//!
//! Nothing here knows a model: the one word rule reads token texts, whichever tokenizer made
//! them (CLIP's from the prompt's offsets, `sd::tokenizer`; Llama's decoded, `align::words`).

pub mod compare;
pub mod normalise;
pub mod picture;
pub mod pointing;
pub mod resize;
mod word_maps;
pub mod words;

pub use word_maps::{MapsError, WordMaps};
