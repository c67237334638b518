//! `rlaifv:PATH`: the RLAIF-V preference dataset (openbmb/RLAIF-V-Dataset) as its parquet files
//! (a file, or a folder of `*.parquet`). The teacher's text is the `chosen` answer, as Lavender
//! supervises the answer; ids are the dataset's `idx`. Images stay in the files and are read
//! one row group at a time by [`RowGroupImages`], so listing 83k samples reads no image bytes.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use parquet::{
    file::reader::{FileReader, SerializedFileReader},
    record::{Field, Row},
    schema::types::Type,
};

use super::{DataError, ImageSource, Sample};

fn format_error(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn open(path: &Path) -> Result<SerializedFileReader<File>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SerializedFileReader::new(file).map_err(|error| format_error(path, error))
}

/// The file's own schema narrowed to `columns` (a projection must match the file exactly).
fn projection(
    reader: &SerializedFileReader<File>,
    path: &Path,
    columns: &[&str],
) -> Result<Type, DataError> {
    let root = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let fields: Vec<Arc<Type>> = root
        .get_fields()
        .iter()
        .filter(|field| columns.contains(&field.name()))
        .cloned()
        .collect();
    if fields.len() != columns.len() {
        return Err(format_error(
            path,
            format!("not an RLAIF-V file: needs the columns {columns:?}"),
        ));
    }
    Type::group_type_builder(root.name())
        .with_fields(fields)
        .build()
        .map_err(|error| format_error(path, error))
}

fn column<'a>(row: &'a Row, name: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(column, _)| column.as_str() == name)
        .map(|(_, field)| field)
}

/// The parquet files of PATH: the file itself, or the folder's `*.parquet`, sorted.
fn files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format_error(path, "no .parquet files here"));
    }
    Ok(files)
}

pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    let mut samples = Vec::new();
    for file in files(path)? {
        let reader = open(&file)?;
        let schema = projection(&reader, &file, &["chosen", "idx"])?;
        let rows = reader
            .get_row_iter(Some(schema))
            .map_err(|error| format_error(&file, error))?;
        for (row_index, row) in rows.enumerate() {
            let row = row.map_err(|error| format_error(&file, error))?;
            let text = match column(&row, "chosen") {
                Some(Field::Str(text)) => text.clone(),
                _ => String::new(),
            };
            let id = match column(&row, "idx") {
                Some(Field::Long(idx)) => idx.to_string(),
                Some(Field::Int(idx)) => idx.to_string(),
                Some(Field::Str(idx)) => idx.clone(),
                _ => format!(
                    "{}#{row_index}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ),
            };
            samples.push(Sample {
                id,
                image: ImageSource::ParquetRow {
                    file: file.clone(),
                    row: row_index,
                },
                text,
            });
        }
    }
    Ok(samples)
}

/// Image bytes of RLAIF-V rows, decoding one row group at a time and keeping the last one, so
/// samples visited in file order cost one decode per row group.
#[derive(Default)]
pub struct RowGroupImages {
    cached: Option<CachedRowGroup>,
}

/// A file, the index of the row group's first row, and each row's image bytes.
type CachedRowGroup = (PathBuf, usize, Vec<Option<Vec<u8>>>);

impl RowGroupImages {
    /// The encoded image of row `row` of `file`.
    pub fn bytes(&mut self, file: &Path, row: usize) -> Result<Vec<u8>, DataError> {
        if let Some((cached_file, first, images)) = &self.cached
            && cached_file == file
            && row >= *first
            && row < first + images.len()
        {
            return images[row - first]
                .clone()
                .ok_or_else(|| format_error(file, format!("row {row} has no image bytes")));
        }
        let reader = open(file)?;
        let mut first = 0;
        for group in 0..reader.num_row_groups() {
            let rows = reader.metadata().row_group(group).num_rows() as usize;
            if row < first + rows {
                let schema = projection(&reader, file, &["image"])?;
                let group_reader = reader
                    .get_row_group(group)
                    .map_err(|error| format_error(file, error))?;
                let images = group_reader
                    .get_row_iter(Some(schema))
                    .map_err(|error| format_error(file, error))?
                    .map(|row| {
                        let row = row.map_err(|error| format_error(file, error))?;
                        Ok(match column(&row, "image") {
                            Some(Field::Group(image)) => match column(image, "bytes") {
                                Some(Field::Bytes(bytes)) => Some(bytes.data().to_vec()),
                                _ => None,
                            },
                            _ => None,
                        })
                    })
                    .collect::<Result<Vec<_>, DataError>>()?;
                self.cached = Some((file.to_path_buf(), first, images));
                return self.bytes(file, row);
            }
            first += rows;
        }
        Err(format_error(
            file,
            format!("row {row} is past the end ({first} rows)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rlaifv-tiny")
    }

    #[test]
    fn lists_chosen_answers_by_idx_and_reads_images_across_row_groups() {
        let samples = read(&fixture()).unwrap();
        let listed: Vec<(&str, &str)> = samples
            .iter()
            .map(|s| (s.id.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("17", "a red ball on the grass"),
                ("18", "two dogs near the zebra"),
                ("19", "a skateboard")
            ]
        );
        let png = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd-tiny/image.png"),
        )
        .unwrap();
        let mut images = RowGroupImages::default();
        let file = fixture().join("RLAIF-V-Dataset_000.parquet");
        // Row 2 is in the second row group, row 0 in the first: both directions work.
        assert_eq!(images.bytes(&file, 2).unwrap(), b"broken image bytes");
        assert_eq!(images.bytes(&file, 0).unwrap(), png);
        assert_eq!(images.bytes(&file, 1).unwrap(), png);
        assert!(
            images
                .bytes(&file, 3)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
    }

    #[test]
    fn other_parquet_files_are_refused_by_their_columns() {
        let error = read(Path::new("/nonexistent.parquet")).unwrap_err();
        assert!(matches!(error, DataError::Io { .. }), "{error}");
    }
}
