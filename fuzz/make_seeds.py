#!/usr/bin/env python3
"""Writes the seed corpus fuzz/seeds/<target>/ from codec/tests/data/vectors.json.

Run from anywhere: python3 fuzz/make_seeds.py. Seed files are named after the
vector (sanitised) and hold its raw bytes. Re-running is idempotent.
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "codec", "tests", "data", "vectors.json")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def strip_var_octets(b):
    """Content of a VarOctetString (short or long form length)."""
    if b[0] < 0x80:
        return b[1 : 1 + b[0]]
    n = b[0] & 0x7F
    ln = int.from_bytes(b[1 : 1 + n], "big")
    return b[1 + n : 1 + n + ln]


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    fname = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80]
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def main():
    with open(VECTORS) as f:
        vectors = json.load(f)
    for v in vectors:
        b = bytes.fromhex(v["hex"])
        kind, name = v["kind"], v["name"]
        # Every vector that is a whole ILP packet (Prepare/Fulfill/Reject,
        # including IL-DCP, CCP and peer.* packets) seeds ilp_packet.
        if b and b[0] in (12, 13, 14) and kind not in ("stream_packet", "btp") and not kind.startswith("oer_"):
            write("ilp_packet", name, b)
        if kind == "ilp_address":
            write("address", name, strip_var_octets(b))
        if kind == "ilp_prepare":
            # The destination: after type, length, 8 + 17 + 32 content bytes.
            hdr = 2 if b[1] < 0x80 else 2 + (b[1] & 0x7F)
            write("address", name + "_destination", strip_var_octets(b[hdr + 57 :]))
        if kind == "ilp_timestamp":
            write("ilp_timestamp", name, b)
        if kind == "generalized_time":
            write("ilp_timestamp", name, strip_var_octets(b))
        if kind == "f08_data":
            write("ilp_packet", name, b)


if __name__ == "__main__":
    main()
