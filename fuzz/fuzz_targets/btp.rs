//! Fuzz target: BTP/2.0 decoding (RFC 23). Anything `new_checked`
//! accepts must answer every accessor without panicking and re-encode to a
//! packet that decodes to the same fields.
#![no_main]

use ilpd_codec::btp::{self, parse_auth, Btp, BtpType, ProtocolData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Btp::new_checked(data) else {
        return;
    };
    let entries: Vec<ProtocolData<'_>> = p.protocol_data().collect();
    assert_eq!(entries.len(), p.protocol_data_count());
    assert_eq!(p.primary(), entries.first().copied());
    if let Some(r) = p.ilp_range() {
        assert_eq!(entries[0].name, b"ilp");
        assert_eq!(&data[r], entries[0].data);
    }
    let _ = parse_auth(&p);

    let mut out = Vec::new();
    match p.packet_type() {
        BtpType::Error => btp::write_error(
            &mut out,
            p.request_id(),
            &p.error_code(),
            p.error_name(),
            p.triggered_at(),
            p.error_data(),
            &entries,
        ),
        BtpType::Transfer => btp::write_transfer(&mut out, p.request_id(), p.amount(), &entries),
        ty => btp::write_packet(&mut out, ty, p.request_id(), &entries),
    }
    let q = Btp::new_checked(&out[..]).expect("re-encoded packet decodes");
    assert_eq!(q.packet_type(), p.packet_type());
    assert_eq!(q.request_id(), p.request_id());
    assert_eq!(q.amount(), p.amount());
    assert_eq!(q.error_code(), p.error_code());
    assert_eq!(q.error_name(), p.error_name());
    assert_eq!(q.triggered_at(), p.triggered_at());
    assert_eq!(q.error_data(), p.error_data());
    assert!(q.protocol_data().eq(entries.iter().copied()));
    // Canonical input without trailing bytes re-encodes byte for byte.
    assert!(out.len() <= p.packet_len());
    if out.len() == data.len() {
        assert_eq!(out, data);
    }
});
