//! The trainer's view of a teacher attention store: which samples have maps, and one sample's
//! maps on demand. Opening reads only the shards' headers (ids, words, offsets); [`get`]
//! reads one sample's bytes from its shard, so the maps are never all in memory. The reference
//! JPEG layout (`<root>/<id>/lpm_attention/<stem>/attention_<word>.jpg`) is read the same way.
//!
//! [`get`]: TeacherMapsIndex::get

use std::{
    collections::HashMap,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use burn::tensor::Device;

use super::{DataError, attn_store, reference_layout};
use crate::maps::WordMaps;

/// Where one sample's bytes are in a shard.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    words: Vec<String>,
    side: usize,
    /// Offset of the first byte in the file.
    start: u64,
    len: usize,
}

#[derive(Debug)]
enum Source {
    Shards {
        files: Vec<PathBuf>,
        entries: HashMap<String, Entry>,
    },
    Reference {
        root: PathBuf,
    },
}

#[derive(Debug)]
pub struct TeacherMapsIndex {
    source: Source,
}

impl TeacherMapsIndex {
    /// Opens `path`: a folder of `maps-*.safetensors` shards (what `extract` writes), or else a
    /// root of the reference layout (an `extract --format reference` output's `reference/`, or
    /// a published `*-sd-attn` subset).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let listing = std::fs::read_dir(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = listing
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("maps-") && n.ends_with(".safetensors"))
            })
            .collect();
        if files.is_empty() {
            return Ok(Self {
                source: Source::Reference {
                    root: path.to_path_buf(),
                },
            });
        }
        files.sort();
        let mut entries = HashMap::new();
        for (shard, file) in files.iter().enumerate() {
            for (id, entry) in shard_entries(file, shard)? {
                // A sample in two shards (two runs into one folder) keeps its first.
                entries.entry(id).or_insert(entry);
            }
        }
        Ok(Self {
            source: Source::Shards { files, entries },
        })
    }

    /// Whether this is the reference JPEG layout (no shards).
    pub fn is_reference_layout(&self) -> bool {
        matches!(self.source, Source::Reference { .. })
    }

    /// The number of samples with maps, for shards (the reference layout is not listed).
    pub fn sample_count(&self) -> Option<usize> {
        match &self.source {
            Source::Shards { entries, .. } => Some(entries.len()),
            Source::Reference { .. } => None,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        match &self.source {
            Source::Shards { entries, .. } => entries.contains_key(id),
            Source::Reference { root } => std::fs::read_dir(reference_layout::sample_dir(root, id))
                .is_ok_and(|mut entries| {
                    entries.any(|entry| {
                        entry.is_ok_and(|e| {
                            let name = e.file_name();
                            let name = name.to_string_lossy();
                            name.starts_with("attention_") && name.ends_with(".jpg")
                        })
                    })
                }),
        }
    }

    /// How many of `ids` have no maps (those samples train with cross-entropy only).
    pub fn count_missing<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        ids.into_iter().filter(|id| !self.contains(id)).count()
    }

    /// The maps of `id` on `device`, or `None` when the store has none for it. A shard that
    /// cannot be read or a map that cannot be decoded is an error naming the file.
    pub fn get(&self, id: &str, device: &Device) -> Result<Option<WordMaps>, DataError> {
        match &self.source {
            Source::Shards { files, entries } => {
                let Some(entry) = entries.get(id) else {
                    return Ok(None);
                };
                let path = &files[entry.shard];
                let io = |source| DataError::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = std::fs::File::open(path).map_err(io)?;
                file.seek(SeekFrom::Start(entry.start)).map_err(io)?;
                let mut bytes = vec![0u8; entry.len];
                file.read_exact(&mut bytes).map_err(|_| DataError::Format {
                    path: path.clone(),
                    reason: format!("sample {id}: truncated since it was opened"),
                })?;
                let maps = WordMaps::from_values(
                    entry.words.clone(),
                    entry.side,
                    attn_store::dequantize(&bytes),
                    device,
                )
                .map_err(|error| DataError::Format {
                    path: path.clone(),
                    reason: format!("sample {id}: {error}"),
                })?;
                Ok(Some(maps))
            }
            Source::Reference { root } => {
                let read = reference_layout::read_sample(root, id)?;
                if read.is_empty() {
                    return Ok(None);
                }
                let side = read[0].2;
                if let Some((word, _, other)) = read.iter().find(|(_, _, s)| *s != side) {
                    return Err(DataError::Format {
                        path: reference_layout::sample_dir(root, id),
                        reason: format!(
                            "map `{word}` is {other}x{other}, the others {side}x{side}"
                        ),
                    });
                }
                let mut words = Vec::with_capacity(read.len());
                let mut maps = Vec::with_capacity(read.len() * side * side);
                for (word, values, _) in read {
                    words.push(word);
                    maps.extend(values);
                }
                let maps = WordMaps::from_values(words, side, maps, device).map_err(|error| {
                    DataError::Format {
                        path: reference_layout::sample_dir(root, id),
                        reason: error.to_string(),
                    }
                })?;
                Ok(Some(maps))
            }
        }
    }
}

/// The entries of one shard, from its header; checks that every sample's bytes are in the file.
fn shard_entries(path: &Path, shard: usize) -> Result<Vec<(String, Entry)>, DataError> {
    let format = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let (header_length, header) = attn_store::read_header(path)?;
    let samples = attn_store::read_shard_metadata(path, &header)?;
    let json: serde_json::Value =
        serde_json::from_str(&header).map_err(|e| format(format!("bad header: {e}")))?;
    let data_start = 8 + header_length;
    let file_length = std::fs::metadata(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    samples
        .into_iter()
        .map(|sample| {
            let tensor = &json[&sample.id];
            let offsets = tensor["data_offsets"]
                .as_array()
                .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
            let Some((begin, end)) = offsets else {
                return Err(format(format!(
                    "sample {}: no tensor in the header",
                    sample.id
                )));
            };
            let expected = sample.words.len() * sample.side * sample.side;
            let shape: Vec<u64> = tensor["shape"]
                .as_array()
                .map(|s| s.iter().filter_map(|d| d.as_u64()).collect())
                .unwrap_or_default();
            let expected_shape = [sample.words.len(), sample.side, sample.side].map(|d| d as u64);
            if tensor["dtype"] != "U8"
                || shape != expected_shape
                || end < begin
                || (end - begin) as usize != expected
            {
                return Err(format(format!(
                    "sample {}: {} {shape:?} of {} bytes, expected U8 {expected_shape:?}",
                    sample.id,
                    tensor["dtype"],
                    end.saturating_sub(begin)
                )));
            }
            if data_start + end > file_length {
                return Err(format(format!(
                    "truncated: sample {} needs {} bytes, the file has {file_length}",
                    sample.id,
                    data_start + end
                )));
            }
            Ok((
                sample.id,
                Entry {
                    shard,
                    words: sample.words,
                    side: sample.side,
                    start: data_start + begin,
                    len: expected,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::attn_store::{StoredSample, dequantize, shard_bytes};

    fn stored(id: &str, words: &[&str], side: usize, fill: u8) -> StoredSample {
        let values = dequantize(&vec![fill; words.len() * side * side]);
        StoredSample {
            id: id.into(),
            text: words.join(" "),
            image: format!("{id}.png"),
            token_ids: vec![],
            maps: WordMaps::from_values(
                words.iter().map(|w| w.to_string()).collect(),
                side,
                values,
                &Device::flex(),
            )
            .unwrap(),
        }
    }

    fn get(index: &TeacherMapsIndex, id: &str) -> Option<(Vec<String>, usize, Vec<f32>)> {
        index
            .get(id, &Device::flex())
            .unwrap()
            .map(|maps| (maps.words.clone(), maps.side(), maps.to_values().unwrap()))
    }

    #[test]
    fn shards_answer_by_id_and_count_the_missing() {
        let dir = std::env::temp_dir().join(format!("lavender-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = vec![
            stored("1.jpg", &["a", "dog"], 2, 255),
            stored("2.jpg", &[], 2, 0),
        ];
        let second = vec![stored("3.jpg", &["ball"], 2, 51)];
        std::fs::write(
            dir.join("maps-00000.safetensors"),
            shard_bytes(&first, "{}").unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("maps-00001.safetensors"),
            shard_bytes(&second, "{}").unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("index.jsonl"), "not read\n").unwrap();

        let index = TeacherMapsIndex::open(&dir).unwrap();
        assert!(!index.is_reference_layout());
        assert_eq!(index.sample_count(), Some(3));
        let (words, side, values) = get(&index, "1.jpg").unwrap();
        assert_eq!(words, ["a", "dog"]);
        assert_eq!((side, values.len()), (2, 8));
        assert!(values.iter().all(|&v| v == 1.0));
        let (_, _, ball) = get(&index, "3.jpg").unwrap();
        assert!(ball.iter().all(|&v| (v - 0.2).abs() < 1e-6));
        assert_eq!(get(&index, "2.jpg").unwrap().0.len(), 0);
        assert_eq!(get(&index, "9.jpg"), None);
        assert_eq!(index.count_missing(["1.jpg", "9.jpg", "8.jpg", "3.jpg"]), 2);

        // A truncated shard is refused when opened, naming the file.
        let bytes = shard_bytes(&second, "{}").unwrap();
        let damaged = dir.join("maps-00002.safetensors");
        std::fs::write(&damaged, &bytes[..bytes.len() - 1]).unwrap();
        let error = TeacherMapsIndex::open(&dir).unwrap_err().to_string();
        assert!(
            error.contains("maps-00002.safetensors") && error.contains("truncated"),
            "{error}"
        );
        std::fs::write(&damaged, &bytes[..4]).unwrap();
        let error = TeacherMapsIndex::open(&dir).unwrap_err().to_string();
        assert!(error.contains("maps-00002.safetensors"), "{error}");
        std::fs::write(&damaged, b"\x10\0\0\0\0\0\0\0{\"x\": 1}        ").unwrap();
        let error = TeacherMapsIndex::open(&dir).unwrap_err().to_string();
        assert!(
            error.contains("maps-00002.safetensors") && error.contains("samples"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_reference_layout_is_read_per_sample() {
        let root = std::env::temp_dir().join(format!("lavender-index-ref-{}", std::process::id()));
        let side = 32;
        let map: Vec<u8> = (0..side * side).map(|i| ((i % side) * 8) as u8).collect();
        let maps = WordMaps::from_values(
            vec!["emma".to_string(), "austen".to_string()],
            side,
            dequantize(&[map.clone(), map].concat()),
            &Device::flex(),
        )
        .unwrap();
        reference_layout::write_sample(&root, "image_0.jpg", &maps).unwrap();
        let index = TeacherMapsIndex::open(&root).unwrap();
        assert!(index.is_reference_layout());
        assert!(index.contains("image_0.jpg"));
        assert_eq!(index.count_missing(["image_0.jpg", "image_1.jpg"]), 1);
        let (words, side, values) = get(&index, "image_0.jpg").unwrap();
        assert_eq!(words, ["austen", "emma"]);
        assert_eq!((side, values.len()), (32, 2 * 32 * 32));
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(get(&index, "image_1.jpg"), None);

        let broken = reference_layout::sample_dir(&root, "image_2.jpg");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("attention_x.jpg"), b"not a jpeg").unwrap();
        let error = index
            .get("image_2.jpg", &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(error.contains("attention_x.jpg"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
