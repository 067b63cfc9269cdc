#!/usr/bin/env python3
"""Download throughput: a ringseed box fetching a torrent from one libtorrent
2.1.1 seeder, beside a libtorrent leecher downloading it from the same seeder,
in the same run (alternating, so noise hits both alike).

usage: fetch_vs_libtorrent.py [--size-mib 256] [--piece-length 262144] [--rounds 3]
                              [--ringseed-bin target/release/ringseed] [--work DIR]
Per round: one lt_seed.py seeder (high_performance_seed settings); then
`ringseed serve --torrent T --data EMPTY --peer SEED` timed from start until
`ringseed_fetch_complete` is 1 (every piece checked and written); then
tests/interop/lt_download.py from the same seeder, timed by libtorrent
(every piece checked). Prints MB/s for both and the ratio ringseed/libtorrent.
Both write to the same filesystem (use --work on tmpfs to leave the disk out).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(port, name):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    return sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
               if l.startswith(name) and not l.startswith("#"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--piece-length", default="262144")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ringseed-bin", default=os.path.join(ROOT, "target", "release", "ringseed"))
    ap.add_argument("--work", default=None)
    args = ap.parse_args()

    work = tempfile.mkdtemp(dir=args.work)
    try:
        data = os.path.join(work, "payload.bin")
        with open(data, "wb") as f:
            f.write(os.urandom(args.size_mib << 20))
        torrent = os.path.join(work, "payload.torrent")
        subprocess.run([args.ringseed_bin, "create", "--v1", "--no-date", "--piece-length",
                        args.piece_length, "-o", torrent, data], check=True, stdout=subprocess.DEVNULL)
        size = os.path.getsize(data)
        seed = subprocess.Popen([sys.executable, os.path.join(ROOT, "loadtest", "lt_seed.py"),
                                 "--torrent", torrent, "--data", data], stdout=subprocess.PIPE, text=True)
        line = seed.stdout.readline()
        peer = line.strip().removeprefix("listening on ")
        rs, lt = [], []
        try:
            for r in range(args.rounds):
                # ringseed
                dest = os.path.join(work, f"rs{r}")
                os.makedirs(dest)
                mport = free_port()
                t0 = time.monotonic()
                p = subprocess.Popen([args.ringseed_bin, "serve", "--torrent", torrent, "--data", dest,
                                      "--peer", peer, "--listen", "127.0.0.1:0", "--metrics",
                                      f"127.0.0.1:{mport}", "--tracker-listen", "off", "--control", "off",
                                      "--shards", "1", "--log-level", "warn"],
                                     stdout=subprocess.DEVNULL)
                while (metric(mport, "ringseed_fetch_complete") or 0) < 1:
                    if time.monotonic() - t0 > 300:
                        raise SystemExit("ringseed fetch did not complete in 300 s")
                    time.sleep(0.01)
                rs.append(time.monotonic() - t0)
                p.terminate()
                p.wait()
                shutil.rmtree(dest)
                # libtorrent
                dest = os.path.join(work, f"lt{r}")
                os.makedirs(dest)
                out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop", "lt_download.py"),
                                      "--peer", peer, "--save", dest, "--timeout", "300", "--torrent", torrent],
                                     capture_output=True, text=True, check=True)
                lt.append(json.loads(out.stdout)[0]["seconds"])
                shutil.rmtree(dest)
                print(f"round {r + 1}: ringseed {size / rs[-1] / 1e6:.0f} MB/s ({rs[-1]:.2f} s), "
                      f"libtorrent {size / lt[-1] / 1e6:.0f} MB/s ({lt[-1]:.2f} s)", flush=True)
        finally:
            seed.terminate()
            seed.wait()
        m_rs, m_lt = statistics.median(rs), statistics.median(lt)
        print(f"median of {args.rounds}: ringseed {size / m_rs / 1e6:.0f} MB/s, libtorrent "
              f"{size / m_lt / 1e6:.0f} MB/s, ratio ringseed/libtorrent {m_lt / m_rs:.2f}x "
              f"({args.size_mib} MiB, pieces of {args.piece_length} bytes, one libtorrent seeder)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
