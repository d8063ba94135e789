//! Arbitrary text as `qvm-firewall` rules: one rule, then each line as a numbered QubesDB entry of
//! one client's rule directory; a refused set must be deny-all and every error one line. The same
//! bytes as a ruleset-RPC text: bounded, refused whole with a one-line error.
#![no_main]

use firewall::rules::{parse_rule, ruleset_from_entries, RuleSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match firewall::ruleset::Ruleset::parse(data) {
        Ok(r) => {
            let max = firewall::ruleset::MAX_ENTRIES;
            assert!(r.forwards.len() <= max && r.allows.len() <= max && r.reject.len() <= max);
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_rule(text) {
        assert!(!e.to_string().contains('\n'));
    }
    // "NNNN rule text" or "policy drop" per line; anything else becomes an unknown entry.
    let entries: Vec<(&str, &[u8])> = text
        .lines()
        .map(|l| {
            let (name, rest) = l.split_once(' ').unwrap_or((l, ""));
            (name, rest.as_bytes())
        })
        .collect();
    let (set, err) = ruleset_from_entries(entries.iter().copied());
    match err {
        Some(e) => {
            assert_eq!(set, RuleSet::deny_all());
            assert!(!e.to_string().contains('\n'));
        }
        None => assert!(set.rules.len() <= entries.len()),
    }
});
