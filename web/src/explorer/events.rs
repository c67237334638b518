//! The explorer's events, dispatched on the element it is mounted in so that a host page can
//! follow and drive it without reading its DOM (`lavender-explorer.d.ts` types them; the
//! embedding script turns them into the `on…` callbacks of `mountExplorer`). Each is a
//! `CustomEvent` that bubbles and crosses shadow roots, with its data in `detail`:
//!
//! - `lavender-progress`: `{ phase: "start" | "download" | "build", loaded, total, file }`
//!   (bytes of the whole bundle; 0 and 0 outside the download);
//! - `lavender-ready`: `{ backend: "webgpu" | "cpu", shared, mapSize, aligner, loadMs }`;
//! - `lavender-token`: `{ tokenIds, text }`, the answer so far;
//! - `lavender-answer`: `{ text, tokenIds, words: [{ text, answer }] }`, once its maps are in;
//! - `lavender-word`: `{ index, text, answer, size, map, choice }` with `map` a
//!   `Float32Array` of `size * size` values in [0, 1], row-major, of the selected word and the
//!   map choice shown (`{ aggregation, layer, head, normalisation }`);
//! - `lavender-error`: `{ kind, message }` (`kind` as `.lx-error[data-kind]`).

use js_sys::{Array, Float32Array, Object, Reflect};
use leptos::prelude::*;
use wasm_bindgen::JsValue;

use super::state::{ModelState, RunState, Shared, Ui};

pub const PROGRESS: &str = "lavender-progress";
pub const READY: &str = "lavender-ready";
pub const TOKEN: &str = "lavender-token";
pub const ANSWER: &str = "lavender-answer";
pub const WORD: &str = "lavender-word";
pub const ERROR: &str = "lavender-error";

/// A plain JS object from `(name, value)` pairs.
fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in fields {
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

fn dispatch(host: &web_sys::HtmlElement, name: &str, detail: JsValue) {
    let init = web_sys::CustomEventInit::new();
    init.set_bubbles(true);
    init.set_composed(true);
    init.set_detail(&detail);
    if let Ok(event) = web_sys::CustomEvent::new_with_event_init_dict(name, &init) {
        let _ = host.dispatch_event(&event);
    }
}

fn token_ids(ids: &[u32]) -> JsValue {
    ids.iter()
        .map(|&id| JsValue::from(id))
        .collect::<Array>()
        .into()
}

/// Dispatches the events on `host` as the signals change, for as long as the explorer lives.
pub(super) fn announce(host: web_sys::HtmlElement, view: Shared, ui: Ui) {
    {
        let host = host.clone();
        Effect::new(move |_| {
            if ui.model_state.get() != ModelState::Loading {
                return;
            }
            let (phase, loaded, total, file) = match ui.progress.get() {
                None => ("start", 0, 0, String::new()),
                Some(p) if p.done < p.total => ("download", p.done, p.total, p.file),
                Some(p) => ("build", p.done, p.total, p.file),
            };
            dispatch(
                &host,
                PROGRESS,
                object(&[
                    ("phase", phase.into()),
                    ("loaded", (loaded as f64).into()),
                    ("total", (total as f64).into()),
                    ("file", file.into()),
                ]),
            );
        });
    }
    {
        let (host, view) = (host.clone(), view.clone());
        Effect::new(move |_| {
            if ui.model_state.get() != ModelState::Ready {
                return;
            }
            let backend = ui.backend.get_untracked().map(|(backend, _)| backend.id());
            dispatch(
                &host,
                READY,
                object(&[
                    ("backend", backend.unwrap_or("").into()),
                    ("shared", ui.model_shared.get_untracked().into()),
                    ("mapSize", (view.borrow().map_size as f64).into()),
                    ("aligner", ui.has_aligner.get_untracked().into()),
                    (
                        "loadMs",
                        ui.timings.get_untracked().load_ms.unwrap_or(0.0).into(),
                    ),
                ]),
            );
        });
    }
    {
        let host = host.clone();
        Effect::new(move |_| {
            let ids = ui.token_ids.get();
            if ui.run_state.get_untracked() != RunState::Running || ids.is_empty() {
                return;
            }
            dispatch(
                &host,
                TOKEN,
                object(&[
                    ("tokenIds", token_ids(&ids)),
                    ("text", ui.answer.get_untracked().into()),
                ]),
            );
        });
    }
    {
        let host = host.clone();
        Effect::new(move |previous: Option<RunState>| {
            let state = ui.run_state.get();
            if state == RunState::Done && previous == Some(RunState::Running) {
                let words: Array = ui
                    .words
                    .get_untracked()
                    .into_iter()
                    .map(|(text, answer)| {
                        object(&[("text", text.into()), ("answer", answer.into())])
                    })
                    .collect();
                dispatch(
                    &host,
                    ANSWER,
                    object(&[
                        ("text", ui.answer.get_untracked().into()),
                        ("tokenIds", token_ids(&ui.token_ids.get_untracked())),
                        ("words", words.into()),
                    ]),
                );
            }
            state
        });
    }
    {
        let host = host.clone();
        Effect::new(move |_| {
            ui.maps_version.track();
            let Some(index) = ui.selected.get() else {
                return;
            };
            let view = view.borrow();
            let size = view.map_size;
            let Some(maps) = view.maps.as_ref() else {
                return;
            };
            let Some(map) = maps.get(index * size * size..(index + 1) * size * size) else {
                return;
            };
            let Some((text, answer)) = ui.words.get_untracked().get(index).cloned() else {
                return;
            };
            let choice = ui.choice();
            dispatch(
                &host,
                WORD,
                object(&[
                    ("index", (index as f64).into()),
                    ("text", text.into()),
                    ("answer", answer.into()),
                    ("size", (size as f64).into()),
                    ("map", Float32Array::from(map).into()),
                    (
                        "choice",
                        object(&[
                            ("aggregation", choice.aggregation.into()),
                            ("layer", choice.layer.into()),
                            ("head", choice.head.into()),
                            ("normalisation", choice.normalisation.into()),
                        ]),
                    ),
                ]),
            );
        });
    }
    Effect::new(move |_| {
        if let Some((kind, message)) = ui.error.get() {
            dispatch(
                &host,
                ERROR,
                object(&[("kind", kind.id().into()), ("message", message.into())]),
            );
        }
    });
}
