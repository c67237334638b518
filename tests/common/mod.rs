//! Helpers shared by the end-to-end tests of the `lavender` binary (each test file includes
//! this module with `#[path = "common/mod.rs"] mod common;`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use safetensors::SafeTensors;

/// The fixture folder `tests/fixtures/{name}`.
#[allow(dead_code)]
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Runs the `lavender` binary with `args` and waits for it.
#[allow(dead_code)]
pub fn lavender(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lavender"))
        .args(args)
        .output()
        .expect("the lavender binary runs")
}

/// A fresh, empty folder in the system's temporary folder, unique to this test process.
#[allow(dead_code)]
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lavender-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The standard output of a run that must have succeeded.
#[allow(dead_code)]
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The standard error of a run that must have failed with exit code 1.
#[allow(dead_code)]
pub fn failure(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The shape and values of the f32 tensor `name`.
#[allow(dead_code)]
pub fn f32s(tensors: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = tensors.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

/// Every tensor of the safetensors `file` (all f32), sorted by name: name, shape and values.
#[allow(dead_code)]
pub fn f32_tensors(file: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = fs::read(file).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (shape, values) = f32s(&tensors, &name);
            (name, shape, values)
        })
        .collect()
}
