//! Fuzz target for the Snort/Suricata-style rule parser of `signature_match`.
//!
//! Input: arbitrary bytes, read as rule-file text (invalid UTF-8 replaced). `parse_rules` must
//! never panic; on `Ok` every rule has a sid > 0, the sids are unique, and no content is
//! empty; on `Err` every message names the file.
//!
//! Run on stable: `cargo fuzz run --sanitizer none rule_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfs::rules::parse_rules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_rules(&text, "fuzz.rules") {
        Ok(rules) => {
            let mut sids: Vec<u32> = rules.iter().map(|r| r.sid).collect();
            assert!(sids.iter().all(|&s| s > 0));
            sids.sort_unstable();
            sids.dedup();
            assert_eq!(sids.len(), rules.len(), "duplicate sid accepted");
            assert!(rules.iter().all(|r| r.contents.iter().all(|c| !c.bytes.is_empty())));
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.starts_with("fuzz.rules:")), "{errors:?}");
        }
    }
});
