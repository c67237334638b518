//! The explorer's non-reactive state: the loaded student, the image, the last run's prepared
//! inputs, captured attention, words and maps. Tensors and the model are neither `Send` nor
//! cheap to clone, so they live here (one per explorer) and the UI's signals carry only what
//! is shown.

use std::rc::Rc;

use image::RgbImage;
use lavender_core::vlm::mllama::{
    explore::{SequenceAttention, SequenceWord},
    student::{Mllama, Prepared},
};

use crate::device::Chosen;

#[derive(Default)]
pub struct Engine {
    pub chosen: Option<Chosen>,
    pub student: Option<Rc<Mllama>>,
    /// Side of the maps, from the bundle's manifest.
    pub map_size: usize,
    pub image: Option<RgbImage>,
    /// The image as drawn in the canvas.
    pub display: Option<RgbImage>,
    pub run: Option<Rc<Run>>,
    /// `[words, size, size]` for the current layer and head choice, row-major.
    pub maps: Option<Vec<f32>>,
    /// Bumped by every model load, so a stale load does not replace a newer one.
    pub model_generation: u64,
    /// Bumped by every new run, image or model, so a stale run stops.
    pub generation: u64,
}

/// A finished generation, ready for maps.
pub struct Run {
    pub prepared: Prepared,
    pub attention: SequenceAttention,
    pub words: Vec<SequenceWord>,
}
