//! File-system helpers. Every file lowrank writes goes through [`AtomicFile`] (a unique temporary
//! sibling, flushed to disk, then renamed over the target), so an interrupted run never leaves a
//! half-written file behind; [`write_folder`] does the same for whole folders without ever removing
//! a file it did not write. [`lock`] gives one process at a time a folder or file; [`out`] checks an
//! output folder against the command's inputs before any work starts; [`clean_stale_temps`] removes
//! what an interrupted writer left.

pub mod lock;
pub mod out;

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

/// Writes a folder: `fill` writes its files into a temporary sibling, which then becomes `dir`.
///
/// When `dir` does not exist or is empty, the whole folder appears at once (one rename). When it
/// holds files, only the files `fill` wrote are replaced, each atomically, configuration files
/// (`*config.json`) last; every other file in `dir` is left untouched. Nothing this function did
/// not write is ever removed (whether a non-empty `dir` may be written at all is the command's
/// decision: see [`out::check_out`]).
pub fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(dir);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let result = move_into(&tmp, dir);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Moves the files of the staging folder `tmp` into `dir` (see [`write_folder`]).
fn move_into(tmp: &Path, dir: &Path) -> Result<()> {
    let empty = |d: &Path| std::fs::read_dir(d).map(|mut it| it.next().is_none()).unwrap_or(false);
    if !dir.exists() || (dir.is_dir() && empty(dir)) {
        // rename(2) replaces an empty directory atomically.
        match std::fs::rename(tmp, dir) {
            Ok(()) => return Ok(()),
            Err(_) if dir.is_dir() => {} // filled meanwhile: fall back to file by file
            Err(e) => return Err(Error::io("write", dir, e)),
        }
    }
    if !dir.is_dir() {
        return Err(Error::io("write", dir, std::io::Error::other("it exists and is not a folder")));
    }
    let mut names: Vec<std::ffi::OsString> =
        std::fs::read_dir(tmp).map_err(|e| Error::io("read", tmp, e))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort_by_key(|n| (n.to_string_lossy().ends_with("config.json"), n.clone()));
    for name in names {
        let to = dir.join(&name);
        std::fs::rename(tmp.join(&name), &to).map_err(|e| Error::io("write", &to, e))?;
    }
    sync_dir(dir);
    Ok(())
}

/// Flushes a folder's entries (renames) to disk, where the platform allows it.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Whether `name` is a temporary name of [`AtomicFile`] / [`write_folder`] (`.NAME.tmp-PID-N...`);
/// returns the writer's pid.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let at = rest.rfind(".tmp-")?;
    let tail = &rest[at + 5..];
    let (pid, after) = tail.split_once('-')?;
    let n: String = after.chars().take_while(char::is_ascii_digit).collect();
    if n.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files and folders an interrupted writer left in `dir` (those whose
/// writing process no longer runs, or is this one); returns what it removed. A lock on `dir`
/// should be held, so that no live lowrank process of this folder is writing.
pub fn clean_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else { continue };
        if pid != std::process::id() && lock::pid_alive(pid) {
            continue;
        }
        let path = e.path();
        let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
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
    fn write_folder_replaces_only_the_files_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_folder(&out, |t| write_atomic(&t.join("a.txt"), b"1")).unwrap();
        assert_eq!(names(&out), ["a.txt"]);
        std::fs::write(out.join("mine.txt"), b"keep me").unwrap();
        write_folder(&out, |t| write_atomic(&t.join("a.txt"), b"2").and(write_atomic(&t.join("b.txt"), b"3"))).unwrap();
        assert_eq!(names(&out), ["a.txt", "b.txt", "mine.txt"]);
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"2");
        assert_eq!(std::fs::read(out.join("mine.txt")).unwrap(), b"keep me");
        assert_eq!(names(dir.path()), ["out"], "no staging folder is left");
        let e = write_folder(&out, |_| Err(Error::Other("fill failed".into()))).unwrap_err();
        assert!(e.to_string().contains("fill failed"));
        assert_eq!(names(&out), ["a.txt", "b.txt", "mine.txt"]);
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn stale_temporaries_are_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(temp_owner(".checkpoint.tmp-4242-7.safetensors"), Some(4242));
        assert_eq!(temp_owner(".adapter.tmp-17-0"), Some(17));
        assert_eq!(temp_owner("checkpoint.safetensors"), None);
        assert_eq!(temp_owner(".hidden.tmp-x-1"), None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".checkpoint.tmp-{dead}-3.safetensors"));
        std::fs::write(&stale, b"half").unwrap();
        std::fs::create_dir(dir.path().join(format!(".adapter.tmp-{dead}-4"))).unwrap();
        let mut writer = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let live = format!(".eval-x.tmp-{}-0.json", writer.id());
        std::fs::write(dir.path().join(&live), b"being written").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let removed = clean_stale_temps(dir.path());
        writer.kill().unwrap();
        writer.wait().unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(names(dir.path()), [live.as_str(), "config.json"], "a live writer's file stays");
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
