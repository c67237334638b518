//! Row-level parquet helpers shared by the parquet datasets (RLAIF-V, the_cauldron OCR-VQA):
//! opening with errors that name the file, column projections, the `*.parquet` files of a
//! folder, and the image bytes of a row, decoded one row group at a time.

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

use super::DataError;

pub(crate) fn format_error(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub(crate) fn open(path: &Path) -> Result<SerializedFileReader<File>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SerializedFileReader::new(file).map_err(|error| format_error(path, error))
}

/// The names of the file's top-level columns.
pub(crate) fn column_names(reader: &SerializedFileReader<File>) -> Vec<String> {
    reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|field| field.name().to_string())
        .collect()
}

/// The file's own schema narrowed to `columns` (a projection must match the file exactly);
/// `dataset` names what the file was expected to be, for the error.
pub(crate) fn projection(
    reader: &SerializedFileReader<File>,
    path: &Path,
    columns: &[&str],
    dataset: &str,
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
            format!(
                "not {dataset} file: needs the columns {columns:?}, found {:?}",
                column_names(reader)
            ),
        ));
    }
    Type::group_type_builder(root.name())
        .with_fields(fields)
        .build()
        .map_err(|error| format_error(path, error))
}

pub(crate) fn column<'a>(row: &'a Row, name: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(column, _)| column.as_str() == name)
        .map(|(_, field)| field)
}

/// The parquet files of PATH: the file itself, or the folder's `*.parquet`, sorted.
pub(crate) fn files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
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

/// The encoded bytes of an image cell: a `{bytes, path}` struct (RLAIF-V's `image`), or a list
/// of them (the_cauldron's `images`, of which the first is taken).
fn image_bytes(field: &Field) -> Option<Vec<u8>> {
    match field {
        Field::Group(image) => match column(image, "bytes") {
            Some(Field::Bytes(bytes)) => Some(bytes.data().to_vec()),
            _ => None,
        },
        Field::ListInternal(list) => list.elements().first().and_then(image_bytes),
        _ => None,
    }
}

/// Image bytes of parquet rows (column `image` or `images`), decoding one row group at a time
/// and keeping the last one, so samples visited in file order cost one decode per row group.
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
        let names = column_names(&reader);
        let image_column = ["image", "images"]
            .into_iter()
            .find(|name| names.iter().any(|n| n == name))
            .ok_or_else(|| {
                format_error(
                    file,
                    format!("no `image` or `images` column (found {names:?})"),
                )
            })?;
        let mut first = 0;
        for group in 0..reader.num_row_groups() {
            let rows = reader.metadata().row_group(group).num_rows() as usize;
            if row < first + rows {
                let schema = projection(&reader, file, &[image_column], "an image dataset")?;
                let group_reader = reader
                    .get_row_group(group)
                    .map_err(|error| format_error(file, error))?;
                let images = group_reader
                    .get_row_iter(Some(schema))
                    .map_err(|error| format_error(file, error))?
                    .map(|row| {
                        let row = row.map_err(|error| format_error(file, error))?;
                        Ok(column(&row, image_column).and_then(image_bytes))
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
