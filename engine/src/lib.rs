//! ilpd: a thread-per-core Interledger (ILPv4) connector.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`core`]: the sans-IO forwarding logic (given `now` and bytes, returns actions).
//! - [`io`]: the mio workers, one per core, that move bytes between sockets and the core.
//! - [`ledger`]: the durable ledger (write-ahead journal, recovery).
//! - [`cli`]: runtime flags that override the config file.

pub mod ccp;
pub mod cli;
pub mod config;
pub mod core;
pub mod http;
pub mod io;
pub mod ledger;
