//! End-to-end checks of `lavender devices` through the real binary.

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use common::lavender;
use serde_json::Value;

fn json_report(args: &[&str]) -> Value {
    let output = lavender(args);
    assert!(
        output.status.success(),
        "lavender {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// The full report, produced once: checking every adapter compiles kernels (seconds on a
/// software adapter in a debug build).
fn full_report() -> &'static Value {
    static REPORT: OnceLock<Value> = OnceLock::new();
    REPORT.get_or_init(|| json_report(&["devices", "--json"]))
}

#[test]
fn cpu_backend_is_listed_and_passes_the_probe() {
    let report = full_report();
    let devices = report["devices"].as_array().unwrap();
    let cpu = devices
        .iter()
        .find(|device| device["device"] == "cpu")
        .expect("the CPU backend is always listed");
    assert_eq!(cpu["backend"], "flex");
    assert_eq!(cpu["ok"], true, "{cpu}");
    assert!(cpu["probe_ms"].as_f64().unwrap() >= 0.0);
}

/// Every backend compiled in shows up, either as devices or with the reason it has none;
/// CUDA in particular is never silently missing.
#[test]
fn every_backend_is_accounted_for() {
    let report = full_report();
    for backend in ["cuda", "wgpu"] {
        let listed = report["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|device| device["backend"] == backend);
        let reason = report["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["backend"] == backend)
            .map(|entry| entry["reason"].as_str().unwrap().to_string());
        assert!(
            listed ^ reason.is_some(),
            "{backend}: listed={listed}, reason={reason:?}"
        );
        if let Some(reason) = reason {
            assert!(reason.len() > 20, "{backend} reason too vague: {reason}");
        }
    }
}

/// On these CI machines there is no NVIDIA driver; the reason must say so. Skipped where a
/// driver exists (a GPU machine lists the devices instead, checked above).
#[test]
fn missing_cuda_driver_is_explained() {
    let report = full_report();
    let Some(cuda) = report["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["backend"] == "cuda")
    else {
        return;
    };
    let reason = cuda["reason"].as_str().unwrap();
    assert!(reason.contains("libcuda"), "{reason}");
}

/// The software Vulkan adapter (Mesa lavapipe), which `scripts/setup.sh` installs, runs the
/// probe. Set LAVENDER_EXPECT_LAVAPIPE=0 to skip on machines without it.
#[test]
fn lavapipe_vulkan_adapter_runs_the_probe() {
    if std::env::var("LAVENDER_EXPECT_LAVAPIPE").as_deref() == Ok("0") {
        return;
    }
    let report = full_report();
    let lavapipe = report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|device| {
            device["backend"] == "wgpu"
                && device["details"].as_str().unwrap().starts_with("Vulkan")
                && device["name"].as_str().unwrap().contains("llvmpipe")
        })
        .unwrap_or_else(|| panic!("no lavapipe Vulkan adapter in {report:#}"));
    assert_eq!(lavapipe["ok"], true, "{lavapipe}");

    // The listed spec opens the same adapter on its own.
    let spec = lavapipe["device"].as_str().unwrap();
    let single = json_report(&["devices", "--device", spec, "--json"]);
    assert_eq!(single["devices"][0]["ok"], true, "{single}");
    assert_eq!(single["devices"][0]["name"], lavapipe["name"]);
}

#[test]
fn checking_a_missing_device_fails_with_a_reason() {
    let output = lavender(&["devices", "--device", "wgpu:99"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wgpu:99 does not exist"), "{stderr}");
}

#[test]
fn a_bad_device_spec_is_a_usage_error() {
    let output = lavender(&["devices", "--device", "tpu:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("expected cuda[:N], wgpu[:N] or cpu"),
        "{stderr}"
    );
}
