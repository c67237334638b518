//! A bundle's files in memory ([`BundleFiles`]) and their checks against the manifest.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::manifest::{BUNDLE_FORMAT, BUNDLE_VERSION, BundleError, MANIFEST_FILE, Manifest};

/// A bundle's files in memory, by name; `label` (its folder or URL) names them in errors.
#[derive(Debug, Clone, Default)]
pub struct BundleFiles {
    pub(super) label: PathBuf,
    pub(super) files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    pub fn new(label: impl Into<PathBuf>) -> Self {
        Self {
            label: label.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(name.into(), bytes);
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// File names and contents, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
    }

    pub fn label(&self) -> &Path {
        &self.label
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.label.join(name)
    }

    /// Parses `manifest.json` and checks its format and version.
    pub fn manifest(&self) -> Result<Manifest, BundleError> {
        let path = self.path(MANIFEST_FILE);
        let bytes = self
            .get(MANIFEST_FILE)
            .ok_or_else(|| BundleError::Manifest {
                path: path.clone(),
                reason:
                    "missing: not a lavender web bundle (export one with `lavender export-web`)"
                        .into(),
            })?;
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| BundleError::Manifest {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if manifest.format != BUNDLE_FORMAT || manifest.version != BUNDLE_VERSION {
            return Err(BundleError::Manifest {
                path,
                reason: format!(
                    "format `{}` version {}, expected `{BUNDLE_FORMAT}` version {BUNDLE_VERSION}",
                    manifest.format, manifest.version
                ),
            });
        }
        if let Some(name) = manifest.files.keys().find(|name| !is_plain_name(name)) {
            return Err(BundleError::Manifest {
                path,
                reason: format!(
                    "lists the file {name:?}: a bundle names plain files inside its folder only \
                     (letters, digits, `.`, `-` and `_`, not starting with `.`)"
                ),
            });
        }
        Ok(manifest)
    }

    /// Checks that every file the manifest lists is here with its size (cheap; no hashing).
    pub fn check_sizes(&self, manifest: &Manifest) -> Result<(), BundleError> {
        for (name, entry) in &manifest.files {
            let bytes = self.get(name).ok_or_else(|| BundleError::Missing {
                path: self.path(name),
                expected: entry.size,
            })?;
            if bytes.len() as u64 != entry.size {
                return Err(BundleError::Size {
                    path: self.path(name),
                    expected: entry.size,
                    found: bytes.len() as u64,
                });
            }
        }
        Ok(())
    }

    /// The manifest, after checking every listed file's size and SHA-256.
    pub fn verify(&self) -> Result<Manifest, BundleError> {
        let manifest = self.manifest()?;
        self.check_sizes(&manifest)?;
        for (name, entry) in &manifest.files {
            let found = sha256_hex(self.get(name).expect("checked above"));
            if !found.eq_ignore_ascii_case(&entry.sha256) {
                return Err(BundleError::Digest {
                    path: self.path(name),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
        }
        Ok(manifest)
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `name` is a plain file name a bundle may list: 1 to 255 ASCII letters, digits, `.`,
/// `-` and `_`, not starting with `.`. So no path (`../x`, `/dev/zero`, `a/b`, `C:\x`), no
/// hidden file, and the same name as a URL relative to the bundle (the browser fetches it so).
pub fn is_plain_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
