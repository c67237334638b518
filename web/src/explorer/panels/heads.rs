//! The layer × head grid (BertViz's overview): the selected word's map for every
//! cross-attention layer and head, small; clicking one shows it large (the grid aggregation,
//! that layer and head). Folded until opened, and asked for only while open: a large model
//! has hundreds of heads (11B: 8 layers × 32), more work than most selections need.

use std::rc::Rc;

use leptos::{html, prelude::*};
use wasm_bindgen::JsCast;

use crate::{
    explorer::{
        requests::{request_head_maps, request_maps},
        state::{Aggregation, ErrorKind, Pick, RunState, Shared, Ui},
    },
    overlay::{Colormap, paint},
    worker::client::Link,
};

#[component]
pub(in crate::explorer) fn HeadGrid(link: Rc<Link>, view_state: Shared, ui: Ui) -> impl IntoView {
    let grid = NodeRef::<html::Div>::new();
    let open = RwSignal::new(false);
    // While open, the grid follows the selected word (once its run has its maps).
    {
        let (link, view_state) = (link.clone(), view_state.clone());
        Effect::new(move |_| {
            let (Some(word), true) = (ui.selected.get(), open.get()) else {
                return;
            };
            let held = view_state
                .borrow()
                .head_maps
                .as_ref()
                .is_some_and(|maps| maps.word == word);
            if ui.run_state.get() == RunState::Done && !held {
                request_head_maps(&link, &view_state, word);
            }
        });
    }
    // (layers, heads, the word's text) of the maps held now.
    // `Copy` and `Send`, as the reactive children of the view must be; the value stays here.
    let view_for_shape = StoredValue::new_local(view_state.clone());
    let shape = move || {
        ui.head_maps_version.get();
        view_for_shape.with_value(|view| {
            let view = view.borrow();
            let maps = view.head_maps.as_ref()?;
            let word = view.words.get(maps.word)?.text.clone();
            Some((maps.layers, maps.heads, word))
        })
    };
    // Paints every cell's canvas once the cells are in the page.
    {
        let view_state = view_state.clone();
        Effect::new(move |_| {
            ui.head_maps_version.track();
            let colormap = ui.colormap.get();
            let Some(grid) = grid.get() else { return };
            let view = view_state.borrow();
            let Some(maps) = view.head_maps.as_ref() else {
                return;
            };
            let Ok(canvases) = grid.query_selector_all("canvas") else {
                return;
            };
            for i in 0..canvases.length() {
                let Some(canvas) = canvases
                    .get(i)
                    .and_then(|node| node.dyn_into::<web_sys::HtmlCanvasElement>().ok())
                else {
                    continue;
                };
                let index = i as usize;
                let Some(map) = maps.map(index / maps.heads.max(1), index % maps.heads.max(1))
                else {
                    continue;
                };
                let side = maps.size as u32;
                if let Err(error) = paint(&canvas, &colored(map, colormap), side, side) {
                    ui.fail(ErrorKind::Draw, error);
                }
            }
        });
    }
    let show = move |layer: usize, head: usize| {
        ui.aggregation.set(Aggregation::Grid);
        ui.layer.set(Pick::One(layer));
        ui.head.set(Pick::One(head));
        request_maps(&link, &view_state, ui);
    };
    let show = StoredValue::new_local(show);

    let on_toggle = move |event: web_sys::Event| {
        if let Some(details) = event
            .target()
            .and_then(|target| target.dyn_into::<web_sys::HtmlDetailsElement>().ok())
        {
            open.set(details.open());
        }
    };

    view! {
        <details class="lx-heads" on:toggle=on_toggle hidden=move || ui.words.get().is_empty()>
        <summary>"Every layer and head"</summary>
        {move || match (shape(), ui.selected.get()) {
            (_, None) => Some(view! { <p class="lx-heads-title">"Select a word to see its map in every layer and head."</p> }.into_any()),
            (None, Some(_)) => Some(view! { <p class="lx-heads-title">"Computing…"</p> }.into_any()),
            (Some(_), Some(_)) => None,
        }}
        {move || shape().map(|(layers, heads, word)| view! {
            <div>
                <p class="lx-heads-title">{format!("“{word}” in every cross-attention layer (rows) and head (columns); click one to show it:")}</p>
                <div
                    class="lx-heads-grid"
                    node_ref=grid
                    role="group"
                    aria-label="the selected word's map per layer and head"
                    style:grid-template-columns=format!("repeat({heads}, minmax(0, 3.5rem))")
                >
                    {(0..layers).flat_map(|layer| (0..heads).map(move |head| (layer, head))).map(|(layer, head)| {
                        let pressed = move || {
                            ui.aggregation.get() == Aggregation::Grid
                                && ui.layer.get() == Pick::One(layer)
                                && ui.head.get() == Pick::One(head)
                        };
                        view! {
                            <button
                                type="button"
                                class="lx-head-cell"
                                data-layer=layer
                                data-head=head
                                title=format!("layer {layer}, head {head}")
                                aria-label=format!("layer {layer}, head {head}")
                                aria-pressed=move || pressed().to_string()
                                on:click=move |_| show.with_value(|show| show(layer, head))
                            >
                                <canvas></canvas>
                            </button>
                        }
                    }).collect_view()}
                </div>
            </div>
        })}
        </details>
    }
}

/// A map as RGBA pixels in `colormap`.
fn colored(map: &[f32], colormap: Colormap) -> Vec<u8> {
    map.iter()
        .flat_map(|&value| {
            let [r, g, b] = colormap.color(value);
            [r, g, b, 255]
        })
        .collect()
}
