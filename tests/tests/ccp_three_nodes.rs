//! Three ilpd processes learn their routes over CCP (docs/design.md "CCP"), with
//! no static routes: A — B — C, where A and C dial B. C's child `carl`
//! becomes reachable from A's child `sender`; when C goes away, A's route
//! is withdrawn within holdDownTime and A answers F02 itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ilpd_codec::btp::BtpType;
use ilpd_tests::btp_client::{self, parse_ilp, BtpClient, Reply};
use ilpd_tests::{free_ports, ilpd, Proc};
use sha2::{Digest, Sha256};

/// Short CCP timers so the test runs in seconds.
const INTERVAL_MS: u64 = 500;
const HOLD_DOWN_MS: u64 = 2_000;

fn node_toml(address: &str, port: u16, metrics: Option<u16>, accounts: &str) -> String {
    let metrics = metrics
        .map(|p| format!("metrics_addr = \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[node]
address = "{address}"
allow_weak_tokens = true  # short test tokens
threads = 2
pin_cores = false
listen = "127.0.0.1:{port}"
{metrics}shutdown_grace_ms = 200
reconnect_initial_ms = 100
route_broadcast_interval_ms = {INTERVAL_MS}
route_hold_down_ms = {HOLD_DOWN_MS}
{accounts}
"#
    )
}

fn account(id: &str, relation: &str, transport: &str) -> String {
    format!(
        "\n[[accounts]]\nid = \"{id}\"\nrelation = \"{relation}\"\nasset_code = \"USD\"\nasset_scale = 9\n{transport}\n"
    )
}

struct Net {
    _b: Proc,
    _a: Proc,
    c: Proc,
    a_port: u16,
    a_metrics: SocketAddr,
    c_port: u16,
}

fn start() -> Net {
    let p = free_ports(4);
    let (a_port, b_port, c_port, a_metrics) = (p[0], p[1], p[2], p[3]);
    let dial_b = |user: &str| {
        format!(
            "btp_url = \"ws://127.0.0.1:{b_port}/\"\noutgoing_token = \"{user}-at-b\"\nbtp_username = \"{user}\"\nconnections = 1"
        )
    };
    let b = node_toml(
        "test.b",
        b_port,
        None,
        &(account("a", "peer", "incoming_token = \"a-at-b\"")
            + &account("c", "peer", "incoming_token = \"c-at-b\"")),
    );
    let a = node_toml(
        "test.a",
        a_port,
        Some(a_metrics),
        &(account("sender", "child", "incoming_token = \"sender-token\"")
            + &account("b", "peer", &dial_b("a"))),
    );
    let c = node_toml(
        "test.c",
        c_port,
        None,
        &(account("b", "peer", &dial_b("c"))
            + &account("carl", "child", "incoming_token = \"carl-token\"")),
    );
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let b = ilpd::start(&b, addr(b_port), "ilpd-b");
    let a = ilpd::start(&a, addr(a_port), "ilpd-a");
    let c = ilpd::start(&c, addr(c_port), "ilpd-c");
    Net {
        _b: b,
        _a: a,
        c,
        a_port,
        a_metrics: addr(a_metrics),
        c_port,
    }
}

/// Sends one Prepare from `sender` to `dest`; `carl`, if given, fulfills
/// whatever reaches it. Returns the reply the sender got.
fn attempt(sender: &mut BtpClient, carl: Option<&mut BtpClient>, dest: &str, n: u8) -> Reply {
    let f = [n; 32];
    let cond: [u8; 32] = Sha256::digest(f).into();
    let p = btp_client::prepare(10, btp_client::unix_ms() + 10_000, &cond, dest, b"");
    let id = sender.send_prepare(&p).expect("send prepare");
    if let Some(carl) = carl {
        // Only a routed Prepare reaches carl; an F02 comes straight back.
        if let Ok(m) = carl.read_btp(Duration::from_millis(1_500)) {
            if m.ty == BtpType::Message {
                carl.send_response(m.request_id, &btp_client::fulfill(&f, b""))
                    .expect("carl answers");
            }
        }
    }
    loop {
        let r = sender
            .read_btp(Duration::from_secs(15))
            .expect("a reply to the sender");
        if r.ty == BtpType::Response && r.request_id == id {
            return parse_ilp(&r.ilp.expect("ILP reply"));
        }
    }
}

fn metrics_text(addr: SocketAddr) -> String {
    btp_client::http_get(addr, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// Waits until a Prepare from `sender` to C's child is fulfilled by `carl`.
fn until_reachable(net: &Net, sender: &mut BtpClient, carl: &mut BtpClient, n: &mut u8) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = attempt(sender, Some(&mut *carl), "test.c.carl.x", *n);
        if matches!(last, Reply::Fulfill { fulfillment } if fulfillment == [*n; 32]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "C's child never became reachable from A: last reply {last:?}\n{}",
            metrics_text(net.a_metrics)
        );
        *n = n.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until A itself answers F02 for C's child; returns how long it took.
fn until_unreachable(sender: &mut BtpClient, n: &mut u8, limit: Duration) -> Duration {
    let gone = Instant::now();
    loop {
        *n = n.wrapping_add(1);
        let r = attempt(sender, None, "test.c.carl.x", *n);
        if let Reply::Reject {
            code, triggered_by, ..
        } = &r
        {
            if code == "F02" && triggered_by == "test.a" {
                return gone.elapsed();
            }
        }
        assert!(
            gone.elapsed() < limit,
            "A still routes to C {} ms after C went away: {r:?}",
            gone.elapsed().as_millis()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// C freezes (SIGSTOP): its connection stays open but it stops sending
/// heartbeats, so B's routes from C expire after holdDownTime and A's
/// follow.
#[test]
fn a_frozen_node_expires_after_hold_down() {
    let net = start();
    let a_addr = SocketAddr::from(([127, 0, 0, 1], net.a_port));
    let c_addr = SocketAddr::from(([127, 0, 0, 1], net.c_port));
    let mut carl =
        BtpClient::connect_auth(c_addr, Some("carl"), "carl-token").expect("carl connects to C");
    let mut sender = BtpClient::connect_auth(a_addr, Some("sender"), "sender-token")
        .expect("sender connects to A");
    let mut n = 1u8;
    until_reachable(&net, &mut sender, &mut carl, &mut n);
    let pid = net.c.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    // Expiry at B happens at most holdDownTime after C's last heartbeat;
    // the withdrawal reaches A in the next batch. Watched in A's metrics
    // (a packet meanwhile would wait for the frozen C until it expired).
    let stopped = Instant::now();
    let route = "ilpd_ccp_route{prefix=\"test.c.carl\"";
    while metrics_text(net.a_metrics).contains(route) {
        assert!(
            stopped.elapsed() < Duration::from_millis(HOLD_DOWN_MS + 1_500),
            "A still has the route {} ms after C froze",
            stopped.elapsed().as_millis()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = stopped.elapsed();
    let r = attempt(&mut sender, None, "test.c.carl.x", n.wrapping_add(1));
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(
        matches!(&r, Reply::Reject { code, triggered_by, .. } if code == "F02" && triggered_by == "test.a"),
        "A answers F02 itself: {r:?}"
    );
    assert!(
        took >= Duration::from_millis(HOLD_DOWN_MS - INTERVAL_MS - 200),
        "withdrawn after {} ms: sooner than holdDownTime allows, so not by expiry",
        took.as_millis()
    );
}

#[test]
fn child_of_c_is_reachable_from_a_and_withdrawn_when_c_goes_away() {
    let mut net = start();
    let a_addr = SocketAddr::from(([127, 0, 0, 1], net.a_port));
    let c_addr = SocketAddr::from(([127, 0, 0, 1], net.c_port));
    let mut carl =
        BtpClient::connect_auth(c_addr, Some("carl"), "carl-token").expect("carl connects to C");
    let mut sender = BtpClient::connect_auth(a_addr, Some("sender"), "sender-token")
        .expect("sender connects to A");

    // Routes converge: A learns test.c.carl through B.
    let mut n = 1u8;
    until_reachable(&net, &mut sender, &mut carl, &mut n);
    let text = metrics_text(net.a_metrics);
    assert!(
        text.contains("ilpd_ccp_route{prefix=\"test.c.carl\",next_hop=\"b\",path_len=\"2\"} 1"),
        "A's metrics show the learned route through B and C:\n{text}"
    );
    assert!(text.contains("ilpd_ccp_route{prefix=\"test.b\",next_hop=\"b\",path_len=\"1\"} 1"));

    // C goes away: A withdraws the route within holdDownTime and answers
    // F02 itself (triggeredBy A, not B or C).
    net.c.terminate();
    until_unreachable(
        &mut sender,
        &mut n,
        Duration::from_millis(HOLD_DOWN_MS + 1_000),
    );
    let text = metrics_text(net.a_metrics);
    assert!(
        !text.contains("prefix=\"test.c.carl\""),
        "the route is gone from A's table:\n{text}"
    );
    assert!(text.contains("prefix=\"test.b\""), "B is still there");
}
