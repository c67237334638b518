//! Getting a model bundle's bytes into the page: fetched from a URL (with progress, and kept
//! in the Cache API so a second visit downloads nothing) or read from files the user picked.
//! Every file is checked against `manifest.json` (size and SHA-256) before anything loads it;
//! only checked files are cached, keyed by their digest, so a changed bundle is fetched anew.
//! Nothing is downloaded past what the manifest announces: the manifest itself is capped, a
//! bundle larger than wasm32 can hold is refused before its download, the small files come
//! first so the caller can refuse a model too large for the device before the weights are
//! fetched, and each file's download stops at its listed size.

use js_sys::{Reflect, Uint8Array};
use lavender_core::bundle::{
    BundleError, BundleFiles, MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, WEIGHTS_FILE,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js::{self, describe};

const CACHE_NAME: &str = "lavender-bundles-v1";

/// The most bundle bytes a page downloads: wasm32 addresses 4 GiB in all, and the bytes are
/// held while the model is built from them.
pub const MAX_BUNDLE_BYTES: u64 = 2 << 30;

/// Download progress over the whole bundle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Files served from the cache.
    pub cached: usize,
    pub file: String,
}

/// A verified bundle and how it was obtained.
pub struct Fetched {
    pub files: BundleFiles,
    pub manifest: Manifest,
    pub cached: usize,
}

/// Fetches the bundle at `base` (a folder URL), every file checked against the manifest.
/// `before_weights` sees the files fetched so far (all but the weights) before the weights'
/// download starts; its error ends the load there.
pub async fn fetch_bundle(
    base: &str,
    on_progress: &dyn Fn(Progress),
    before_weights: &dyn Fn(&BundleFiles) -> Result<(), String>,
) -> Result<Fetched, String> {
    let base = if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    let mut files = BundleFiles::new(&base);
    let manifest_url = js::resolve_url(MANIFEST_FILE, &base)?;
    // The manifest is always fetched fresh: it is what says whether cached files are current.
    let manifest_bytes = fetch_bytes(&manifest_url, MAX_MANIFEST_BYTES, &mut |_| {}).await?;
    files.insert(MANIFEST_FILE, manifest_bytes);
    let manifest = files.manifest().map_err(|error| error.to_string())?;
    let total = manifest
        .files
        .values()
        .fold(0u64, |sum, entry| sum.saturating_add(entry.size));
    if total > MAX_BUNDLE_BYTES {
        return Err(format!(
            "{manifest_url} lists {total} bytes of files, more than the {MAX_BUNDLE_BYTES} a \
             page can hold (wasm32): nothing was downloaded"
        ));
    }
    let cache = open_cache().await;
    let mut progress = Progress {
        total,
        ..Progress::default()
    };
    let mut fresh = Vec::new();
    // The weights last: everything else (configs, tokenizer, Aligner, examples) is small.
    let (weights, small): (Vec<_>, Vec<_>) = manifest
        .files
        .iter()
        .partition(|(name, _)| name.as_str() == WEIGHTS_FILE);
    for (name, entry) in small.into_iter().chain(weights) {
        if name == WEIGHTS_FILE {
            before_weights(&files)?;
        }
        let url = js::resolve_url(name, &base)?;
        let key = cache_key(&url, &entry.sha256);
        progress.file = name.clone();
        on_progress(progress.clone());
        let cached = match &cache {
            Some(cache) => cache_get(cache, &key).await,
            None => None,
        };
        let bytes = match cached {
            Some(bytes) => {
                progress.cached += 1;
                progress.done += entry.size;
                bytes
            }
            None => {
                let before = progress.done;
                let bytes = fetch_bytes(&url, entry.size, &mut |received| {
                    progress.done = before + received;
                    on_progress(progress.clone());
                })
                .await?;
                fresh.push(key);
                bytes
            }
        };
        files.insert(name.clone(), bytes);
    }
    progress.done = progress.total;
    on_progress(progress.clone());
    if let Err(error) = files.verify() {
        // A damaged file that came from the cache must not be served again.
        if let (Some(cache), BundleError::Digest { .. } | BundleError::Size { .. }) =
            (&cache, &error)
        {
            for (name, entry) in &manifest.files {
                if let Ok(url) = js::resolve_url(name, &base) {
                    let _ = JsFuture::from(cache.delete_with_str(&cache_key(&url, &entry.sha256)))
                        .await;
                }
            }
        }
        return Err(error.to_string());
    }
    if let Some(cache) = &cache {
        for (name, entry) in &manifest.files {
            let Ok(url) = js::resolve_url(name, &base) else {
                continue;
            };
            let key = cache_key(&url, &entry.sha256);
            if fresh.contains(&key)
                && let Some(bytes) = files.get(name)
            {
                cache_put(cache, &key, bytes).await;
            }
        }
        if !fresh.is_empty() {
            ask_persistent_storage();
        }
    }
    Ok(Fetched {
        files,
        manifest,
        cached: progress.cached,
    })
}

/// Asks the browser not to evict the cached models under storage pressure
/// (`navigator.storage.persist()`); it may say no, and the models are then merely cached.
fn ask_persistent_storage() {
    let persist = js::navigator()
        .and_then(|navigator| Reflect::get(&navigator, &JsValue::from_str("storage")).ok())
        .filter(JsValue::is_object)
        .and_then(|storage| {
            let persist = Reflect::get(&storage, &JsValue::from_str("persist")).ok()?;
            Some((storage, persist.dyn_into::<js_sys::Function>().ok()?))
        });
    if let Some((storage, persist)) = persist {
        // A promise the page need not wait for.
        let _ = persist.call0(&storage);
    }
}

/// Deletes every cached bundle file of this site; `Ok(false)` when there was no cache.
pub async fn clear_cache() -> Result<bool, String> {
    let Some(caches) = js::caches() else {
        return Ok(false);
    };
    let deleted = JsFuture::from(caches.delete(CACHE_NAME))
        .await
        .map_err(|error| format!("cannot clear the cached models: {}", describe(&error)))?;
    Ok(deleted.as_bool().unwrap_or(false))
}

/// A bundle from files the user picked (all of a bundle folder's files, by name).
pub async fn bundle_from_files(picked: Vec<web_sys::File>) -> Result<Fetched, String> {
    let mut files = BundleFiles::new("local files/");
    for file in &picked {
        files.insert(file.name(), js::file_bytes(file).await?);
    }
    if files.get(MANIFEST_FILE).is_none() {
        return Err(format!(
            "no {MANIFEST_FILE} among the {} picked files: pick every file of a bundle folder \
             (made by `lavender export-web`)",
            picked.len()
        ));
    }
    let manifest = files.verify().map_err(|error| error.to_string())?;
    Ok(Fetched {
        files,
        manifest,
        cached: 0,
    })
}

/// Fetches `url` into memory, reporting the bytes received so far as they come; stops with an
/// error (and cancels the download) once the response is longer than `limit` bytes.
pub async fn fetch_bytes(
    url: &str,
    limit: u64,
    on_received: &mut dyn FnMut(u64),
) -> Result<Vec<u8>, String> {
    let too_long = || {
        format!(
            "{url} is longer than the {limit} bytes expected (the manifest's size, or the cap on \
             a manifest): download stopped"
        )
    };
    let init = web_sys::RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoStore);
    let response = JsFuture::from(js::fetch(url, &init))
        .await
        .map_err(|error| format!("cannot fetch {url}: {}", describe(&error)))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(format!(
            "cannot fetch {url}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let announced = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|length| length.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(too_long());
    }
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|error| format!("download of {url} failed: {}", describe(&error)))?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|done| done.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        if let Ok(value) = Reflect::get(&chunk, &JsValue::from_str("value")) {
            let value: Uint8Array = value.unchecked_into();
            if bytes.len() as u64 + u64::from(value.length()) > limit {
                let _ = reader.cancel();
                return Err(too_long());
            }
            bytes.extend(value.to_vec());
        }
        on_received(bytes.len() as u64);
    }
    Ok(bytes)
}

fn cache_key(url: &str, sha256: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}lavender-sha256={sha256}")
}

/// The page's bundle cache; `None` where the Cache API is unavailable (then nothing is cached).
async fn open_cache() -> Option<web_sys::Cache> {
    let storage = js::caches()?;
    JsFuture::from(storage.open(CACHE_NAME))
        .await
        .ok()
        .map(JsCast::unchecked_into)
}

async fn cache_get(cache: &web_sys::Cache, key: &str) -> Option<Vec<u8>> {
    let found = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    let response: web_sys::Response = found.dyn_into().ok()?;
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(Uint8Array::new(&buffer).to_vec())
}

/// Best effort: a full or refused cache only means the next visit downloads again.
async fn cache_put(cache: &web_sys::Cache, key: &str, bytes: &[u8]) {
    let mut copy = bytes.to_vec();
    if let Ok(response) = web_sys::Response::new_with_opt_u8_array(Some(&mut copy)) {
        let _ = JsFuture::from(cache.put_with_str(key, &response)).await;
    }
}
