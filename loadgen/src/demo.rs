//! `ilp-loadgen demo` (the default command): start `ilpd` with two built-in
//! accounts on a free 127.0.0.1 port, drive it for about 10 seconds, print
//! the results, stop it with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::report;
use crate::run::{self, RunConfig, Target};
use crate::sender::Load;
use crate::url::LinkUrl;

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub ilpd: Option<PathBuf>,
    pub duration: Duration,
    pub http: bool,
    pub window: u32,
    pub json: Option<PathBuf>,
    pub pin: bool,
    pub quiet: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            ilpd: None,
            duration: Duration::from_secs(10),
            http: false,
            window: DEMO_WINDOW,
            json: None,
            pin: true,
            quiet: false,
        }
    }
}

/// The demo's closed-loop window. ilpd's default durability holds each
/// Fulfill for about one fdatasync (docs/ledger.md), so with 256 in flight
/// the demo measured the disk's latency (65k/s), with 4096 the connector
/// (542k/s on a 2-vCPU VM; docs/benchmarks.md "Durable ledger").
pub const DEMO_WINDOW: u32 = 4096;

const SEND_TOKEN: &str = "loadgen-send-secret";
const RECV_TOKEN: &str = "loadgen-recv-secret";

/// The config the demo gives ilpd: two children, one for each side.
pub fn ilpd_config(port: u16) -> String {
    format!(
        r#"# Written by ilp-loadgen demo.
[node]
address = "test.ilpd"
listen = "127.0.0.1:{port}"
log_level = "warn"

# The sender: its Prepares reserve against max_balance.
[[accounts]]
id = "loadgen-send"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{SEND_TOKEN}"
max_balance = 9000000000000000000

# The receiver: gets test.ilpd.loadgen-recv by IL-DCP.
[[accounts]]
id = "loadgen-recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{RECV_TOKEN}"
min_balance = -9000000000000000000
"#
    )
}

/// `ilpd` next to our own executable (cargo puts both in target/<profile>/).
pub fn find_ilpd(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--ilpd {}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("ilpd")];
    // From target/<profile>/deps (tests), look one level up too.
    if let Some(up) = dir.parent() {
        candidates.push(up.join("ilpd"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "ilpd not found next to {} (build it with `cargo build --release --bins`, or pass --ilpd PATH)",
                exe.display()
            )
        })
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A running ilpd, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Ilpd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Ilpd {
    /// Starts ilpd with the demo config and waits until it accepts connections.
    pub fn start(bin: &Path) -> Result<Ilpd, String> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("ilp-loadgen-demo-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("ilpd.toml");
        std::fs::write(&conf, ilpd_config(port)).map_err(|e| format!("{}: {e}", conf.display()))?;
        let log = std::fs::File::create(dir.join("ilpd.log"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&conf)
            // A fresh ledger per demo, removed with the folder.
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut d = Ilpd { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!(
                    "ilpd exited at start-up ({status}): {}",
                    d.log_tail()
                ));
            }
            if std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(d);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ilpd did not listen on 127.0.0.1:{port} within 10 s: {}",
                    d.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines ilpd wrote to stderr.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("ilpd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(no output)".into()
        } else {
            tail
        }
    }

    pub fn send_url(&self) -> String {
        format!(
            "btp+ws://loadgen-send:{SEND_TOKEN}@127.0.0.1:{}/",
            self.port
        )
    }

    pub fn recv_url(&self) -> String {
        format!(
            "btp+ws://loadgen-recv:{RECV_TOKEN}@127.0.0.1:{}/",
            self.port
        )
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Ilpd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The run the demo does against a started ilpd.
pub fn demo_run_config(d: &Ilpd, cfg: &DemoConfig) -> Result<RunConfig, String> {
    if cfg.http {
        return Err("ilpd speaks BTP only for now: use --transport btp".into());
    }
    Ok(RunConfig {
        target: Target::Connector {
            send: vec![LinkUrl::parse(&d.send_url())?],
            recv: LinkUrl::parse(&d.recv_url())?,
            recv_ildcp: None,
        },
        load: Load::Closed { window: cfg.window },
        duration: cfg
            .duration
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1)),
        warmup: Duration::from_secs(1).min(cfg.duration),
        progress: !cfg.quiet,
        pin: cfg.pin,
        ..RunConfig::default()
    })
}

pub fn main(cfg: &DemoConfig) -> ExitCode {
    let bin = match find_ilpd(cfg.ilpd.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut ilpd = match Ilpd::start(&bin) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if !cfg.quiet {
        eprintln!(
            "started {} on 127.0.0.1:{} (accounts loadgen-send, loadgen-recv; durable ledger, durability fsync, in a temporary data dir); driving it for {} s, window {}",
            bin.display(),
            ilpd.port,
            cfg.duration.as_secs(),
            cfg.window
        );
    }
    let run_cfg = match demo_run_config(&ilpd, cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = run::run(&run_cfg);
    let status = ilpd.stop();
    match result {
        Ok(r) => {
            print!("{}", report::table(&run_cfg, &r));
            if let Some(p) = &cfg.json {
                let v = report::to_json(&run_cfg, &r);
                if let Err(e) =
                    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default())
                {
                    eprintln!("error: {}: {e}", p.display());
                    return ExitCode::from(1);
                }
            }
            if !cfg.quiet {
                eprintln!(
                    "stopped ilpd ({})",
                    status.map_or("no status".into(), |s| s.to_string())
                );
            }
            if r.sender.fulfilled == 0 {
                eprintln!(
                    "error: no packet was fulfilled through ilpd: {}",
                    ilpd.log_tail()
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e} (ilpd log: {})", ilpd.log_tail());
            ExitCode::from(1)
        }
    }
}
