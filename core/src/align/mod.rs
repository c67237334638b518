//! Where the method meets the models: the student's attention placed on an image grid, and
//! (next) word matching, the Aligner and the loss.

pub mod grid;
pub mod resize;
pub mod words;
