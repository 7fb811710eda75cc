#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xferd_fuzz::resumable::ietf_headers(data));
