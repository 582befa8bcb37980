//! A STREAM receiver over stdin/stdout, for checking a real sender
//! against `Receiver` without a connector (docs/stream.md "Checking
//! against ilp-protocol-stream").
//!
//! Prints one SPSP response (JSON) line, then reads ILP Prepares as hex
//! lines and answers each with the hex of its Fulfill or Reject. On end of
//! input it prints the total credited to stderr.
//!
//! `cargo run -p ilpd-stream --example stdio_receiver -- [stream_receive_max]`

use std::io::{BufRead, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use ilpd_codec::ilp::Prepare;
use ilpd_stream::spsp::{response_json, ServerSecret};
use ilpd_stream::{OsRandom, Receiver, ReceiverConfig};

const ADDRESS: &str = "test.ilpd.receiver";

fn main() {
    let mut cfg = ReceiverConfig::new(ADDRESS, "XYZ", 9);
    if let Some(max) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        cfg.stream_receive_max = max;
    }
    let mut rng = OsRandom::new();
    let secret = ServerSecret::generate(&mut rng).expect("OS randomness");
    let details = secret
        .generate_address_and_secret(&mut rng, ADDRESS, b"stdio", None)
        .expect("OS randomness");
    let mut receiver = Receiver::new(cfg, secret);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{}", response_json(&details)).expect("stdout");
    out.flush().expect("stdout");
    let mut total = 0u64;
    let (mut fulfilled, mut rejected) = (0u64, 0u64);
    let mut data = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let answer = match hex::decode(line.trim()) {
            Ok(bytes) => match Prepare::new_checked(&bytes[..]) {
                Ok(p) => {
                    let o = receiver.handle_ilp_prepare(now, &p, &mut data);
                    total += o.credited();
                    match o {
                        ilpd_stream::Outcome::Fulfill { .. } => fulfilled += 1,
                        ilpd_stream::Outcome::Reject { .. } => rejected += 1,
                    }
                    o.to_ilp(&data, ADDRESS.as_bytes()).to_vec()
                }
                Err(_) => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        writeln!(out, "{}", hex::encode(answer)).expect("stdout");
        out.flush().expect("stdout");
    }
    eprintln!("credited {total} fulfilled {fulfilled} rejected {rejected}");
}
