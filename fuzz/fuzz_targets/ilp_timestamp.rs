//! Any bytes into both timestamp parsers: never panics, and every accepted
//! value formats back to an equal time.
#![no_main]

use ilpd_codec::time;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ms) = time::parse_ilp_timestamp(data) {
        // 17-digit form is canonical: formatting gives the input back.
        assert_eq!(&time::format_ilp_timestamp(ms)[..], data);
    }
    if let Ok(ms) = time::parse_generalized_time(data) {
        assert_eq!(
            time::parse_generalized_time(&time::format_generalized_time(ms)),
            Ok(ms)
        );
    }
    if data.len() >= 8 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[..8]);
        let ms = u64::from_le_bytes(b);
        let t = time::format_ilp_timestamp(ms);
        let back = time::parse_ilp_timestamp(&t).expect("formatted timestamp parses");
        assert_eq!(back, ms.min(time::MAX_TIMESTAMP_MS));
    }
});
