#!/usr/bin/env python3
"""Latency vs offered rate, open loop: ilp-loadgen direct (its own ceiling)
and through ilpd (started here with two child accounts, as `demo` does).

Runs `ilp-loadgen sweep --all` for each target, keeps the JSON it writes,
and plots p50 / p99 / p99.9 against the achieved rate.

Usage (from the repository root; tools/paths overridable):
  bench/scripts/latency-vs-rate.sh            # builds, sets up matplotlib, runs this
  python3 bench/scripts/latency_vs_rate.py --bin-dir target/release \
      --out docs/img/latency-vs-rate.png
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_ilpd(ilpd, port, tmp):
    conf = os.path.join(tmp, "ilpd.toml")
    with open(conf, "w") as f:
        f.write(f"""[node]
address = "test.ilpd"
listen = "127.0.0.1:{port}"
log_level = "warn"

[[accounts]]
id = "loadgen-send"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "send-secret-0123456789"
max_balance = 9000000000000000000

[[accounts]]
id = "loadgen-recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "recv-secret-0123456789"
min_balance = -9000000000000000000
""")
    log = open(os.path.join(tmp, "ilpd.log"), "w")
    p = subprocess.Popen([ilpd, "--config", conf], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"ilpd exited at start-up; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.terminate()
    sys.exit("ilpd did not start listening")


def sweep(loadgen, rates, extra, out_json, step, p99, pin):
    cmd = [loadgen, "sweep", "--all", "--rates", ",".join(str(r) for r in rates),
           "--duration", step, "--warmup", "500ms", "--p99", p99, "--json", out_json, "-q"] + extra
    if not pin:
        cmd.append("--no-pin")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(out_json) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--out", default="docs/img/latency-vs-rate.png")
    ap.add_argument("--direct-rates", default="100000,250000,500000,1000000,1500000,2000000,2500000")
    ap.add_argument("--ilpd-rates", default="10000,25000,50000,100000,200000,300000,400000")
    ap.add_argument("--step", default="3s", help="measured time per rate")
    ap.add_argument("--p99", default="10ms", help="p99 bound for the 'highest rate' line")
    ap.add_argument("--pin", action="store_true",
                    help="pin ilp-loadgen's threads (default off: on a shared machine pinned "
                         "threads cannot escape a busy core)")
    a = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loadgen = os.path.join(a.bin_dir, "ilp-loadgen")
    ilpd = os.path.join(a.bin_dir, "ilpd")
    rates = lambda s: [int(x) for x in s.split(",") if x]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["direct (BTP, no connector)"] = sweep(
            loadgen, rates(a.direct_rates), ["--transport", "btp"], os.path.join(tmp, "direct.json"), a.step, a.p99, a.pin)
        port = free_port()
        proc = start_ilpd(ilpd, port, tmp)
        try:
            send = f"btp+ws://loadgen-send:send-secret-0123456789@127.0.0.1:{port}/"
            recv = f"btp+ws://loadgen-recv:recv-secret-0123456789@127.0.0.1:{port}/"
            results["through ilpd (BTP)"] = sweep(
                loadgen, rates(a.ilpd_rates), ["--send", send, "--recv", recv],
                os.path.join(tmp, "ilpd.json"), a.step, a.p99, a.pin)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    styles = {"p50": ":", "p99": "-", "p99_9": "--"}
    colors = ["tab:blue", "tab:red"]
    for (name, data), color in zip(results.items(), colors):
        pts = data["points"]
        x = [p["achieved_rate"] for p in pts]
        for q, ls in styles.items():
            y = [max(p["latency_ns"][q], 1) / 1e6 for p in pts]
            ax.plot(x, y, ls, marker="o", markersize=3, color=color, label=f"{name} {q.replace('_', '.')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("achieved rate (fulfilled packets/s, open loop)")
    ax.set_ylabel("latency from intended send time (ms)")
    first = next(iter(results.values()))
    ax.set_title(f"ilp-loadgen latency vs rate, commit {first['commit']}, "
                 f"{first['machine']['cores']} cores {first['machine']['cpu_model']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(a.out)
    data_out = os.path.splitext(a.out)[0] + ".json"
    with open(data_out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {a.out} and {data_out}")
    for name, data in results.items():
        print(f"{name}: highest rate with p99 <= {a.p99}: {data['best_rate']}")


if __name__ == "__main__":
    main()
