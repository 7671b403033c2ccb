//! How tests treat a missing asset, fixture or service: outside CI they may skip with a message;
//! under CI (the environment variable `CI` set to anything but "", "0" or "false", which
//! `.ci/run` sets) a skip would hide what the test checks, so it fails instead.

/// Whether this process runs under CI.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "0" && v != "false").unwrap_or(false)
}

/// Call when `what` is missing: panics under CI (naming `fix`), else prints that the test is
/// skipped. Returns nothing; the caller returns from the test right after.
pub fn missing(what: &str, fix: &str) {
    if in_ci() {
        panic!("{what} is missing under CI, so this test would check nothing; {fix}");
    }
    eprintln!("skipped: {what} is missing ({fix})");
}
