#!/usr/bin/env python3
"""Time to first payload byte from one seed with libtorrent 2.1.1, at
millisecond resolution: lt_download.py reads torrent_status, which libtorrent
only updates every tick (500 ms by default), so its figure is rounded up to
a tick. Here the tick is 20 ms and the first block_finished_alert is timed as
it is popped (polled every 2 ms).

usage: lt_mse_first_byte.py (--peer HOST:PORT --torrent FILE | --magnet LINK)
                            --save DIR [--enc default|plaintext|rc4]
                            [--transport tcp|default|utp] [--timeout S]
--transport: tcp (default) switches uTP off; default keeps libtorrent's own
settings (uTP tried first, as qBittorrent and Deluge ship it); utp switches
TCP off. With --magnet the peer comes from the link (x.pe, tr=).
Prints one JSON object: first_byte_seconds (adding the torrent to the first
block received; the completion time if the download finished before a
block alert was seen), connected_seconds (first peer_connect/handshake alert),
seconds (to completion), completed.
"""
import argparse
import json
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer")
    ap.add_argument("--save", required=True)
    ap.add_argument("--torrent")
    ap.add_argument("--magnet")
    ap.add_argument("--enc", default="default")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "default", "utp"])
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()

    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "tick_interval": 20,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.peer
        | lt.alert_category.block_progress,
    }
    if args.transport == "tcp":
        settings["enable_incoming_utp"] = False
        settings["enable_outgoing_utp"] = False
    elif args.transport == "utp":
        settings["enable_incoming_tcp"] = False
        settings["enable_outgoing_tcp"] = False
    if args.enc == "plaintext":
        settings["out_enc_policy"] = lt.enc_policy.disabled
        settings["in_enc_policy"] = lt.enc_policy.disabled
    elif args.enc == "rc4":
        settings["out_enc_policy"] = lt.enc_policy.forced
        settings["allowed_enc_level"] = lt.enc_level.rc4
    ses = lt.session(settings)

    if args.magnet:
        p = lt.parse_magnet_uri(args.magnet)
    else:
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(args.torrent)
    p.save_path = args.save
    start = time.monotonic()
    h = ses.add_torrent(p)
    if args.peer:
        host, port = args.peer.rsplit(":", 1)
        h.connect_peer((host.strip("[]"), int(port)))

    first_byte = None
    done = None
    while time.monotonic() - start < args.timeout:
        ses.wait_for_alert(2)
        for a in ses.pop_alerts():
            if first_byte is None and isinstance(a, lt.block_finished_alert):
                first_byte = time.monotonic() - start
        if done is None and h.status().is_seeding:
            done = time.monotonic() - start
            break
    if done is not None and first_byte is None:
        # The whole download landed between two alert batches (its block
        # alerts were not popped yet): the first byte came no later than
        # completion, so report that upper bound rather than nothing.
        first_byte = done

    json.dump(
        {
            "enc": args.enc,
            "transport": args.transport,
            "completed": done is not None,
            "first_byte_seconds": first_byte,
            "seconds": done,
        },
        sys.stdout,
    )
    print()
    return 0 if done is not None else 1


if __name__ == "__main__":
    sys.exit(main())
