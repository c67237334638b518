//! The method, Lavender's alignment of a student's attention with the teacher's word maps. It
//! depends on no model: a student implements [`student::StudentVlm`] and hands over its
//! [`student::TextToImageAttention`]; the maps it compares are [`crate::maps::WordMaps`].
//!
//! The student's attention is placed on an image grid (`grid`), combined per text position
//! (`aligner`, `student_maps`), keyed by word (`words`) and compared with the teacher's maps
//! in the Lavender loss (`loss`).

pub mod aligner;
pub mod grid;
pub mod loss;
pub mod student;
pub mod student_maps;
pub mod words;
