//! Proves the hot-path decoders allocate nothing, with a counting global
//! allocator.
//!
//! HOW TO EXTEND (BTP, WebSocket, peer formats...): add one `#[test] fn
//! <format>()` per format at the bottom of this file. Build the input
//! bytes *outside* the closure (building may allocate), then put the
//! parse + accessors + in-place edits *inside* `assert_no_alloc("name", ||
//! { ... })`. Return or `black_box` what you read so it is not optimised
//! away. The counter is per thread, so tests may run in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use ilpd_codec::error_code::ErrorCode;
use ilpd_codec::ilp::{
    Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
use ilpd_codec::types::Expiry;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the slot may be gone while the thread is shutting down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

/// Runs `f` and fails the test if it allocated on this thread.
fn assert_no_alloc<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let before = allocs();
    let r = f();
    let n = allocs() - before;
    assert_eq!(n, 0, "{what} allocated {n} times");
    r
}

#[test]
fn counter_detects_allocation() {
    let before = allocs();
    black_box(vec![1u8; 10]);
    assert!(allocs() > before, "the counting allocator does not count");
}

#[test]
fn ilp_prepare() {
    let mut buf = PrepareBuilder {
        amount: 107,
        expires_at: Expiry(1_514_132_072_279),
        execution_condition: &[7; 32],
        destination: b"example.alice.bob",
        data: &[1; 300],
    }
    .build();
    let mut vec = buf.to_vec();
    let sum = assert_no_alloc("Prepare on BytesMut", || {
        let mut p = Prepare::new_checked(&mut buf).unwrap();
        let mut sum = p.amount() + p.expires_at().0;
        sum += p.execution_condition()[0] as u64 + p.expires_at_raw()[0] as u64;
        sum += p.destination().len() as u64 + p.destination_str().len() as u64;
        sum += p.data().len() as u64 + p.trailing().len() as u64 + p.len() as u64;
        p.set_amount(99);
        p.set_expires_at(Expiry(1_600_000_000_000));
        sum + p.amount() + p.expires_at().0 + p.as_bytes().len() as u64
    });
    black_box(sum);
    assert_no_alloc("Prepare on &mut [u8] and Packet", || {
        let mut p = Prepare::new_checked(&mut vec[..]).unwrap();
        p.set_amount(1);
        p.set_expires_at(Expiry(0));
        black_box(p.amount());
        let pk = Packet::new_checked(&vec[..]).unwrap();
        black_box(pk.as_bytes().len());
    });
    assert_eq!(Prepare::new_checked(&buf[..]).unwrap().amount(), 99);
}

#[test]
fn ilp_fulfill() {
    let buf = FulfillBuilder {
        fulfillment: &[3; 32],
        data: &[9; 200],
    }
    .build()
    .freeze();
    // The first clone of a `Bytes` made from a Vec promotes it to a shared
    // (refcounted) buffer, which allocates once; do that outside.
    let warm = buf.clone();
    drop(warm);
    assert_no_alloc("Fulfill on Bytes", || {
        // Cloning `Bytes` bumps a refcount, it does not allocate.
        let f = Fulfill::new_checked(buf.clone()).unwrap();
        black_box((
            f.fulfillment()[0],
            f.data().len(),
            f.as_bytes().len(),
            f.len(),
        ));
        let inner = f.into_inner();
        black_box(inner.len());
        let pk = Packet::new_checked(&buf[..]).unwrap();
        black_box(pk.as_bytes().len());
    });
}

#[test]
fn ilp_reject() {
    let buf = RejectBuilder {
        code: ErrorCode::F02_UNREACHABLE,
        triggered_by: b"g.connector",
        message: b"no route",
        data: &[5; 40],
    }
    .build()
    .to_vec();
    assert_no_alloc("Reject on &[u8]", || {
        let r = Reject::new_checked(&buf[..]).unwrap();
        black_box((
            r.code(),
            r.code().name(),
            r.code().class(),
            r.code().as_str(),
        ));
        black_box((
            r.triggered_by(),
            r.message(),
            r.data(),
            r.as_bytes(),
            r.len(),
        ));
        let pk = Packet::new_checked(&buf[..]).unwrap();
        black_box(pk.as_bytes().len());
    });
}

#[test]
fn address_and_timestamps() {
    assert_no_alloc("address and timestamp helpers", || {
        black_box(ilpd_codec::address::validate(b"g.alice.bob").is_ok());
        black_box(ilpd_codec::address::prefix_matches(
            b"g.alice",
            b"g.alice.bob",
        ));
        black_box(ilpd_codec::time::parse_ilp_timestamp(b"20171224161432279").is_ok());
        black_box(ilpd_codec::time::format_ilp_timestamp(1_514_132_072_279));
        black_box(ilpd_codec::time::parse_generalized_time(b"20171224161432.279Z").is_ok());
        black_box(ilpd_codec::time::format_generalized_time(1_514_132_072_279));
    });
}

#[test]
fn btp_message() {
    use ilpd_codec::btp::{self, Btp};
    let ilp = [0x0c_u8; 100];
    let mut buf = Vec::new();
    btp::write_ilp_message(&mut buf, 42, &ilp);
    let mut auth = Vec::new();
    btp::write_auth(&mut auth, 1, Some(b"alice"), b"secret");
    assert_no_alloc("BTP parse, protocolData walk, ilp_range, auth", || {
        let p = Btp::new_checked(&buf[..]).unwrap();
        let mut n = p.request_id() as usize + p.packet_type() as usize;
        for e in p.protocol_data() {
            n += e.name.len() + e.content_type as usize + e.data.len();
        }
        n += p.ilp_range().map_or(0, |r| r.len());
        n += p.ilp().map_or(0, <[u8]>::len) + p.primary().map_or(0, |e| e.data.len());
        n += p.get(b"ilp").map_or(0, |e| e.data.len());
        let a = Btp::new_checked(&auth[..]).unwrap();
        let cred = btp::parse_auth(&a).unwrap();
        n += cred.token.len() + cred.username.map_or(0, <[u8]>::len);
        black_box(n)
    });
}

#[test]
fn websocket_header_and_unmask() {
    use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
    let payload = [0x5a_u8; 200];
    let mut frame = Vec::new();
    ws::write_frame(&mut frame, Opcode::Binary, &payload, Some([1, 2, 3, 4]));
    assert_no_alloc("WebSocket header parse + unmask of 200 bytes", || {
        let h = ws::parse_frame_header(&frame).unwrap().unwrap();
        let body = &mut frame[h.header_len..];
        ws::unmask(body, h.mask.unwrap());
        black_box(body[0]);
    });
    assert_eq!(&frame[frame.len() - 200..], &payload[..]);

    // Decoder::decode on a buffer that is already shared: the first
    // `split_to` of a Vec-backed BytesMut allocates its shared header once,
    // so do one decode outside, then the next frame costs nothing.
    let mut wire = bytes::BytesMut::new();
    for _ in 0..2 {
        ws::write_frame(&mut wire, Opcode::Binary, &payload, Some([9, 8, 7, 6]));
    }
    let mut d = Decoder::new(Role::Server, 1 << 16);
    black_box(d.decode(&mut wire).unwrap());
    let m = assert_no_alloc("Decoder::decode of one binary frame", || {
        d.decode(&mut wire).unwrap()
    });
    assert_eq!(
        m,
        Some(Message::Binary(bytes::BytesMut::from(&payload[..])))
    );
}
