//! Records the git commit the binary was built from (for `--json` reports).

use std::process::Command;

fn main() {
    let commit = std::env::var("ILPD_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--", "."])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let mut c = commit.unwrap_or_else(|| "unknown".into());
    if dirty {
        c.push_str("-dirty");
    }
    println!("cargo:rustc-env=ILPD_LOADGEN_COMMIT={c}");
    println!("cargo:rerun-if-env-changed=ILPD_COMMIT");
    // HEAD moves on every commit; the ref file it names changes too.
    println!("cargo:rerun-if-changed=../.git/HEAD");
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        if let Some(r) = head.strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=../.git/{}", r.trim());
        }
    }
}
