//! libFuzzer target: `lowrank::fuzzing::Target::Safetensors` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lowrank::fuzzing::feed_in_scratch(lowrank::fuzzing::Target::Safetensors, data);
});
