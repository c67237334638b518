//! `lavender-web`: lavender-rs in the browser. Burn runs on WebGPU when the browser offers an
//! adapter and on the CPU (Flex) backend otherwise; the page says which one ran.
//!
//! Built by `scripts/build-web.sh` into `www/dist/` (any static host serves it). Add
//! `?backend=cpu` to the page's URL to force the CPU backend.

mod backend_check;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

/// Entry point run by the generated JS glue: mounts the app into `#app` (or the body).
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let document = web_sys::window().and_then(|window| window.document());
    let host = document
        .as_ref()
        .and_then(|document| document.get_element_by_id("app"))
        .and_then(|element| element.dyn_into::<web_sys::HtmlElement>().ok());
    match host {
        Some(host) => {
            host.set_inner_html("");
            // The page lives as long as the app: the handle is never unmounted.
            std::mem::forget(leptos::mount::mount_to(host, App));
        }
        None => leptos::mount::mount_to_body(App),
    }
}

#[component]
fn App() -> impl IntoView {
    view! {
        <main>
            <h1>"lavender-rs"</h1>
            <p class="lede">
                "Lavender aligns a vision-language model's text-to-image attention with Stable \
                 Diffusion's. This page runs the same Burn core as the native tool, in your browser."
            </p>
            <backend_check::BackendCheck />
        </main>
    }
}
