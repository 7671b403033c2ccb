//! The output folder of `export` and `merge`, checked before any work starts: it may never be an
//! input or contain one (writing there would replace the input's files), and a folder that already
//! holds files is written only with `--force` (and then only the files the command writes are
//! replaced: see [`super::write_folder`]).

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// `path` made absolute and with symbolic links resolved as far as it exists (the part that does
/// not exist yet is appended lexically, `..` and `.` removed).
pub fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return clean,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// Checks `out` before a command writes into it. `inputs` are (what, path) pairs: the run folder,
/// the base model folder, the adapter folder, ... An `out` that is an input, or a folder that
/// contains one, is always refused. An `out` that exists and holds files is refused unless
/// `force`; `writes` names the files the command writes (for the message).
pub fn check_out(out: &Path, inputs: &[(&str, &Path)], force: bool, writes: &str) -> Result<()> {
    let target = resolve(out);
    for (what, input) in inputs {
        if !input.exists() {
            continue;
        }
        let input = resolve(input);
        if input == target {
            return Err(conflict(out, format!("it is the {what}; writing there would replace its files: choose a new folder")));
        }
        if input.starts_with(&target) {
            return Err(conflict(
                out,
                format!(
                    "it contains the {what} {}; writing there could replace the input's files: choose a folder outside it",
                    input.display()
                ),
            ));
        }
    }
    if target.exists() {
        if !target.is_dir() {
            return Err(conflict(out, "it exists and is not a folder: choose a folder path".into()));
        }
        let mut names: Vec<String> = std::fs::read_dir(&target)
            .map_err(|e| Error::io("read", &target, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if !names.is_empty() && !force {
            names.sort();
            let shown =
                if names.len() > 5 { format!("{}, … ({} entries)", names[..5].join(", "), names.len()) } else { names.join(", ") };
            return Err(conflict(
                out,
                format!(
                    "the folder already holds files ({shown}); lowrank never removes what it did not write: choose a new or empty folder, or pass --force to replace only the files this command writes ({writes})"
                ),
            ));
        }
    }
    Ok(())
}

fn conflict(path: &Path, message: String) -> Error {
    Error::OutputConflict { path: path.to_path_buf(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_makes_paths_absolute_and_follows_links() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let base = d.path().canonicalize().unwrap();
        assert_eq!(resolve(&d.path().join("real/../real/new/x")), base.join("real/new/x"));
        #[cfg(unix)]
        assert_eq!(resolve(&d.path().join("link/new")), base.join("real/new"));
    }

    #[test]
    fn inputs_and_their_parents_are_refused_non_empty_folders_need_force() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("runs/a");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.json"), b"{}").unwrap();
        let inputs = [("run folder", run.as_path())];
        for out in [run.clone(), d.path().join("runs"), d.path().to_path_buf(), run.join(".")] {
            let e = check_out(&out, &inputs, true, "x").unwrap_err().to_string();
            assert!(e.contains("run folder"), "{}: {e}", out.display());
        }
        check_out(&run.join("exported"), &inputs, false, "x").unwrap();
        check_out(&d.path().join("new"), &inputs, false, "x").unwrap();
        let full = d.path().join("full");
        std::fs::create_dir(&full).unwrap();
        check_out(&full, &inputs, false, "x").unwrap();
        std::fs::write(full.join("notes.txt"), b"mine").unwrap();
        let e = check_out(&full, &inputs, false, "adapter files").unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("--force") && e.contains("adapter files"), "{e}");
        check_out(&full, &inputs, true, "x").unwrap();
        let e = check_out(&full.join("notes.txt"), &inputs, true, "x").unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
    }

    #[test]
    fn a_gguf_model_file_and_its_folder_are_inputs_too() {
        // `--model FILE.gguf` names a file: neither the file nor any folder holding it may be --out.
        let d = tempfile::tempdir().unwrap();
        let models = d.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        let gguf = models.join("smollm2-135m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        let inputs = [("base model", gguf.as_path())];
        for out in [gguf.clone(), models.clone(), d.path().to_path_buf()] {
            let e = check_out(&out, &inputs, true, "x").unwrap_err().to_string();
            assert!(e.contains("base model"), "{}: {e}", out.display());
        }
        check_out(&models.join("merged"), &inputs, false, "x").unwrap();
    }
}
