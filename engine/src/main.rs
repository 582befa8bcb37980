//! `ilpd --config ilpd.toml [flags]`: load and validate the configuration
//! (exit 2 with the key and the problem on stderr if it is wrong), start the
//! workers, and drain gracefully on SIGINT/SIGTERM (exit 0).

use std::process::ExitCode;

use clap::Parser;
use ilpd_engine::cli::Args;
use ilpd_engine::config::ConfigError;
use ilpd_engine::core::Shared;
use ilpd_engine::io::Node;
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit code for bad configuration or flags (clap uses 2 for bad flags too).
const EXIT_CONFIG: u8 = 2;
/// Exit code for start-up failures such as an address in use.
const EXIT_START: u8 = 1;

fn main() -> ExitCode {
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

    let shared = match Shared::from_config(&cfg) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    // Register the handlers before the workers start so an early signal is
    // not lost.
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let node = match Node::start(&cfg, shared) {
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
    node.join();
    info!("stopped");
    ExitCode::SUCCESS
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("ilpd: {e}");
    ExitCode::from(EXIT_CONFIG)
}
