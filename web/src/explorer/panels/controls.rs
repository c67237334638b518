//! How the selected word's map is made and drawn (aggregation, layer, head, per-word or
//! shared scale, opacity, colormap) and the exports; usable once there are words.

use std::rc::Rc;

use leptos::{html, prelude::*};

use crate::{
    explorer::{
        export::{export_json, export_png, export_view_png},
        requests::request_maps,
        state::{Aggregation, Normalisation, Pick, RunState, Shared, Ui},
    },
    overlay::Colormap,
    worker::client::Link,
};

#[component]
pub(in crate::explorer) fn MapControls(
    link: Rc<Link>,
    view_state: Shared,
    ui: Ui,
    canvas: NodeRef<html::Canvas>,
    teacher_canvas: NodeRef<html::Canvas>,
) -> impl IntoView {
    let rechoose = {
        let view_state = view_state.clone();
        move || request_maps(&link, &view_state, ui)
    };
    // The options of each select are the ids of its choice.
    let on_aggregation = on_choice(ui.aggregation, Aggregation::from_id, rechoose.clone());
    let on_layer = on_choice(ui.layer, Pick::from_id, rechoose.clone());
    let on_head = on_choice(ui.head, Pick::from_id, rechoose.clone());
    let on_normalisation = on_choice(ui.normalisation, |id| id.parse().ok(), rechoose);
    let on_export_png = move |_| {
        if let Some(canvas) = canvas.get_untracked() {
            export_png(&canvas, ui);
        }
    };
    let on_export_view = move |_| {
        if let Some(canvas) = canvas.get_untracked() {
            export_view_png(&canvas, teacher_canvas.get_untracked().as_ref(), ui);
        }
    };
    let on_export_json = move |_| export_json(&view_state, ui);
    // Usable once there are words, also after a choice of map failed.
    let has_maps = move || !ui.words.get().is_empty() && ui.run_state.get() != RunState::Running;
    let is_grid = move || ui.aggregation.get() == Aggregation::Grid;

    view! {
        <fieldset class="lx-controls" disabled=move || !has_maps()>
            <legend>"Map"</legend>
            <label>
                "Aggregation "
                <select class="lx-aggregation" on:change=on_aggregation prop:value=move || ui.aggregation.get().id()>
                    {move || ui.has_aligner.get().then(|| view! {
                        <option value=Aggregation::AlignerPerLayer.id()>{Aggregation::AlignerPerLayer.label()}</option>
                        <option value=Aggregation::MeanFirst.id()>{Aggregation::MeanFirst.label()}</option>
                    })}
                    <option value=Aggregation::MaxMax.id()>{Aggregation::MaxMax.label()}</option>
                    <option value=Aggregation::Grid.id()>{Aggregation::Grid.label()}</option>
                </select>
            </label>
            <label>
                "Layer "
                <select class="lx-layer" on:change=on_layer prop:value=move || ui.layer.get().id() disabled=move || !is_grid()>
                    <option value=Pick::Mean.id()>"mean of layers"</option>
                    <option value=Pick::Max.id()>"max over layers"</option>
                    // Selected by the option itself too: the choice may be set (from a link)
                    // before these options exist.
                    {move || ui.layers.get().into_iter().enumerate().map(|(i, layer)| view! {
                        <option value=Pick::One(i).id() prop:selected=move || ui.layer.get() == Pick::One(i)>{format!("cross-attention layer {layer}")}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>
                "Head "
                <select class="lx-head" on:change=on_head prop:value=move || ui.head.get().id() disabled=move || !is_grid()>
                    <option value=Pick::Mean.id()>"mean of heads"</option>
                    <option value=Pick::Max.id()>"max over heads"</option>
                    {move || (0..ui.heads.get()).map(|h| view! {
                        <option value=Pick::One(h).id() prop:selected=move || ui.head.get() == Pick::One(h)>{format!("head {h}")}</option>
                    }).collect_view()}
                </select>
            </label>
            <label title="Per word: each map spans the whole colour scale. Shared: one scale for all words, so a word that draws little attention looks faint.">
                "Scale "
                <select class="lx-normalisation" on:change=on_normalisation prop:value=move || ui.normalisation.get().id()>
                    <option value=Normalisation::PerMap.id()>"per word"</option>
                    <option value=Normalisation::Shared.id()>"shared across words"</option>
                </select>
            </label>
            <label>
                "Opacity "
                <input
                    type="range"
                    class="lx-opacity"
                    min="0"
                    max="1"
                    step="0.05"
                    prop:value=move || ui.opacity.get().to_string()
                    on:input=move |ev| ui.opacity.set(event_target_value(&ev).parse().unwrap_or(0.6))
                />
            </label>
            <label>
                "Colormap "
                <select
                    class="lx-colormap"
                    on:change=move |ev| ui.colormap.set(Colormap::from_id(&event_target_value(&ev)))
                >
                    {Colormap::ALL.into_iter().map(|map| view! { <option value=map.id()>{map.id()}</option> }).collect_view()}
                </select>
            </label>
            <button type="button" class="lx-export-png" on:click=on_export_png>"Export PNG"</button>
            <button type="button" class="lx-export-view" on:click=on_export_view>"Export view (PNG)"</button>
            <button type="button" class="lx-export-json" on:click=on_export_json>"Export maps (JSON)"</button>
        </fieldset>
    }
}

/// A select's change handler: its value, read by `parse`, goes into `choice` (an unknown one
/// leaves it as it is); then the maps are asked again.
fn on_choice<T: Send + Sync + 'static>(
    choice: RwSignal<T>,
    parse: impl Fn(&str) -> Option<T> + 'static,
    rechoose: impl Fn() + 'static,
) -> impl Fn(web_sys::Event) + 'static {
    move |event| {
        if let Some(value) = parse(&event_target_value(&event)) {
            choice.set(value);
        }
        rechoose();
    }
}
