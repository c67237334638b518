//! Where the method meets the models: the student's attention placed on an image grid
//! (`grid`, `resize`), combined per text position (`aligner`, `student_maps`), keyed by word
//! (`words`), and compared with the teacher's maps in the Lavender loss (`loss`).

pub mod aligner;
pub mod grid;
pub mod loss;
pub mod resize;
pub mod student_maps;
pub mod words;
