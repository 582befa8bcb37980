//! A STREAM sender over stdin/stdout, for checking `Sender` against a real
//! receiver without a connector (docs/stream.md "Checking against
//! ilp-protocol-stream").
//!
//! Writes each ILP Prepare as a hex line and reads one hex reply line per
//! Prepare, in order. Prints the outcome as JSON on stderr at the end.
//!
//! `cargo run -p ilpd-stream --example stdio_sender -- SPSP_JSON AMOUNT`

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use ilpd_stream::spsp::SpspResponse;
use ilpd_stream::{OsRandom, Sender, SenderConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let spsp = args.next().expect("SPSP JSON");
    let amount: u64 = args.next().and_then(|a| a.parse().ok()).expect("amount");
    let r = SpspResponse::parse(spsp.as_bytes()).expect("SPSP response");
    let mut cfg = SenderConfig::new(r.destination_account, r.shared_secret, amount);
    cfg.source_address = Some("test.ilpd.sender".into());
    cfg.max_in_flight = 4;
    let mut sender = Sender::new(cfg, OsRandom::new());
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64 + 1;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while !sender.is_done() && start.elapsed() < Duration::from_secs(30) {
        let mut sent = Vec::new();
        while let Some(p) = sender.poll_prepare(now()) {
            writeln!(out, "{}", hex::encode(sender.ilp_prepare(&p))).expect("stdout");
            sent.push(p.sequence);
        }
        out.flush().expect("stdout");
        if sent.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        for seq in sent {
            let line = lines.next().and_then(Result::ok).unwrap_or_default();
            let reply = hex::decode(line.trim()).unwrap_or_default();
            sender.handle_reply(now(), seq, &reply);
        }
    }
    let s = sender.stats();
    eprintln!(
        "{{\"result\":\"{:?}\",\"sent\":{},\"delivered\":{},\"fulfilled\":{},\"rejected\":{},\"asset\":\"{:?}\"}}",
        sender.result().map(|r| r.map(|_| "ok")),
        s.sent,
        s.delivered,
        s.fulfilled,
        s.rejected,
        sender.receiver_asset()
    );
}
