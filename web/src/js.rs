//! Small bridges to browser APIs that the rest of the app awaits or calls: timers, the page's
//! query, URLs, downloads. Errors come back as strings ready to show in the page.

use js_sys::{Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue, prelude::Closure};
use wasm_bindgen_futures::JsFuture;

/// A readable message for a JS error value.
pub fn describe(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

pub fn window() -> web_sys::Window {
    web_sys::window().expect("running in a browser window")
}

/// The page's `?name=` value.
pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// A property of the global object (the window on the page, the worker's global scope in
/// the worker): the APIs used here exist on both.
fn global_property(name: &str) -> Option<JsValue> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name))
        .ok()
        .filter(|value| !value.is_undefined() && !value.is_null())
}

pub fn now_ms() -> f64 {
    global_property("performance")
        .map(JsCast::unchecked_into::<web_sys::Performance>)
        .map_or(0.0, |performance| performance.now())
}

/// Resolves after `ms` milliseconds; with 0 it still returns to the event loop, so the page
/// repaints and the worker sees new messages between two steps of work.
pub async fn sleep_ms(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        if let Some(set_timeout) =
            global_property("setTimeout").and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        {
            let _ = set_timeout.call2(&JsValue::UNDEFINED, &resolve, &JsValue::from(ms));
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// `fetch(url, init)` on the page or in the worker.
pub fn fetch(url: &str, init: &web_sys::RequestInit) -> Promise {
    let global = js_sys::global();
    match global.dyn_ref::<web_sys::Window>() {
        Some(window) => window.fetch_with_str_and_init(url, init),
        None => global
            .unchecked_into::<web_sys::WorkerGlobalScope>()
            .fetch_with_str_and_init(url, init),
    }
}

/// The Cache API's storage, where the browser offers it (secure contexts only).
pub fn caches() -> Option<web_sys::CacheStorage> {
    global_property("caches").map(JsCast::unchecked_into)
}

/// `navigator` on the page or in the worker.
pub fn navigator() -> Option<JsValue> {
    global_property("navigator")
}

/// `relative` resolved against `base` (itself resolved against the page; in the worker,
/// `base` must be absolute).
pub fn resolve_url(relative: &str, base: &str) -> Result<String, String> {
    let page = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.base_uri().ok().flatten())
        .unwrap_or_default();
    let base = if page.is_empty() {
        web_sys::Url::new(base)
    } else {
        web_sys::Url::new_with_base(base, &page)
    }
    .map_err(|error| format!("bad URL {base}: {}", describe(&error)))?;
    web_sys::Url::new_with_base(relative, &base.href())
        .map(|url| url.href())
        .map_err(|error| format!("bad URL {relative}: {}", describe(&error)))
}

/// The bytes of a `File` (from a picker or a drop).
pub async fn file_bytes(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|error| format!("cannot read {}: {}", file.name(), describe(&error)))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Offers `bytes` as a download named `name` (a click on a temporary link).
pub fn download(name: &str, mime: &str, bytes: &[u8]) -> Result<(), String> {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .map_err(|error| describe(&error))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|error| describe(&error))?;
    let document = window().document().ok_or("no document")?;
    let link: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(|error| describe(&error))?
        .unchecked_into();
    link.set_href(&url);
    link.set_download(name);
    link.click();
    // Revoked later: the browser reads the blob after this click returns.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    let _ = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 10_000);
    Ok(())
}

/// Offers the resource at `url` (a data: or blob: URL) as a download named `name`.
pub fn download_url(name: &str, url: &str) -> Result<(), String> {
    let document = window().document().ok_or("no document")?;
    let link: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(|error| describe(&error))?
        .unchecked_into();
    link.set_href(url);
    link.set_download(name);
    link.click();
    Ok(())
}

/// The window event a panic raises, so each explorer shows it in the page: a panic traps the
/// WebAssembly call that hit it, and the work it was doing never finishes.
pub const PANIC_EVENT: &str = "lavender-panic";

pub fn announce_panic(message: &str) {
    let Some(window) = web_sys::window() else {
        // In the worker: the page hears of it as a message.
        return crate::worker::announce_panic(message);
    };
    let init = web_sys::CustomEventInit::new();
    init.set_detail(&JsValue::from_str(message));
    if let Ok(event) = web_sys::CustomEvent::new_with_event_init_dict(PANIC_EVENT, &init) {
        let _ = window.dispatch_event(&event);
    }
}
