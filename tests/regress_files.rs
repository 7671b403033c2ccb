//! Regression tests of issue 15's "must never happen again" classes that concern files: export and
//! merge never remove what they did not create (1); one process per run folder, sweep folder and
//! eval output (2); and the leftovers and traps of a failed or interrupted job (5). Every command
//! runs the real binary on a tiny random BERT with MiniLM's tokenizer.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tiny model and a 24-row train / 12-row val split in `dir`.
struct Setup {
    model: PathBuf,
    train: PathBuf,
    val: PathBuf,
}

fn setup(dir: &Path) -> Setup {
    Setup { model: tiny_bert(dir), train: small_csv(dir, "train.csv", 24), val: small_csv(dir, "val.csv", 12) }
}

impl Setup {
    fn train_args(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["train", "--model", s(&self.model), "--train", s(&self.train), "--val", s(&self.val)]
            .iter()
            .chain(&["--batch-size", "4", "--max-length", "32", "--out", s(out)])
            .map(|x| x.to_string())
            .collect();
        if !extra.contains(&"--epochs") {
            a.extend(["--epochs".to_string(), "1".to_string()]);
        }
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn steps_logged(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map(|m| m.lines().filter(|l| l.contains("\"step\"")).count()).unwrap_or(0)
}

#[test]
fn class1_export_and_merge_never_touch_their_inputs_or_unrelated_files() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("runs/a");
    lowrank_ok(&strs(&st.train_args(&run, &[])));
    let adapter = run.join("adapter");
    let before_run = snapshot(&run);
    let before_model = snapshot(&st.model);
    let link = d.path().join("link-to-run");
    std::os::unix::fs::symlink(&run, &link).unwrap();
    // --out equal to the run folder, its parent, a path that resolves to it, or the model folder.
    for out in [run.clone(), d.path().join("runs"), run.join("../a"), link.clone(), d.path().to_path_buf()] {
        let e = lowrank_refuses(&["export", "--run", s(&run), "--out", s(&out), "--force"]);
        assert!(e.contains("run folder") && e.contains("--out"), "{}: {e}", out.display());
    }
    for out in [st.model.clone(), adapter.clone(), run.clone(), d.path().to_path_buf()] {
        let e = lowrank_refuses(&["merge", "--model", s(&st.model), "--adapter", s(&adapter), "--out", s(&out), "--force"]);
        assert!(e.contains("base model") || e.contains("adapter"), "{}: {e}", out.display());
    }
    assert_eq!(snapshot(&run), before_run, "a refused export or merge changed the run folder");
    assert_eq!(snapshot(&st.model), before_model, "a refused merge changed the base model");

    // A folder with someone else's files: refused without --force; with it, only lowrank's files
    // are written and the others are kept byte for byte.
    let shared = d.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("README.md"), b"my notes").unwrap();
    std::fs::write(shared.join("tokenizer.json"), b"stale").unwrap();
    let e = lowrank_refuses(&["export", "--run", s(&run), "--out", s(&shared)]);
    assert!(e.contains("README.md") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(shared.join("tokenizer.json")).unwrap(), b"stale", "a refused export wrote");
    lowrank_ok(&["export", "--run", s(&run), "--out", s(&shared), "--force"]);
    assert_eq!(std::fs::read(shared.join("README.md")).unwrap(), b"my notes");
    assert_eq!(
        std::fs::read(shared.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(adapter.join("adapter_model.safetensors")).unwrap()
    );
    assert_eq!(std::fs::read(shared.join("tokenizer.json")).unwrap(), std::fs::read(adapter.join("tokenizer.json")).unwrap());
    let merged = d.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    std::fs::write(merged.join("1_Pooling"), b"sentence-transformers file").unwrap();
    lowrank_refuses(&["merge", "--model", s(&st.model), "--adapter", s(&adapter), "--out", s(&merged)]);
    lowrank_ok(&["merge", "--model", s(&st.model), "--adapter", s(&adapter), "--out", s(&merged), "--force"]);
    assert_eq!(std::fs::read(merged.join("1_Pooling")).unwrap(), b"sentence-transformers file");
    assert!(merged.join("model.safetensors").exists() && merged.join("config.json").exists());
    // An empty or new folder needs no --force, and nothing is left beside it.
    let fresh = d.path().join("new/adapter");
    lowrank_ok(&["export", "--run", s(&run), "--out", s(&fresh)]);
    assert_eq!(std::fs::read_dir(d.path().join("new")).unwrap().count(), 1, "a staging folder or lock was left");
    assert_eq!(snapshot(&run), before_run);
}

#[test]
fn class1_train_never_writes_over_its_inputs_or_foreign_files() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let before = snapshot(d.path());
    // The data's own folder (it holds train.csv, which a run would record its split into).
    let e = lowrank_refuses(&strs(&st.train_args(d.path(), &[])));
    assert!(e.contains("base model") || e.contains("already holds files"), "{e}");
    let e = lowrank_refuses(&strs(&st.train_args(&st.model, &[])));
    assert!(e.contains("already holds files") && e.contains("not a lowrank run"), "{e}");
    assert_eq!(snapshot(d.path()), before, "a refused train changed files");
}

#[test]
fn class2_one_process_per_run_folder() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("run");
    // A long run (many epochs) holds the folder.
    let args = st.train_args(&run, &["--epochs", "200", "--checkpoint-every", "1"]);
    let mut first = Command::new(env!("CARGO_BIN_EXE_lowrank")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first run to train", || steps_logged(&run) >= 2);
    let pid = first.id().to_string();
    let e = lowrank_refuses(&strs(&st.train_args(&run, &[])));
    assert!(e.contains("in use by process") && e.contains(&pid), "a second train on the same folder: {e}");
    let e = lowrank_refuses(&["train", "--resume", s(&run)]);
    assert!(e.contains("in use by process") && e.contains(&pid), "a resume while the run is going: {e}");
    assert!(first.try_wait().unwrap().is_none(), "the refused commands must not disturb the running one");
    first.kill().unwrap();
    first.wait().unwrap();
    // The killed owner's lock is stale: taken over, said so, and the run continues.
    let e = lowrank_refuses(&["train", "--resume", s(&run), "--epochs", "3"]);
    assert!(e.contains("--epochs would be ignored"), "{e}");
    let mut resume = Command::new(env!("CARGO_BIN_EXE_lowrank"))
        .args(["train", "--resume", s(&run)])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the resumed run to train", || {
        std::fs::read_to_string(run.join(".lowrank.lock")).is_ok_and(|l| l.contains(&resume.id().to_string()))
    });
    resume.kill().unwrap();
    let out = resume.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("process {pid}")) && err.contains("no longer runs"), "{err}");
}

#[test]
fn class2_one_process_per_sweep_folder_and_eval_output() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let sweep = d.path().join("sweep");
    std::fs::create_dir(&sweep).unwrap();
    let space = d.path().join("space.json");
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1, 2]}}"#).unwrap();
    // This test process holds the sweep folder: the binary must refuse it, naming this pid.
    let held = lowrank::fsutil::lock::Lock::folder(&sweep, "sweep folder").unwrap();
    let mut args = st.train_args(&sweep, &[]);
    args[0] = "sweep".into();
    args.extend(["--space".to_string(), s(&space).to_string()]);
    let e = lowrank_refuses(&strs(&args));
    assert!(e.contains("sweep folder") && e.contains(&std::process::id().to_string()), "{e}");
    let e = lowrank_refuses(&strs(&[strs(&args), vec!["--worker"]].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    assert!(e.contains("in use"), "a worker joining a folder held by a sweep: {e}");
    drop(held);
    assert_eq!(std::fs::read_dir(&sweep).unwrap().count(), 0, "refused sweeps wrote into the folder");

    let run = d.path().join("run");
    lowrank_ok(&strs(&st.train_args(&run, &[])));
    let out = d.path().join("eval.json");
    let held = lowrank::fsutil::lock::Lock::file(&out, "eval output").unwrap();
    let e = lowrank_refuses(&["eval", "--run", s(&run), "--data", s(&st.val), "--out", s(&out)]);
    assert!(e.contains("eval output") && e.contains(&std::process::id().to_string()), "{e}");
    drop(held);
    lowrank_ok(&["eval", "--run", s(&run), "--data", s(&st.val), "--out", s(&out)]);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(m["metrics"]["n"], 12);
}

#[test]
fn class5_a_failed_start_leaves_nothing_and_the_corrected_command_runs() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("run");
    // Failures found at every stage of start-up: the data, the plan, the model's limits, memory.
    let bad_data = d.path().join("bad.csv");
    std::fs::write(&bad_data, "review,label\na,0\nb,1\n").unwrap();
    let mut with_bad_data = st.train_args(&run, &[]);
    with_bad_data[4] = s(&bad_data).to_string();
    for (args, env) in [
        (with_bad_data, None),
        (st.train_args(&run, &["--target-modules", "q_proj"]), None),
        (st.train_args(&run, &["--lora-r", "100000"]), None),
        (st.train_args(&run, &[]), Some("8M")),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lowrank"));
        c.args(&args);
        if let Some(limit) = env {
            c.env("LOWRANK_MEMORY_LIMIT", limit);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(!run.exists(), "a failed start left {}: {err}", run.display());
        if env.is_some() {
            assert!(err.contains("needs about") && err.contains("this machine has 8.0 MiB") && err.contains("--batch-size"), "{err}");
        }
    }
    // Into a folder that existed (empty): it stays, empty.
    std::fs::create_dir(&run).unwrap();
    lowrank_refuses(&strs(&st.train_args(&run, &["--target-modules", "q_proj"])));
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    lowrank_ok(&strs(&st.train_args(&run, &[])));
    assert!(run.join("summary.json").exists());
}

#[test]
fn class5_a_precision_this_cpu_cannot_run_is_refused_before_the_folder_exists() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank")).args(st.train_args(&run, &["--precision", "bf16"])).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if lowrank::ops::bf16::native_available() {
        // This CPU runs bf16: the run is recorded as such.
        assert!(out.status.success(), "{err}");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert!(summary["precision"].as_str().unwrap().starts_with("bf16"), "{summary}");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--precision bf16 needs a CPU") && err.contains("--precision fp32"), "{err}");
        assert!(!run.exists(), "the refused start left {}", run.display());
    }
    eprintln!("bf16 on this CPU: {}", lowrank::ops::bf16::native_available());
}

#[test]
fn class5_stale_temporaries_relative_paths_and_a_failed_final_export() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    // Relative --model / --data from one folder, --resume from another.
    let rel = |p: &Path| p.strip_prefix(d.path()).unwrap().to_string_lossy().into_owned();
    let run = d.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank"))
        .current_dir(d.path())
        .args(["train", "--model", &rel(&st.model), "--train", &rel(&st.train), "--val", &rel(&st.val)])
        .args(["--batch-size", "4", "--max-length", "32", "--epochs", "40", "--checkpoint-every", "1", "--out", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = out.unwrap();
    wait_for("the run to checkpoint", || steps_logged(&run) >= 3 && run.join("checkpoint.safetensors").exists());
    // The final export will fail: a file stands where adapter/ goes.
    std::fs::write(run.join("adapter"), b"in the way").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert!(Path::new(cfg["model"].as_str().unwrap()).is_absolute(), "{cfg}");
    // A temporary file left by a kill at the wrong moment, from a process that no longer runs.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = run.join(format!(".checkpoint.tmp-{dead}-0.safetensors"));
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_lowrank")).current_dir(elsewhere.path()).args(["train", "--resume", s(&run)]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a failed final export fails the command: {err}");
    assert!(err.contains("adapter") && err.contains("--resume"), "{err}");
    assert!(err.contains("removed") && !stale.exists(), "the stale temporary is cleaned on resume: {err}");
    // summary.json comes last: a run without its results does not look finished.
    assert!(!run.join("summary.json").exists(), "summary.json written though the export failed");
    std::fs::remove_file(run.join("adapter")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_lowrank")).current_dir(elsewhere.path()).args(["train", "--resume", s(&run)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run.join("adapter/adapter_model.safetensors").exists() && run.join("summary.json").exists());
    // A run that failed before its first checkpoint says how to start over.
    let e = lowrank_refuses(&strs(&st.train_args(&run, &[])));
    assert!(e.contains("already holds a run") && e.contains("finished"), "{e}");
}

#[test]
fn class5_eval_prints_first_and_a_sweep_keeps_no_stale_storage() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("run");
    lowrank_ok(&strs(&st.train_args(&run, &[])));
    // The default output cannot be written (a folder is in its place): the metrics are printed,
    // then a warning; exit 0.
    std::fs::create_dir(run.join("eval-val.json")).unwrap();
    let out = lowrank(&["eval", "--run", s(&run), "--data", s(&st.val), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["n"], 12);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out FILE"));

    // A sweep whose storage cannot be reached leaves no record naming it; the corrected command works.
    let sweep = d.path().join("sweep");
    let space = d.path().join("space.json");
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1]}}"#).unwrap();
    let mut args = st.train_args(&sweep, &[]);
    args[0] = "sweep".into();
    args.extend(["--space".to_string(), s(&space).to_string()]);
    let mut bad = args.clone();
    bad.extend(["--storage".to_string(), "postgres://nobody@127.0.0.1:1/none".to_string()]);
    lowrank_refuses(&strs(&bad));
    assert!(!sweep.join("sweep.json").exists(), "a failed start recorded its storage");
    lowrank_ok(&strs(&args));
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sweep.join("sweep.json")).unwrap()).unwrap();
    assert!(rec["storage"].is_null(), "{rec}");
    // Joining it with another storage is refused, naming where its trials are.
    let e = lowrank_refuses(&strs(&bad));
    assert!(e.contains("trials are in") && e.contains("SQLite"), "{e}");
}

#[test]
fn class1_eval_never_writes_over_its_data_or_the_run() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    let run = d.path().join("run");
    lowrank_ok(&strs(&st.train_args(&run, &[])));
    let before = (snapshot(&run), std::fs::read(&st.val).unwrap());
    for out in [st.val.clone(), run.join("config.json"), run.join("summary.json"), run.clone()] {
        let e = lowrank_refuses(&["eval", "--run", s(&run), "--data", s(&st.val), "--out", s(&out)]);
        assert!(e.contains("choose another file"), "{}: {e}", out.display());
    }
    assert_eq!((snapshot(&run), std::fs::read(&st.val).unwrap()), before);
    lowrank_ok(&["eval", "--run", s(&run), "--data", s(&st.val), "--out", s(&run.join("eval-val.json"))]);
}

#[test]
fn survey2_reruns_with_other_settings_are_refused_not_reported_as_the_new_settings() {
    let d = tempfile::tempdir().unwrap();
    let st = setup(d.path());
    // compare: a finished run is reused only with the settings it was trained with.
    let cmp = d.path().join("cmp");
    let mut args = st.train_args(&cmp, &[]);
    args[0] = "compare".into();
    args.extend(["--runs".to_string(), "last-layers".to_string()]);
    lowrank_ok(&strs(&args));
    let table = std::fs::read_to_string(cmp.join("comparison.md")).unwrap();
    let out = lowrank(&strs(&args));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("reusing"), "{}", String::from_utf8_lossy(&out.stderr));
    // A finished run without its adapter (an export that failed after summary.json, as older
    // versions wrote them) is not reused as it is: its results are written again, then reused.
    let adapter = cmp.join("last-layers/adapter");
    let before = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::remove_dir_all(&adapter).unwrap();
    let out = lowrank(&strs(&args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("is missing: writing its results again") && !err.contains("reusing"), "{err}");
    assert_eq!(std::fs::read(adapter.join("adapter_model.safetensors")).unwrap(), before, "the rewritten adapter differs");
    let out = lowrank(&strs(&args));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("reusing"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut other = st.train_args(&cmp, &["--epochs", "2"]);
    other[0] = "compare".into();
    other.extend(["--runs".to_string(), "last-layers".to_string()]);
    let e = lowrank_refuses(&strs(&other));
    assert!(e.contains("trained with other settings") && e.contains("epochs: 1 then, 2 now") && e.contains("another --out"), "{e}");
    assert_eq!(std::fs::read_to_string(cmp.join("comparison.md")).unwrap(), table, "the table was rewritten");

    // sweep: a folder continues only the space (and base) it was started with; a space is
    // validated whenever it is given.
    let sweep = d.path().join("sweep");
    let space = d.path().join("space.json");
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1]}}"#).unwrap();
    let mut args = st.train_args(&sweep, &[]);
    args[0] = "sweep".into();
    args.extend(["--space".to_string(), s(&space).to_string()]);
    lowrank_ok(&strs(&args));
    lowrank_ok(&strs(&args));
    let record = std::fs::read(sweep.join("sweep.json")).unwrap();
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1, 4]}}"#).unwrap();
    let e = lowrank_refuses(&strs(&args));
    assert!(e.contains("started with another search space") && e.contains("another --out"), "{e}");
    std::fs::write(&space, r#"{"method": "random", "trials": 2, "params": {"lr": {"log_uniform": [1e-3, 1e-5]}}}"#).unwrap();
    lowrank_refuses(&strs(&args));
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1]}}"#).unwrap();
    let mut base = args.clone();
    base.extend(["--lr".to_string(), "1e-3".to_string()]);
    let e = lowrank_refuses(&strs(&base));
    assert!(e.contains("another base configuration") && e.contains("lr"), "{e}");
    assert_eq!(std::fs::read(sweep.join("sweep.json")).unwrap(), record);
}
