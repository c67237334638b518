//! How long the bundle took to load, the first token to come, and the decoding rate.

use leptos::prelude::*;

use crate::explorer::state::Ui;

#[component]
pub(in crate::explorer) fn TimingsPanel(ui: Ui) -> impl IntoView {
    view! {
        <dl class="lx-timings">
            <dt>"Bundle load"</dt>
            <dd class="lx-load-ms">{move || ui.timings.get().load_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into())}</dd>
            <dt>"First token"</dt>
            <dd class="lx-ttft-ms">{move || ui.timings.get().first_token_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into())}</dd>
            <dt>"Decoding"</dt>
            <dd class="lx-tokens-per-s">{move || ui.timings.get().tokens_per_s.map(|r| format!("{r:.1} tokens/s")).unwrap_or_else(|| "–".into())}</dd>
        </dl>
    }
}
