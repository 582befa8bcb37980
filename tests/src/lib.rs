//! Helpers for the cross-process integration tests (tests/tests/*.rs).
//!
//! std plus serde_json (for the interop scripts' JSON lines), and
//! test-facing: a panic with a clear message is the right answer to a broken
//! test environment (missing binary, no node). Every wait is bounded by a
//! timeout so no test can hang. Main pieces: [`bin_path`], [`free_port`],
//! [`wait_for_port`], [`Proc`], [`temp_dir`]; [`js`] drives the scripts in
//! tests/interop (ilp-connector 23, ilp-protocol-stream); [`ilpd::start`]
//! runs the release `ilpd` with a given config.

pub mod btp_client;

use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Grace period between SIGTERM and SIGKILL when a [`Proc`] is stopped.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target folder: `CARGO_TARGET_DIR` at run time, else at build
/// time, else the one this test executable was built in (found from its
/// path `<target>/debug/deps/<exe>`, which also covers `build.target-dir`
/// in .cargo/config), else `<workspace>/target`. Relative values are taken
/// from the workspace root, as cargo does.
pub fn target_dir() -> PathBuf {
    let configured = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from));
    match configured {
        Some(p) if p.is_absolute() => p,
        Some(p) => workspace_root().join(p),
        None => exe_target_dir().unwrap_or_else(|| workspace_root().join("target")),
    }
}

/// `<target>` from this executable's path `<target>/<profile>/deps/<exe>`.
fn exe_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.parent()?.to_path_buf())
}

/// Path of the release binary `name` (e.g. `ilpd`, `ilp-loadgen`).
///
/// Cross-process tests run the optimised binaries, which cargo does not build
/// for `cargo test`; panics with the command to run if it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    if !path.is_file() {
        panic!(
            "release binary {} not found; run `cargo build --release --bins` first \
             (with the same CARGO_TARGET_DIR as this test run)",
            path.display()
        );
    }
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it,
/// release it). Racy by nature, but good enough for tests.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls until something accepts TCP connections on `addr`, or `timeout`
/// passes. Returns whether it came up.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique, freshly created folder under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "ilpd-test-{label}-{}-{n}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `tests/interop`: the pinned JavaScript peers and their scripts.
pub fn interop_dir() -> PathBuf {
    workspace_root().join("tests").join("interop")
}

/// Whether `node` can be run at all.
pub fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panics with set-up instructions unless node and the pinned packages
/// (tests/interop/node_modules) are there. Interop tests call this first so a
/// missing toolchain is a loud failure, never a silent pass.
pub fn require_node() {
    if !node_available() {
        panic!("`node` not found: the interop tests need Node 20 on PATH");
    }
    if !interop_dir().join("node_modules").is_dir() {
        panic!(
            "{} is missing: run `npm ci` in tests/interop (tests/run.sh does it)",
            interop_dir().join("node_modules").display()
        );
    }
}

/// `node tests/interop/<name>` with cwd tests/interop; add args and spawn it
/// with [`Proc::spawn`].
pub fn node_script(name: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join(name)).current_dir(interop_dir());
    cmd
}

/// A child process owned by a test: stdout and stderr go to files (so they
/// can be read at any time and printed when the test fails), stdin is a pipe
/// kept open until [`Proc::close_stdin`]. Dropping it stops the process
/// (SIGTERM, then SIGKILL after [`TERM_GRACE`]); if the thread is panicking,
/// its output is printed (and its log files kept), else the logs are removed.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    label: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`; `label` names it in messages and log file names.
    pub fn spawn(mut cmd: Command, label: &str) -> Proc {
        let dir = temp_dir(&format!("proc-{}", sanitize(label)));
        let stdout_path = dir.join("stdout.log");
        let stderr_path = dir.join("stderr.log");
        let out = File::create(&stdout_path).expect("create stdout log");
        let err = File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("[{label}] cannot spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            label: label.to_string(),
            stdout_path,
            stderr_path,
            status: None,
        }
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything written to stdout so far.
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Writes `data` to the process's stdin (ignored if already closed).
    pub fn write_stdin(&mut self, data: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(data);
            let _ = stdin.flush();
        }
    }

    /// Closes stdin; the interop scripts take that as "finish and exit".
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Polls stdout until a line satisfies `pred` (returns that line), the
    /// process exits without printing one, or `timeout` passes (`None`).
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.try_wait().is_some();
            // Read after try_wait so output written just before exit counts.
            if let Some(line) = self.stdout_text().lines().find(|l| pred(l)) {
                return Some(line.to_string());
            }
            if exited || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `d` for the process to exit.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still running after
    /// [`TERM_GRACE`]. Returns its exit status (None only if even SIGKILL
    /// could not be confirmed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        self.stdin = None;
        // std has no SIGTERM; use kill(1) on our own child's pid only.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(s) = self.wait_timeout(TERM_GRACE) {
            return Some(s);
        }
        let _ = self.child.kill(); // SIGKILL
        self.wait_timeout(Duration::from_secs(5))
    }

    /// Prints stdout and stderr to the test output, labelled.
    pub fn dump(&self) {
        eprintln!(
            "----- [{}] stdout ({}) -----\n{}\n----- [{}] stderr ({}) -----\n{}\n----- [{}] end -----",
            self.label,
            self.stdout_path.display(),
            self.stdout_text(),
            self.label,
            self.stderr_path.display(),
            self.stderr_text(),
            self.label
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let status = self.terminate();
        if std::thread::panicking() {
            eprintln!("[{}] exit status: {status:?}", self.label);
            self.dump();
        } else if let Some(dir) = self.stdout_path.parent() {
            // Passing test: its logs are not needed (failing ones are kept
            // and their paths printed above).
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Runs `cmd` to completion (bounded by `timeout`), returning the finished
/// [`Proc`] so its output can be read; panics, printing the output, if it
/// does not exit in time.
pub fn run_with_timeout(cmd: Command, label: &str, timeout: Duration) -> (ExitStatus, Proc) {
    let mut p = Proc::spawn(cmd, label);
    p.close_stdin();
    match p.wait_timeout(timeout) {
        Some(s) => (s, p),
        None => {
            p.dump();
            panic!("[{label}] did not exit within {timeout:?}");
        }
    }
}

/// The last stdout line of `p` that looks like a JSON object (the interop
/// scripts print their result as one JSON line).
pub fn last_json_line(p: &Proc) -> Option<String> {
    p.stdout_text()
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(str::to_string)
}

/// `n` distinct free ports on 127.0.0.1 (all held until all are chosen, so
/// they cannot repeat).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Parses every stdout line of `p` that is a JSON object.
pub fn json_lines(p: &Proc) -> Vec<serde_json::Value> {
    p.stdout_text()
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A JSON number, or a string of digits (how the tools print amounts), as
/// a u64; panics on anything else.
pub fn json_u64(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("not a u64: {v}")),
        serde_json::Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a u64: {v}")),
        _ => panic!("not a number: {v}"),
    }
}

/// Drivers for the scripts in tests/interop (see its README.md).
pub mod js {
    use super::*;
    use serde_json::Value;

    /// `btp+ws://user:token@127.0.0.1:port`, the form ilp-plugin-btp takes.
    pub fn btp_url(user: &str, token: &str, port: u16) -> String {
        format!("btp+ws://{user}:{token}@127.0.0.1:{port}")
    }

    /// Runs a one-shot script (`ildcp.js`, `ping.js`, `peer-balance.js`,
    /// `stream-sender.js`) to completion and returns its exit status, its
    /// last JSON line (Null if none) and the finished process (for logs).
    pub fn run(script: &str, args: &[&str], timeout: Duration) -> (ExitStatus, Value, Proc) {
        let mut cmd = node_script(script);
        cmd.args(args);
        let (status, p) = run_with_timeout(cmd, script, timeout);
        let v = last_json_line(&p)
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or(Value::Null);
        (status, v, p)
    }

    /// Like [`run`], but panics (printing the script's output) unless it
    /// exits 0.
    pub fn run_ok(script: &str, args: &[&str], timeout: Duration) -> Value {
        let (status, v, p) = run(script, args, timeout);
        if !status.success() {
            p.dump();
            panic!("{script} {args:?} failed with {status}: {v}");
        }
        v
    }

    /// The JavaScript reference connector (js-connector.js) running in a
    /// child process.
    pub struct JsConnector {
        /// The process; dropping it stops the connector.
        pub proc: Proc,
    }

    impl JsConnector {
        /// Writes `config` (js-connector.js format) to a temp file, starts
        /// the connector and waits until it prints `{"ready": true}`.
        pub fn start(config: &Value, label: &str) -> JsConnector {
            let dir = temp_dir("js-connector");
            let file = dir.join("config.json");
            fs::write(&file, config.to_string()).expect("write js-connector config");
            let mut cmd = node_script("js-connector.js");
            cmd.arg("--config").arg(&file);
            let mut proc = Proc::spawn(cmd, label);
            let ready =
                proc.wait_for_line(Duration::from_secs(30), |l| l.contains("\"ready\":true"));
            if ready.is_none() {
                proc.dump();
                panic!("[{label}] js-connector did not become ready");
            }
            JsConnector { proc }
        }
    }

    /// stream-receiver.js: an ilp-protocol-stream server behind a BTP
    /// client, addressed by the connector over IL-DCP.
    pub struct StreamReceiver {
        /// The process; dropping it stops the receiver.
        pub proc: Proc,
        /// The STREAM destination address it generated.
        pub address: String,
        /// The shared secret, base64.
        pub secret: String,
    }

    impl StreamReceiver {
        /// Starts the receiver on `btp_url` and waits for its address.
        pub fn start(btp_url: &str, label: &str) -> StreamReceiver {
            let mut cmd = node_script("stream-receiver.js");
            cmd.args(["--btp", btp_url]);
            let mut proc = Proc::spawn(cmd, label);
            let line = proc.wait_for_line(Duration::from_secs(30), |l| l.contains("\"address\""));
            let parsed: Option<Value> = line.and_then(|l| serde_json::from_str(&l).ok());
            let field = |k: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            match (field("address"), field("secret")) {
                (Some(address), Some(secret)) => StreamReceiver {
                    proc,
                    address,
                    secret,
                },
                _ => {
                    proc.dump();
                    panic!("[{label}] stream-receiver did not print its address");
                }
            }
        }

        /// The latest running total it reported, as a decimal string.
        pub fn received(&self) -> Option<String> {
            json_lines(&self.proc).iter().rev().find_map(|v| {
                v.get("received")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        }

        /// Closes its stdin so it prints its final total and exits; returns
        /// that total.
        pub fn finish(&mut self) -> String {
            self.proc.close_stdin();
            let status = self.proc.wait_timeout(Duration::from_secs(10));
            let fin = json_lines(&self.proc)
                .into_iter()
                .find(|v| v.get("final").is_some());
            match (status, fin) {
                (Some(s), Some(v)) if s.success() => v
                    .get("received")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                (s, _) => {
                    self.proc.dump();
                    panic!("stream-receiver did not finish cleanly: {s:?}");
                }
            }
        }
    }
}

/// Running the `ilpd` release binary.
pub mod ilpd {
    use super::*;

    /// Writes `config_toml` to a temp folder, starts `ilpd --config FILE`
    /// (with a data dir in that folder unless the config names one)
    /// and waits until `listen` accepts TCP connections. Panics, printing
    /// ilpd's output, if it exits or does not listen within 20 s.
    pub fn start(config_toml: &str, listen: SocketAddr, label: &str) -> Proc {
        let dir = temp_dir("ilpd");
        let file = dir.join("ilpd.toml");
        fs::write(&file, config_toml).expect("write ilpd config");
        let mut cmd = Command::new(bin_path("ilpd"));
        cmd.arg("--config").arg(&file);
        if !config_toml.contains("data_dir") {
            // Each ilpd its own ledger (one data dir, one ilpd).
            cmd.arg("--data-dir").arg(dir.join("data"));
        }
        let mut proc = Proc::spawn(cmd, label);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = proc.try_wait() {
                proc.dump();
                panic!("[{label}] ilpd exited during start-up: {status}");
            }
            if wait_for_port(listen, Duration::from_millis(200)) {
                return proc;
            }
        }
        proc.dump();
        panic!("[{label}] ilpd did not listen on {listen} within 20 s");
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_then_wait_for_port() {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(!wait_for_port(addr, Duration::from_millis(100)));
        let _l = TcpListener::bind(addr).expect("rebind");
        assert!(wait_for_port(addr, Duration::from_secs(2)));
    }

    #[test]
    fn target_dir_holds_this_test_binary() {
        // This unit-test executable lives in <target>/<profile>/deps.
        let exe = std::env::current_exe().expect("current_exe");
        assert!(
            exe.starts_with(target_dir()),
            "{} not under {}",
            exe.display(),
            target_dir().display()
        );
    }

    #[test]
    fn temp_dirs_are_unique() {
        let a = temp_dir("x");
        let b = temp_dir("x");
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }

    #[test]
    fn proc_captures_output_and_terminates() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo oops >&2; exec sleep 30"]);
        let mut p = Proc::spawn(cmd, "sh test");
        let line = p.wait_for_line(Duration::from_secs(5), |l| l == "hello");
        assert_eq!(line.as_deref(), Some("hello"));
        assert!(p.wait_timeout(Duration::from_millis(100)).is_none());
        let start = Instant::now();
        let status = p.terminate().expect("terminated");
        assert!(!status.success());
        assert!(start.elapsed() < TERM_GRACE, "SIGTERM should stop sleep");
        assert_eq!(p.stderr_text().trim(), "oops");
    }

    #[test]
    fn run_with_timeout_returns_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo '{\"a\":1}'; exit 3"]);
        let (status, p) = run_with_timeout(cmd, "exit3", Duration::from_secs(5));
        assert_eq!(status.code(), Some(3));
        assert_eq!(last_json_line(&p).as_deref(), Some("{\"a\":1}"));
    }
}
