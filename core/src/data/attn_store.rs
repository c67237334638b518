//! Teacher maps on disk. A shard file (`maps-*.safetensors`) holds many samples: for each, a u8
//! tensor `[words, S, S]` named by the sample id (min-max maps x 255, lossless), and in the
//! metadata `samples` (JSON: id, text, image, words, token ids per sample) and `recipe`.
//! Shards are written whole (see the CLI), so a shard on disk is always complete.

use std::{collections::HashMap, io::Read, path::Path};

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::maps::WordMaps;

/// One sample as the store keeps it: what identifies it, and the teacher's word maps.
#[derive(Debug, Clone)]
pub struct StoredSample {
    pub id: String,
    pub text: String,
    pub image: String,
    /// The text's CLIP token ids.
    pub token_ids: Vec<u32>,
    pub maps: WordMaps,
}

/// A sample as a shard's `samples` metadata lists it (its maps are the tensor named `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SampleHeader {
    pub id: String,
    pub text: String,
    pub image: String,
    pub words: Vec<String>,
    pub token_ids: Vec<u32>,
    /// Map side `S`.
    pub side: usize,
}

/// Stored bytes back to maps in [0, 1].
pub fn dequantize(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| b as f32 / 255.0).collect()
}

/// Maps in [0, 1] to bytes (values outside are clamped; NaN becomes 0).
pub fn quantize(maps: &[f32]) -> Vec<u8> {
    maps.iter()
        .map(|&v| {
            if v.is_nan() {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            }
        })
        .collect()
}

/// The safetensors file with its header's keys in sorted order, so that the same samples give
/// the same bytes: `safetensors::serialize` takes the metadata as a `HashMap`, whose order
/// changes from one process to the next. Sorting keeps the header's length (same entries,
/// same compact JSON), so the data offsets stay valid; if it would not, the file is returned
/// as it was.
fn with_sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(length) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + length) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let Ok(mut sorted) = serde_json::to_vec(&sorted_keys(value)) else {
        return bytes;
    };
    let trimmed = header
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(0, |last| last + 1);
    if sorted.len() != trimmed {
        return bytes;
    }
    sorted.resize(length, b' ');
    bytes[8..8 + length].copy_from_slice(&sorted);
    bytes
}

/// `value` with every object's keys in sorted order (whatever map serde_json was built with).
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted_keys(value)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// Serialises a shard; `recipe` is the JSON of the extraction settings. Reads the maps from
/// their device.
pub fn shard_bytes(samples: &[StoredSample], recipe: &str) -> Result<Vec<u8>, String> {
    let mut headers = Vec::with_capacity(samples.len());
    let mut bytes = Vec::with_capacity(samples.len());
    for sample in samples {
        let values = sample
            .maps
            .to_values()
            .map_err(|error| format!("sample {}: {error}", sample.id))?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(format!(
                "sample {}: its maps hold {bad}: the teacher's computation overflowed or its \
                 weights are damaged; nothing was written",
                sample.id
            ));
        }
        bytes.push(quantize(&values));
        headers.push(SampleHeader {
            id: sample.id.clone(),
            text: sample.text.clone(),
            image: sample.image.clone(),
            words: sample.maps.words.clone(),
            token_ids: sample.token_ids.clone(),
            side: sample.maps.side(),
        });
    }
    let views = headers
        .iter()
        .zip(&bytes)
        .map(|(header, bytes)| {
            let shape = vec![header.words.len(), header.side, header.side];
            TensorView::new(Dtype::U8, shape, bytes)
                .map(|view| (header.id.as_str(), view))
                .map_err(|error| format!("sample {}: {error}", header.id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([
        (
            "samples".to_string(),
            serde_json::to_string(&headers).map_err(|e| e.to_string())?,
        ),
        ("recipe".to_string(), recipe.to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    Ok(with_sorted_header(bytes))
}

fn samples_metadata(path: &Path, header: &str) -> Result<Vec<SampleHeader>, DataError> {
    let format = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(header).map_err(|e| format(format!("bad header: {e}")))?;
    let samples = json["__metadata__"]["samples"]
        .as_str()
        .ok_or_else(|| format("no `samples` metadata: not a lavender maps shard".into()))?;
    serde_json::from_str(samples).map_err(|e| format(format!("bad `samples` metadata: {e}")))
}

/// A shard's header (its length in bytes, and the JSON), reading nothing else.
pub(crate) fn read_header(path: &Path) -> Result<(u64, String), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| DataError::Format {
            path: path.to_path_buf(),
            reason: "shorter than a safetensors header: truncated or not a shard".into(),
        })?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("header of {length} bytes: not a safetensors file"),
        });
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|_| DataError::Format {
            path: path.to_path_buf(),
            reason: format!("truncated: the header announces {length} bytes"),
        })?;
    let header = String::from_utf8(header).map_err(|_| DataError::Format {
        path: path.to_path_buf(),
        reason: "header is not UTF-8".into(),
    })?;
    Ok((length, header))
}

/// The samples of a shard as its header lists them.
pub(crate) fn read_shard_metadata(
    path: &Path,
    header: &str,
) -> Result<Vec<SampleHeader>, DataError> {
    samples_metadata(path, header)
}

/// The sample ids in a shard, reading only its header.
pub fn read_shard_ids(path: &Path) -> Result<Vec<String>, DataError> {
    let (_, header) = read_header(path)?;
    Ok(samples_metadata(path, &header)?
        .into_iter()
        .map(|sample| sample.id)
        .collect())
}

/// Every sample of a shard, maps included (on `device`).
pub fn read_shard(path: &Path, device: &Device) -> Result<Vec<StoredSample>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let header_length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_length])
        .map_err(|_| format("header is not UTF-8".into()))?;
    let mut samples = Vec::new();
    for header in samples_metadata(path, header)? {
        let view = tensors
            .tensor(&header.id)
            .map_err(|e| format(format!("sample {}: {e}", header.id)))?;
        let expected = [header.words.len(), header.side, header.side];
        if view.dtype() != Dtype::U8 || view.shape() != expected {
            return Err(format(format!(
                "sample {}: {:?} {:?}, expected U8 {expected:?}",
                header.id,
                view.dtype(),
                view.shape()
            )));
        }
        let maps =
            WordMaps::from_values(header.words, header.side, dequantize(view.data()), device)
                .map_err(|error| format(format!("sample {}: {error}", header.id)))?;
        samples.push(StoredSample {
            id: header.id,
            text: header.text,
            image: header.image,
            token_ids: header.token_ids,
            maps,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        id: &str,
        text: &str,
        words: &[&str],
        token_ids: Vec<u32>,
        bytes: &[u8],
    ) -> StoredSample {
        let words = words.iter().map(|w| w.to_string()).collect();
        StoredSample {
            id: id.into(),
            text: text.into(),
            image: format!("images/{id}"),
            token_ids,
            maps: WordMaps::from_values(words, 2, dequantize(bytes), &Device::flex()).unwrap(),
        }
    }

    /// What a sample holds, its maps as stored bytes.
    fn stored(
        sample: &StoredSample,
    ) -> (
        String,
        String,
        String,
        Vec<String>,
        Vec<u32>,
        usize,
        Vec<u8>,
    ) {
        (
            sample.id.clone(),
            sample.text.clone(),
            sample.image.clone(),
            sample.maps.words.clone(),
            sample.token_ids.clone(),
            sample.maps.side(),
            quantize(&sample.maps.to_values().unwrap()),
        )
    }

    #[test]
    fn shards_round_trip_and_ids_come_from_the_header() {
        let bytes = [0, 255, 128, 1, 2, 3, 4, 5];
        let samples = vec![
            sample(
                "1.jpg",
                "a dog",
                &["a", "dog"],
                vec![49406, 320, 1929, 49407],
                &bytes,
            ),
            sample("2.jpg", "!", &[], vec![], &[]),
        ];
        let dir = std::env::temp_dir().join(format!("lavender-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("maps-00000.safetensors");
        let shard = shard_bytes(&samples, "{\"recipe\":\"noise\"}").unwrap();
        // The same samples give the same bytes (the metadata's HashMap order varies).
        for _ in 0..20 {
            assert!(shard_bytes(&samples, "{\"recipe\":\"noise\"}").unwrap() == shard);
        }
        std::fs::write(&path, shard).unwrap();
        assert_eq!(read_shard_ids(&path).unwrap(), vec!["1.jpg", "2.jpg"]);
        let read = read_shard(&path, &Device::flex()).unwrap();
        assert_eq!(
            read.iter().map(stored).collect::<Vec<_>>(),
            samples.iter().map(stored).collect::<Vec<_>>()
        );
        // The stored bytes survive the round trip through f32 exactly.
        assert_eq!(stored(&read[0]).6, bytes);

        std::fs::write(&path, b"not a shard").unwrap();
        assert!(read_shard_ids(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Maps holding NaN (a NaN teacher gives NaN maps) are an error naming the sample, not
    /// all-zero bytes in a shard.
    #[test]
    fn non_finite_maps_are_not_written() {
        let mut nan = sample("3.jpg", "a dog", &["dog"], vec![1], &[0, 0, 0, 0]);
        nan.maps = WordMaps::from_values(
            vec!["dog".into()],
            2,
            vec![0.5, f32::NAN, 0.1, 0.2],
            &Device::flex(),
        )
        .unwrap();
        let error = shard_bytes(&[nan], "{}").unwrap_err();
        assert!(
            error.contains("sample 3.jpg") && error.contains("NaN"),
            "{error}"
        );
    }

    #[test]
    fn quantization_rounds_and_clamps() {
        assert_eq!(
            quantize(&[0.0, 1.0, 0.5, -1.0, 2.0, f32::NAN]),
            vec![0, 255, 128, 0, 255, 0]
        );
    }
}
