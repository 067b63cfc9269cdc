#!/usr/bin/env python3
"""What do ringseed's shards cost each other? N shards in one process
against N one-shard processes sharing the port (SO_REUSEPORT: nothing
shared by construction), all pinned to the same core, under the same flood.
Time-slicing one core costs both alike, so the difference in CPU-s/GiB and
block latency is what the shards impose on each other (shared atomics, false
sharing, the box-wide policies).

usage: shards_vs_processes.py --torrent T --data PATH [--shards 2,4,8,16]
                              [--seconds 10] [--connections 64] [--pipeline 64]
                              [--rounds 1] [--server-cpu 1] [--load-cpu 0]
                              [--ringseed-args '--upload-rate-limit 100GB/s']
                              [--json OUT]

Both sides run with the same `ringseed serve` flags (--ringseed-args adds
more, e.g. a box cap far above the rate to keep the token pool on the
path). The flood is `ringseed-loadtest` on its own core. CPU-s are the
servers' utime + stime over the run (/proc/PID/stat), bytes and the block
latency p99 come from the load generator's JSON report. Prints a table; the
ratio column is one process / N processes (1.00 = no cost of sharing).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_servers(args, port, procs, shards_each):
    out = []
    for _ in range(procs):
        cmd = ["taskset", "-c", str(args.server_cpu), args.ringseed_bin, "serve",
               "--torrent", args.torrent, "--data", args.data,
               "--listen", f"127.0.0.1:{port}", "--shards", str(shards_each),
               "--metrics", "off", "--tracker-listen", "off", "--control", "off",
               "--utp", "off", "--skip-verify"] + args.ringseed_args.split()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in p.stdout:
            if line.startswith("listening on "):
                break
        else:
            raise SystemExit(f"ringseed serve did not start: {' '.join(cmd)}")
        out.append(p)
    return out


def run(args, procs, shards_each):
    port = free_port()
    servers = start_servers(args, port, procs, shards_each)
    try:
        before = sum(cpu_seconds(p.pid) for p in servers)
        with tempfile.NamedTemporaryFile(suffix=".json") as rep:
            subprocess.run(
                [args.loadtest_bin, "--target", f"127.0.0.1:{port}", "--torrent", args.torrent,
                 "--connections", str(args.connections), "--pipeline", str(args.pipeline),
                 "--duration", f"{args.seconds}s", "--threads", "1",
                 "--first-cpu", str(args.load_cpu), "--quiet", "--report", rep.name],
                check=True, stdout=subprocess.DEVNULL)
            after = sum(cpu_seconds(p.pid) for p in servers)
            summary = json.load(open(rep.name))["summary"]
    finally:
        for p in servers:
            p.terminate()
        for p in servers:
            p.wait(timeout=10)
    gib = summary["payload_bytes"] / 2**30
    return {
        "processes": procs, "shards_each": shards_each,
        "gib": gib, "cpu_s": after - before,
        "cpu_s_per_gib": (after - before) / gib if gib else float("inf"),
        "throughput_mb_s": summary["throughput_mb_s"],
        "p99_us": summary["block_latency_us"]["p99"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--shards", default="2,4,8,16")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--pipeline", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--ringseed-args", default="")
    ap.add_argument("--ringseed-bin", default=os.path.join(ROOT, "target", "release", "ringseed"))
    ap.add_argument("--loadtest-bin", default=os.path.join(ROOT, "target", "release", "ringseed-loadtest"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    print("| N | one process: CPU-s/GiB | N processes: CPU-s/GiB | ratio | p99 one / N (us) | MB/s one / N |")
    print("|---|---|---|---|---|---|")
    for n in [int(x) for x in args.shards.split(",")]:
        one, many = [], []
        for _ in range(args.rounds):
            # Alternate so that noise on the shared machine hits both alike.
            one.append(run(args, 1, n))
            many.append(run(args, n, 1))
        med = lambda rs, k: sorted(r[k] for r in rs)[len(rs) // 2]
        a, b = med(one, "cpu_s_per_gib"), med(many, "cpu_s_per_gib")
        print(f"| {n} | {a:.3f} | {b:.3f} | {b / a:.2f} | {med(one, 'p99_us'):.0f} / {med(many, 'p99_us'):.0f} "
              f"| {med(one, 'throughput_mb_s'):.0f} / {med(many, 'throughput_mb_s'):.0f} |", flush=True)
        rows.append({"n": n, "one_process": one, "n_processes": many})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
