//! Prints, as JSON, the fp32 and bf16 GEMM rates of the engine's shapes and both arithmetic peaks
//! (`lowrank::ops::bf16::bench::gemm_rates`).
//!
//! Usage: `cargo run --release --example bf16_gemm -- [ROWS [REPS [THREADS]]]` (defaults 2048
//! tokens, 5 timed runs, 2 threads). `LOWRANK_BF16_KERNEL=portable` forces the portable kernel.

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map_or(default, |s| s.parse().expect("a number"));
    let (rows, reps, threads) = (arg(1, 2048), arg(2, 5), arg(3, 2));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");
    let report = lowrank::ops::bf16::bench::gemm_rates(rows, reps);
    println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
}
