//! Any bytes into address validation and prefix matching: never panics,
//! and what validates round-trips through the owned `Address`.
#![no_main]

use ilpd_codec::address::{self, Address};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let valid = address::validate(data).is_ok();
    if let Ok(a) = Address::from_bytes(data) {
        assert!(valid);
        assert_eq!(a.as_bytes(), data);
        assert_eq!(a.as_str().as_bytes(), data);
        assert!(a.is_prefix_of(data));
        let _ = a.with_suffix("x");
        assert!(data.starts_with(a.scheme().as_bytes()));
    } else {
        assert!(!valid);
    }
    // Split anywhere into (prefix, dest) and compare with the definition.
    if let Some((&cut, rest)) = data.split_first() {
        let at = cut as usize % (rest.len() + 1);
        let (p, d) = rest.split_at(at);
        let want = d == p || (d.starts_with(p) && d.get(p.len()) == Some(&b'.'));
        assert_eq!(address::prefix_matches(p, d), want);
        let want_rev = p == d || (p.starts_with(d) && p.get(d.len()) == Some(&b'.'));
        assert_eq!(address::prefix_matches(d, p), want_rev);
    }
});
