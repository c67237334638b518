//! The explorer's view, one panel per component, in the page's order: the backend bar and
//! the error, the model bundle, the image, the stage (student and teacher canvases, the
//! comparison), the question, the words, the map controls and the timings.
//!
//! Each panel makes its own handlers; what they do is in the explorer's other modules. The
//! components add no elements of their own, so the page is exactly their markup, in order.

mod bar;
mod controls;
mod heads;
mod image;
mod model;
mod question;
mod stage;
mod timings;

use wasm_bindgen::JsCast;

pub(super) use self::{
    bar::{BackendBar, ErrorNotice},
    controls::MapControls,
    heads::HeadGrid,
    image::ImagePanel,
    model::{LoadStatus, ModelPanel},
    question::{QuestionForm, WordsPanel},
    stage::Stage,
    timings::TimingsPanel,
};

fn event_target<T: JsCast>(event: &web_sys::Event) -> T {
    event
        .target()
        .expect("an event from an element")
        .unchecked_into()
}
