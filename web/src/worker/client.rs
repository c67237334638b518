//! The page's side of the channel: one inference worker per page, started on first use and
//! shared by every explorer, each registered under its own id. Requests sent before the
//! worker is ready wait in a queue. When the worker panics or fails to start, every explorer
//! hears of it and the worker is dropped; the next request starts a fresh one.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
};

use wasm_bindgen::{JsCast, prelude::*};

use super::protocol::{Envelope, Reply, Request};
use crate::js::describe;

#[wasm_bindgen(inline_js = r#"
// wasm-bindgen places this snippet at pkg/snippets/<crate>/inline0.js: the module's glue is
// two folders up. The worker is a module script that imports it, receives the page's compiled
// WebAssembly module as its first message (so it is not compiled a second time), starts it
// and enters `worker_main`.
export function spawn_lavender_worker(module) {
  const glue = new URL("../../lavender-web.js", import.meta.url).href;
  const source =
    `import init, { worker_main } from ${JSON.stringify(glue)};\n` +
    `self.onmessage = async (event) => {\n` +
    `  self.onmessage = null;\n` +
    `  try {\n` +
    `    await init({ module_or_path: event.data });\n` +
    `  } catch (error) {\n` +
    `    const message = "the WebAssembly module could not start in the worker: " + error;\n` +
    `    self.postMessage({ explorer: 0, header: JSON.stringify({ kind: "panic", message }) });\n` +
    `    return;\n` +
    `  }\n` +
    `  worker_main();\n` +
    `};\n`;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  let worker;
  try {
    worker = new Worker(url, { type: "module", name: "lavender-inference" });
    worker.postMessage(module);
  } catch (error) {
    worker?.terminate();
    URL.revokeObjectURL(url);
    throw error;
  }
  // The script is fetched once the worker starts: the URL goes with its first word.
  const revoke = () => URL.revokeObjectURL(url);
  worker.addEventListener("message", revoke, { once: true });
  worker.addEventListener("error", revoke, { once: true });
  return worker;
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    fn spawn_lavender_worker(module: &JsValue) -> Result<web_sys::Worker, JsValue>;
}

type Handler = Rc<dyn Fn(Envelope<Reply>)>;

struct PageWorker {
    worker: web_sys::Worker,
    ready: bool,
    queue: Vec<Envelope<Request>>,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

thread_local! {
    static WORKER: RefCell<Option<PageWorker>> = const { RefCell::new(None) };
    static HANDLERS: RefCell<HashMap<u32, Handler>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u32> = const { Cell::new(1) };
}

/// One explorer's connection to the worker; dropping it closes the explorer's side there.
pub struct Link {
    id: u32,
}

impl Link {
    /// Registers `handler` for the replies meant for this explorer.
    pub fn open(handler: impl Fn(Envelope<Reply>) + 'static) -> Self {
        let id = NEXT_ID.replace(NEXT_ID.get() + 1);
        HANDLERS.with_borrow_mut(|handlers| handlers.insert(id, Rc::new(handler)));
        Self { id }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `body` with its payloads (`message.explorer` is set here).
    pub fn send(&self, mut message: Envelope<Request>) {
        message.explorer = self.id;
        send(message);
    }

    pub fn request(&self, body: Request) {
        self.send(Envelope::new(self.id, body));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        close(self.id);
    }
}

/// Unregisters explorer `id` and lets the worker free its model; the last one to go stops the
/// worker (wasm memory never shrinks, so only that returns it to the browser).
pub fn close(id: u32) {
    let (known, left) = HANDLERS.with_borrow_mut(|handlers| {
        let known = handlers.remove(&id).is_some();
        (known, handlers.len())
    });
    if !known || WORKER.with_borrow(Option::is_none) {
        return;
    }
    if left == 0 {
        stop_worker();
    } else {
        send(Envelope::new(id, Request::Close));
    }
}

fn send(message: Envelope<Request>) {
    let started = WORKER.with_borrow(Option::is_some) || start().is_ok();
    if !started {
        return;
    }
    WORKER.with_borrow_mut(|worker| {
        let Some(worker) = worker else { return };
        if worker.ready {
            post(&worker.worker, &message);
        } else {
            worker.queue.push(message);
        }
    });
}

fn post(worker: &web_sys::Worker, message: &Envelope<Request>) {
    let (value, transfer) = message.to_js();
    if let Err(error) = worker.post_message_with_transfer(&value, &transfer) {
        let reason = format!("cannot send to the inference worker: {}", describe(&error));
        // Told later: this runs while the worker's state is borrowed.
        let explorer = message.explorer;
        defer(move || {
            dispatch(Envelope::new(
                explorer,
                Reply::SendFailed { message: reason },
            ))
        });
    }
}

/// Runs `task` from the event loop, after the current call returns.
fn defer(task: impl FnOnce() + 'static) {
    let task = Closure::once_into_js(task);
    if let Some(set_timeout) = js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    {
        let _ = set_timeout.call1(&JsValue::UNDEFINED, &task);
    }
}

/// Terminates the worker, if one runs. Its event handlers are detached first, so nothing it
/// had already sent is delivered afterwards.
fn stop_worker() {
    if let Some(worker) = WORKER.take() {
        worker.worker.set_onmessage(None);
        worker.worker.set_onerror(None);
        worker.worker.terminate();
        // Its closures may be running this very call: they go when the call returns.
        let PageWorker {
            _on_message,
            _on_error,
            ..
        } = worker;
        let closures = (_on_message, _on_error);
        defer(move || drop(closures));
    }
}

/// Starts the worker; on failure every explorer is told why.
fn start() -> Result<(), ()> {
    let worker = match spawn_lavender_worker(&wasm_bindgen::module()) {
        Ok(worker) => worker,
        Err(error) => {
            broadcast_failure(format!(
                "this browser cannot start the inference worker (a module Web Worker): {}",
                describe(&error)
            ));
            return Err(());
        }
    };
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|event: web_sys::MessageEvent| {
            match Envelope::<Reply>::from_js(&event.data()) {
                Ok(message) => receive(message),
                Err(error) => broadcast_failure(format!("a bad message from the worker: {error}")),
            }
        });
    // A plain `Event` when the worker cannot start at all (a content security policy
    // refusing it, its script failing to load), an `ErrorEvent` for an uncaught error in it.
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(|event: web_sys::Event| {
        event.prevent_default();
        let message = js_sys::Reflect::get(&event, &"message".into())
            .ok()
            .and_then(|message| message.as_string())
            .unwrap_or_default();
        broadcast_failure(if message.is_empty() {
            "the inference worker could not start (a content security policy may forbid \
             `blob:` workers on this page, or its script or WebAssembly module could not be \
             loaded)"
                .to_string()
        } else {
            format!("the inference worker failed: {message}")
        });
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    WORKER.set(Some(PageWorker {
        worker,
        ready: false,
        queue: Vec::new(),
        _on_message: on_message,
        _on_error: on_error,
    }));
    Ok(())
}

fn receive(message: Envelope<Reply>) {
    match &message.body {
        Reply::Ready => WORKER.with_borrow_mut(|worker| {
            if let Some(worker) = worker {
                worker.ready = true;
                for queued in std::mem::take(&mut worker.queue) {
                    post(&worker.worker, &queued);
                }
            }
        }),
        Reply::Panic { message } => broadcast_failure(message.clone()),
        _ => dispatch(message),
    }
}

fn dispatch(message: Envelope<Reply>) {
    let handler = HANDLERS.with_borrow(|handlers| handlers.get(&message.explorer).cloned());
    if let Some(handler) = handler {
        handler(message);
    }
}

/// The worker is lost: it is stopped, and every explorer hears `message`.
fn broadcast_failure(message: String) {
    stop_worker();
    let handlers: Vec<(u32, Handler)> = HANDLERS.with_borrow(|handlers| {
        handlers
            .iter()
            .map(|(id, handler)| (*id, handler.clone()))
            .collect()
    });
    for (id, handler) in handlers {
        handler(Envelope::new(
            id,
            Reply::Panic {
                message: message.clone(),
            },
        ));
    }
}
