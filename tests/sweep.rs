//! Sweeps end to end: an interrupted SQLite sweep resumes to the same leaderboard; on a real
//! PostgreSQL, two worker processes share a study, one is killed mid-trial, and every trial
//! still ends exactly once.

mod common;
use common::*;
use lowrank::sweep::space::Space;
use lowrank::sweep::storage::{open_storage, TrialState};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tiny data and a tiny model in `dir`; returns the base training arguments.
fn setup(dir: &Path) -> Vec<String> {
    let model = tiny_bert(dir);
    for (part, n) in [("train", 48), ("val", 16), ("test", 16)] {
        head_csv(&rt(part), &dir.join(format!("{part}.csv")), n);
    }
    let space = dir.join("space.json");
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [1, 2], "lora_alpha": [1.0, 8.0], "scaling": "peft"}}"#).unwrap();
    let p = |x: &str| s(&dir.join(x)).to_string();
    [
        "--model",
        &p("tiny-bert"),
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--test",
        &p("test.csv"),
        "--batch-size",
        "6",
        "--max-length",
        "32",
        "--lr",
        "1e-3",
        "--epochs",
        "25",
        "--space",
        &p("space.json"),
    ]
    .iter()
    .map(|x| x.to_string())
    .chain(std::iter::once(format!("--checkpoint-every={}", 8)))
    .map(|x| if x.ends_with("tiny-bert") { s(&model).to_string() } else { x })
    .collect()
}

fn sweep(args: &[String], out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lowrank"));
    c.arg("sweep").args(args).arg("--out").arg(out).args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (trial key → (val, test)) from a finished sweep folder's storage.
fn results(out: &Path, url: Option<&str>) -> std::collections::BTreeMap<String, (f64, f64)> {
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let space_json = rec["space"].as_str().unwrap();
    let space = Space::from_json_str(space_json, "test").unwrap();
    let mut st = open_storage(url, out).unwrap();
    let study = st.open_study(rec["study"].as_str().unwrap(), space_json, &space.trials().unwrap()).unwrap();
    st.trials(study)
        .unwrap()
        .into_iter()
        .map(|t| {
            assert_eq!(t.state, TrialState::Done, "trial {} is {:?}: {:?}", t.id, t.state, t.error);
            let r = t.result.unwrap();
            (t.key, (r["val_acc"].as_f64().unwrap(), r["test_acc"].as_f64().unwrap()))
        })
        .collect()
}

#[test]
fn interrupted_sqlite_sweep_resumes_to_the_same_leaderboard() {
    let d = tempfile::tempdir().unwrap();
    let args = setup(d.path());
    let whole = d.path().join("whole");
    assert!(sweep(&args, &whole, &[]).status().unwrap().success());

    let cut = d.path().join("cut");
    let mut child: Child = sweep(&args, &cut, &[]).spawn().unwrap();
    wait_for("the first trial to finish and the second to start", Duration::from_secs(300), || {
        cut.join("trials/trial-0001/summary.json").exists() && cut.join("trials/trial-0002/metrics.jsonl").exists()
    });
    assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be interrupted");
    child.kill().unwrap();
    child.wait().unwrap();
    let out = sweep(&args, &cut, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted trial"), "the restart reruns the interrupted trial");
    assert_eq!(results(&whole, None), results(&cut, None));
    assert!(cut.join("leaderboard.csv").exists() && cut.join("heatmap-peft.png").exists());
}

#[test]
fn postgres_workers_share_a_study_and_survive_a_killed_worker() {
    let Some(url) = std::env::var("LOWRANK_TEST_POSTGRES").ok() else {
        lowrank::ci::missing("a PostgreSQL server (LOWRANK_TEST_POSTGRES)", "scripts/pg-test-server.sh start prints a URL");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let args = setup(d.path());
    let study = format!(
        "kill-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let worker = |name: &str| {
        sweep(&args, &d.path().join(name), &["--worker", "--storage", &url, "--study", &study, "--stale-after", "3", "--heartbeat", "1"])
    };
    let (out_a, out_b) = (d.path().join("a"), d.path().join("b"));
    let mut a = worker("a").spawn().unwrap();
    wait_for("worker a to be mid-trial", Duration::from_secs(300), || {
        std::fs::read_dir(out_a.join("trials"))
            .map(|mut it| {
                it.any(|e| {
                    let p = e.unwrap().path();
                    !p.join("summary.json").exists()
                        && std::fs::read_to_string(p.join("metrics.jsonl")).map(|m| m.lines().count() >= 10).unwrap_or(false)
                })
            })
            .unwrap_or(false)
    });
    let b = worker("b").spawn().unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    let out = b.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let got = results(&out_b, Some(&url));
    assert_eq!(got.len(), 4, "every trial ends with a result");
    let mut st = open_storage(Some(&url), &out_b).unwrap();
    let space_json = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out_b.join("sweep.json")).unwrap()).unwrap()
        ["space"]
        .as_str()
        .unwrap()
        .to_string();
    let space = Space::from_json_str(&space_json, "test").unwrap();
    let id = st.open_study(&study, &space_json, &space.trials().unwrap()).unwrap();
    let trials = st.trials(id).unwrap();
    let taken_over: Vec<_> = trials.iter().filter(|t| t.attempt == 2).collect();
    assert_eq!(taken_over.len(), 1, "exactly the killed trial was claimed twice: {trials:?}");
    assert!(trials.iter().all(|t| t.attempt <= 2));
    let b_name = taken_over[0].worker.clone().unwrap();
    assert!(trials.iter().filter(|t| t.attempt == 1).all(|t| t.worker.as_deref() != Some(&b_name) || t.result.is_some()));
}
