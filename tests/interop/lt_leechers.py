#!/usr/bin/env python3
"""N stock libtorrent 2.1.1 leechers in one process that find their peers
through the torrent's tracker (no DHT, PEX, LSD), each capped up and down.

usage: lt_leechers.py --torrent FILE --listen IP --count N --save DIR
                      [--up BYTES/S] [--down BYTES/S] [--timeout S]
Prints one JSON object: per leecher, seconds from start to completion (null
if it did not complete) and payload bytes downloaded/uploaded. Exits 0 when
every leecher completed.
"""
import argparse
import json
import os
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--save", required=True)
    ap.add_argument("--up", type=int, default=0)
    ap.add_argument("--down", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()

    ti = lt.torrent_info(args.torrent)
    sessions = []
    start = time.monotonic()
    for i in range(args.count):
        s = lt.session({
            "listen_interfaces": f"{args.listen}:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "allow_multiple_connections_per_ip": True,
            "upload_rate_limit": args.up,
            "download_rate_limit": args.down,
            "announce_to_all_trackers": True,
            "alert_mask": lt.alert_category.error,
        })
        # Peers on the local network are exempt from the rate limits by
        # default (libtorrent's local peer class): put every address in the
        # global class so the caps apply to the fleet's private addresses.
        f = lt.ip_filter()
        f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        s.set_peer_class_filter(f)
        p = lt.add_torrent_params()
        p.ti = ti
        p.save_path = os.path.join(args.save, f"l{i}")
        os.makedirs(p.save_path, exist_ok=True)
        p.flags &= ~lt.torrent_flags.auto_managed
        p.flags &= ~lt.torrent_flags.paused
        h = s.add_torrent(p)
        sessions.append((s, h))
    done = [None] * args.count
    while time.monotonic() - start < args.timeout and any(d is None for d in done):
        for i, (s, h) in enumerate(sessions):
            s.pop_alerts()
            if done[i] is None and h.status().is_seeding:
                done[i] = time.monotonic() - start
        time.sleep(0.05)
    out = []
    for i, (s, h) in enumerate(sessions):
        st = h.status()
        out.append({
            "completed_after": done[i],
            "downloaded": st.total_payload_download,
            "uploaded": st.total_payload_upload,
        })
    print(json.dumps({"leechers": out}), flush=True)
    return 0 if all(d is not None for d in done) else 1


if __name__ == "__main__":
    sys.exit(main())
