//! Datasets, read the same way by the teacher (`extract`: (image, text) [`Sample`]s) and the
//! trainer ([`Conversation`]s, whose answers are the teacher's text). A `--data` spec names the
//! reader: `jsonl:PATH`, `flickr30k:PATH`, `rlaifv:PATH` or `ocrvqa:PATH` (the parquet ones
//! with the `parquet` feature).

pub mod attn_store;
pub mod conversation;
pub mod flickr30k;
pub mod jsonl;
#[cfg(feature = "parquet")]
pub mod ocrvqa;
#[cfg(feature = "parquet")]
mod parquet_rows;
pub mod reference_layout;
#[cfg(feature = "parquet")]
pub mod rlaifv;
pub mod split;
pub mod teacher_index;

pub use conversation::{Conversation, Role, Turn};
pub use split::{DataPosition, EpochShuffler, Holdout, dataset_fingerprint, split_holdout};
pub use teacher_index::TeacherMapsIndex;

use std::{fmt, path::PathBuf, str::FromStr};

/// One (image, text) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Unique within the dataset; keys the teacher's maps.
    pub id: String,
    pub image: ImageSource,
    pub text: String,
}

/// Where a sample's encoded image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    File(PathBuf),
    /// Embedded in a parquet dataset (RLAIF-V), by file and row.
    ParquetRow {
        file: PathBuf,
        row: usize,
    },
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::ParquetRow { file, row } => write!(f, "{} row {row}", file.display()),
        }
    }
}

/// Reads and decodes sample images, refusing those above a pixel limit before decoding them
/// ([`crate::images`]); keeps the current parquet row group between calls.
pub struct ImageLoader {
    max_pixels: u64,
    /// Told of each image decoded from a truncated JPEG (see [`crate::images::is_truncated_jpeg`]).
    on_truncated: Option<fn(&ImageSource)>,
    #[cfg(feature = "parquet")]
    parquet: parquet_rows::RowGroupImages,
}

impl Default for ImageLoader {
    fn default() -> Self {
        Self::with_max_pixels(crate::images::MAX_PIXELS)
    }
}

impl ImageLoader {
    /// A loader that refuses images of more than `max_pixels` pixels.
    pub fn with_max_pixels(max_pixels: u64) -> Self {
        Self {
            max_pixels,
            on_truncated: None,
            #[cfg(feature = "parquet")]
            parquet: Default::default(),
        }
    }

    /// Calls `warn` with the source of every image decoded from a truncated JPEG (the decoder
    /// fills the missing part with grey and says nothing).
    pub fn on_truncated_jpeg(mut self, warn: fn(&ImageSource)) -> Self {
        self.on_truncated = Some(warn);
        self
    }

    pub fn load(&mut self, source: &ImageSource) -> Result<image::DynamicImage, DataError> {
        match source {
            ImageSource::File(path) => {
                let image = crate::images::decode_file(path, self.max_pixels).map_err(|error| {
                    DataError::Format {
                        path: path.to_path_buf(),
                        reason: error.to_string(),
                    }
                })?;
                if let Some(warn) = self.on_truncated
                    && crate::images::is_truncated_jpeg_file(path).unwrap_or(false)
                {
                    warn(source);
                }
                Ok(image)
            }
            #[cfg(feature = "parquet")]
            ImageSource::ParquetRow { file, row } => {
                let bytes = self.parquet.bytes(file, *row)?;
                let image =
                    crate::images::decode_bytes(&bytes, self.max_pixels).map_err(|error| {
                        DataError::Format {
                            path: file.clone(),
                            reason: format!("row {row}: {error}"),
                        }
                    })?;
                if let Some(warn) = self.on_truncated
                    && crate::images::is_truncated_jpeg(&bytes)
                {
                    warn(source);
                }
                Ok(image)
            }
            #[cfg(not(feature = "parquet"))]
            ImageSource::ParquetRow { file, .. } => Err(DataError::Format {
                path: file.clone(),
                reason: "this build reads no parquet (feature `parquet`)".into(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("sample id `{id}` appears twice ({path})")]
    DuplicateId { id: String, path: PathBuf },
}

/// Which reader, and where its data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    /// One `{"image": ..., "text": ...}` object per line (optional `"id"`); image paths
    /// relative to the file.
    Jsonl(PathBuf),
    /// Karpathy's `dataset_flickr30k.json`; images in `flickr30k-images/` beside it.
    Flickr30k(PathBuf),
    /// RLAIF-V parquet files (a file or a folder); the text is the chosen answer. A `.json` or
    /// `.jsonl` file (BUAADreamer/RLAIF-V-83K's `{image, conversations}`) reads as `jsonl:`.
    Rlaifv(PathBuf),
    /// the_cauldron's `ocrvqa` parquet files (a file or a folder), or a `.json`/`.jsonl` of
    /// conversations; the text is the answers joined.
    Ocrvqa(PathBuf),
}

impl FromStr for DataSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (kind, path) = spec.split_once(':').ok_or_else(|| {
            format!("data spec `{spec}` must be KIND:PATH (jsonl:, flickr30k:, rlaifv:, ocrvqa:)")
        })?;
        if path.is_empty() {
            return Err(format!("data spec `{spec}` has no path"));
        }
        match kind {
            "jsonl" => Ok(Self::Jsonl(path.into())),
            "flickr30k" => Ok(Self::Flickr30k(path.into())),
            "rlaifv" => Ok(Self::Rlaifv(path.into())),
            "ocrvqa" => Ok(Self::Ocrvqa(path.into())),
            other => Err(format!(
                "unknown dataset kind `{other}` in `{spec}`: expected jsonl:, flickr30k:, rlaifv: or ocrvqa:"
            )),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jsonl(path) => write!(f, "jsonl:{}", path.display()),
            Self::Flickr30k(path) => write!(f, "flickr30k:{}", path.display()),
            Self::Rlaifv(path) => write!(f, "rlaifv:{}", path.display()),
            Self::Ocrvqa(path) => write!(f, "ocrvqa:{}", path.display()),
        }
    }
}

impl DataSpec {
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Jsonl(path) | Self::Flickr30k(path) | Self::Rlaifv(path) | Self::Ocrvqa(path) => {
                path
            }
        }
    }

    /// The teacher's samples, in the dataset's order; ids are checked to be unique.
    pub fn read(&self) -> Result<Vec<Sample>, DataError> {
        let samples = match self {
            Self::Jsonl(path) => jsonl::read(path)?,
            Self::Rlaifv(path) if is_json(path) => jsonl::read(path)?,
            Self::Flickr30k(path) => flickr30k::read(path)?,
            #[cfg(feature = "parquet")]
            Self::Rlaifv(path) => rlaifv::read(path)?,
            Self::Ocrvqa(_) => self
                .read_conversations()?
                .iter()
                .map(Conversation::teacher_sample)
                .collect(),
            #[cfg(not(feature = "parquet"))]
            Self::Rlaifv(path) => return Err(no_parquet(path)),
        };
        check_unique(samples.iter().map(|s| s.id.as_str()), self.path())?;
        Ok(samples)
    }

    /// The training samples, in the dataset's order; ids are checked to be unique.
    pub fn read_conversations(&self) -> Result<Vec<Conversation>, DataError> {
        let samples = match self {
            Self::Jsonl(path) => jsonl::read_conversations(path)?,
            Self::Rlaifv(path) | Self::Ocrvqa(path) if is_json(path) => {
                jsonl::read_conversations(path)?
            }
            Self::Flickr30k(path) => flickr30k::read_conversations(path)?,
            #[cfg(feature = "parquet")]
            Self::Rlaifv(path) => rlaifv::read_conversations(path)?,
            #[cfg(feature = "parquet")]
            Self::Ocrvqa(path) => ocrvqa::read_conversations(path)?,
            #[cfg(not(feature = "parquet"))]
            Self::Rlaifv(path) | Self::Ocrvqa(path) => return Err(no_parquet(path)),
        };
        check_unique(samples.iter().map(|s| s.id.as_str()), self.path())?;
        Ok(samples)
    }
}

/// A `.json` or `.jsonl` file: conversations rather than parquet.
fn is_json(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "json" || e == "jsonl")
}

#[cfg(not(feature = "parquet"))]
fn no_parquet(path: &std::path::Path) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: "this build reads no parquet (feature `parquet`)".into(),
    }
}

fn check_unique<'a>(
    ids: impl Iterator<Item = &'a str>,
    path: &std::path::Path,
) -> Result<(), DataError> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(DataError::DuplicateId {
                id: id.to_string(),
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// `i/n`: this worker's share of a dataset split across `n` workers (e.g. a Slurm array).
/// Sample `k` belongs to worker `k % n`, so the shards are disjoint and cover everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("shard `{text}` must be i/n, e.g. 0/4"))?;
        let index: usize = index
            .trim()
            .parse()
            .map_err(|_| format!("shard index in `{text}` is not a number"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("shard count in `{text}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard `{text}`: need 0 <= i < n"));
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let spec: DataSpec = "jsonl:data/pairs.jsonl".parse().unwrap();
        assert_eq!(spec, DataSpec::Jsonl("data/pairs.jsonl".into()));
        assert_eq!(spec.to_string(), "jsonl:data/pairs.jsonl");
        let spec: DataSpec = "ocrvqa:cauldron/ocrvqa".parse().unwrap();
        assert_eq!(spec, DataSpec::Ocrvqa("cauldron/ocrvqa".into()));
        assert_eq!(spec.to_string(), "ocrvqa:cauldron/ocrvqa");
        assert!(
            "csv:x"
                .parse::<DataSpec>()
                .unwrap_err()
                .contains("unknown dataset kind")
        );
        assert!(
            "jsonl:"
                .parse::<DataSpec>()
                .unwrap_err()
                .contains("no path")
        );
        assert!(
            "pairs.jsonl"
                .parse::<DataSpec>()
                .unwrap_err()
                .contains("KIND:PATH")
        );
    }

    #[test]
    fn json_files_of_the_parquet_kinds_read_as_conversations() {
        let dir = std::env::temp_dir().join(format!("lavender-spec-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rlaifv83k.json");
        std::fs::write(
            &path,
            r#"[{"image": "a.jpg", "conversations": [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A dog."}]},
                {"image": "a.jpg", "conversations": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]"#,
        )
        .unwrap();
        for spec in ["rlaifv", "ocrvqa", "jsonl"] {
            let spec: DataSpec = format!("{spec}:{}", path.display()).parse().unwrap();
            // The two records share an id (the image path): refused, naming the file.
            let error = spec.read_conversations().unwrap_err().to_string();
            assert!(
                error.contains("`a.jpg` appears twice") && error.contains("rlaifv83k.json"),
                "{error}"
            );
        }
        std::fs::write(
            &path,
            r#"[{"image": "a.jpg", "conversations": [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A dog."}]}]"#,
        )
        .unwrap();
        let spec: DataSpec = format!("rlaifv:{}", path.display()).parse().unwrap();
        assert_eq!(
            spec.read_conversations().unwrap()[0].teacher_text(),
            "A dog."
        );
        assert_eq!(spec.read().unwrap()[0].text, "A dog.");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for position in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.contains(position)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x/2".parse::<Shard>().is_err());
        assert_eq!("2/5".parse::<Shard>().unwrap().to_string(), "2/5");
    }
}
