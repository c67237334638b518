//! Exports: the drawn overlay as a PNG, the whole view (the student's map beside the
//! teacher's, labelled) as one PNG, and the current maps with their words as JSON.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::js;

use super::state::{Comparison, ErrorKind, Shared, Ui};

/// Height of the label band above each picture of the view export, in pixels.
const LABEL_BAND: u32 = 28;
/// Space between the pictures.
const GAP: u32 = 8;

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

/// Downloads the view as `lavender-view.png`: the student's overlay and, when the teacher has a
/// map of the selected word, the teacher's beside it, each under a label saying what it is.
pub(super) fn export_view_png(
    student: &web_sys::HtmlCanvasElement,
    teacher: Option<&web_sys::HtmlCanvasElement>,
    ui: Ui,
) {
    if let Err(error) = view_png(student, teacher, ui) {
        ui.fail(ErrorKind::Export, error);
    }
}

fn view_png(
    student: &web_sys::HtmlCanvasElement,
    teacher: Option<&web_sys::HtmlCanvasElement>,
    ui: Ui,
) -> Result<(), String> {
    let word = ui
        .selected
        .get_untracked()
        .and_then(|index| ui.words.get_untracked().get(index).map(|w| w.0.clone()));
    let teacher = teacher.filter(|_| {
        matches!(
            ui.comparison.get_untracked(),
            Some(Comparison::Matched { .. })
        )
    });
    let mut panels = vec![(
        student,
        match &word {
            Some(word) => format!("student: “{word}”"),
            None => "student".to_string(),
        },
    )];
    if let Some(teacher) = teacher {
        panels.push((teacher, "teacher (Stable Diffusion)".to_string()));
    }
    let width: u32 = panels.iter().map(|(canvas, _)| canvas.width()).sum::<u32>()
        + GAP * (panels.len() as u32 - 1);
    let height = panels
        .iter()
        .map(|(canvas, _)| canvas.height())
        .max()
        .unwrap_or(0)
        + LABEL_BAND;
    let document = js::window().document().ok_or("no document")?;
    let out: web_sys::HtmlCanvasElement = document
        .create_element("canvas")
        .map_err(|error| js::describe(&error))?
        .unchecked_into();
    out.set_width(width);
    out.set_height(height);
    let context: web_sys::CanvasRenderingContext2d = out
        .get_context("2d")
        .map_err(|error| js::describe(&error))?
        .ok_or("the canvas has no 2D context")?
        .unchecked_into();
    context.set_fill_style_str("#ffffff");
    context.fill_rect(0.0, 0.0, width as f64, height as f64);
    context.set_fill_style_str("#1f1b2d");
    context.set_font("14px sans-serif");
    let mut x = 0.0;
    for (canvas, label) in panels {
        context
            .fill_text(&label, x + 2.0, (LABEL_BAND - 9) as f64)
            .map_err(|error| js::describe(&error))?;
        context
            .draw_image_with_html_canvas_element(canvas, x, LABEL_BAND as f64)
            .map_err(|error| js::describe(&error))?;
        x += (canvas.width() + GAP) as f64;
    }
    let url = out
        .to_data_url_with_type("image/png")
        .map_err(|error| js::describe(&error))?;
    js::download_url("lavender-view.png", &url)
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
        "normalisation": ui.normalisation.get_untracked().id(),
        "size": size,
        "answer": ui.answer.get_untracked(),
        "token_ids": ui.token_ids.get_untracked(),
        "words": words,
    });
    serde_json::to_string_pretty(&json).ok()
}
