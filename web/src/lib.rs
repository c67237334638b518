//! `lavender-web`: lavender-rs in the browser. Burn runs on WebGPU when the browser offers an
//! adapter and on the CPU (Flex) backend otherwise; the page says which one ran.
//!
//! Built by `scripts/build-web.sh` into `www/dist/` (any static host serves it). Add
//! `?backend=cpu` to the page's URL to force the CPU backend, `?model=URL` to open another
//! bundle. Other pages embed the explorer with `www/lavender-explorer.js` (the
//! `<lavender-explorer>` element and `mountExplorer`), which calls [`mount_explorer`]. The
//! models run in a Web Worker started from this same module (`worker`).

mod backend_check;
mod bundle_source;
mod device;
mod explorer;
mod js;
mod limits;
mod overlay;
mod worker;

use explorer::{Explorer, ExplorerOptions};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

/// Run by the generated JS glue when the module starts: mounts the full app into the page's
/// `#app` element if it has one (the explorer's own page); embedding pages have none and
/// call [`mount_explorer`] instead, and in the inference worker there is no page at all.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        js::announce_panic(&info.to_string());
    }));
    let host = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.get_element_by_id("app"))
        .and_then(|element| element.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(host) = host {
        host.set_inner_html("");
        let options = ExplorerOptions {
            model: js::query_param("model"),
            // The page's example: a scene of the shapes study, a question its student knows.
            image: Some(js::query_param("image").unwrap_or_else(|| "images/shapes.png".into())),
            prompt: Some(
                js::query_param("prompt")
                    .unwrap_or_else(|| "What shape is the blue object?".into()),
            ),
            force_cpu: false,
            max_new_tokens: js::query_param("max-new-tokens")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        };
        // The page lives as long as the app: the handle is never unmounted.
        std::mem::forget(leptos::mount::mount_to(
            host,
            move || view! { <App options /> },
        ));
    }
}

#[component]
fn App(options: ExplorerOptions) -> impl IntoView {
    let opened = RwSignal::new(false);
    view! {
        <main>
            <h1>"lavender-rs explorer"</h1>
            <p class="lede">
                "Lavender aligns a vision-language model's text-to-image attention with Stable \
                 Diffusion's. Ask the student a question about an image, then click any word to \
                 see where it looked. Everything runs in your browser on the same Burn core as \
                 the native tool."
            </p>
            <Explorer options />
            <details class="lx-check" on:toggle=move |_| opened.set(true)>
                <summary>"Backend check"</summary>
                // Run on the page's own thread, so only when asked for: the explorer's work
                // is in its worker and the page stays free.
                {move || opened.get().then(|| view! { <backend_check::BackendCheck /> })}
            </details>
        </main>
    }
}

/// A mounted explorer; [`ExplorerHandle::unmount`] removes it from the page.
#[wasm_bindgen]
pub struct ExplorerHandle {
    mounted: Option<Box<dyn std::any::Any>>,
}

#[wasm_bindgen]
impl ExplorerHandle {
    /// Removes the explorer and frees its model; calling it twice does nothing.
    pub fn unmount(&mut self) {
        self.mounted.take();
    }
}

/// Mounts an explorer into `element`. `options` (a JS object, all optional): `model` (bundle
/// URL, default `example/`), `image` (URL), `prompt`, `backend` (`"cpu"` forces the CPU),
/// `maxNewTokens`.
#[wasm_bindgen]
pub fn mount_explorer(element: web_sys::HtmlElement, options: JsValue) -> ExplorerHandle {
    let text = |name: &str| {
        js_sys::Reflect::get(&options, &JsValue::from_str(name))
            .ok()
            .and_then(|value| value.as_string())
            .filter(|value| !value.is_empty())
    };
    let options = ExplorerOptions {
        model: text("model"),
        image: text("image"),
        prompt: text("prompt"),
        force_cpu: text("backend").as_deref() == Some("cpu"),
        max_new_tokens: js_sys::Reflect::get(&options, &JsValue::from_str("maxNewTokens"))
            .ok()
            .and_then(|value| value.as_f64())
            .map_or(0, |n| n as usize),
    };
    let mounted = leptos::mount::mount_to(element, move || view! { <Explorer options /> });
    ExplorerHandle {
        mounted: Some(Box::new(mounted)),
    }
}
