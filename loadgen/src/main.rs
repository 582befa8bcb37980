//! `ilp-loadgen`: drive an ILP connector (or itself, in direct mode) and
//! report throughput and an HDR latency distribution.
//!
//! Exit codes: 0 success, 1 the run failed (a link could not be opened, a
//! reconciliation mismatch with `--strict`, ...), 2 bad flags, 3 the run
//! was aborted because the connector's links failed (the report, with
//! "aborted", is still printed and written).

use clap::{Args, Parser, Subcommand, ValueEnum};
use ilpd_loadgen::run::{self, RunConfig, Target};
use ilpd_loadgen::sender::Load;
use ilpd_loadgen::url::LinkUrl;
use ilpd_loadgen::{demo, pay, report, stream, sweep};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ilp-loadgen",
    version,
    about = "Load generator for ILP connectors (Loopback Transport: it sends its own packets and receives them back)",
    long_about = "Load generator for ILP connectors. ilp-loadgen is both the sender and the receiver of its packets \
(the Loopback Transport): it sends Prepares to its own receiving address through the connector under test and \
fulfills them when they come back.\n\nWith no subcommand it runs `demo`: start ilpd with built-in accounts, drive it \
for about 10 seconds and print the results."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start ilpd with built-in accounts, drive it ~10 s, print the results (the default).
    Demo(DemoArgs),
    /// Baseline: the sender talks straight to its own receiver, no connector.
    Direct(DirectArgs),
    /// Drive a connector: send on --send, receive on --recv.
    Run(RunArgs),
    /// Open-loop rate sweep: find the highest rate whose p99 meets a bound.
    Sweep(SweepArgs),
    /// One-shot or chunked payment through a connector (or direct).
    Pay(PayArgs),
    /// Real STREAM payments to an SPSP receiver through a connector, many at once.
    Stream(StreamArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Transport {
    Btp,
    Http,
}

/// How long: "10", "10s", "500ms", "2m".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (examples: 10, 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "s" | "" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_url(s: &str) -> Result<LinkUrl, String> {
    LinkUrl::parse(s)
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Sender threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Connections per send link per sender thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    conns: u16,
    /// Receiver threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    recv_threads: u16,
    /// BTP receive connections per receiver thread (connector mode).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    recv_conns: u16,
    /// Open loop: packets per second in total (latency from intended send time).
    #[arg(long, conflicts_with = "window")]
    rate: Option<f64>,
    /// Closed loop: packets in flight per connection [default: 256].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    window: Option<u32>,
    /// Measured duration (after warm-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Stop after this many packets (the duration still bounds the run).
    #[arg(long)]
    packets: Option<u64>,
    /// Amount of each Prepare.
    #[arg(long, default_value_t = 1)]
    amount: u64,
    /// Minimum amount the receiver accepts [default: --amount, for 1:1 rates].
    #[arg(long)]
    min_dest_amount: Option<u64>,
    /// Prepare data size in bytes (at least 16: sequence number + minimum amount).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(16..=32767))]
    data_size: u16,
    /// Prepare expiry from the send time.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    expiry: Duration,
    /// Number of distinct destination addresses (under the receive address).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    destinations: u32,
    /// Receiver outcome mix, e.g. fulfill=90,reject:F99=5,wrong=3,noanswer=2.
    #[arg(long, default_value = "fulfill")]
    mix: String,
    /// Seed for fulfillments and the outcome mix (repeatable runs) [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Receiver rejects (R02) Prepares with less time left than this.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    min_time_left: Duration,
    /// How long past its expiry a packet may still be answered.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    grace: Duration,
    /// Longest wait for outstanding replies after the duration.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Do not pin threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Threads never block waiting for the network: each spins on its core
    /// (lowest latency and highest ceiling; costs a full core per thread).
    #[arg(long)]
    busy_poll: bool,
    /// Open loop: most packets in flight per connection.
    #[arg(long, default_value_t = 65536)]
    max_in_flight: u32,
    /// Receiver stalls once for this long (tests latency tails).
    #[arg(long, value_parser = parse_duration)]
    receiver_stall: Option<Duration>,
    /// ...after this many Prepares.
    #[arg(long, default_value_t = 1000)]
    receiver_stall_after: u64,
    /// SHA-256 implementation: auto, portable, sha-ni, avx2, avx512.
    #[arg(long, env = "ILPD_SHA256_IMPL")]
    sha256_impl: Option<String>,
    /// Write every figure, the settings, machine and commit as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency distribution as an HdrHistogram log.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Exit 1 unless the amounts reconcile exactly and nothing was lost.
    #[arg(long)]
    strict: bool,
    /// Connect timeout for each link.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

#[derive(Args, Debug)]
struct DirectArgs {
    /// Transport between the sender and the receiver.
    #[arg(long, value_enum, default_value_t = Transport::Btp)]
    transport: Transport,
    /// Loopback address used as destination prefix.
    #[arg(long)]
    recv_address: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
struct TargetArgs {
    /// Send link: btp+ws://user:token@host:port/path or http://token@host:port/path (repeatable).
    #[arg(long, required = true, value_parser = parse_url)]
    send: Vec<LinkUrl>,
    /// Receive link: btp+ws://user:token@host:port/path (a client of the connector),
    /// or http://[token@]127.0.0.1:port/ where we listen for the connector's POSTs.
    #[arg(long, value_parser = parse_url, required_unless_present = "lsd")]
    recv: Option<LinkUrl>,
    /// Instead of --recv: a Loopback Server Definition (application/lsd+json,
    /// {"loopback": "btp+ws://token@host:port/", "protocol": "BTP/2.0"}) as a file or URL.
    #[arg(long, conflicts_with = "recv")]
    lsd: Option<String>,
    /// Receive address (else IL-DCP on the BTP receive link).
    #[arg(long)]
    recv_address: Option<String>,
    /// For an http:// receive link: where its account asks for its address (IL-DCP).
    #[arg(long, value_parser = parse_url)]
    recv_ildcp: Option<LinkUrl>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// Send link (omit both --send and --recv for a direct sweep).
    #[arg(long, value_parser = parse_url, requires = "recv")]
    send: Vec<LinkUrl>,
    #[arg(long, value_parser = parse_url, requires = "send")]
    recv: Option<LinkUrl>,
    #[arg(long)]
    recv_address: Option<String>,
    /// Direct sweep transport.
    #[arg(long, value_enum, default_value_t = Transport::Btp)]
    transport: Transport,
    /// Rates to try, comma-separated (packets/s), ascending.
    #[arg(long, value_delimiter = ',', required = true)]
    rates: Vec<f64>,
    /// The p99 bound a rate must meet.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    p99: Duration,
    /// Keep going past the first rate that misses the bound.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct PayArgs {
    /// Send link (omit --send and --recv to pay through the direct loopback).
    #[arg(long, value_parser = parse_url, requires = "recv")]
    send: Option<LinkUrl>,
    #[arg(long, value_parser = parse_url, requires = "send")]
    recv: Option<LinkUrl>,
    #[arg(long)]
    recv_address: Option<String>,
    /// One-shot: source amount. Chunked: the cumulative destination amount.
    #[arg(long)]
    amount: u64,
    /// One-shot: minimum destination amount [default: amount].
    #[arg(long)]
    min_dest_amount: Option<u64>,
    /// One-shot expiry.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    expiry: Duration,
    /// Chunked payment: deliver --amount at the destination in chunks.
    #[arg(long)]
    chunked: bool,
    /// Chunked: deadline.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    deadline: Duration,
    /// Chunked: smallest and largest chunk (source units).
    #[arg(long, default_value_t = 1)]
    min_chunk: u64,
    #[arg(long, default_value_t = 100)]
    max_chunk: u64,
    /// Chunked: worst exchange rate accepted (destination/source).
    #[arg(long, default_value_t = 0.0)]
    min_rate: f64,
    /// Seed for fulfillments and the chunk sizes [default: random].
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("payee").required(true).args(["spsp", "destination"])))]
struct StreamArgs {
    /// Send link: btp+ws://user:token@host:port/path or http://token@host:port/path (repeatable).
    #[arg(long, required = true, value_parser = parse_url)]
    send: Vec<LinkUrl>,
    /// Connections per send link.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    conns: u16,
    /// SPSP receiver: an http(s):// URL or a $payment-pointer; every payment
    /// asks it for its own STREAM connection.
    #[arg(long, conflicts_with_all = ["destination", "secret"])]
    spsp: Option<String>,
    /// STREAM destination address (with --secret) instead of --spsp: one
    /// connection, so one payment.
    #[arg(long, requires = "secret")]
    destination: Option<String>,
    /// STREAM shared secret, base64 (32 bytes), with --destination.
    #[arg(long, requires = "destination")]
    secret: Option<String>,
    /// Source units per payment.
    #[arg(long)]
    amount: u64,
    /// Payments to make [default: 1, or as many as fit in --duration].
    #[arg(long)]
    payments: Option<u64>,
    /// Payments in progress at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Start no payment after this long (the run then waits up to --drain).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long payments in progress may still finish after --duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Prepares in flight per payment.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    packets_in_flight: u32,
    /// Largest Prepare amount in source units [default: no limit; F08 still lowers it].
    #[arg(long)]
    max_packet_amount: Option<u64>,
    /// Accept this much less than the probed exchange rate, in basis points.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    slippage_bp: u32,
    /// Prepare expiry from the send time.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    expiry: Duration,
    /// Our address, told to receivers in ConnectionNewAddress [default: IL-DCP
    /// on the first BTP send link].
    #[arg(long)]
    source_address: Option<String>,
    /// Threads that make SPSP queries (at most --concurrency).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    spsp_threads: u16,
    /// Connect timeout for each link and each SPSP query.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Write every figure, the settings, machine and commit as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// The ilpd binary [default: next to this executable].
    #[arg(long)]
    ilpd: Option<PathBuf>,
    /// How long to drive it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Link transport for both sides.
    #[arg(long, value_enum, default_value_t = Transport::Btp)]
    transport: Transport,
    /// Closed-loop window per connection. Large enough that ilpd's group
    /// commit (durability = "fsync", the default) is not what limits the
    /// rate: a Fulfill waits about one fdatasync.
    #[arg(long, default_value_t = demo::DEMO_WINDOW)]
    window: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not pin the generator's threads to cores.
    #[arg(long)]
    no_pin: bool,
    #[arg(long, short)]
    quiet: bool,
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn run_config(load: &LoadArgs, target: Target) -> Result<RunConfig, String> {
    let sha256 = match &load.sha256_impl {
        Some(s) => ilpd_codec::sha256::parse_choice(s)?,
        None => None,
    };
    ilpd_loadgen::lt::OutcomeMix::parse(&load.mix, 0)?;
    let lt = match (load.rate, load.window) {
        (Some(r), _) => {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("--rate must be a positive number, got {r}"));
            }
            Load::Open { rate: r }
        }
        (None, w) => Load::Closed {
            window: w.unwrap_or(256),
        },
    };
    if load.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    Ok(RunConfig {
        target,
        load: lt,
        threads: load.threads as usize,
        conns: load.conns as usize,
        recv_threads: load.recv_threads as usize,
        recv_conns: load.recv_conns as usize,
        duration: load.duration,
        warmup: load.warmup,
        packets: load.packets,
        amount: load.amount,
        min_dest: load.min_dest_amount,
        data_size: load.data_size as usize,
        expiry: load.expiry,
        destinations: load.destinations as usize,
        mix: load.mix.clone(),
        seed: load.seed.unwrap_or_else(ilpd_loadgen::lt::random_seed),
        min_time_left_ms: load.min_time_left.as_millis() as u64,
        grace: load.grace,
        drain: load.drain,
        pin: !load.no_pin,
        busy_poll: load.busy_poll,
        max_in_flight: load.max_in_flight,
        recv_address: None,
        recv_token: None,
        stall: load.receiver_stall.map(|d| (load.receiver_stall_after, d)),
        sha256,
        progress: !load.quiet,
        connect_timeout: load.connect_timeout,
        events: None,
    })
}

/// Runs, prints the table, writes the files.
fn execute(cfg: &RunConfig, load: &LoadArgs) -> ExitCode {
    let write_json = |r: &run::RunResult| -> Result<(), String> {
        match &load.json {
            Some(p) => {
                let v = report::to_json(cfg, r);
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
            }
            None => Ok(()),
        }
    };
    let r = match run::run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            // Scripts waiting for the report get one that says why.
            if let Err(e) = write_json(&run::RunResult::not_started(e)) {
                eprintln!("error: {e}");
            }
            return ExitCode::from(1);
        }
    };
    print!("{}", report::table(cfg, &r));
    if let Err(e) = write_json(&r) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    if let Some(p) = &load.hdr_log {
        if let Err(e) = report::write_hdr_log(p, cfg, &r) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    if let Some(why) = &r.aborted {
        eprintln!("error: run aborted: {why}");
        return ExitCode::from(3);
    }
    if load.strict {
        let s = &r.sender;
        if r.reconciliation_delta() != 0 || s.lost > 0 || s.errors.total() > 0 {
            eprintln!(
                "error: --strict: delta {}, {} unanswered, {} errors",
                r.reconciliation_delta(),
                s.lost,
                s.errors.total()
            );
            return ExitCode::from(1);
        }
    }
    if r.sender.fulfilled == 0 && r.sender.sent > 0 && cfg.mix == "fulfill" {
        eprintln!("error: no packet was fulfilled");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn stream_config(a: &StreamArgs) -> Result<stream::StreamConfig, String> {
    use ilpd_loadgen::spsp::Payee;
    let payee = match (&a.spsp, &a.destination, &a.secret) {
        (Some(s), _, _) => Payee::spsp(s)?,
        (None, Some(d), Some(k)) => Payee::direct(d, k)?,
        _ => return Err("give --spsp URL, or --destination ADDR with --secret BASE64".into()),
    };
    if a.amount == 0 {
        return Err("--amount must be more than 0".into());
    }
    if a.payments == Some(0) {
        return Err("--payments must be at least 1".into());
    }
    if a.duration.is_some_and(|d| d.is_zero()) {
        return Err("--duration must be more than 0".into());
    }
    let payments = match (a.payments, a.duration) {
        (None, None) => Some(1),
        (p, _) => p,
    };
    if matches!(payee, Payee::Direct(_)) && (payments != Some(1) || a.concurrency != 1) {
        return Err(
            "--destination/--secret name one STREAM connection, which carries one \
                    payment: use --payments 1 --concurrency 1, or --spsp (every payment gets \
                    its own connection)"
                .into(),
        );
    }
    let mut c = stream::StreamConfig::new(a.send.clone(), payee, a.amount);
    c.conns = a.conns as usize;
    c.payments = payments;
    c.concurrency = a.concurrency as usize;
    c.duration = a.duration;
    c.drain = a.drain;
    c.packets_in_flight = a.packets_in_flight as usize;
    c.max_packet_amount = a.max_packet_amount.filter(|m| *m > 0);
    c.slippage_bp = a.slippage_bp;
    c.expiry = a.expiry;
    c.spsp_threads = a.spsp_threads as usize;
    c.connect_timeout = a.connect_timeout;
    c.source_address = a.source_address.clone();
    c.progress = !a.quiet;
    Ok(c)
}

/// `ilp-loadgen stream`: runs, prints the table, writes the JSON.
fn execute_stream(cfg: &stream::StreamConfig, json_path: Option<&std::path::Path>) -> ExitCode {
    let write_json = |r: &stream::StreamResult| -> Result<(), String> {
        match json_path {
            Some(p) => {
                let v = report::stream_to_json(cfg, r);
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
            }
            None => Ok(()),
        }
    };
    let r = match stream::run(cfg, run::interrupted()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            if let Err(e) = write_json(&stream::StreamResult::not_started(e)) {
                eprintln!("error: {e}");
            }
            return ExitCode::from(1);
        }
    };
    print!("{}", report::stream_table(cfg, &r));
    if let Err(e) = write_json(&r) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    match &r.aborted {
        Some(why) if why != "interrupted" => {
            eprintln!("error: run aborted: {why}");
            return ExitCode::from(3);
        }
        _ => {}
    }
    if r.failed > 0 {
        let first = r
            .failures
            .0
            .first()
            .map(|(m, _)| m.as_str())
            .unwrap_or("unknown");
        eprintln!(
            "error: {} of {} payments failed (first reason: {first})",
            r.failed, r.started
        );
        return ExitCode::from(1);
    }
    if r.completed == 0 {
        eprintln!("error: no payment was made");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        None => demo::main(&demo::DemoConfig::default()),
        Some(Cmd::Demo(a)) => demo::main(&demo::DemoConfig {
            ilpd: a.ilpd,
            duration: a.duration,
            http: a.transport == Transport::Http,
            window: a.window,
            json: a.json,
            pin: !a.no_pin,
            quiet: a.quiet,
        }),
        Some(Cmd::Direct(a)) => {
            let target = Target::Direct {
                http: a.transport == Transport::Http,
            };
            match run_config(&a.load, target) {
                Ok(mut cfg) => {
                    cfg.recv_address = a.recv_address.clone();
                    execute(&cfg, &a.load)
                }
                Err(e) => usage_error(&e),
            }
        }
        Some(Cmd::Run(a)) => {
            let recv = match (&a.target.recv, &a.target.lsd) {
                (Some(r), _) => r.clone(),
                (None, Some(src)) => match ilpd_loadgen::lsd::load(src, a.load.connect_timeout) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                },
                (None, None) => return usage_error("give --recv URL or --lsd FILE|URL"),
            };
            let target = Target::Connector {
                send: a.target.send.clone(),
                recv: recv.clone(),
                recv_ildcp: a.target.recv_ildcp.clone(),
            };
            match run_config(&a.load, target) {
                Ok(mut cfg) => {
                    cfg.recv_address = a.target.recv_address.clone();
                    if !recv.token.is_empty() {
                        cfg.recv_token = Some(recv.token.clone());
                    }
                    execute(&cfg, &a.load)
                }
                Err(e) => usage_error(&e),
            }
        }
        Some(Cmd::Sweep(a)) => {
            let target = match &a.recv {
                Some(recv) => Target::Connector {
                    send: a.send.clone(),
                    recv: recv.clone(),
                    recv_ildcp: None,
                },
                None => Target::Direct {
                    http: a.transport == Transport::Http,
                },
            };
            if a.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
                return usage_error("--rates must be positive numbers");
            }
            match run_config(&a.load, target) {
                Ok(mut cfg) => {
                    cfg.recv_address = a.recv_address.clone();
                    sweep::main(&cfg, &a.rates, a.p99, a.all, a.load.json.as_deref())
                }
                Err(e) => usage_error(&e),
            }
        }
        Some(Cmd::Pay(a)) => {
            let cfg = pay::PayCli {
                send: a.send,
                recv: a.recv,
                recv_address: a.recv_address,
                amount: a.amount,
                min_dest: a.min_dest_amount,
                expiry: a.expiry,
                chunked: a.chunked,
                deadline: a.deadline,
                min_chunk: a.min_chunk,
                max_chunk: a.max_chunk,
                min_rate: a.min_rate,
                seed: a.seed.unwrap_or_else(ilpd_loadgen::lt::random_seed),
                quiet: a.quiet,
            };
            pay::main(&cfg)
        }
        Some(Cmd::Stream(a)) => match stream_config(&a) {
            Ok(cfg) => execute_stream(&cfg, a.json.as_deref()),
            Err(e) => usage_error(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
