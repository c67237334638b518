//! Exports: the drawn overlay as a PNG, and the current maps with their words as JSON.

use leptos::prelude::*;

use crate::js;

use super::state::{ErrorKind, Shared, Ui};

/// Downloads what `canvas` shows as `lavender-overlay.png`.
pub(super) fn export_png(canvas: &web_sys::HtmlCanvasElement, ui: Ui) {
    match canvas.to_data_url_with_type("image/png") {
        Ok(url) => {
            if let Err(error) = js::download_url("lavender-overlay.png", &url) {
                ui.fail(ErrorKind::Export, error);
            }
        }
        Err(error) => ui.fail(ErrorKind::Export, js::describe(&error)),
    }
}

/// Downloads the maps as `lavender-maps.json` ([`maps_json`]).
pub(super) fn export_json(view: &Shared, ui: Ui) {
    match maps_json(view, ui) {
        Some(json) => {
            if let Err(error) =
                js::download("lavender-maps.json", "application/json", json.as_bytes())
            {
                ui.fail(ErrorKind::Export, error);
            }
        }
        None => ui.fail(ErrorKind::Export, "no maps yet: ask a question first"),
    }
}

/// The selected maps as JSON: words, their positions, the choice and every map.
fn maps_json(view: &Shared, ui: Ui) -> Option<String> {
    let view = view.borrow();
    let maps = view.maps.as_ref()?;
    let size = view.map_size;
    let words: Vec<serde_json::Value> = view
        .words
        .iter()
        .enumerate()
        .filter(|(index, _)| maps.len() >= (index + 1) * size * size)
        .map(|(index, word)| {
            serde_json::json!({
                "word": word.text,
                "source": if word.answer { "answer" } else { "prompt" },
                "positions": word.positions,
                "map": maps[index * size * size..(index + 1) * size * size]
                    .chunks(size).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "aggregation": ui.aggregation.get_untracked().id(),
        "layer": ui.layer.get_untracked().id(),
        "cross_attention_layers": ui.layers.get_untracked(),
        "head": ui.head.get_untracked().id(),
        "size": size,
        "answer": ui.answer.get_untracked(),
        "token_ids": ui.token_ids.get_untracked(),
        "words": words,
    });
    serde_json::to_string_pretty(&json).ok()
}
