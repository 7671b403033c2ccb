//! Fault injection, on the real binary with a tiny random BERT:
//!
//! - concurrent runs on one folder: exactly one trains, the others are refused, and what is on
//!   disk is the winner's;
//! - SIGKILL at random moments (many seeds) of a run that writes a checkpoint every step: after
//!   each kill every file of the run folder is complete or absent, and the resumed run ends with
//!   exactly the uninterrupted run's metrics, weights and adapter;
//! - a full disk: ENOSPC on small tmpfs mounts of several sizes (in a private mount namespace, with
//!   `unshare`; where none can be mounted the test is skipped with a message, and fails under CI),
//!   and a file-size limit (EFBIG, works everywhere) that makes the final export fail: the command
//!   fails, names the problem, leaves no partial file, and `--resume` then finishes the job.

mod common;
use common::*;
use lowrank::tensorfile::TensorFile;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_args(model: &Path, train: &Path, val: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["train", "--model", s(model), "--train", s(train), "--val", s(val), "--batch-size", "4", "--max-length", "32"]
            .iter()
            .map(|x| x.to_string())
            .collect();
    a.extend(extra.iter().map(|x| x.to_string()));
    a.extend(["--out".to_string(), s(out).to_string()]);
    a
}

/// Whether `name` is a temporary file of an interrupted write (cleaned on resume).
fn is_temp(name: &str) -> bool {
    lowrank::fsutil::temp_owner(name).is_some()
}

/// Every file under `dir` is complete: JSON parses, CSV parses, safetensors parse (with their
/// metadata), every line of metrics.jsonl parses, PNGs end with IEND, SVGs are closed. Returns the
/// problems (and, with `allow_temps` false, temporary files left behind).
fn incomplete(dir: &Path, allow_temps: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return bad };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if is_temp(&name) {
            if !allow_temps {
                bad.push(format!("{name}: a temporary file was left"));
            }
            continue;
        }
        if p.is_dir() {
            bad.extend(incomplete(&p, allow_temps).into_iter().map(|b| format!("{name}/{b}")));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let ok = match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
            "json" => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            "jsonl" => std::str::from_utf8(&bytes).is_ok_and(|t| {
                (t.is_empty() || t.ends_with('\n')) && t.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            }),
            "csv" => csv::Reader::from_reader(bytes.as_slice()).records().all(|r| r.is_ok()),
            "safetensors" => TensorFile::read(&p).is_ok_and(|f| {
                f.metadata.get("progress").filter(|s| !s.is_empty()).is_none_or(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
            }),
            "png" => bytes.starts_with(b"\x89PNG") && bytes.ends_with(&[0xAE, 0x42, 0x60, 0x82]),
            "svg" => std::str::from_utf8(&bytes).is_ok_and(|t| t.trim_end().ends_with("</svg>")),
            "txt" => std::str::from_utf8(&bytes).is_ok_and(|t| t.ends_with('\n')),
            "lock" => true,
            other => {
                bad.push(format!("{name}: unexpected file type {other:?}"));
                true
            }
        };
        if !ok {
            bad.push(format!("{name}: incomplete ({} bytes)", bytes.len()));
        }
    }
    bad
}

/// What a finished run must reproduce: metrics.jsonl's bytes, the best weights, the adapter's
/// tensors and config, and the summary without its timings.
fn outcome(run: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("metrics.jsonl".into(), std::fs::read_to_string(run.join("metrics.jsonl")).unwrap());
    let result = if run.join("model").exists() { "model/model.safetensors" } else { "adapter/adapter_model.safetensors" };
    for f in ["best.safetensors", result] {
        let t = TensorFile::read(&run.join(f)).unwrap();
        let tensors: Vec<String> = t.tensors.iter().map(|(k, v)| format!("{k}{:?}{:?}", v.shape, v.f32)).collect();
        let mut meta: Vec<_> = t.metadata.into_iter().collect();
        meta.sort();
        m.insert(f.into(), format!("{tensors:?}{meta:?}"));
    }
    let files: &[&str] = if run.join("model").exists() {
        &["model/config.json", "labels.json", "train.csv", "val.csv", "config.json"]
    } else {
        &["adapter/adapter_config.json", "adapter/lowrank.json", "labels.json", "train.csv", "val.csv", "config.json"]
    };
    for f in files {
        m.insert(f.to_string(), std::fs::read_to_string(run.join(f)).unwrap());
    }
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for k in ["train_seconds", "wall_seconds", "examples_per_s", "tokens_per_s"] {
        summary.as_object_mut().unwrap().remove(k);
    }
    m.insert("summary.json".into(), summary.to_string());
    m
}

#[test]
fn concurrent_runs_on_one_folder_one_trains_the_others_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 24), small_csv(d.path(), "val.csv", 12));
    for round in 0..3 {
        let run = d.path().join(format!("run{round}"));
        let children: Vec<_> = (0..3)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_lowrank"))
                    .args(run_args(&model, &tr, &va, &run, &["--epochs", "3", "--seed", &(i + 1).to_string()]))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let winners: Vec<usize> = (0..3).filter(|i| outs[*i].status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one of three trains");
        for (i, o) in outs.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{e}");
            assert!(e.contains("in use by process") || e.contains("already holds a run"), "round {round}, process {i}: {e}");
            assert!(!e.contains("another process"), "the refusal names the owner: {e}");
        }
        // What is on disk is the winner's run, whole.
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["seed"], winners[0] + 1, "round {round}");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        let steps = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("\"kind\":\"step\"")).count();
        assert_eq!(summary["steps"], steps, "round {round}");
        assert!(incomplete(&run, false).is_empty(), "{:?}", incomplete(&run, false));
        assert!(!run.join(".lowrank.lock").exists(), "the lock is released");
    }
}

#[test]
fn sigkill_at_random_points_leaves_every_file_complete_or_absent_and_resume_is_exact() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 24), small_csv(d.path(), "val.csv", 12));
    // Full fine-tuning writes all 1M weights and both Adam moments at every step: 12 MB per
    // checkpoint, so kills land inside checkpoint writes often.
    let extra = ["--epochs", "2", "--mode", "full", "--lr", "1e-4", "--checkpoint-every", "1"];
    let whole = d.path().join("whole");
    let t0 = Instant::now();
    lowrank_ok(&run_args(&model, &tr, &va, &whole, &extra).iter().map(String::as_str).collect::<Vec<_>>());
    let duration = t0.elapsed();
    let want = outcome(&whole);
    let seeds = 12u64;
    let mut killed_mid_run = 0;
    for seed in 0..seeds {
        let run = d.path().join(format!("cut{seed}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let delay = duration.mul_f64(rng.random_range(0.02..1.0));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lowrank"))
            .args(run_args(&model, &tr, &va, &run, &extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_run += 1;
        }
        let problems = incomplete(&run, true);
        assert!(problems.is_empty(), "seed {seed} (killed after {delay:?}): {problems:?}");
        // Continue (or start over, when it was killed before its configuration was recorded).
        let args = if run.join("config.json").exists() {
            vec!["train".to_string(), "--resume".into(), s(&run).into()]
        } else {
            run_args(&model, &tr, &va, &run, &extra)
        };
        let out = Command::new(env!("CARGO_BIN_EXE_lowrank")).args(&args).output().unwrap();
        assert!(out.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(incomplete(&run, false).is_empty(), "seed {seed} after resume: {:?}", incomplete(&run, false));
        let got = outcome(&run);
        for (k, v) in &want {
            assert!(got[k] == *v, "seed {seed} (killed after {delay:?}): {k} differs from the uninterrupted run's");
        }
        assert!(!run.join(".lowrank.lock").exists());
    }
    assert!(killed_mid_run >= seeds / 2, "only {killed_mid_run} of {seeds} kills landed before the end");
}

/// Runs `script` (sh) in a private mount namespace; None when no namespace can be made here.
fn in_mount_namespace(script: &str) -> Option<std::process::Output> {
    for prefix in [&["--mount", "--propagation", "private"][..], &["--user", "--map-root-user", "--mount", "--propagation", "private"]] {
        let out = Command::new("unshare").args(prefix).args(["sh", "-c", script]).output().ok()?;
        if out.status.code() != Some(99) && !String::from_utf8_lossy(&out.stderr).contains("unshare failed") {
            return Some(out);
        }
    }
    None
}

fn page_rounded(dir: &Path) -> u64 {
    snapshot(dir).values().map(|b| (b.len() as u64).div_ceil(4096) * 4096).sum()
}

#[test]
fn enospc_on_a_small_tmpfs_fails_cleanly_at_every_stage() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 24), small_csv(d.path(), "val.csv", 12));
    let extra = ["--epochs", "2", "--checkpoint-every", "1"];
    let reference = d.path().join("reference");
    lowrank_ok(&run_args(&model, &tr, &va, &reference, &extra).iter().map(String::as_str).collect::<Vec<_>>());
    let all = page_rounded(&reference);
    let without_adapter = all - page_rounded(&reference.join("adapter"));
    let checkpoint = std::fs::metadata(reference.join("checkpoint.safetensors")).unwrap().len().div_ceil(4096) * 4096;
    // Sizes that stop the run at start-up, during training, at the final export, and one that fits.
    let export_fails = without_adapter + 2 * checkpoint + 64 * 1024;
    assert!(export_fails < all, "the adapter must not fit in {export_fails} bytes");
    let sizes = [8 * 1024, 64 * 1024, without_adapter / 2, export_fails, all + 2 * checkpoint + 256 * 1024];
    let mut stages = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let mnt = d.path().join(format!("mnt{i}"));
        let got = d.path().join(format!("got{i}"));
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&got).unwrap();
        let args: Vec<String> = run_args(&model, &tr, &va, &mnt.join("run"), &extra).iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs '{m}' || exit 99\n'{bin}' {args} >'{g}/stdout' 2>'{g}/stderr'\necho $? >'{g}/rc'\n[ -d '{m}/run' ] && cp -a '{m}/run' '{g}/run'\nexit 0\n",
            m = s(&mnt),
            g = s(&got),
            bin = env!("CARGO_BIN_EXE_lowrank"),
            args = args.join(" ")
        );
        let Some(out) = in_mount_namespace(&script) else {
            lowrank::ci::missing("a tmpfs mount (unshare --mount, or root)", "run the tests where unshare may create a mount namespace");
            return;
        };
        assert!(out.status.success(), "size {size}: {}", String::from_utf8_lossy(&out.stderr));
        let rc: i32 = std::fs::read_to_string(got.join("rc")).unwrap().trim().parse().unwrap();
        let err = std::fs::read_to_string(got.join("stderr")).unwrap();
        let run = got.join("run");
        assert!(!err.contains("panicked"), "size {size}: {err}");
        if rc == 0 {
            stages.push("fits");
        } else {
            assert_eq!(rc, 2, "size {size}: {err}");
            assert!(err.contains("No space left on device"), "size {size}: the message names the problem: {err}");
            let stage = if !run.exists() {
                "start-up (nothing left)"
            } else if err.contains("the run finished training but writing its results") {
                assert!(err.contains("--resume"), "size {size}: a failed final export says how to finish: {err}");
                // summary.json is written last: the run does not look finished without its results.
                assert!(!run.join("summary.json").exists(), "size {size}: summary.json without results");
                "final export"
            } else {
                assert!(err.contains("--resume") || !run.join("checkpoint.safetensors").exists(), "size {size}: {err}");
                "training"
            };
            stages.push(stage);
        }
        if run.exists() {
            let problems = incomplete(&run, false);
            assert!(problems.is_empty(), "size {size}: {problems:?}");
        }
    }
    assert_eq!(stages.first(), Some(&"start-up (nothing left)"), "{stages:?}");
    assert!(stages.contains(&"final export"), "{stages:?}");
    assert_eq!(stages.last(), Some(&"fits"), "{stages:?}");
}

#[test]
fn a_file_size_limit_fails_the_final_export_and_resume_finishes_it() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 24), small_csv(d.path(), "val.csv", 12));
    let run = d.path().join("run");
    // 320 KiB: the checkpoints and charts fit, the tokenizer files the adapter carries do not.
    let args: Vec<String> = run_args(&model, &tr, &va, &run, &["--epochs", "1"]).iter().map(|a| format!("'{a}'")).collect();
    let script = format!("trap '' XFSZ; ulimit -f 320; exec '{}' {}", env!("CARGO_BIN_EXE_lowrank"), args.join(" "));
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("File too large") && err.contains("--resume"), "{err}");
    assert!(err.contains("the run finished training"), "training finished before the export failed: {err}");
    assert!(!run.join("summary.json").exists(), "summary.json is written only after the results");
    let problems = incomplete(&run, false);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!run.join("adapter").exists(), "no partial adapter folder");
    let t = Instant::now();
    lowrank_ok(&["train", "--resume", s(&run)]);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(run.join("adapter/tokenizer.json").exists() && run.join("summary.json").exists() && incomplete(&run, false).is_empty());
}
