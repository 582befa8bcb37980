//! Receiver and Sender against ilp-protocol-stream itself, over a pipe
//! (docs/stream.md "Checking against ilp-protocol-stream"): the JS client
//! pays `Receiver`, and `Sender` pays the JS `Server`, exact amounts, and
//! both stop at a receive max.
//!
//! Needs Node and the pinned JavaScript stack in tests/interop/node_modules
//! (`tests/run.sh` installs it with `npm ci`), or `ILPD_JS_MODULES` naming
//! another node_modules; without them each test fails with set-up
//! instructions (a missing toolchain is never a silent pass).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// target/<profile>/examples/<name>, built by `cargo test` with this test.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples").join(name);
    dir.exists().then_some(dir)
}

/// Runs `script` with the receiver or sender example.
fn run(script: &str, example_name: &str, args: &[&str]) -> (Value, String) {
    // ILPD_JS_MODULES points elsewhere (a node_modules with the same pins).
    let modules = std::env::var_os("ILPD_JS_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/interop/node_modules"));
    assert!(
        modules.join("ilp-protocol-stream").exists(),
        "{} has no ilp-protocol-stream: run `npm ci` in tests/interop (tests/run.sh does it), \
         or point ILPD_JS_MODULES at a node_modules with the same pins",
        modules.display()
    );
    let bin = example(example_name)
        .unwrap_or_else(|| panic!("example {example_name} not built (cargo test builds it)"));
    let out = match Command::new("node")
        .arg(repo().join("stream/examples/js").join(script))
        .arg(&bin)
        .args(args)
        .env("NODE_PATH", &modules)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("`node` cannot run ({e}): the interop tests need Node 20 on PATH"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (v, stderr)
}

#[test]
fn js_client_pays_the_receiver_exactly() {
    let (v, stderr) = run("pay.js", "stdio_receiver", &["1000000"]);
    assert_eq!(v["sent"], "1000000", "{v}");
    assert_eq!(v["delivered"], "1000000", "{v}");
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["destAsset"], "XYZ", "{v}");
    assert!(stderr.contains("credited 1000000 "), "{stderr}");
}

#[test]
fn js_client_stops_at_the_receivers_max() {
    let (v, stderr) = run("pay.js", "stdio_receiver", &["1000000", "300000"]);
    assert_eq!(v["delivered"], "300000", "{v}");
    assert!(stderr.contains("credited 300000 "), "{stderr}");
}

#[test]
fn sender_pays_the_js_server_exactly() {
    let (v, stderr) = run("serve.js", "stdio_sender", &["1000000"]);
    assert_eq!(v["jsServerReceived"], "1000000", "{v}\n{stderr}");
    assert!(stderr.contains("\"delivered\":1000000"), "{stderr}");
}

#[test]
fn sender_stops_at_the_js_servers_max() {
    let (v, stderr) = run("serve.js", "stdio_sender", &["1000000", "250000"]);
    assert_eq!(v["jsServerReceived"], "250000", "{v}\n{stderr}");
    assert!(stderr.contains("ReceiveMaxReached"), "{stderr}");
}
