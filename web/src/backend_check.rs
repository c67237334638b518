//! The page's proof that Burn runs here: pick WebGPU or the CPU, compute the core's attention
//! probe, read it back asynchronously (a browser cannot block) and compare with the expected
//! values. The outcome is also written to `data-*` attributes for the end-to-end test.

use lavender_core::probe::{PROBE_EXPECTED, attention_probe, check_attention_probe};
use leptos::{prelude::*, task::spawn_local};

use crate::{
    device::{Backend, Chosen, choose_device},
    js::now_ms,
};

#[derive(Clone, Debug)]
struct CheckOutcome {
    backend: Backend,
    /// Why the CPU runs instead of WebGPU, when it does.
    fallback_reason: Option<String>,
    /// The probabilities read back, or why they could not be.
    values: Result<Vec<f32>, String>,
    /// `Ok` when the values match the expected ones.
    verdict: Result<(), String>,
    elapsed_ms: f64,
}

async fn run_check() -> CheckOutcome {
    let Chosen {
        backend,
        device,
        fallback_reason,
    } = choose_device(false).await;
    let started = now_ms();
    let values = match attention_probe(&device).into_data_async().await {
        Ok(data) => data
            .try_to_vec::<f32>()
            .map_err(|error| format!("unexpected data type: {error:?}")),
        Err(error) => Err(format!("reading the result failed: {error:?}")),
    };
    let elapsed_ms = now_ms() - started;
    let verdict = match &values {
        Ok(values) => check_attention_probe(values).map_err(|mismatch| mismatch.to_string()),
        Err(error) => Err(error.clone()),
    };
    CheckOutcome {
        backend,
        fallback_reason,
        values,
        verdict,
        elapsed_ms,
    }
}

fn format_row(values: &[f32]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.6}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn outcome_view(outcome: CheckOutcome) -> impl IntoView {
    let status = if outcome.verdict.is_ok() {
        "ok"
    } else {
        "failed"
    };
    // Shortest round-trip representation, so the test compares exact f32 values.
    let raw_values = outcome
        .values
        .as_ref()
        .map(|values| {
            values
                .iter()
                .map(f32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let computed = match &outcome.values {
        Ok(values) => values
            .chunks(3)
            .map(format_row)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(error) => error.clone(),
    };
    let expected = PROBE_EXPECTED
        .chunks(3)
        .map(format_row)
        .collect::<Vec<_>>()
        .join("\n");
    let verdict = match &outcome.verdict {
        Ok(()) => "matches the expected values".to_string(),
        Err(error) => format!("wrong result: {error}"),
    };
    let elapsed = match outcome.backend {
        // The first WebGPU dispatch compiles its shaders.
        Backend::WebGpu => format!("{:.1} ms, shader compilation included", outcome.elapsed_ms),
        Backend::Cpu => format!("{:.1} ms", outcome.elapsed_ms),
    };
    view! {
        <section
            id="backend-check"
            class=status
            data-status=status
            data-backend=outcome.backend.id()
            data-values=raw_values
        >
            <h2>"Backend check"</h2>
            <dl>
                <dt>"Backend"</dt>
                <dd id="backend">{outcome.backend.label()}</dd>
                <dt>"Computation"</dt>
                <dd>"softmax(q kᵀ / √4): attention of 2 queries over 3 keys"</dd>
                <dt>"Computed"</dt>
                <dd><pre id="values">{computed}</pre></dd>
                <dt>"Expected"</dt>
                <dd><pre>{expected}</pre></dd>
                <dt>"Verdict"</dt>
                <dd id="verdict">{verdict}</dd>
                <dt>"Time"</dt>
                <dd id="elapsed">{elapsed}</dd>
            </dl>
            {outcome
                .fallback_reason
                .map(|reason| view! { <p id="fallback-reason" class="note">{reason}</p> })}
        </section>
    }
}

/// Runs the check once when mounted and shows its outcome.
#[component]
pub fn BackendCheck() -> impl IntoView {
    let outcome = RwSignal::new(None::<CheckOutcome>);
    spawn_local(async move {
        outcome.set(Some(run_check().await));
    });
    move || match outcome.get() {
        None => view! {
            <section id="backend-check" data-status="running">
                <h2>"Backend check"</h2>
                <p>"Starting Burn…"</p>
            </section>
        }
        .into_any(),
        Some(outcome) => outcome_view(outcome).into_any(),
    }
}
