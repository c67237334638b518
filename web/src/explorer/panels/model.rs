//! The model bundle: a URL to load it from, or its files picked from the disk; and the load's
//! status and progress, shown in every layout.

use std::rc::Rc;

use leptos::prelude::*;

use crate::{
    explorer::{
        requests::load_model,
        state::{ModelState, Shared, Ui},
    },
    js::now_ms,
    worker::client::Link,
};

use super::event_target;

#[component]
pub(in crate::explorer) fn ModelPanel(
    link: Rc<Link>,
    view_state: Shared,
    ui: Ui,
    /// Use the CPU even where WebGPU is available.
    force_cpu: RwSignal<bool>,
    model_url: RwSignal<String>,
) -> impl IntoView {
    let load_url = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move |_| {
            load_model(
                &link,
                &view_state,
                ui,
                force_cpu.get_untracked(),
                Some(model_url.get_untracked()),
                Vec::new(),
            )
        }
    };
    let load_files = move |event: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&event);
        let Some(list) = input.files() else { return };
        let picked: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        if !picked.is_empty() {
            load_model(
                &link,
                &view_state,
                ui,
                force_cpu.get_untracked(),
                None,
                picked,
            );
        }
    };

    let cache_note = RwSignal::new(String::new());
    let clear_cache = move |_| {
        leptos::task::spawn_local(async move {
            let note = match crate::bundle_source::clear_cache().await {
                Ok(true) => "Cached models cleared: the next load downloads again.".to_string(),
                Ok(false) => "No cached models.".to_string(),
                Err(error) => error,
            };
            if !cache_note.is_disposed() {
                cache_note.set(note);
            }
        });
    };

    view! {
        <fieldset class="lx-model">
            <legend>"Model bundle"</legend>
            <div class="lx-row">
                <label>
                    "Bundle URL "
                    <input
                        type="url"
                        class="lx-model-url"
                        prop:value=move || model_url.get()
                        on:input=move |ev| model_url.set(event_target_value(&ev))
                    />
                </label>
                <button type="button" class="lx-load-model" on:click=load_url>"Load"</button>
                <label class="lx-file">
                    "or bundle files "
                    <input type="file" class="lx-model-files" multiple on:change=load_files />
                </label>
                <button type="button" class="lx-clear-cache" on:click=clear_cache>"Clear cached models"</button>
            </div>
            <p class="lx-cache-note note" aria-live="polite">{move || cache_note.get()}</p>
        </fieldset>
    }
}

/// The load's status and, while the bundle downloads, its progress: megabytes of the total,
/// percent, and the time left at the rate so far.
#[component]
pub(in crate::explorer) fn LoadStatus(ui: Ui) -> impl IntoView {
    // When the current download started (ms), for the rate.
    let started = StoredValue::new(None::<f64>);
    Effect::new(move |_| {
        if ui.model_state.get() != ModelState::Loading {
            started.set_value(None);
        }
    });
    let progress_text = move |done: u64, total: u64| {
        let now = now_ms();
        let start = started.get_value().unwrap_or_else(|| {
            started.set_value(Some(now));
            now
        });
        progress_label(done, total, (now - start) / 1000.0)
    };
    view! {
        <div class="lx-load">
            <p class="lx-status" aria-live="polite">{move || ui.model_status.get()}</p>
            {move || ui.progress.get().filter(|_| ui.model_state.get() == ModelState::Loading).map(|p| view! {
                <progress class="lx-progress" max=p.total.max(1) value=p.done aria-label="download progress"></progress>
                <span class="lx-progress-text" title=p.file.clone()>{progress_text(p.done, p.total)}</span>
            })}
        </div>
    }
}

/// "3.2 of 5.1 MB (63%), about 4 s left": the time left only once a rate is known.
pub(in crate::explorer) fn progress_label(done: u64, total: u64, elapsed_s: f64) -> String {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let percent = if total > 0 {
        (done as f64 / total as f64 * 100.0).min(100.0)
    } else {
        0.0
    };
    let mut label = format!("{:.1} of {:.1} MB ({percent:.0}%)", mb(done), mb(total));
    if done > 0 && done < total && elapsed_s > 0.5 {
        let left = (total - done) as f64 / (done as f64 / elapsed_s);
        label += &format!(", about {} left", duration_label(left));
    }
    label
}

fn duration_label(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds.max(1.0))
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::progress_label;

    #[test]
    fn progress_says_megabytes_percent_and_time_left() {
        assert_eq!(progress_label(0, 5_100_000, 0.0), "0.0 of 5.1 MB (0%)");
        // 1 MB in 2 s: 4 MB more take 8 s.
        assert_eq!(
            progress_label(1_000_000, 5_000_000, 2.0),
            "1.0 of 5.0 MB (20%), about 8 s left"
        );
        assert_eq!(
            progress_label(1_000_000, 300_000_000, 1.0),
            "1.0 of 300.0 MB (0%), about 5 min left"
        );
        assert_eq!(
            progress_label(5_000_000, 5_000_000, 3.0),
            "5.0 of 5.0 MB (100%)"
        );
    }
}
