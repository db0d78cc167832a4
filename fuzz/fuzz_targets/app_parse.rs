//! Fuzz target for the application-file loader (`microboxes::App::parse`).
//!
//! Input: arbitrary bytes, read as app-file text (invalid UTF-8 replaced). `App::parse` must
//! never panic or hang; on `Err` every message names the file.
//!
//! Run on stable: `cargo fuzz run --sanitizer none app_parse` (seed corpus: fuzz/corpus/app_parse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use microboxes::App;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = App::parse(&text, "fuzz.toml") {
        assert!(!e.0.is_empty());
        assert!(e.0.iter().all(|m| m.starts_with("fuzz.toml")), "{:?}", e.0);
    }
});
