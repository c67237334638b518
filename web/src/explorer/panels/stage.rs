//! The stage: the student's map over the picture and, on an example image, the teacher's map
//! of the same word beside it with their MSE. An image dropped here becomes the picture.

use leptos::{html, prelude::*};

use crate::explorer::{
    picture::read_image_file,
    state::{Comparison, Shared, Ui},
};

#[component]
pub(in crate::explorer) fn Stage(
    view_state: Shared,
    ui: Ui,
    canvas: NodeRef<html::Canvas>,
    teacher_canvas: NodeRef<html::Canvas>,
) -> impl IntoView {
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
                    <canvas class="lx-canvas" node_ref=canvas role="img" aria-label="the image with the selected word's attention map"></canvas>
                    <figcaption>"Student (this model)"</figcaption>
                </figure>
                <figure class="lx-teacher" hidden=move || !matches!(ui.comparison.get(), Some(Comparison::Matched { .. }))>
                    <canvas class="lx-teacher-canvas" node_ref=teacher_canvas role="img" aria-label="the image with the Stable Diffusion teacher's map of the selected word"></canvas>
                    <figcaption>"Teacher (Stable Diffusion)"</figcaption>
                </figure>
            </div>
            <ComparisonNote ui />
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
