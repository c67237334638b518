//! Inference in a Web Worker, so the page stays responsive while the model loads and thinks.
//!
//! The worker runs this same WebAssembly module: [`client`] starts it (one per page, shared by
//! every explorer on it) from a tiny module script that imports the module's JS glue and calls
//! [`worker_main`]. The worker fetches and checks bundles, owns the models (one
//! [`engine::Engine`] per explorer) and the WebGPU device, and answers [`protocol`] messages;
//! the page keeps only the picture, the words and the maps it draws. A panic (a wasm trap) in
//! the worker is reported to every explorer, and the page starts a fresh worker on the next
//! load instead of calling into a broken module.

pub mod client;
mod engine;
mod models;
pub mod protocol;
mod scope;

use std::{cell::RefCell, collections::HashMap, rc::Rc};

// Not Leptos's `spawn_local`: no Leptos executor runs in the worker.
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::spawn_local;

use engine::{Engine, Shared};
use protocol::{Envelope, Reply, Request};

thread_local! {
    /// The models of the explorers this worker serves, by explorer id.
    static ENGINES: RefCell<HashMap<u32, Shared>> = RefCell::new(HashMap::new());
}

/// Entry point of the worker (called by the worker script after the module initialised).
#[wasm_bindgen]
pub fn worker_main() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|event: web_sys::MessageEvent| {
            match Envelope::<Request>::from_js(&event.data()) {
                Ok(message) => handle(message),
                // Only a page of another version could send this; say so to every explorer.
                Err(error) => scope::post(Envelope::new(0, Reply::Panic { message: error })),
            }
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The worker lives as long as the page wants it.
    on_message.forget();
    scope::post(Envelope::new(0, Reply::Ready));
}

fn engine(explorer: u32) -> Shared {
    ENGINES.with_borrow_mut(|engines| {
        engines
            .entry(explorer)
            .or_insert_with(|| {
                Rc::new(RefCell::new(Engine {
                    explorer,
                    ..Engine::default()
                }))
            })
            .clone()
    })
}

fn handle(message: Envelope<Request>) {
    let explorer = message.explorer;
    match message.body {
        Request::Load {
            load,
            url,
            force_cpu,
            max_buffer,
        } => spawn_local(engine::load(
            engine(explorer),
            load,
            url,
            message.files,
            force_cpu,
            max_buffer,
        )),
        Request::Run {
            run,
            prompt,
            max_new_tokens,
            width,
            height,
            choice,
        } => {
            let engine = engine(explorer);
            let pixels = message.bytes.into_iter().next().unwrap_or_default();
            let Some(image) = image::RgbImage::from_raw(width, height, pixels) else {
                return scope::post(Envelope::new(
                    explorer,
                    Reply::RunFailed {
                        run,
                        message: format!("the image is not {width}x{height} RGB"),
                    },
                ));
            };
            // Marked current at once, so an older run stops at its next token.
            engine.borrow_mut().current_run = run;
            spawn_local(engine::run(
                engine,
                run,
                prompt,
                max_new_tokens,
                image,
                choice,
            ));
        }
        Request::Maps { run, choice } => {
            let engine = engine(explorer);
            spawn_local(async move {
                let result = engine::send_maps(&engine, run, choice.clone()).await;
                if let Err(message) = result {
                    scope::post(Envelope::new(
                        explorer,
                        Reply::MapsFailed {
                            run,
                            choice,
                            message,
                        },
                    ));
                }
            });
        }
        Request::HeadMaps { run, word } => {
            let engine = engine(explorer);
            spawn_local(async move {
                if let Err(message) = engine::send_head_maps(&engine, run, word).await {
                    scope::post(Envelope::new(
                        explorer,
                        Reply::HeadMapsFailed { run, word, message },
                    ));
                }
            });
        }
        Request::Stop { run } => {
            let engine = engine(explorer);
            let mut engine = engine.borrow_mut();
            engine.current_run = engine.current_run.max(run);
        }
        Request::Close => {
            if let Some(engine) = ENGINES.with_borrow_mut(|engines| engines.remove(&explorer)) {
                engine.borrow_mut().closed = true;
            }
        }
    }
}

/// Tells the page that the worker panicked (from the panic hook).
pub fn announce_panic(message: &str) {
    scope::post(Envelope::new(
        0,
        Reply::Panic {
            message: message.to_string(),
        },
    ));
}
