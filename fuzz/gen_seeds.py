#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/<target>/ (checked in; rerun after
changing an input format). Seeds are small, real-shaped inputs: the
libtorrent-made fixture torrents and captured-style peer sessions (handshake,
extension handshake, interested, requests, cancel) in each target's format.
See fuzz/src/checks/ for the formats."""

import hashlib
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(ROOT, "..", "tests", "fixtures")
SEEDS = os.path.join(ROOT, "seeds")

V1_HASH = b"\x11" * 20  # what the peer_state catalogue serves
V2_HASH = b"\x22" * 20


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def msg(msg_id, payload=b""):
    return struct.pack(">IB", len(payload) + 1, msg_id) + payload


def handshake(info_hash, fast=True, ext=True, v2=False):
    reserved = bytearray(8)
    if ext:
        reserved[5] |= 0x10
    if fast:
        reserved[7] |= 0x04
    if v2:
        reserved[7] |= 0x10
    reserved[7] |= 0x01
    return b"\x13BitTorrent protocol" + bytes(reserved) + info_hash + b"-lt2110-abcdefghijkl"


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    return b"d" + b"".join(benc(k) + benc(v[k]) for k in sorted(v, key=lambda k: k.encode() if isinstance(k, str) else k)) + b"e"


LT_EXT = benc({
    "complete_ago": -1,
    "m": {"lt_donthave": 7, "share_mode": 8, "upload_only": 3, "ut_holepunch": 4, "ut_metadata": 2, "ut_pex": 1},
    "metadata_size": 1015,
    "p": 6881,
    "reqq": 500,
    "upload_only": 1,
    "v": "libtorrent 2.1.1.0",
    "yourip": b"\x7f\x00\x00\x01",
})


def req(i, piece, begin, length):
    return msg(i, struct.pack(">III", piece, begin, length))


def session_messages():
    """A leecher's session after the handshake."""
    out = msg(20, b"\x00" + LT_EXT)
    out += msg(2)  # interested
    out += msg(15)  # have_none
    for b in range(4):
        out += req(6, 0, b * 16384, 16384)
    out += req(6, 1, 0, 16384)
    out += req(8, 0, 3 * 16384, 16384)  # cancel
    out += struct.pack(">I", 0)  # keep-alive
    out += req(6, 2, 0, 1000)
    return out


def skip(data, i):
    """Index just past the bencoded value starting at i."""
    c = data[i:i + 1]
    if c == b"i":
        return data.index(b"e", i) + 1
    if c in (b"l", b"d"):
        i += 1
        while data[i:i + 1] != b"e":
            i = skip(data, i)
        return i + 1
    colon = data.index(b":", i)
    return colon + 1 + int(data[i:colon])


def main():
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    torrents = sorted(f for f in os.listdir(FIXTURES) if f.endswith(".torrent"))
    for name in torrents:
        data = open(os.path.join(FIXTURES, name), "rb").read()
        write("metainfo_parse", name, data)
        write("bencode_decode", name, data)
        # The bare info dictionary, for Torrent::from_info_bytes.
        start = data.find(b"4:infod") + len(b"4:info")
        write("metainfo_parse", "info_" + name, data[start:skip(data, start)])
    for i, v in enumerate([b"i-42e", b"le", b"de", b"d1:ai1e1:bl3:xyzi0eee", b"4:spam", LT_EXT]):
        write("bencode_decode", "small_%d" % i, v)

    h1 = hashlib.sha1(b"ringseed").hexdigest()
    h2 = hashlib.sha256(b"ringseed").hexdigest()
    magnets = {
        "v1": "magnet:?xt=urn:btih:%s&dn=ubuntu%%2024.04.iso&tr=http%%3A%%2F%%2Ftracker.example%%2Fannounce" % h1,
        "v2": "magnet:?xt=urn:btmh:1220%s&dn=data" % h2,
        "hybrid": "magnet:?xt=urn:btih:%s&xt=urn:btmh:1220%s&dn=a+b&x.pe=127.0.0.1:6881&tr=udp://t.example:6969" % (h1.upper(), h2),
        "base32": "magnet:?xt=urn:btih:VOV2XK5LVOV2XK5LVOV2XK5LVOV2XK5L&so=0-3",
    }
    for k, v in magnets.items():
        write("magnet_parse", k, v.encode())

    session = session_messages()
    # wire_decode: [max-len selector][split count][splits][stream]
    write("wire_decode", "session_whole", b"\x00\x00" + session)
    write("wire_decode", "session_split", b"\x00\x05" + bytes([3, 1, 60, 13, 17]) + session)
    write("wire_decode", "piece_and_hashes",
          b"\x04\x01\x07" + msg(7, struct.pack(">II", 0, 0) + b"\xab" * 64)
          + msg(21, b"\x01" * 32 + struct.pack(">IIII", 0, 0, 2, 0))
          + msg(22, b"\x01" * 32 + struct.pack(">IIII", 0, 0, 2, 0) + b"\x02" * 64)
          + msg(9, b"\x1a\xe1") + msg(5, b"\xff\xc0") + msg(14) + msg(99, b"xyz"))
    write("wire_decode", "too_long", b"\x02\x00" + struct.pack(">I", 0xFFFFFFFF) + b"\x07")

    write("wire_handshake", "v1_fast_ext", handshake(V1_HASH))
    write("wire_handshake", "v2_upgrade", handshake(V2_HASH, v2=True) + msg(2))
    write("wire_handshake", "partial", handshake(V1_HASH)[:30])
    write("wire_handshake", "mse", bytes(range(96)))

    write("ext_handshake", "libtorrent", LT_EXT)
    write("ext_handshake", "minimal", b"d1:md11:ut_metadatai1eee")
    write("ext_handshake", "unsorted", b"d4:reqqi250e1:md6:ut_pexi1eee")

    # peer_state: [setup 10][ops_len u16 LE][ops][stream]
    hs = handshake(V1_HASH)
    stream = hs + session
    full_seed_unchoked = bytes([0, 0, 9, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 7])
    partial_choked = bytes([1, 0, 30, 0, 0xF0, 0x0F, 0xAA, 0x55, 0x01, 3])
    many_pieces = bytes([0, 3, 0x20, 0x4E, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 15])
    ops = bytes([
        0, 68,          # feed the handshake
        8, 0xFF, 0xFF,  # drain our handshake, ext handshake, have_all
        0, 40,          # feed part of the session
        4, 0xE8, 0x03,  # tick 10 s
        0, 255,         # feed the rest
        7, 3,           # pop 3 blocks
        8, 20, 0,       # drain 20 bytes
        5,              # choke (rejects the rest)
        8, 0xFF, 0xFF,
        6,              # unchoke
        2, 0, 0x00, 1, 2,  # request piece 1 block 2
        9, 0, 0x00, 2, 0, 7,  # request piece 2 block 0, cut after 7 bytes
        7, 9,
        4, 0x60, 0xEA,  # tick 600 s: idle timeout
    ])
    write("peer_state", "full_seed_session", full_seed_unchoked + struct.pack("<H", len(ops)) + ops + stream)
    write("peer_state", "partial_seed_session", partial_choked + struct.pack("<H", len(ops)) + ops + stream)
    write("peer_state", "many_pieces_whole", many_pieces + b"\x00\x00" + stream)
    v2_stream = handshake(V2_HASH, fast=False, ext=True, v2=True) + session
    write("peer_state", "v2_no_fast", partial_choked + b"\x00\x00" + v2_stream)

    utp_seeds()


def utp_header(ty, conn, seq, ack, wnd=1 << 20, ext=0, ts=1000, diff=0):
    return struct.pack(">BBHIIIHH", (ty << 4) | 1, ext, conn, ts, diff, wnd, seq, ack)


def utp_seeds():
    # utp_packet: one datagram each.
    write("utp_packet", "syn", utp_header(4, 0x1234, 1, 0))
    write("utp_packet", "data", utp_header(0, 0x1235, 2, 77) + b"\x13BitTorrent protocol")
    write("utp_packet", "state_sack", utp_header(2, 9, 5, 3, ext=1) + b"\x00\x04\x05\x00\x00\x80")
    write("utp_packet", "unknown_ext_then_sack",
          utp_header(2, 9, 5, 3, ext=3) + b"\x01\x02\xaa\xbb\x00\x08" + b"\xff" * 8 + b"tail")
    write("utp_packet", "reset", utp_header(3, 0x1234, 9, 1))
    write("utp_packet", "version0", b"\x40" + utp_header(4, 1, 1, 0)[1:])
    # utp_conn: ops (see fuzz/src/checks/utp.rs).
    write("utp_conn", "transfer", bytes([2, 0, 0, 40, 2, 0, 1, 3, 10, 2, 0, 1, 6, 2, 0, 3, 100, 2, 0, 1]))
    write("utp_conn", "lossy", bytes([2, 0, 0, 200, 2, 0x55, 3, 80, 2, 0x11, 3, 200, 2, 0, 1, 3, 255, 2, 0, 1]))
    write("utp_conn", "injected", bytes([2, 0, 0, 10, 5, 0x80, 0, 2, 0, 0, 1, 5, 3, 1, 0, 0, 1, 0,
                                         4, 20] + list(utp_header(4, 7, 1, 0)) + [2, 0, 1]))
    write("utp_conn", "server_sends_zero_window", bytes([2, 0] + [7] * 40 + [2, 0, 3, 255] * 20))


if __name__ == "__main__":
    main()
