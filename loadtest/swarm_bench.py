#!/usr/bin/env python3
"""The README's swarm table: `ringseed serve` (plain vs --super-seed) feeding
N synthetic leechers of `ringseed-loadtest swarm` that trade among
themselves, every NIC capped at the same rate.

usage: swarm_bench.py [--configs 10:16MiB:1.5MB/s,100:16MiB:1.5MB/s,500:8MiB:0.4MB/s:32K]
                      [--rounds 1] [--serve-args '--upload-slots 0'] [--work /dev/shm/swarm-bench]
                      [--out loadtest/results]
                      [--bin-dir target/release]

For each config N:SIZE:RATE[:PIECE] it makes a SIZE file of random bytes and
a v1+v2 torrent with PIECE pieces (default 256K), then per round runs plain and super-seed
(alternating): `ringseed serve --torrent T --data F --shards 1
--upload-rate-limit RATE [--super-seed] [SERVE_ARGS]` (a capped seed
defaults to 4 upload slots per shard) and
`ringseed-loadtest swarm --leechers N --peers-from tool --leecher-up RATE
--leecher-down RATE --seed-rate RATE` (the tool hands out the peer list; no
tracker). Reports go to OUT/swarm-N-MODE[-rROUND].json; a markdown table is
printed.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def size_bytes(s):
    m = re.fullmatch(r"(\d+)(KiB|MiB|GiB)?", s)
    return int(m.group(1)) * {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]


def start_seed(args, torrent, data, rate, super_seed):
    cmd = [os.path.join(args.bin_dir, "ringseed"), "serve", "--torrent", torrent, "--data", data,
           "--listen", "127.0.0.1:0", "--shards", "1", "--metrics", "127.0.0.1:0",
           "--tracker-listen", "off", "--upload-rate-limit", rate,
           "--max-connections", "4000", "--max-per-ip", "4000"] + args.serve_args.split()
    if super_seed:
        cmd.append("--super-seed")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = metrics = None
    for line in p.stdout:
        if line.startswith("metrics on "):
            metrics = line.split()[2]  # http://ADDR/metrics
        if line.startswith("listening on "):
            addr = line.split()[2]
            break
    if not addr:
        p.kill()
        raise SystemExit("ringseed serve did not start: " + " ".join(cmd))
    return p, addr, metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="10:16MiB:1.5MB/s,100:16MiB:1.5MB/s,500:8MiB:0.4MB/s:32K")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--serve-args", default="", help="extra `ringseed serve` flags, e.g. '--upload-slots 4'")
    ap.add_argument("--work", default="/dev/shm/swarm-bench")
    ap.add_argument("--out", default=os.path.join(ROOT, "loadtest", "results"))
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for cfg in args.configs.split(","):
        n, size, rate, *piece = cfg.split(":")
        n = int(n)
        piece = piece[0] if piece else "256K"
        data = os.path.join(args.work, f"content-{size}-{piece}.bin")
        torrent = data + ".torrent"
        if not os.path.exists(torrent):
            with open(data, "wb") as f:
                f.write(os.urandom(size_bytes(size)))
            subprocess.run([os.path.join(args.bin_dir, "ringseed"), "create", "--piece-length", piece,
                            "-o", torrent, data], check=True, stdout=subprocess.DEVNULL)
        for r in range(args.rounds):
            for mode in ("plain", "super-seed"):
                seed, addr, metrics = start_seed(args, torrent, data, rate, mode == "super-seed")
                suffix = f"-r{r}" if args.rounds > 1 else ""
                report = os.path.join(args.out, f"swarm-{n}-{mode}{suffix}.json")
                cmd = [os.path.join(args.bin_dir, "ringseed-loadtest"), "swarm", "--leechers", str(n),
                       "--torrent", torrent, "--target", addr, "--peers-from", "tool",
                       "--leecher-up", rate, "--leecher-down", rate, "--seed-rate", rate,
                       "--seed-metrics", metrics, "--label", f"{mode} ({n} leechers)",
                       "--report", report, "--quiet", "--timeout", "600s"]
                try:
                    res = subprocess.run(cmd, capture_output=True, text=True)
                finally:
                    seed.terminate()
                    seed.wait(10)
                print(res.stdout.strip(), flush=True)
                if res.returncode != 0:
                    print(res.stderr, file=sys.stderr)
                s = json.load(open(report))["summary"]
                c = s["completion_s"] or {}
                rows.append((n, f"{size} ({piece} pieces)", rate, mode, c.get("p50"), c.get("p90"), c.get("p99"), c.get("max"),
                             s["bound"]["seconds"], s.get("actual_over_bound"), s["origin_amplification"],
                             s["completed"], s["leechers"]))
    print()
    print("| leechers | file, NIC cap | seed | completed | p50 | p90 | p99 | last | bound | last/bound | origin bytes / file |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    for (n, size, rate, mode, p50, p90, p99, mx, bound, ratio, amp, done, total) in rows:
        print(f"| {n} | {size}, {rate} | {mode} | {done}/{total} | {f(p50)} s | {f(p90)} s | {f(p99)} s | "
              f"{f(mx)} s | {f(bound)} s | {f(ratio, 2)} | {amp:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
