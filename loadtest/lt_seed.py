#!/usr/bin/env python3
"""A libtorrent 2.1.1 seeder for `ringseed-loadtest compare`.

usage: lt_seed.py --torrent FILE --data PATH [--listen 127.0.0.1] [--utp]
Seeds FILE from PATH (the content itself, or its parent directory) with
libtorrent's high_performance_seed() settings, PEX/DHT/LSD/uTP/UPnP off,
plaintext only, multiple connections per IP allowed. After the data is
checked it prints `listening on HOST:PORT` and serves until killed.
"""
import argparse
import os
import signal
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--utp", action="store_true", help="accept uTP connections too")
    args = ap.parse_args()

    s = lt.high_performance_seed()
    s.update({
        "listen_interfaces": f"{args.listen}:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "in_enc_policy": lt.enc_policy.disabled,
        "out_enc_policy": lt.enc_policy.disabled,
        "connections_limit": 20000,
        "unchoke_slots_limit": -1,
        "alert_mask": lt.alert_category.error,
    })
    if args.utp:
        s["enable_incoming_utp"] = True
    ses = lt.session(s)
    ti = lt.torrent_info(args.torrent)
    p = lt.add_torrent_params()
    p.ti = ti
    data = os.path.abspath(args.data)
    # save_path is the directory that holds the torrent's content.
    p.save_path = os.path.dirname(data) if os.path.basename(data) == ti.name() else data
    p.flags &= ~lt.torrent_flags.auto_managed
    p.flags &= ~lt.torrent_flags.paused
    h = ses.add_torrent(p)
    deadline = time.monotonic() + 300
    while True:
        st = h.status()
        if st.is_seeding:
            break
        if st.errc.value():
            print(f"lt_seed: torrent error: {st.errc.message()}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"lt_seed: not seeding after 300 s (state {st.state}, progress {st.progress})", file=sys.stderr)
            return 1
        ses.pop_alerts()
        time.sleep(0.05)
    print(f"listening on {args.listen}:{ses.listen_port()}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        ses.pop_alerts()
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
