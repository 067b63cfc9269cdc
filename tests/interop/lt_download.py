#!/usr/bin/env python3
"""Download torrents from one seed with libtorrent 2.1.1 (the reference
client), told about the peer with connect_peer (no tracker, no DHT).

usage: lt_download.py --peer HOST:PORT --save DIR [--timeout S] [--enc plaintext|rc4|default]
                      [--linger S] (--torrent FILE | --magnet URI) ...
Prints one JSON object: per torrent, completed, seconds to first payload byte and
to completion, bytes downloaded, and libtorrent's view of the info-hashes.
"""
import argparse
import json
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--save", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--torrent", action="append", default=[])
    ap.add_argument("--magnet", action="append", default=[])
    ap.add_argument("--enc", default="plaintext")
    ap.add_argument("--debug", action="store_true", help="print libtorrent alerts to stderr")
    ap.add_argument("--download-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
    ap.add_argument("--linger", type=float, default=0,
                    help="keep seeding this many seconds after completing (for swarm tests)")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "utp"],
                    help="tcp (default): uTP off; utp: TCP off")
    args = ap.parse_args()

    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.all if "--debug" in sys.argv else (lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer),
    }
    if args.enc == "plaintext":
        settings["out_enc_policy"] = lt.enc_policy.disabled
        settings["in_enc_policy"] = lt.enc_policy.disabled
    elif args.enc == "rc4":
        settings["out_enc_policy"] = lt.enc_policy.forced
        settings["allowed_enc_level"] = lt.enc_level.rc4
    if args.transport == "utp":
        settings.update({"enable_incoming_utp": True, "enable_outgoing_utp": True,
                         "enable_incoming_tcp": False, "enable_outgoing_tcp": False})
    if args.download_limit:
        settings["download_rate_limit"] = args.download_limit
    ses = lt.session(settings)

    handles = []
    for path in args.torrent:
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(path)
        p.save_path = args.save
        handles.append((path, ses.add_torrent(p)))
    for uri in args.magnet:
        p = lt.parse_magnet_uri(uri)
        p.save_path = args.save
        handles.append((uri, ses.add_torrent(p)))

    peers = []
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        peers.append((host.strip("[]"), int(port)))
    start = time.monotonic()
    for _, h in handles:
        for peer in peers:
            h.connect_peer(peer)

    first_byte = {}
    done = {}
    last_connect = start
    while time.monotonic() - start < args.timeout:
        for name, h in handles:
            s = h.status()
            if name not in first_byte and s.total_payload_download > 0:
                first_byte[name] = time.monotonic() - start
            if name not in done and s.is_seeding:
                done[name] = time.monotonic() - start
        if len(done) == len(handles):
            break
        if time.monotonic() - last_connect > 2:
            last_connect = time.monotonic()
            for name, h in handles:
                if name not in done:
                    for peer in peers:
                        h.connect_peer(peer)
        for a in ses.pop_alerts():
            if args.debug:
                print(f"{time.monotonic() - start:7.3f} {a.what()}: {a.message()}", file=sys.stderr)
        time.sleep(0.02)

    # Stay in the swarm so that leechers started later can trade with us.
    linger_until = time.monotonic() + args.linger
    while len(done) == len(handles) and time.monotonic() < linger_until:
        for a in ses.pop_alerts():
            if args.debug:
                print(f"{time.monotonic() - start:7.3f} {a.what()}: {a.message()}", file=sys.stderr)
        time.sleep(0.05)

    out = []
    for name, h in handles:
        s = h.status()
        ih = h.info_hashes()
        out.append({
            "name": name,
            "completed": name in done,
            "seconds": done.get(name),
            "first_byte_seconds": first_byte.get(name),
            "downloaded": s.total_payload_download,
            "progress": s.progress,
            "v1": str(ih.v1) if ih.has_v1() else None,
            "v2": str(ih.v2) if ih.has_v2() else None,
            "state": str(s.state),
            "errors": str(s.errc.message()) if s.errc.value() else None,
            "peers": sorted({f"{p.ip[0]}:{p.ip[1]}" for p in h.get_peer_info()}),
        })
    json.dump(out, sys.stdout)
    print()
    return 0 if len(done) == len(handles) else 1


if __name__ == "__main__":
    sys.exit(main())
