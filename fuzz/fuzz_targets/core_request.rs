#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xferd_fuzz::core_request::core_request(data));
