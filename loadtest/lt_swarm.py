#!/usr/bin/env python3
"""A fleet of stock libtorrent 2.1.1 leechers downloading one torrent from
one seed *and from each other*, every host's NIC capped: how soon does the
last leecher finish, and how many bytes did the origin send?

usage: lt_swarm.py --torrent FILE --data PATH [--leechers 30] [--rate 5MB/s]
                   [--seeds ringseed,ringseed-super,libtorrent,libtorrent-super]
                   [--rounds 1] [--ringseed-bin target/release/ringseed]
                   [--shards N] [--ringseed-args '--upload-slots 4'] [--work DIR] [--timeout 600]
                   [--json OUT] [--timeline SECONDS]

Each round, for each seed kind in --seeds (alternating, so noise hits all
alike): start the seed capped at --rate (ringseed `serve --upload-rate-limit
RATE [--super-seed]`, or an in-process libtorrent session with
upload_rate_limit [and its super_seeding flag]), then N libtorrent sessions
in this process, each capped at --rate up and down (loopback peers are put
in libtorrent's global peer class so the caps apply to them), each told the
seed's and every other leecher's address (the peer list this tool hands
out; no tracker). Completion of a leecher = libtorrent says it is seeding
(every piece SHA-1 checked). Origin bytes = payload the seed uploaded
(ringseed: ringseed_payload_bytes_total from /metrics; libtorrent:
total_payload_upload). Lower bound for F bytes, seed rate u_s, N leechers
with up u and down d: max(F/u_s, F/d, N*F/(u_s + N*u)).
Prints one line per run and a summary table; --json writes every run.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import libtorrent as lt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_rate(s):
    m = re.fullmatch(r"([0-9.]+)\s*(k|M|G|Ki|Mi|Gi)?B/s", s.strip())
    if not m:
        raise SystemExit(f"bad rate {s!r}: write e.g. 5MB/s or 4MiB/s")
    mult = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    return int(float(m.group(1)) * mult)


def base_settings(rate):
    return {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "in_enc_policy": lt.enc_policy.disabled,
        "out_enc_policy": lt.enc_policy.disabled,
        "upload_rate_limit": rate,
        "download_rate_limit": rate,
        "alert_mask": lt.alert_category.error,
        "connections_limit": 500,
    }


def cap_loopback(ses):
    """Loopback peers are 'local' and unthrottled by default: make every
    address a member of the global peer class so the rate limits apply."""
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(f)


def scrape(url, name):
    with urllib.request.urlopen(url, timeout=5) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


class RingseedSeed:
    def __init__(self, args, super_seed):
        cmd = [args.ringseed_bin, "serve", "--torrent", args.torrent, "--data", args.data,
               "--listen", "127.0.0.1:0", "--shards", str(args.shards), "--metrics", "127.0.0.1:0",
               "--tracker-listen", "off", "--skip-verify", "--upload-rate-limit", args.rate_text]
        if super_seed:
            cmd.append("--super-seed")
        cmd += args.ringseed_args.split()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addr = self.metrics = None
        for line in self.p.stdout:
            if line.startswith("metrics on "):
                self.metrics = line.split()[2]
            if line.startswith("listening on "):
                self.addr = line.split()[2]
                break
        if not self.addr or not self.metrics:
            raise SystemExit("ringseed serve did not start: " + " ".join(cmd))

    def uploaded(self):
        return scrape(self.metrics, "ringseed_payload_bytes_total")

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


class LtSeed:
    def __init__(self, args, super_seed):
        s = base_settings(args.rate)
        s["download_rate_limit"] = 0
        self.ses = lt.session(s)
        cap_loopback(self.ses)
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(args.torrent)
        data = os.path.abspath(args.data)
        p.save_path = os.path.dirname(data) if os.path.basename(data) == p.ti.name() else data
        p.flags &= ~lt.torrent_flags.auto_managed
        p.flags &= ~lt.torrent_flags.paused
        if super_seed:
            p.flags |= lt.torrent_flags.super_seeding
        self.h = self.ses.add_torrent(p)
        deadline = time.monotonic() + 300
        while not self.h.status().is_seeding:
            if time.monotonic() > deadline:
                raise SystemExit("libtorrent seed did not finish checking")
            self.ses.pop_alerts()
            time.sleep(0.05)
        self.addr = f"127.0.0.1:{self.ses.listen_port()}"
        self.base = self.h.status().total_payload_upload

    def uploaded(self):
        return self.h.status().total_payload_upload - self.base

    def stop(self):
        self.ses.remove_torrent(self.h)
        del self.ses


def run(kind, args, size, n):
    super_seed = kind.endswith("-super")
    seed = (RingseedSeed if kind.startswith("ringseed") else LtSeed)(args, super_seed)
    work = tempfile.mkdtemp(prefix="lt_swarm_", dir=args.work)
    sessions = []
    try:
        ti = lt.torrent_info(args.torrent)
        for i in range(n):
            ses = lt.session(base_settings(args.rate))
            cap_loopback(ses)
            p = lt.add_torrent_params()
            p.ti = ti
            p.save_path = os.path.join(work, str(i))
            os.makedirs(p.save_path)
            p.flags &= ~lt.torrent_flags.auto_managed
            p.flags |= lt.torrent_flags.paused
            h = ses.add_torrent(p)
            sessions.append((ses, h))
        ports = [s.listen_port() for s, _ in sessions]
        host, port = seed.addr.rsplit(":", 1)
        t0 = time.monotonic()
        for i, (ses, h) in enumerate(sessions):
            h.resume()
            h.connect_peer((host, int(port)))
            for j, pj in enumerate(ports):
                if j != i:
                    h.connect_peer(("127.0.0.1", pj))
        done = [None] * n
        deadline = t0 + args.timeout
        timeline = []
        next_sample = 0.0
        while None in done and time.monotonic() < deadline:
            now = time.monotonic() - t0
            for i, (ses, h) in enumerate(sessions):
                if done[i] is None and h.status().is_seeding:
                    done[i] = now
                ses.pop_alerts()
            if args.timeline and now >= next_sample:
                # Origin bytes so far and the swarm's bytes (all leechers).
                got = sum(h.status().total_wanted_done for _, h in sessions)
                timeline.append((round(now, 2), seed.uploaded(), got))
                next_sample += args.timeline
            time.sleep(0.05)
        time.sleep(0.5)  # let the seed's counter settle
        uploaded = seed.uploaded()
    finally:
        for ses, h in sessions:
            ses.remove_torrent(h)
        sessions.clear()
        seed.stop()
        shutil.rmtree(work, ignore_errors=True)
    completed = sorted(t for t in done if t is not None)
    rate = args.rate
    bound = max(size / rate, size / rate, n * size / (rate + n * rate))
    last = completed[-1] if len(completed) == n else None

    def pct(q):
        return completed[min(len(completed) - 1, int(q * len(completed)))] if completed else None

    return {
        "seed": kind, "leechers": n, "size": size, "rate": rate,
        "completed": len(completed), "p50": pct(0.5), "p90": pct(0.9), "max": last,
        "bound": bound, "ratio": (last / bound) if last else None,
        "origin_bytes": uploaded, "origin_ratio": uploaded / size,
        "completion_times": completed,
        "timeline": timeline,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--leechers", type=int, default=30)
    ap.add_argument("--rate", default="5MB/s")
    ap.add_argument("--seeds", default="ringseed,ringseed-super,libtorrent,libtorrent-super")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--ringseed-bin", default=os.path.join(ROOT, "target", "release", "ringseed"))
    ap.add_argument("--shards", type=int, default=1,
                    help="ringseed's shard count (the box behaves as one seed at any count)")
    ap.add_argument("--ringseed-args", default="", help="extra `ringseed serve` flags, e.g. '--upload-slots 4'")
    ap.add_argument("--work", default=None, help="where leechers save (default: a temp dir; use tmpfs)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeline", type=float, default=0,
                    help="every this many seconds, print the origin's and the swarm's rates")
    args = ap.parse_args()
    args.rate_text = args.rate
    args.rate = parse_rate(args.rate)
    size = lt.torrent_info(args.torrent).total_size()
    runs = []
    for r in range(args.rounds):
        for kind in args.seeds.split(","):
            res = run(kind, args, size, args.leechers)
            res["round"] = r
            runs.append(res)
            fmt = lambda v: "-" if v is None else f"{v:.1f}"
            print(f"round {r} {kind:17} completed {res['completed']}/{res['leechers']} "
                  f"p50 {fmt(res['p50'])} s p90 {fmt(res['p90'])} s last {fmt(res['max'])} s "
                  f"bound {res['bound']:.1f} s ratio {fmt(res['ratio'])} "
                  f"origin {res['origin_ratio']:.2f}x file", flush=True)
            prev = (0.0, 0.0, 0.0)
            for t, up, got in res["timeline"]:
                dt = max(t - prev[0], 1e-9)
                print(f"  t {t:6.2f} s  origin {(up - prev[1]) / dt / 1e6:6.2f} MB/s "
                      f"({up / size:.2f}x)  swarm {(got - prev[2]) / dt / 1e6:7.2f} MB/s "
                      f"({got / size / res['leechers']:.2f} of all)")
                prev = (t, up, got)
    print()
    print(f"{'seed':17} {'last/bound':>10} {'origin/file':>11}  (medians over {args.rounds} round(s))")
    for kind in args.seeds.split(","):
        rs = [x for x in runs if x["seed"] == kind]
        ratios = [x["ratio"] for x in rs if x["ratio"] is not None]
        print(f"{kind:17} {statistics.median(ratios) if ratios else float('nan'):>10.2f} "
              f"{statistics.median(x['origin_ratio'] for x in rs):>11.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "torrent": args.torrent, "rate": args.rate_text}, f, indent=1)
    return 0 if all(x["completed"] == x["leechers"] for x in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
