//! Drawing the picture with the selected word's map, and on an example image the teacher's
//! map of that word beside it with their MSE.

use leptos::prelude::*;

use lavender_core::{align::words::teacher_word_row, maps::compare::map_mse};

use crate::overlay::{blend, paint};

use super::state::{Comparison, ErrorKind, Shared, Ui};

/// Draws the image with the selected word's map (or the image alone) into `canvas`, and on
/// an example image the teacher's map of that word into `teacher_canvas`, with their MSE.
pub(super) fn repaint(
    view: &Shared,
    ui: Ui,
    canvas: &web_sys::HtmlCanvasElement,
    teacher_canvas: Option<&web_sys::HtmlCanvasElement>,
) {
    let view = view.borrow();
    let Some(display) = &view.display else {
        return;
    };
    let size = view.map_size;
    let selected = ui.selected.get_untracked();
    let map = match (selected, &view.maps) {
        (Some(index), Some(maps)) if size > 0 && maps.len() >= (index + 1) * size * size => {
            Some(&maps[index * size * size..(index + 1) * size * size])
        }
        _ => None,
    };
    let (opacity, colormap) = (ui.opacity.get_untracked(), ui.colormap.get_untracked());
    let rgba = blend(display, map.map(|map| (map, size)), opacity, colormap);
    if let Err(error) = paint(canvas, &rgba, display.width(), display.height()) {
        ui.fail(ErrorKind::Draw, error);
    }

    let example = view.example.and_then(|index| view.examples.get(index));
    let word = selected.and_then(|index| view.words.get(index));
    let (Some(example), Some(word), Some(student)) = (example, word, map) else {
        ui.comparison.set(None);
        return;
    };
    let side = example.info.side;
    let Some(row) = teacher_word_row(&example.info.words, &word.text) else {
        ui.comparison.set(Some(Comparison::NoTeacherMap {
            word: word.text.clone(),
            teacher_words: example.info.words.join(", "),
        }));
        return;
    };
    let teacher = &example.maps[row * side * side..(row + 1) * side * side];
    ui.comparison.set(Some(Comparison::Matched {
        word: example.info.words[row].clone(),
        mse: map_mse(student, size, teacher, side),
    }));
    if let Some(teacher_canvas) = teacher_canvas {
        let rgba = blend(display, Some((teacher, side)), opacity, colormap);
        if let Err(error) = paint(teacher_canvas, &rgba, display.width(), display.height()) {
            ui.fail(ErrorKind::Draw, error);
        }
    }
}
