//! The worker's side of the channel: posting replies to the page.

use wasm_bindgen::JsCast;

use super::protocol::{Envelope, Reply};

/// Posts `message` to the page, moving its buffers.
pub fn post(message: Envelope<Reply>) {
    let (value, transfer) = message.to_js();
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    // Fails only for values that cannot be cloned, which a protocol message never holds.
    let _ = scope.post_message_with_transfer(&value, &transfer);
}
