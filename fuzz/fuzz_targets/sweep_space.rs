//! libFuzzer target: `lowrank::fuzzing::Target::SweepSpace` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lowrank::fuzzing::feed_in_scratch(lowrank::fuzzing::Target::SweepSpace, data);
});
