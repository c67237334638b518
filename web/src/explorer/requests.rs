//! What the explorer asks of the worker: a bundle, an answer about the picture, or the
//! answer's maps for another choice. Each request numbers its load or run, so the replies
//! of one it supersedes are dropped ([`super::replies`]).

use leptos::prelude::*;

use crate::{
    js,
    worker::{
        client::Link,
        protocol::{Envelope, Request},
    },
};

use super::state::{ErrorKind, ModelState, RunState, Shared, Ui};

/// Asks the worker for a bundle (from `url`, or from picked files).
pub(super) fn load_model(
    link: &Link,
    view: &Shared,
    ui: Ui,
    force_cpu: bool,
    url: Option<String>,
    picked: Vec<web_sys::File>,
) {
    let url = match url.map(|url| js::resolve_url(&url, ".")).transpose() {
        Ok(url) => url,
        Err(error) => return ui.fail(ErrorKind::Model, error),
    };
    let load = {
        let mut view = view.borrow_mut();
        view.run += 1;
        view.load += 1;
        view.words.clear();
        view.maps = None;
        view.load
    };
    ui.error.set(None);
    ui.model_state.set(ModelState::Loading);
    ui.model_shared.set(false);
    ui.progress.set(None);
    ui.clear_run();
    ui.run_state.set(RunState::Idle);
    ui.model_status.set(match &url {
        Some(url) => format!("Loading {url}…"),
        None => "Reading the picked files…".into(),
    });
    let mut message = Envelope::new(
        link.id(),
        Request::Load {
            load,
            url,
            force_cpu: force_cpu || js::query_param("backend").as_deref() == Some("cpu"),
            // `?max-buffer=BYTES` imitates a smaller adapter (to see this check at work).
            max_buffer: js::query_param("max-buffer").and_then(|v| v.parse::<u64>().ok()),
        },
    );
    message.files = picked;
    link.send(message);
}

/// Sends the question and the image; the answer streams back as replies.
pub(super) fn run(link: &Link, view: &Shared, ui: Ui, prompt: String, max_new_tokens: usize) {
    let (run, image) = {
        let mut view = view.borrow_mut();
        view.run += 1;
        view.words.clear();
        view.maps = None;
        view.head_maps = None;
        (view.run, view.image.clone())
    };
    let Some(image) = image else {
        return ui.fail(ErrorKind::Run, "load an image first");
    };
    ui.error.set(None);
    ui.run_state.set(RunState::Running);
    ui.clear_run();
    ui.maps_version.update(|v| *v += 1);
    let (width, height) = image.dimensions();
    let mut message = Envelope::new(
        link.id(),
        Request::Run {
            run,
            prompt,
            max_new_tokens,
            width,
            height,
            choice: ui.choice(),
        },
    );
    message.bytes.push(image.into_raw());
    link.send(message);
}

/// Asks for the current run's maps for the choice shown now.
pub(super) fn request_maps(link: &Link, view: &Shared, ui: Ui) {
    let run = view.borrow().run;
    link.request(Request::Maps {
        run,
        choice: ui.choice(),
    });
}

/// Asks for word `word`'s map of the current run for every layer and head.
pub(super) fn request_head_maps(link: &Link, view: &Shared, word: usize) {
    let run = {
        let mut view = view.borrow_mut();
        view.head_maps = None;
        view.run
    };
    link.request(Request::HeadMaps { run, word });
}
