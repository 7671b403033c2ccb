//! Bounded mutation fuzzing of every reader of user files, on stable Rust, in CI.
//!
//! For each reader of `lowrank::fuzzing::Target` (safetensors, GGUF, config.json,
//! adapter_config.json, CSV, JSONL, sweep spaces, causal-LM JSONL, chat templates) the committed seed corpus in tests/fuzz/corpus/<target>/ is read, and for a fixed time
//! (LOWRANK_FUZZ_SECONDS per target, 3 by default) inputs made from it by random mutations (bit
//! flips, byte and block insertion / deletion / duplication, interesting integers, splices of two
//! seeds, truncation) are given to the reader. Any panic fails the test; the input is written to
//! tests/fuzz/crashes/<target>/ (replayed by every later run, so a crash found becomes a regression
//! test) and the seed of the run is printed (LOWRANK_FUZZ_SEED reproduces it). An error is the
//! expected answer to most inputs: only panics count. There is no coverage feedback here: the
//! same targets run coverage-guided under libFuzzer in fuzz/ (scripts/fuzz.sh, in CI).

use lowrank::fuzzing::Target;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
        }
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// One random change to `data` (seeds: the corpus, for splices).
fn mutate(rng: &mut rand::rngs::StdRng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX, u64::MAX / 2];
    let len = data.len();
    match rng.random_range(0..9) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = rng.random();
        }
        2 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(i..i, bytes);
        }
        3 if len > 1 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            data.drain(i..i + n);
        }
        4 if len > 1 => {
            // Duplicate a block.
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            let block = data[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            data.splice(at..at, block);
        }
        5 if len >= 8 => {
            // An interesting little-endian integer over 1, 2, 4 or 8 bytes (GGUF and safetensors
            // lengths and counts are little-endian).
            let w = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let i = rng.random_range(0..=len - w);
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            data[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        6 if len > 0 => {
            // An ASCII digit run (text formats: numbers in JSON, CSV, TOML).
            let i = rng.random_range(0..len);
            let digits =
                ["0", "-1", "1e308", "99999999999999999999", "NaN", "-0", "4294967296", "\"", ",", "\n", "{", "["][rng.random_range(0..12)];
            data.splice(i..i, digits.bytes());
        }
        7 if !seeds.is_empty() => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() && len > 0 {
                let (a, b) = (rng.random_range(0..len), rng.random_range(0..other.len()));
                data.truncate(a);
                data.extend_from_slice(&other[b..]);
            }
        }
        _ if len > 0 => data.truncate(rng.random_range(0..len)),
        _ => data.push(rng.random()),
    }
}

/// Runs `reader` on the crash files, the seeds, then mutations for the time budget; panics on
/// the first input that makes the reader panic, after saving it.
fn fuzz(target: &str, reader: &dyn Fn(&[u8], &Path)) {
    let seeds: Vec<Vec<u8>> = read_dir_files(&root().join("corpus").join(target)).into_iter().map(|(_, b)| b).collect();
    assert!(!seeds.is_empty(), "tests/fuzz/corpus/{target} has no seed files");
    let work = tempfile::tempdir().unwrap();
    let run = |input: &[u8]| catch_unwind(AssertUnwindSafe(|| reader(input, work.path()))).is_ok();
    for (path, bytes) in read_dir_files(&root().join("crashes").join(target)) {
        assert!(run(&bytes), "{target}: the recorded crash {} panics again", path.display());
    }
    for s in &seeds {
        assert!(run(s), "{target}: a seed panics");
    }
    let seed: u64 = std::env::var("LOWRANK_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let secs: f64 = std::env::var("LOWRANK_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ target.len() as u64);
    let (start, budget) = (Instant::now(), Duration::from_secs_f64(secs));
    let mut tried = 0u64;
    while start.elapsed() < budget {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut input, &seeds);
        }
        tried += 1;
        if !run(&input) {
            let dir = root().join("crashes").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("crash-{seed}-{tried}"));
            std::fs::write(&file, &input).unwrap();
            panic!("{target}: input {tried} of LOWRANK_FUZZ_SEED={seed} panics; saved as {}", file.display());
        }
    }
    eprintln!("{target}: {tried} inputs in {secs} s (LOWRANK_FUZZ_SEED={seed}), no panic");
    assert!(tried > 20, "{target}: only {tried} inputs tried");
}

/// One test per reader, so a failure names it.
macro_rules! fuzz_tests {
    ($($test:ident => $target:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            let target = Target::$target;
            fuzz(target.name(), &|b, dir| target.feed(b, dir));
        }
    )*};
}

fuzz_tests! {
    fuzz_safetensors => Safetensors,
    fuzz_gguf => Gguf,
    fuzz_config_json => ConfigJson,
    fuzz_adapter_config => AdapterConfig,
    fuzz_csv => Csv,
    fuzz_jsonl => Jsonl,
    fuzz_sweep_space => SweepSpace,
    fuzz_lm_jsonl => LmJsonl,
    fuzz_chat_template => ChatTemplate,
}

#[test]
fn every_target_of_the_library_has_a_test_here_and_a_libfuzzer_binary() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).unwrap();
    let here = include_str!("fuzz_readers.rs");
    for t in Target::ALL {
        let name = t.name();
        assert!(here.contains(&format!("=> {t:?},")), "tests/fuzz_readers.rs has no test for {name}");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no binary {name}");
        assert!(fuzz_dir.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "fuzz/fuzz_targets/{name}.rs is missing");
    }
}
