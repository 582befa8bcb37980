//! A next hop that answers our Prepare with a BTP Error instead of an ILP
//! reply (docs/design.md "Carrying ILP over BTP": the sender turns it into
//! an ILP Reject upstream).
//! A final (`F..`) BTP error must not become a retryable T-code upstream.

use std::net::SocketAddr;
use std::time::Duration;

use ilpd_codec::btp::{self, BtpType};
use ilpd_tests::btp_client::{self as bc, BtpClient, Reply};
use ilpd_tests::{free_ports, ilpd};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn config(port: u16, metrics: u16) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:{port}"
metrics_addr = "127.0.0.1:{metrics}"
log_level = "warn"

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
"#
    )
}

/// alice sends one Prepare; bob answers it with a BTP Error `code`; returns
/// the Reject alice gets.
fn bounce(alice: &mut BtpClient, bob: &mut BtpClient, code: &[u8; 3], name: &[u8]) -> Reply {
    let id = alice
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 30_000,
            &[3; 32],
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let p = bob.read_btp(Duration::from_secs(10)).expect("a Prepare");
    assert_eq!(p.ty, BtpType::Message);
    let mut err = Vec::new();
    btp::write_error(
        &mut err,
        p.request_id,
        code,
        name,
        b"20240101000000.000Z",
        b"nope",
        &[],
    );
    bob.send_frame(2, &err).unwrap();
    let r = alice.read_btp(Duration::from_secs(10)).expect("a Response");
    assert_eq!((r.ty, r.request_id), (BtpType::Response, id));
    bc::parse_ilp(&r.ilp.expect("ilp entry"))
}

#[test]
fn btp_errors_become_rejects_of_the_same_class() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let _node = ilpd::start(&config(p[0], p[1]), listen, "ilpd-btp-err");
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();

    match bounce(&mut alice, &mut bob, b"F01", b"InvalidFieldsError") {
        Reply::Reject {
            code, triggered_by, ..
        } => assert_eq!((code.as_str(), triggered_by.as_str()), ("F00", "test.ilpd")),
        other => panic!("{other:?}"),
    }
    match bounce(&mut alice, &mut bob, b"T00", b"UnreachableError") {
        Reply::Reject {
            code, triggered_by, ..
        } => assert_eq!((code.as_str(), triggered_by.as_str()), ("T01", "test.ilpd")),
        other => panic!("{other:?}"),
    }
    for (acct, dir) in [("alice", "incoming"), ("bob", "outgoing")] {
        let r = bc::scrape(
            m,
            "ilpd_account_reserved",
            &format!("account=\"{acct}\",direction=\"{dir}\""),
        );
        assert_eq!(r, Some(0.0), "{acct} {dir}");
    }
}
