#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xferd_fuzz::config::config(data));
