//! The explorer's state: what this side keeps of the model's work ([`View`], shared as
//! [`Shared`]) and the signals the page shows ([`Ui`]).
//!
//! The states the page shows are enums here, each with the text it is shown as: those texts
//! are the page's interface (`data-model-state`, `data-run-state`, `.lx-error[data-kind]`,
//! the `<select>` values, the exported JSON, the worker's [`MapChoice`]), and the browser
//! tests select on them, so they must not change.

use std::{cell::RefCell, rc::Rc};

use image::RgbImage;
pub(super) use lavender_core::maps::normalise::Normalisation;
use leptos::prelude::*;

use crate::{
    bundle_source::Progress,
    device::Backend,
    overlay::Colormap,
    worker::{
        client::Link,
        protocol::{ExampleInfo, GRID, MapChoice, WordInfo},
    },
};

/// What this side keeps of the model's work: the picture, the last run's words and maps.
#[derive(Default)]
pub(super) struct View {
    pub(super) image: Option<RgbImage>,
    /// The image as drawn in the canvas.
    pub(super) display: Option<RgbImage>,
    /// Side of the maps, from the bundle's manifest.
    pub(super) map_size: usize,
    /// The run whose replies count; older ones are ignored.
    pub(super) run: u64,
    /// The load whose replies count.
    pub(super) load: u64,
    /// This explorer's line to the worker (to stop a run the picture made stale).
    pub(super) link: Option<Rc<Link>>,
    pub(super) words: Vec<WordInfo>,
    /// `[words, size, size]` for the current layer and head choice, row-major.
    pub(super) maps: Option<Vec<f32>>,
    /// The bundle's example images with their SD teacher maps.
    pub(super) examples: Vec<Example>,
    /// The example the current image is (same pixels), if any.
    pub(super) example: Option<usize>,
    /// The selected word's map for every layer and head.
    pub(super) head_maps: Option<HeadMaps>,
}

/// One word's maps for every cross-attention layer and head: `values` is
/// `[layers, heads, size, size]`.
pub(super) struct HeadMaps {
    pub(super) word: usize,
    pub(super) layers: usize,
    pub(super) heads: usize,
    pub(super) size: usize,
    pub(super) values: Vec<f32>,
}

impl HeadMaps {
    pub(super) fn map(&self, layer: usize, head: usize) -> Option<&[f32]> {
        let area = self.size * self.size;
        let start = (layer * self.heads + head) * area;
        (layer < self.layers && head < self.heads)
            .then(|| self.values.get(start..start + area))
            .flatten()
    }
}

pub(super) struct Example {
    pub(super) info: ExampleInfo,
    pub(super) image: RgbImage,
    /// `[words, side, side]`, in [0, 1].
    pub(super) maps: Vec<f32>,
}

pub(super) type Shared = Rc<RefCell<View>>;

/// Where the model is (`data-model-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ModelState {
    /// Nothing asked for yet.
    Idle,
    Loading,
    Ready,
    /// The load failed, or the model was lost with the worker.
    Error,
}

impl ModelState {
    pub(super) fn id(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }
}

/// Where the current question is (`data-run-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    /// No question asked about this picture and model yet.
    Idle,
    /// Asked; the answer or its first maps are on their way.
    Running,
    /// Answered, with maps (or with a failed choice of map: the answer stands).
    Done,
    Error,
}

impl RunState {
    pub(super) fn id(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Done => "done",
            Self::Error => "error",
        }
    }
}

/// What failed, as `.lx-error[data-kind]` says: a new picture clears some kinds of failure
/// and not others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorKind {
    Model,
    Image,
    Run,
    Maps,
    Draw,
    Export,
    /// A request could not reach the worker.
    Worker,
    /// A panic, in the worker or on the page.
    Panic,
}

impl ErrorKind {
    pub(super) fn id(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Image => "image",
            Self::Run => "run",
            Self::Maps => "maps",
            Self::Draw => "draw",
            Self::Export => "export",
            Self::Worker => "worker",
            Self::Panic => "panic",
        }
    }
}

/// How a word's map is made ([`MapChoice::aggregation`]): the attention grid, or one of
/// training's aggregations (the first two need the bundle's trained Aligner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Aggregation {
    AlignerPerLayer,
    MeanFirst,
    MaxMax,
    Grid,
}

impl Aggregation {
    pub(super) const ALL: [Self; 4] = [
        Self::AlignerPerLayer,
        Self::MeanFirst,
        Self::MaxMax,
        Self::Grid,
    ];

    /// The id the worker and the `<option>` values use.
    pub(super) fn id(self) -> &'static str {
        match self {
            Self::AlignerPerLayer => "aligner-per-layer",
            Self::MeanFirst => "mean-first",
            Self::MaxMax => "max-max",
            Self::Grid => GRID,
        }
    }

    pub(super) fn from_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|aggregation| aggregation.id() == id)
    }

    /// The text of its `<option>`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::AlignerPerLayer => "Aligner per layer, then mean (training)",
            Self::MeanFirst => "mean of layers, then Aligner",
            Self::MaxMax => "max over heads, then layers",
            Self::Grid => "attention grid (no Aligner)",
        }
    }
}

/// Which layers or heads a grid map shows ([`MapChoice::layer`] and `head`): their mean,
/// their max, or one of them by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pick {
    Mean,
    Max,
    One(usize),
}

impl Pick {
    /// `mean`, `max` or the index: the id the worker and the `<option>` values use.
    pub(super) fn id(self) -> String {
        match self {
            Self::Mean => "mean".into(),
            Self::Max => "max".into(),
            Self::One(index) => index.to_string(),
        }
    }

    pub(super) fn from_id(id: &str) -> Option<Self> {
        match id {
            "mean" => Some(Self::Mean),
            "max" => Some(Self::Max),
            index => index.parse().ok().map(Self::One),
        }
    }
}

/// The selected word against the teacher's map for it, on an example image.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Comparison {
    /// Mean squared error between the student's map and the teacher's.
    Matched { word: String, mse: f32 },
    /// The teacher has no map for this word.
    NoTeacherMap { word: String, teacher_words: String },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Timings {
    pub(super) load_ms: Option<f64>,
    pub(super) first_token_ms: Option<f64>,
    pub(super) tokens_per_s: Option<f64>,
}

/// The signals the UI shows; `Copy`, so every handler can hold them.
#[derive(Clone, Copy)]
pub(super) struct Ui {
    pub(super) backend: RwSignal<Option<(Backend, Option<String>)>>,
    pub(super) model_state: RwSignal<ModelState>,
    pub(super) model_status: RwSignal<String>,
    /// The model is another explorer's copy on this page.
    pub(super) model_shared: RwSignal<bool>,
    pub(super) progress: RwSignal<Option<Progress>>,
    pub(super) error: RwSignal<Option<(ErrorKind, String)>>,
    pub(super) image_name: RwSignal<Option<String>>,
    pub(super) run_state: RwSignal<RunState>,
    pub(super) answer: RwSignal<String>,
    pub(super) token_ids: RwSignal<Vec<u32>>,
    /// Each word's text and whether it is from the answer.
    pub(super) words: RwSignal<Vec<(String, bool)>>,
    pub(super) selected: RwSignal<Option<usize>>,
    pub(super) layers: RwSignal<Vec<usize>>,
    pub(super) heads: RwSignal<usize>,
    /// The grid or one of training's aggregations.
    pub(super) aggregation: RwSignal<Aggregation>,
    pub(super) layer: RwSignal<Pick>,
    pub(super) head: RwSignal<Pick>,
    /// Each word's map scaled on its own, or all words' together.
    pub(super) normalisation: RwSignal<Normalisation>,
    /// The bundle carries the trained Aligner.
    pub(super) has_aligner: RwSignal<bool>,
    pub(super) opacity: RwSignal<f32>,
    pub(super) colormap: RwSignal<Colormap>,
    pub(super) maps_version: RwSignal<u64>,
    /// Bumped when [`View::head_maps`] changes.
    pub(super) head_maps_version: RwSignal<u64>,
    pub(super) timings: RwSignal<Timings>,
    /// Each example's id and caption.
    pub(super) examples: RwSignal<Vec<(String, String)>>,
    /// The example the image is, if any.
    pub(super) example: RwSignal<Option<usize>>,
    pub(super) comparison: RwSignal<Option<Comparison>>,
    /// The image cell last clicked and the words that attended to it most.
    pub(super) region: RwSignal<Option<Region>>,
}

/// An image cell (row, column of the maps' grid) and the words that attended to it most,
/// strongest first: (word index, value there).
pub(super) type Region = ((usize, usize), Vec<(usize, f32)>);

impl Ui {
    pub(super) fn new() -> Self {
        Self {
            backend: RwSignal::new(None),
            model_state: RwSignal::new(ModelState::Idle),
            model_status: RwSignal::new("No model loaded.".into()),
            model_shared: RwSignal::new(false),
            progress: RwSignal::new(None),
            error: RwSignal::new(None),
            image_name: RwSignal::new(None),
            run_state: RwSignal::new(RunState::Idle),
            answer: RwSignal::new(String::new()),
            token_ids: RwSignal::new(Vec::new()),
            words: RwSignal::new(Vec::new()),
            selected: RwSignal::new(None),
            layers: RwSignal::new(Vec::new()),
            heads: RwSignal::new(0),
            aggregation: RwSignal::new(Aggregation::Grid),
            layer: RwSignal::new(Pick::Mean),
            head: RwSignal::new(Pick::Mean),
            normalisation: RwSignal::new(Normalisation::PerMap),
            has_aligner: RwSignal::new(false),
            opacity: RwSignal::new(0.6),
            colormap: RwSignal::new(Colormap::Inferno),
            maps_version: RwSignal::new(0),
            head_maps_version: RwSignal::new(0),
            timings: RwSignal::new(Timings::default()),
            examples: RwSignal::new(Vec::new()),
            example: RwSignal::new(None),
            comparison: RwSignal::new(None),
            region: RwSignal::new(None),
        }
    }

    /// The map choice shown now.
    pub(super) fn choice(&self) -> MapChoice {
        MapChoice {
            aggregation: self.aggregation.get_untracked().id().into(),
            layer: self.layer.get_untracked().id(),
            head: self.head.get_untracked().id(),
            normalisation: self.normalisation.get_untracked().id().into(),
        }
    }

    pub(super) fn fail(&self, kind: ErrorKind, message: impl Into<String>) {
        self.error.set(Some((kind, message.into())));
    }

    /// Clears the error shown, if it is of one of these kinds.
    pub(super) fn clear_errors(&self, kinds: &[ErrorKind]) {
        let shown = self.error.try_get_untracked().flatten();
        if shown.is_some_and(|(kind, _)| kinds.contains(&kind)) {
            self.error.set(None);
        }
    }

    /// Ends the run as `state` if it is running; an idle, answered or failed run stays so.
    pub(super) fn end_run(&self, state: RunState) {
        if self.run_state.get_untracked() == RunState::Running {
            self.run_state.set(state);
        }
    }

    pub(super) fn clear_run(&self) {
        self.region.set(None);
        self.answer.set(String::new());
        self.token_ids.set(Vec::new());
        self.words.set(Vec::new());
        self.selected.set(None);
    }
}

/// The words whose maps (`[words, size, size]`, row-major) are strongest at `cell` (row,
/// column), strongest first, at most `top` of them: the reverse view, from a region of the
/// image to the words that looked there.
pub(super) fn words_at(
    maps: &[f32],
    size: usize,
    (row, column): (usize, usize),
    top: usize,
) -> Vec<(usize, f32)> {
    if size == 0 || row >= size || column >= size {
        return Vec::new();
    }
    let mut ranked: Vec<(usize, f32)> = maps
        .chunks_exact(size * size)
        .map(|map| map[row * size + column])
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_at_ranks_the_words_by_their_value_in_the_cell() {
        // Three words on a 2x2 grid; the cell (1, 0) holds 0.2, 0.9 and 0.5.
        let maps = [
            0.0, 0.0, 0.2, 0.0, //
            0.0, 0.0, 0.9, 0.0, //
            1.0, 1.0, 0.5, 1.0,
        ];
        assert_eq!(
            words_at(&maps, 2, (1, 0), 5),
            vec![(1, 0.9), (2, 0.5), (0, 0.2)]
        );
        assert_eq!(words_at(&maps, 2, (1, 0), 1), vec![(1, 0.9)]);
        assert_eq!(words_at(&maps, 2, (2, 0), 5), vec![]);
    }

    #[test]
    fn states_keep_the_texts_the_page_shows() {
        assert_eq!(
            [
                ModelState::Idle,
                ModelState::Loading,
                ModelState::Ready,
                ModelState::Error
            ]
            .map(ModelState::id),
            ["idle", "loading", "ready", "error"]
        );
        assert_eq!(
            [
                RunState::Idle,
                RunState::Running,
                RunState::Done,
                RunState::Error
            ]
            .map(RunState::id),
            ["idle", "running", "done", "error"]
        );
        assert_eq!(ErrorKind::Image.id(), "image");
    }

    #[test]
    fn map_choices_round_trip_through_their_ids() {
        assert_eq!(
            Aggregation::ALL.map(Aggregation::id),
            ["aligner-per-layer", "mean-first", "max-max", GRID]
        );
        for aggregation in Aggregation::ALL {
            assert_eq!(Aggregation::from_id(aggregation.id()), Some(aggregation));
        }
        assert_eq!(Aggregation::from_id("median"), None);
        for pick in [Pick::Mean, Pick::Max, Pick::One(0), Pick::One(12)] {
            assert_eq!(Pick::from_id(&pick.id()), Some(pick));
        }
        assert_eq!(Pick::One(3).id(), "3");
        assert_eq!(Pick::from_id("min"), None);
    }
}
