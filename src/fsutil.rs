//! File-system helpers. Every file lowrank writes goes through [`AtomicFile`] (a unique temporary
//! sibling, flushed to disk, then renamed over the target), so an interrupted run never leaves a
//! half-written file behind; [`write_folder`] does the same for whole folders.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary names within one process (several threads may write at once).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary sibling of `path`, unique to this process and call, that keeps the extension
/// (some writers pick the format from it): `.NAME.tmp-PID-N.EXT`.
fn temp_sibling(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{stem}.tmp-{}-{n}{ext}", std::process::id()))
}

/// A file written under a temporary name and moved into place by [`AtomicFile::commit`]; dropped
/// without a commit, it removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Prepares to write `path` (whose folder must exist).
    pub fn new(path: &Path) -> Result<AtomicFile> {
        Ok(AtomicFile { path: path.to_path_buf(), tmp: temp_sibling(path), committed: false })
    }

    /// Where to write the contents.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the temporary file to disk and renames it over the final path.
    pub fn commit(mut self) -> Result<()> {
        let sync = std::fs::File::open(&self.tmp).and_then(|f| f.sync_all());
        sync.and_then(|()| std::fs::rename(&self.tmp, &self.path)).map_err(|e| Error::io("write", &self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically (creating its parent folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    let file = AtomicFile::new(path)?;
    std::fs::File::create(file.tmp()).and_then(|mut f| f.write_all(bytes)).map_err(|e| Error::io("write", path, e))?;
    file.commit()
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Serialize { path: path.to_path_buf(), message: e.to_string() })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed { what, path: path.to_path_buf(), message: e.to_string() })
}

/// Writes a folder atomically: `fill` writes into a temporary sibling, which then replaces `dir`.
pub fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(dir);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = temp_sibling(dir);
        std::fs::rename(dir, &old).map_err(|e| Error::io("replace", dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io("write", dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io("write", dir, e))?;
    }
    Ok(())
}

/// Copies the tokenizer files of a model folder into `dir` (those that exist).
pub fn copy_tokenizer_files(from: &Path, dir: &Path) -> Result<()> {
    for name in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        let src = from.join(name);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io("read", &src, e))?;
            write_atomic(&dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(names(p.parent().unwrap()), ["out.txt"]);
    }

    #[test]
    fn temporary_names_are_unique_and_keep_the_extension() {
        let p = Path::new("/x/chart.png");
        let (a, b) = (temp_sibling(p), temp_sibling(p));
        assert_ne!(a, b);
        assert_eq!(a.extension().unwrap(), "png");
        assert!(a.file_name().unwrap().to_string_lossy().starts_with(".chart.tmp-"));
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        {
            let f = AtomicFile::new(&p).unwrap();
            std::fs::write(f.tmp(), b"half").unwrap();
        }
        assert!(names(dir.path()).is_empty());
        let f = AtomicFile::new(&p).unwrap();
        std::fs::write(f.tmp(), b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(names(dir.path()), ["a.csv"]);
    }
}
