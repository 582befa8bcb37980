//! ilpd receives STREAM payments (docs/stream.md "Receiving in ilpd"), with
//! real processes: the pinned JavaScript `ilp-protocol-stream` client
//! queries ilpd's SPSP endpoint on its HTTP listener and pays over BTP,
//! through ilpd, to ilpd's own receiver account. The amount delivered is
//! exactly the receiver's credit in `ilpd_account_balance` and the
//! sender's debit; receipts verify; kill -9 and a restart keep the
//! balances (the journal) and the SPSP details given out before it (the
//! server secret in the data dir).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ilpd_tests::btp_client::{balance, scrape};
use ilpd_tests::js::{self, btp_url};
use ilpd_tests::{free_ports, ilpd, require_node, temp_dir, Proc};
use serde_json::Value;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

struct Node {
    btp: u16,
    http: u16,
    metrics: u16,
    config: String,
}

impl Node {
    fn new(data: &Path) -> Node {
        let p = free_ports(3);
        let (btp, http, metrics) = (p[0], p[1], p[2]);
        let config = format!(
            r#"
[node]
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{btp}"
http_listen = "127.0.0.1:{http}"
metrics_addr = "127.0.0.1:{metrics}"
data_dir = "{}"
shutdown_grace_ms = 500

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token-0123456789"
max_balance = 1000000000000

[[accounts]]
id = "shop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9
"#,
            data.display()
        );
        Node {
            btp,
            http,
            metrics,
            config,
        }
    }

    fn start(&self, label: &str) -> Proc {
        let p = ilpd::start(&self.config, addr(self.btp), label);
        assert!(ilpd_tests::wait_for_port(
            addr(self.http),
            Duration::from_secs(10)
        ));
        p
    }

    fn balance(&self, account: &str) -> i64 {
        balance(addr(self.metrics), account)
    }

    fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        scrape(addr(self.metrics), name, labels)
    }

    fn alice(&self) -> String {
        btp_url("alice", "alice-token-0123456789", self.btp)
    }

    fn spsp_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// spsp-pay.js: SPSP query, then an ilp-protocol-stream payment.
    fn pay(&self, path: &str, amount: u64, receipts: bool) -> Value {
        let (url, amount) = (self.spsp_url(path), amount.to_string());
        let alice = self.alice();
        let mut args = vec![
            "--btp",
            alice.as_str(),
            "--spsp",
            url.as_str(),
            "--amount",
            amount.as_str(),
        ];
        if receipts {
            args.push("--receipts");
        }
        js::run_ok("spsp-pay.js", &args, Duration::from_secs(90))
    }
}

/// A raw HTTP/1.1 request; returns (status, head, body).
fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn spsp_get(port: u16, path: &str, accept: &str) -> (u16, String, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"),
    )
}

const ACCEPT: &str = "Accept: application/spsp4+json, application/spsp+json\r\n";

fn kill9(p: &mut Proc) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(p.id().to_string())
        .status();
    p.wait_timeout(Duration::from_secs(10)).expect("ilpd died");
}

fn as_u64(v: &Value, k: &str) -> u64 {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .parse()
        .unwrap()
}

#[test]
fn js_stream_client_pays_ilpd_receiver_via_spsp_and_the_ledger_keeps_it() {
    require_node();
    let data: PathBuf = temp_dir("stream-receiver").join("data");
    let n = Node::new(&data);
    let mut p = n.start("ilpd-1");

    // The SPSP endpoint (RFC 9), no token needed.
    let (status, head, body) = spsp_get(n.http, "/shop", ACCEPT);
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: application/spsp4+json"),
        "{head}"
    );
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    let before: Value = serde_json::from_str(&body).unwrap();
    let early_address = before["destination_account"].as_str().unwrap().to_string();
    let early_secret = before["shared_secret"].as_str().unwrap().to_string();
    assert!(early_address.starts_with("test.ilpd.shop."), "{body}");
    let (_, _, again) = spsp_get(n.http, "/.well-known/pay", ACCEPT);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_ne!(
        again["destination_account"], before["destination_account"],
        "a fresh connection per query"
    );
    assert_eq!(spsp_get(n.http, "/nobody", ACCEPT).0, 404);
    assert_eq!(
        spsp_get(n.http, "/shop", "Accept: application/json\r\n").0,
        406
    );
    let (status, head, _) = http(
        n.http,
        "POST /shop HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");

    // Pay 1,000,000 through ilpd (BTP in) to its own receiver.
    let r = n.pay("/shop", 1_000_000, false);
    assert_eq!(as_u64(&r, "sent"), 1_000_000, "{r}");
    assert_eq!(as_u64(&r, "delivered"), 1_000_000, "{r}");
    assert_eq!(n.balance("shop"), -1_000_000, "we owe the receiver account");
    assert_eq!(n.balance("alice"), 1_000_000, "alice owes us");
    assert_eq!(
        n.metric("ilpd_stream_received_total", "account=\"shop\""),
        Some(1_000_000.0)
    );
    assert!(
        n.metric(
            "ilpd_stream_packets_total",
            "account=\"shop\",result=\"fulfilled\""
        )
        .unwrap()
            >= 1.0
    );

    // The default receiver, with receipts (RFC 39).
    let r = n.pay("/.well-known/pay", 250_000, true);
    assert_eq!(as_u64(&r, "delivered"), 250_000, "{r}");
    assert_eq!(r["receiptsEnabled"], Value::Bool(true), "{r}");
    assert_eq!(r["receiptTotal"].as_str(), Some("250000"), "{r}");
    let total = 1_250_000;
    assert_eq!(n.balance("shop"), -total);
    assert_eq!(n.balance("alice"), total);

    // kill -9: the journal keeps both balances.
    kill9(&mut p);
    let mut p = n.start("ilpd-2");
    assert_eq!(n.balance("shop"), -total);
    assert_eq!(n.balance("alice"), total);
    assert_eq!(
        std::fs::metadata(data.join("stream-secret")).unwrap().len(),
        32
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("stream-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // SPSP details given out before the restart still work: the server
    // secret came back from the data dir.
    let alice = n.alice();
    let r = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            alice.as_str(),
            "--address",
            &early_address,
            "--secret",
            &early_secret,
            "--amount",
            "5000",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(as_u64(&r, "delivered"), 5_000, "{r}");
    assert_eq!(n.balance("shop"), -(total + 5_000));
    assert_eq!(n.balance("alice"), total + 5_000);
    p.terminate();
}
