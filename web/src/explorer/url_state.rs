//! The view in the page's URL (the explorer's own page only): the model, image and prompt, the
//! selected word and the map choice (aggregation, layer, head, scale) are written back to the query as they change, so the
//! address is a link to this view. Opened, a URL with `word` asks its question once the model
//! and the image are in, with its map choice, then selects that word.

use std::rc::Rc;

use leptos::prelude::*;

use crate::{js, worker::client::Link};

use super::{
    requests::run,
    state::{Aggregation, ModelState, Normalisation, Pick, RunState, Shared, Ui},
};

/// The query parameters this module owns (others, such as `backend`, are left alone).
const OWNED: [&str; 8] = [
    "model",
    "image",
    "prompt",
    "word",
    "aggregation",
    "layer",
    "head",
    "scale",
];

/// A view to reopen: the word and the map choice of a shared link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SharedView {
    word: usize,
    aggregation: Option<Aggregation>,
    layer: Pick,
    head: Pick,
    normalisation: Normalisation,
}

impl SharedView {
    /// From the page's query: `None` without a valid `word`.
    pub(super) fn from_query(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let word = get("word")?.parse().ok()?;
        let pick = |name| {
            get(name)
                .and_then(|id| Pick::from_id(&id))
                .unwrap_or(Pick::Mean)
        };
        Some(Self {
            word,
            aggregation: get("aggregation").and_then(|id| Aggregation::from_id(&id)),
            layer: pick("layer"),
            head: pick("head"),
            normalisation: get("scale")
                .and_then(|id| id.parse().ok())
                .unwrap_or_default(),
        })
    }
}

/// The query for the view now: `current` with this module's parameters replaced.
pub(super) fn query(current: &str, values: &[(&str, Option<String>)]) -> String {
    let params = web_sys::UrlSearchParams::new_with_str(current)
        .unwrap_or_else(|_| web_sys::UrlSearchParams::new().expect("empty search params"));
    for name in OWNED {
        params.delete(name);
    }
    for (name, value) in values {
        if let Some(value) = value.as_ref().filter(|value| !value.is_empty()) {
            params.append(name, value);
        }
    }
    String::from(params.to_string())
}

/// Keeps the page's URL in step with the view, and reopens `shared` if the URL carried one.
pub(super) fn keep_in_url(
    link: Rc<Link>,
    view: Shared,
    ui: Ui,
    (model_url, image_url, prompt): (RwSignal<String>, RwSignal<String>, RwSignal<String>),
    max_new_tokens: usize,
) {
    let window = js::window();
    Effect::new(move |_| {
        let selected = ui.selected.get();
        let grid = ui.aggregation.get() == Aggregation::Grid;
        let values = [
            ("model", Some(model_url.get())),
            ("image", Some(image_url.get())),
            ("prompt", Some(prompt.get())),
            ("word", selected.map(|word| word.to_string())),
            ("aggregation", Some(ui.aggregation.get().id().to_string())),
            ("layer", grid.then(|| ui.layer.get().id())),
            ("head", grid.then(|| ui.head.get().id())),
            // Only when it is not the default, so most links stay short.
            (
                "scale",
                (ui.normalisation.get() != Normalisation::PerMap)
                    .then(|| ui.normalisation.get().id().to_string()),
            ),
        ];
        let location = window.location();
        let search = location.search().unwrap_or_default();
        let wanted = query(&search, &values);
        if search.trim_start_matches('?') != wanted
            && let Ok(history) = window.history()
        {
            let path = location.pathname().unwrap_or_default();
            let url = if wanted.is_empty() {
                path
            } else {
                format!("{path}?{wanted}")
            };
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
        }
    });

    let Some(shared) = SharedView::from_query(js::query_param) else {
        return;
    };
    // Ask once the model and the picture are in, with the link's map choice.
    let asked = StoredValue::new(false);
    Effect::new(move |_| {
        let ready = ui.model_state.get() == ModelState::Ready && ui.image_name.get().is_some();
        if !ready || asked.get_value() {
            return;
        }
        asked.set_value(true);
        if let Some(aggregation) = shared.aggregation {
            ui.aggregation.set(aggregation);
        }
        ui.layer.set(shared.layer);
        ui.head.set(shared.head);
        ui.normalisation.set(shared.normalisation);
        run(&link, &view, ui, prompt.get_untracked(), max_new_tokens);
    });
    // Then select the link's word, once.
    let selected = StoredValue::new(false);
    Effect::new(move |_| {
        if ui.run_state.get() != RunState::Done || selected.get_value() {
            return;
        }
        selected.set_value(true);
        if shared.word < ui.words.get_untracked().len() {
            ui.selected.set(Some(shared.word));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_needs_a_word_and_keeps_its_choice() {
        let query = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert_eq!(SharedView::from_query(query(&[("prompt", "hi")])), None);
        assert_eq!(
            SharedView::from_query(query(&[
                ("word", "3"),
                ("aggregation", "grid"),
                ("layer", "1"),
                ("head", "max"),
                ("scale", "shared"),
            ])),
            Some(SharedView {
                word: 3,
                aggregation: Some(Aggregation::Grid),
                layer: Pick::One(1),
                head: Pick::Max,
                normalisation: Normalisation::Shared,
            })
        );
        assert_eq!(
            SharedView::from_query(query(&[
                ("word", "0"),
                ("aggregation", "median"),
                ("scale", "loud")
            ])),
            Some(SharedView {
                word: 0,
                aggregation: None,
                layer: Pick::Mean,
                head: Pick::Mean,
                normalisation: Normalisation::PerMap,
            })
        );
    }
}
