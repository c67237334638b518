//! The stage: the student's map over the picture and, on an example image, the teacher's map
//! of the same word beside it with their MSE. An image dropped here becomes the picture.

use leptos::{html, prelude::*};

use crate::explorer::{
    picture::read_image_file,
    state::{Comparison, Shared, Ui, words_at},
};

/// How many words the reverse view lists.
const REGION_WORDS: usize = 5;

#[component]
pub(in crate::explorer) fn Stage(
    view_state: Shared,
    ui: Ui,
    canvas: NodeRef<html::Canvas>,
    teacher_canvas: NodeRef<html::Canvas>,
) -> impl IntoView {
    // A click on the picture: which words attended to that cell most.
    let pick_region = {
        let view_state = view_state.clone();
        move |event: web_sys::MouseEvent| {
            let Some(canvas) = canvas.get_untracked() else {
                return;
            };
            let view = view_state.borrow();
            let (size, Some(maps)) = (view.map_size, view.maps.as_ref()) else {
                return;
            };
            let (width, height) = (canvas.client_width(), canvas.client_height());
            if size == 0 || width <= 0 || height <= 0 {
                return;
            }
            let cell = |offset: i32, extent: i32| {
                ((offset.max(0) as usize * size) / extent as usize).min(size - 1)
            };
            let cell = (
                cell(event.offset_y(), height),
                cell(event.offset_x(), width),
            );
            ui.region
                .set(Some((cell, words_at(maps, size, cell, REGION_WORDS))));
        }
    };
    let drop_image = move |event: web_sys::DragEvent| {
        event.prevent_default();
        let file = event
            .data_transfer()
            .and_then(|transfer| transfer.files())
            .and_then(|list| list.get(0));
        if let Some(file) = file {
            read_image_file(view_state.clone(), ui, file);
        }
    };

    view! {
        <div
            class="lx-stage"
            on:dragover=|ev: web_sys::DragEvent| ev.prevent_default()
            on:drop=drop_image
        >
            <div class="lx-pair">
                <figure>
                    <canvas class="lx-canvas" node_ref=canvas role="img" aria-label="the image with the selected word's attention map; click a region to see which words looked there" on:click=pick_region></canvas>
                    <figcaption>"Student (this model)"</figcaption>
                </figure>
                <figure class="lx-teacher" hidden=move || !matches!(ui.comparison.get(), Some(Comparison::Matched { .. }))>
                    <canvas class="lx-teacher-canvas" node_ref=teacher_canvas role="img" aria-label="the image with the Stable Diffusion teacher's map of the selected word"></canvas>
                    <figcaption>"Teacher (Stable Diffusion)"</figcaption>
                </figure>
            </div>
            <ComparisonNote ui />
            <RegionWords ui />
            <p class="lx-drop-hint note">
                {move || match ui.image_name.get() {
                    Some(name) => format!("{name} — drop another image here to replace it"),
                    None => "Drop an image here, or pick one above.".to_string(),
                }}
            </p>
        </div>
    }
}

/// The selected word's MSE against the teacher's map (in `data-mse` too), or why there is
/// none: the teacher's caption lacks the word.
#[component]
fn ComparisonNote(ui: Ui) -> impl IntoView {
    move || {
        ui.comparison.get().map(|comparison| match comparison {
            Comparison::Matched { word, mse } => view! {
                <p class="lx-comparison" data-mse=mse.to_string()>
                    {format!("“{word}”: MSE between the student's map and the teacher's = {mse:.4}")}
                </p>
            }
            .into_any(),
            Comparison::NoTeacherMap { word, teacher_words } => view! {
                <p class="lx-comparison note">
                    {format!("The teacher has no map for “{word}”; its words: {teacher_words}.")}
                </p>
            }
            .into_any(),
        })
    }
}

/// The reverse view: the words that attended most to the clicked cell, each a button that
/// selects it.
#[component]
fn RegionWords(ui: Ui) -> impl IntoView {
    move || {
        let ((row, column), ranked) = ui.region.get()?;
        let words = ui.words.get_untracked();
        Some(view! {
            <p class="lx-region" data-cell=format!("{row},{column}")>
                {format!("Where you clicked (row {row}, column {column}), the words that looked there most: ")}
                {ranked.into_iter().filter_map(|(index, value)| {
                    let text = words.get(index)?.0.clone();
                    Some(view! {
                        <button
                            type="button"
                            class="lx-region-word"
                            data-index=index
                            data-value=value.to_string()
                            on:click=move |_| ui.selected.set(Some(index))
                        >
                            {format!("{text} {value:.2}")}
                        </button>
                    })
                }).collect_view()}
            </p>
        })
    }
}
