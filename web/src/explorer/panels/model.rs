//! The model bundle: a URL to load it from, or its files picked from the disk, then the
//! load's status and progress.

use std::rc::Rc;

use leptos::prelude::*;

use crate::{
    explorer::{
        requests::load_model,
        state::{ModelState, Shared, Ui},
    },
    worker::client::Link,
};

use super::event_target;

#[component]
pub(in crate::explorer) fn ModelPanel(
    link: Rc<Link>,
    view_state: Shared,
    ui: Ui,
    /// Use the CPU even where WebGPU is available.
    force_cpu: bool,
    model_url: RwSignal<String>,
) -> impl IntoView {
    let load_url = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move |_| {
            load_model(
                &link,
                &view_state,
                ui,
                force_cpu,
                Some(model_url.get_untracked()),
                Vec::new(),
            )
        }
    };
    let load_files = move |event: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&event);
        let Some(list) = input.files() else { return };
        let picked: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        if !picked.is_empty() {
            load_model(&link, &view_state, ui, force_cpu, None, picked);
        }
    };

    view! {
        <fieldset class="lx-model">
            <legend>"Model bundle"</legend>
            <div class="lx-row">
                <label>
                    "Bundle URL "
                    <input
                        type="url"
                        class="lx-model-url"
                        prop:value=move || model_url.get()
                        on:input=move |ev| model_url.set(event_target_value(&ev))
                    />
                </label>
                <button type="button" class="lx-load-model" on:click=load_url>"Load"</button>
                <label class="lx-file">
                    "or bundle files "
                    <input type="file" class="lx-model-files" multiple on:change=load_files />
                </label>
            </div>
            <p class="lx-status" aria-live="polite">{move || ui.model_status.get()}</p>
            {move || ui.progress.get().filter(|_| ui.model_state.get() == ModelState::Loading).map(|p| view! {
                <progress class="lx-progress" max=p.total.max(1) value=p.done aria-label="download progress"></progress>
                <span class="lx-progress-text">{format!("{} / {} bytes ({})", p.done, p.total, p.file)}</span>
            })}
        </fieldset>
    }
}
