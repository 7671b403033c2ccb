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
    for (what, input) in existing_inputs(inputs) {
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

/// Checks `out`, a single file a command writes (a GGUF adapter or model), before any work
/// starts: it may not be a folder, nor an input file, nor an existing file inside an input folder
/// (a run's config.json, a base model's weights), whatever `force` says; an existing file
/// elsewhere is replaced only with `force`. `inputs` as for [`check_out`].
pub fn check_out_file(out: &Path, inputs: &[(&str, &Path)], force: bool) -> Result<()> {
    let target = resolve(out);
    if target.is_dir() {
        let example = out.join("adapter.gguf");
        return Err(conflict(
            out,
            format!("it is a folder, but this command writes one file: pass a file name such as {}", example.display()),
        ));
    }
    for (what, input) in existing_inputs(inputs) {
        if input == target {
            return Err(conflict(out, format!("it is the {what}; writing there would replace it: choose a new file name")));
        }
        if input.starts_with(&target) {
            return Err(conflict(out, format!("it contains the {what} {}: choose a file outside it", input.display())));
        }
        if target.exists() && target.starts_with(&input) {
            return Err(conflict(
                out,
                format!(
                    "it is a file of the {what} {}; writing there would replace it: choose a path outside that folder or a new file name",
                    input.display()
                ),
            ));
        }
    }
    if target.exists() && !force {
        return Err(conflict(
            out,
            "the file already exists; lowrank never replaces what it did not write unless asked: choose a new file name, or pass --force to replace it".into(),
        ));
    }
    Ok(())
}

/// The inputs that exist, with their paths [`resolve`]d (a missing input cannot be overwritten).
fn existing_inputs<'a>(inputs: &'a [(&'a str, &'a Path)]) -> impl Iterator<Item = (&'a str, PathBuf)> + 'a {
    inputs.iter().filter(|(_, p)| p.exists()).map(|(what, p)| (*what, resolve(p)))
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
    fn a_single_output_file_never_replaces_an_input_and_needs_force_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("runs/a");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.json"), b"{}").unwrap();
        let base = d.path().join("base.gguf");
        std::fs::write(&base, b"GGUF").unwrap();
        let other = d.path().join("other.csv");
        std::fs::write(&other, b"text,label").unwrap();
        let inputs = [("run folder", run.as_path()), ("base model", base.as_path())];
        for (out, why) in [
            (run.join("config.json"), "file of the run folder"),
            (base.clone(), "it is the base model"),
            (d.path().join("runs"), "it is a folder"),
            (run.clone(), "it is a folder"),
        ] {
            for force in [false, true] {
                let e = check_out_file(&out, &inputs, force).unwrap_err().to_string();
                assert!(e.contains(why), "{} (force {force}): {e}", out.display());
            }
        }
        let e = check_out_file(&other, &inputs, false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--force"), "{e}");
        check_out_file(&other, &inputs, true).unwrap();
        check_out_file(&run.join("adapter.gguf"), &inputs, false).unwrap();
        check_out_file(&d.path().join("new/adapter.gguf"), &inputs, false).unwrap();
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
