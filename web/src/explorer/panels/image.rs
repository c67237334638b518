//! The image: a file or a URL, or one of the bundle's examples (those come with the Stable
//! Diffusion teacher's maps). Dropping an image on the stage works too ([`super::Stage`]).

use leptos::{prelude::*, task::spawn_local};

use crate::explorer::{
    picture::{load_image_url, read_image_file, show_example},
    state::{Shared, Ui},
};

use super::event_target;

#[component]
pub(in crate::explorer) fn ImagePanel(
    view_state: Shared,
    ui: Ui,
    image_url: RwSignal<String>,
) -> impl IntoView {
    let pick_image = {
        let view_state = view_state.clone();
        move |event: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&event);
            if let Some(file) = input.files().and_then(|list| list.get(0)) {
                read_image_file(view_state.clone(), ui, file);
            }
        }
    };
    let load_image = {
        let view_state = view_state.clone();
        move |_| {
            let url = image_url.get_untracked();
            if !url.trim().is_empty() {
                spawn_local(load_image_url(view_state.clone(), ui, url));
            }
        }
    };
    // `Copy` and `Send`, as the reactive children of the view must be; the value stays here.
    let view_for_examples = StoredValue::new_local(view_state);

    view! {
        <fieldset class="lx-image">
            <legend>"Image"</legend>
            <div class="lx-row">
                <label>"Image file " <input type="file" class="lx-image-file" accept="image/*" on:change=pick_image /></label>
                <label>
                    "or image URL "
                    <input
                        type="url"
                        class="lx-image-url"
                        prop:value=move || image_url.get()
                        on:input=move |ev| image_url.set(event_target_value(&ev))
                    />
                </label>
                <button type="button" class="lx-load-image" on:click=load_image>"Load image"</button>
            </div>
            {move || (!ui.examples.get().is_empty()).then(|| view! {
                <div class="lx-row lx-examples" role="group" aria-label="example images with teacher maps">
                    "Examples with Stable Diffusion maps: "
                    {ui.examples.get().into_iter().enumerate().map(|(index, (id, caption))| {
                        view! {
                            <button
                                type="button"
                                class="lx-example"
                                data-id=id.clone()
                                title=caption.clone()
                                aria-pressed=move || (ui.example.get() == Some(index)).to_string()
                                on:click=move |_| view_for_examples.with_value(|view| show_example(view, ui, index))
                            >
                                {caption.clone()}
                            </button>
                        }
                    }).collect_view()}
                </div>
            })}
        </fieldset>
    }
}
