#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tierguard_integration::fuzz_checks::manifests(data));
