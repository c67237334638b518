//! Output files are written to a temporary name beside the target and renamed into place, so
//! an interrupted run never leaves a half-written file under the real name.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// Writes the folder `out` with `files` (name, bytes) atomically: every file is written and
/// synced into a temporary folder beside `out`, which is then renamed into place, so an
/// interrupted write never leaves a half-written folder under the real name. An existing `out`
/// is replaced only once the new one is complete (moved aside first, so a failed rename leaves
/// it recoverable). Temporary folders an earlier, killed write left are removed.
pub fn write_folder_atomically<'a>(
    out: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> anyhow::Result<()> {
    write_folder(out, files, true)
}

/// [`write_folder_atomically`] for output a command regenerates exactly from its arguments
/// (a generated dataset of thousands of small files): the rename still makes it all or
/// nothing, but files are not synced one by one. Names may hold `/` (subfolders).
pub fn write_regenerable_folder<'a>(
    out: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> anyhow::Result<()> {
    write_folder(out, files, false)
}

fn write_folder<'a>(
    out: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    sync: bool,
) -> anyhow::Result<()> {
    let name = out
        .file_name()
        .with_context(|| format!("{} has no folder name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let partial_prefix = format!(".{name}.partial-");
    if let Ok(entries) = fs::read_dir(&parent) {
        for entry in entries.filter_map(Result::ok) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&partial_prefix)
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let temporary = parent.join(format!("{partial_prefix}{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        fs::create_dir(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;
        for (file, bytes) in files {
            let path = temporary.join(file);
            if let Some(folder) = path.parent() {
                fs::create_dir_all(folder)
                    .with_context(|| format!("cannot create {}", folder.display()))?;
            }
            let mut handle = fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            handle
                .write_all(bytes)
                .and_then(|()| if sync { handle.sync_all() } else { Ok(()) })
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let rename = || {
            fs::rename(&temporary, out).with_context(|| {
                format!("cannot rename {} to {}", temporary.display(), out.display())
            })
        };
        if out.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(out, &old)
                .with_context(|| format!("cannot move the old {} aside", out.display()))?;
            rename()?;
            fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the old {}", old.display()))?;
        } else {
            rename()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temporary);
    }
    result
}

/// Writes `bytes` to `path` atomically (same-folder temporary file, then rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = temporary_path(path);
    let result = (|| -> anyhow::Result<()> {
        let mut file = fs::File::create(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        fs::rename(&temporary, path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                temporary.display(),
                path.display()
            )
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Writes several files, each atomically ([`write_atomically`]), all or none: if one fails,
/// those already written by this call are removed again, so a command never leaves some of
/// its outputs behind with an error.
pub fn write_all_atomically(files: &[(&Path, &[u8])]) -> anyhow::Result<()> {
    for (index, (path, bytes)) in files.iter().enumerate() {
        if let Err(error) = write_atomically(path, bytes) {
            for (written, _) in &files[..index] {
                let _ = fs::remove_file(written);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Fails before any work when `path`'s folder does not exist or cannot be written to (the
/// flag named `flag`), so that a long computation does not end in an unwritable output.
pub fn check_writable(path: &Path, flag: &str) -> anyhow::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        folder.is_dir(),
        "{flag} {}: the folder {} does not exist",
        path.display(),
        folder.display()
    );
    anyhow::ensure!(
        !path.is_dir(),
        "{flag} {} is a folder, not a file",
        path.display()
    );
    let probe = temporary_path(path);
    fs::write(&probe, b"").with_context(|| {
        format!(
            "{flag} {}: cannot write in {}",
            path.display(),
            folder.display()
        )
    })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_without_leaving_temporaries() {
        let dir = std::env::temp_dir().join(format!("lavender-output-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("maps.bin");
        write_atomically(&target, b"first").unwrap();
        write_atomically(&target, b"second").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        assert!(write_atomically(&dir.join("missing/x.bin"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
