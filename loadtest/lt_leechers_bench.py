#!/usr/bin/env python3
"""Throughput to real libtorrent 2.1.1 leechers: ringseed vs a libtorrent
seeder, measured in the same run, alternating (A B A B ...), medians.

usage: lt_leechers_bench.py --torrent FILE --data PATH [--leechers 1,4]
                            [--rounds 3] [--ringseed-bin target/release/ringseed]
                            [--server-cpu 0] [--leecher-cpu 1] [--work DIR]
                            [--transport tcp|utp]

Each round starts the seeder pinned to --server-cpu (ringseed with one
shard, or loadtest/lt_seed.py with libtorrent's high_performance_seed
settings), then N leechers (tests/interop/lt_download.py, connect_peer, no
tracker) pinned to --leecher-cpu, each saving into its own directory under
--work (put it on tmpfs). --transport utp: leechers with TCP off, the
seeders accepting uTP (ringseed --utp serve, libtorrent incoming uTP on). Throughput = N * size / time until the last leecher
completes, from adding the torrents. Server CPU-seconds from /proc/PID/stat.
Prints a table and one JSON line. Note: libtorrent leechers hash every piece
they receive (SHA-1), so on a 2-core machine the leechers are usually the
bottleneck, not the seeder; the CPU column shows what the seeder spent.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICKS


def start_server(kind, args):
    if kind == "ringseed":
        cmd = ["taskset", "-c", str(args.server_cpu), args.ringseed_bin, "serve",
               "--torrent", args.torrent, "--data", args.data, "--listen", "127.0.0.1:0",
               "--shards", "1", "--metrics", "off", "--tracker-listen", "off", "--skip-verify",
               "--utp", "serve" if args.transport == "utp" else "refuse"]
    else:
        cmd = ["taskset", "-c", str(args.server_cpu), sys.executable,
               os.path.join(ROOT, "loadtest", "lt_seed.py"), "--torrent", args.torrent, "--data", args.data]
        if args.transport == "utp":
            cmd.append("--utp")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("listening on "):
            return p, line.split()[2]
    raise SystemExit(f"{kind} did not start")


def run_round(kind, n, args, size):
    server, addr = start_server(kind, args)
    try:
        dirs = []
        for i in range(n):
            d = os.path.join(args.work, f"{kind}-{n}-{i}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            dirs.append(d)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        procs = [subprocess.Popen(
            ["taskset", "-c", str(args.leecher_cpu), sys.executable,
             os.path.join(ROOT, "tests", "interop", "lt_download.py"), "--peer", addr, "--save", d,
             "--timeout", "300", "--torrent", args.torrent, "--transport", args.transport],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for d in dirs]
        ok = True
        for p in procs:
            out, _ = p.communicate()
            res = json.loads(out)
            ok = ok and all(r["completed"] for r in res)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(server.pid) - cpu0
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        return {"ok": ok, "seconds": elapsed, "mb_s": n * size / elapsed / 1e6,
                "cpu_s_per_gib": cpu / (n * size / 2**30)}
    finally:
        server.kill()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--leechers", default="1,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ringseed-bin", default=os.path.join(ROOT, "target", "release", "ringseed"))
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--leecher-cpu", type=int, default=1)
    ap.add_argument("--work", default="/dev/shm/ringseed-lt-bench")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "utp"])
    args = ap.parse_args()
    size = os.path.getsize(args.data) if os.path.isfile(args.data) else None
    if size is None:
        raise SystemExit("--data must be the single file of a single-file torrent")
    os.makedirs(args.work, exist_ok=True)
    results = {}
    for n in [int(x) for x in args.leechers.split(",")]:
        for r in range(args.rounds):
            for kind in ("ringseed", "libtorrent"):
                res = run_round(kind, n, args, size)
                results.setdefault((kind, n), []).append(res)
                print(f"round {r + 1} {kind:10} {n} leecher(s): {res['mb_s']:8.1f} MB/s "
                      f"{res['seconds']:6.2f} s  server {res['cpu_s_per_gib']:.3f} CPU-s/GiB  ok={res['ok']}",
                      flush=True)
    summary = {}
    print(f"{'median':18} {'leechers':>8} {'MB/s':>9} {'CPU-s/GiB':>10}")
    for (kind, n), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mb = statistics.median(x["mb_s"] for x in rs)
        cpu = statistics.median(x["cpu_s_per_gib"] for x in rs)
        ok = all(x["ok"] for x in rs)
        summary[f"{kind}-{n}"] = {"mb_s": mb, "cpu_s_per_gib": cpu, "ok": ok}
        print(f"{kind:18} {n:>8} {mb:9.1f} {cpu:10.3f}")
    for n in [int(x) for x in args.leechers.split(",")]:
        a, b = summary.get(f"ringseed-{n}"), summary.get(f"libtorrent-{n}")
        if a and b:
            print(f"ringseed/libtorrent with {n} leecher(s): throughput {a['mb_s'] / b['mb_s']:.2f}x, "
                  f"server CPU per GiB {a['cpu_s_per_gib'] / b['cpu_s_per_gib']:.2f}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
