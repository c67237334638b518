//! The bar above the explorer (the backend the model runs on, and why it is the CPU when it
//! is) and the error shown below it.

use leptos::prelude::*;

use crate::explorer::state::Ui;

#[component]
pub(in crate::explorer) fn BackendBar(ui: Ui) -> impl IntoView {
    view! {
        <div class="lx-bar">
            <span class="lx-backend">
                "Backend: "
                <strong>{move || ui.backend.get().map(|(b, _)| b.label()).unwrap_or("starting…")}</strong>
            </span>
            {move || ui.backend.get().and_then(|(_, reason)| reason).map(|reason| view! {
                <span class="lx-fallback note">{reason}</span>
            })}
        </div>
    }
}

/// The failure shown now, if any (`.lx-error`, its kind in `data-kind`).
#[component]
pub(in crate::explorer) fn ErrorNotice(ui: Ui) -> impl IntoView {
    move || {
        ui.error.get().map(|(kind, message)| {
            view! {
                <p class="lx-error" role="alert" data-kind=kind.id()>{message}</p>
            }
        })
    }
}
