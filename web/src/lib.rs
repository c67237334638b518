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

use explorer::{
    Explorer, ExplorerOptions, Layout,
    control::{Control, ControlSlot},
};
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
            layout: Layout::Full,
            host: Some(host.clone()),
            control: None,
            url_state: true,
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
            <CopyLink />
            <details class="lx-check" on:toggle=move |_| opened.set(true)>
                <summary>"Backend check"</summary>
                // Run on the page's own thread, so only when asked for: the explorer's work
                // is in its worker and the page stays free.
                {move || opened.get().then(|| view! { <backend_check::BackendCheck /> })}
            </details>
        </main>
    }
}

/// "Copy link": the page's address, which holds the view (the explorer keeps it there).
#[component]
fn CopyLink() -> impl IntoView {
    let copied = RwSignal::new(false);
    let copy = move |_| {
        let href = js::window().location().href().unwrap_or_default();
        // `navigator.clipboard` exists in secure contexts only; elsewhere the address bar has it.
        let clipboard = js::navigator()
            .and_then(|navigator| js_sys::Reflect::get(&navigator, &"clipboard".into()).ok())
            .filter(|clipboard| clipboard.is_object());
        if let Some(clipboard) = clipboard
            && let Ok(write) = js_sys::Reflect::get(&clipboard, &"writeText".into())
            && let Ok(write) = write.dyn_into::<js_sys::Function>()
        {
            let _ = write.call1(&clipboard, &JsValue::from_str(&href));
            copied.set(true);
        }
    };
    view! {
        <p class="lx-share">
            <button type="button" class="lx-copy-link" on:click=copy>"Copy link to this view"</button>
            " "
            <span class="note" aria-live="polite">{move || copied.get().then_some("Copied.")}</span>
        </p>
    }
}

/// A mounted explorer: [`ExplorerHandle::unmount`] removes it from the page; the other methods
/// drive it as its controls would (`www/lavender-explorer.js` wraps them).
#[wasm_bindgen]
pub struct ExplorerHandle {
    mounted: Option<Box<dyn std::any::Any>>,
    control: ControlSlot,
}

#[wasm_bindgen]
impl ExplorerHandle {
    /// Removes the explorer and frees its model; calling it twice does nothing.
    pub fn unmount(&mut self) {
        self.control.borrow_mut().take();
        self.mounted.take();
    }

    /// Loads the bundle at `url`; `backend` `"cpu"` forces the CPU, `"auto"` prefers WebGPU,
    /// `undefined` keeps the current choice.
    pub fn load_model(&self, url: String, backend: Option<String>) -> Result<(), JsError> {
        self.control()?
            .load_model(url, backend.map(|backend| backend == "cpu"));
        Ok(())
    }

    pub fn set_image(&self, url: String) -> Result<(), JsError> {
        self.control()?.set_image(url);
        Ok(())
    }

    pub fn set_prompt(&self, prompt: String) -> Result<(), JsError> {
        self.control()?.set_prompt(prompt);
        Ok(())
    }

    /// Asks the current question about the current image.
    pub fn ask(&self) -> Result<(), JsError> {
        self.control()?.ask().map_err(|error| JsError::new(&error))
    }

    /// Selects word `index` of the last answer (prompt words first).
    pub fn select_word(&self, index: usize) -> Result<(), JsError> {
        self.control()?
            .select_word(index)
            .map_err(|error| JsError::new(&error))
    }
}

impl ExplorerHandle {
    fn control(&self) -> Result<Control, JsError> {
        self.control
            .borrow()
            .clone()
            .ok_or_else(|| JsError::new("the explorer was unmounted"))
    }
}

/// Mounts an explorer into `element`. `options` (a JS object, all optional): `model` (bundle
/// URL, default `example/`), `image` (URL), `prompt`, `backend` (`"cpu"` forces the CPU),
/// `maxNewTokens`, `layout` (`"compact"` or `"full"`). Its events are dispatched on `element`.
#[wasm_bindgen]
pub fn mount_explorer(
    element: web_sys::HtmlElement,
    options: JsValue,
) -> Result<ExplorerHandle, JsError> {
    let text = |name: &str| {
        js_sys::Reflect::get(&options, &JsValue::from_str(name))
            .ok()
            .and_then(|value| value.as_string())
            .filter(|value| !value.is_empty())
    };
    let layout = match text("layout") {
        None => Layout::Full,
        Some(id) => Layout::from_id(&id).ok_or_else(|| {
            JsError::new(&format!(
                "layout must be \"compact\" or \"full\", not {id:?}"
            ))
        })?,
    };
    let control = ControlSlot::default();
    let options = ExplorerOptions {
        model: text("model"),
        image: text("image"),
        prompt: text("prompt"),
        force_cpu: text("backend").as_deref() == Some("cpu"),
        max_new_tokens: js_sys::Reflect::get(&options, &JsValue::from_str("maxNewTokens"))
            .ok()
            .and_then(|value| value.as_f64())
            .map_or(0, |n| n as usize),
        layout,
        host: Some(element.clone()),
        control: Some(control.clone()),
        url_state: false,
    };
    let mounted = leptos::mount::mount_to(element, move || view! { <Explorer options /> });
    Ok(ExplorerHandle {
        mounted: Some(Box::new(mounted)),
        control,
    })
}
