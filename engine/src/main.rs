//! `ilpd --config ilpd.toml [flags]`: load and validate the configuration
//! (exit 2 with the key and the problem on stderr if it is wrong), open and
//! recover the durable ledger (docs/ledger.md), start the workers, and
//! drain gracefully on SIGINT/SIGTERM (exit 0). If the ledger's disk fails,
//! drain and exit 3.
//!
//! `ilpd ledger verify|dump --data-dir DIR`: offline checks of a data dir.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ilpd_engine::cli::Args;
use ilpd_engine::config::{Config, ConfigError};
use ilpd_engine::core::Shared;
use ilpd_engine::io::Node;
use ilpd_engine::ledger::datadir::OpenError;
use ilpd_engine::ledger::{tool, Durability, Ledger};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit code for bad configuration or flags (clap uses 2 for bad flags too).
const EXIT_CONFIG: u8 = 2;
/// Exit code for start-up failures such as an address in use.
const EXIT_START: u8 = 1;
/// Exit code after the ledger's disk failed (docs/ledger.md).
const EXIT_LEDGER: u8 = 3;

/// `ilpd ledger ...`: offline tools for a data dir.
#[derive(Debug, Parser)]
#[command(
    name = "ilpd ledger",
    about = "Offline checks of an ilpd data dir (docs/ledger.md)"
)]
struct LedgerArgs {
    #[command(subcommand)]
    cmd: LedgerCmd,
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCmd {
    /// Replays snapshot and journal without changing them; prints each
    /// account's balance, the packets a start would list as in doubt, and
    /// torn tails. Exit 2 if the ledger is damaged.
    Verify {
        #[arg(long, value_name = "DIR", default_value = "./ilpd-data")]
        data_dir: PathBuf,
    },
    /// Prints every frame and record of the snapshot and the journal.
    Dump {
        #[arg(long, value_name = "DIR", default_value = "./ilpd-data")]
        data_dir: PathBuf,
    },
}

fn ledger_tool() -> ExitCode {
    let args = LedgerArgs::parse_from(std::env::args().skip(1));
    let mut out = std::io::stdout().lock();
    match args.cmd {
        LedgerCmd::Verify { data_dir } => match tool::verify(&data_dir, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ilpd ledger verify: {e}");
                ExitCode::from(match e {
                    OpenError::Corrupt(_) => EXIT_CONFIG,
                    _ => EXIT_START,
                })
            }
        },
        LedgerCmd::Dump { data_dir } => match tool::dump(&data_dir, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            // `ilpd ledger dump | head`: the reader had enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ilpd ledger dump: {e}");
                ExitCode::from(EXIT_START)
            }
        },
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("ledger") {
        return ledger_tool();
    }
    // clap prints usage errors and exits 2 by itself; --help/--version exit 0.
    let args = Args::parse();
    let env = std::env::var(ilpd_codec::sha256::ENV_VAR).ok();
    let cfg = match args.load_config(env.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let filter = match EnvFilter::try_new(&cfg.node.log_level) {
        Ok(f) => f,
        Err(e) => {
            return config_error(&ConfigError::new(
                "node.log_level",
                format!("{:?}: {e}", cfg.node.log_level),
            ))
        }
    };
    // Colours only on a terminal, so log files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    for w in cfg.warnings() {
        warn!("{w}");
    }
    raise_open_file_limit();
    let shared = match Shared::from_config(&cfg) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let ledger = match open_ledger(&cfg, &shared) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = load_stream_secret(&cfg, &shared, ledger.is_some()) {
        return code;
    }
    // Register the handlers before the workers start so an early signal is
    // not lost.
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let node = match Node::start(&cfg, shared, ledger.clone()) {
        Ok(n) => n,
        Err(e) => {
            error!("{e}");
            eprintln!("ilpd: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let handle = node.shutdown_handle();
    let grace = cfg.node.shutdown_grace_ms;
    std::thread::Builder::new()
        .name("ilpd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    info!(
                        signal = sig,
                        grace_ms = grace,
                        "shutting down: draining in-flight packets"
                    );
                    handle.shutdown();
                } else {
                    warn!(signal = sig, "second signal: exiting now");
                    std::process::exit(1);
                }
            }
        })
        .ok();
    if let Some(l) = &ledger {
        // A failed journal write or sync: drain, then exit non-zero.
        let (l, handle) = (l.clone(), node.shutdown_handle());
        std::thread::Builder::new()
            .name("ilpd-ledger-watch".into())
            .spawn(move || {
                while !l.status().is_failed() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                handle.shutdown();
            })
            .ok();
    }
    node.join();
    if let Some(l) = &ledger {
        l.shutdown();
        if let Some(why) = l.status().reason() {
            error!("stopped after a ledger failure: {why}");
            return ExitCode::from(EXIT_LEDGER);
        }
    }
    info!("stopped");
    ExitCode::SUCCESS
}

/// Opens and recovers the data dir and loads the balances; `None` with
/// `durability = "none"`. Exit 2 for a damaged ledger, 1 for the rest.
fn open_ledger(cfg: &Config, shared: &Shared) -> Result<Option<Arc<Ledger>>, ExitCode> {
    let node = &cfg.node;
    if node.durability == Durability::None {
        warn!("durability = \"none\": no journal; every balance is lost when ilpd stops (benchmarks only)");
        return Ok(None);
    }
    let ledger = Ledger::open(
        &node.data_dir,
        node.durability,
        node.journal_segment_mb << 20,
        cfg.worker_count(),
        shared.ledger_status().clone(),
    )
    .map_err(|e| {
        error!("{e}");
        eprintln!("ilpd: {e}");
        ExitCode::from(match e {
            OpenError::Corrupt(_) => EXIT_CONFIG,
            _ => EXIT_START,
        })
    })?;
    for name in shared.restore_balances(&ledger.recovered.balances) {
        warn!(account = %name, "the ledger has a balance for an account the config does not have; it is kept in the ledger");
    }
    info!(
        data_dir = %node.data_dir.display(),
        durability = node.durability.as_str(),
        generation = ledger.recovered.generation,
        in_doubt = ledger.recovered.in_doubt,
        report = %ledger.recovered.report.display(),
        "ledger open"
    );
    Ok(Some(Arc::new(ledger)))
}

/// The STREAM server secret of the receiver accounts (docs/stream.md
/// "Receiving in ilpd"): 32 random bytes in `DIR/stream-secret`, made once
/// (mode 0600, written to a temporary file, synced, renamed) and read at
/// every start, so the SPSP details a receiver gave out stay valid across
/// restarts. Without a data dir (`durability = "none"`) a random one lives
/// as long as the process.
fn load_stream_secret(cfg: &Config, shared: &Shared, has_dir: bool) -> Result<(), ExitCode> {
    if !shared.has_receivers() {
        return Ok(());
    }
    if !has_dir {
        warn!("durability = \"none\": the receivers' STREAM secret is random for this process; SPSP details given out are void after a restart");
        return Ok(());
    }
    let path = cfg.node.data_dir.join("stream-secret");
    match read_or_create_secret(&path) {
        Ok(secret) => {
            shared.set_stream_secret(secret);
            Ok(())
        }
        Err(e) => {
            error!("{}: {e}", path.display());
            eprintln!("ilpd: {}: {e}", path.display());
            Err(ExitCode::from(EXIT_START))
        }
    }
}

fn read_or_create_secret(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            if f.metadata()?.permissions().mode() & 0o077 != 0 {
                warn!(file = %path.display(), "the STREAM secret is readable by other users; chmod 600 it");
            }
            return buf.try_into().map_err(|b: Vec<u8>| {
                std::io::Error::other(format!(
                    "must hold exactly 32 bytes, has {}; restore it from a backup (or remove it: every SPSP address given out so far stops working)",
                    b.len()
                ))
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut secret = [0u8; 32];
    ilpd_stream::RandomSource::fill(&mut ilpd_stream::OsRandom::new(), &mut secret)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    // A leftover from a crash may have other permissions: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&secret)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    info!(file = %path.display(), "created the STREAM server secret");
    Ok(secret)
}

/// Every connection is a file descriptor: raise the soft limit to the
/// hard one at start (issue 16). A failure only costs capacity; it is
/// logged.
fn raise_open_file_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 || r.rlim_cur >= r.rlim_max {
            return;
        }
        let old = r.rlim_cur;
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
            info!(from = old, to = r.rlim_max, "raised the open-file limit");
        } else {
            warn!(
                limit = old,
                "cannot raise the open-file limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("ilpd: {e}");
    ExitCode::from(EXIT_CONFIG)
}
