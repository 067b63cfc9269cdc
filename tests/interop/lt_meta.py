#!/usr/bin/env python3
"""libtorrent 2.1.1 side of the metainfo interop tests (called by tests/metainfo_interop.rs).

  lt_meta.py make WORKDIR        create content and torrents with libtorrent; print JSON
                                 [{"torrent": path, "v1": hex|null, "v2": hex|null}, ...]
  lt_meta.py check TORRENT SAVE  load TORRENT, check the data under SAVE (its parent dir);
                                 print JSON {"v1", "v2", "num_pieces", "have", "seeding"}
"""
import json
import os
import sys
import time
import warnings

import libtorrent as lt

warnings.simplefilter("ignore", DeprecationWarning)
PIECE = 16384


def hashes(ti):
    ih = ti.info_hashes()
    return (str(ih.v1) if ih.has_v1() else None, str(ih.v2) if ih.has_v2() else None)


def write(path, size, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(size))
    with open(path, "wb") as f:
        f.write(data)


def make(work):
    content = os.path.join(work, "content")
    # Single files: 1 byte, exactly one piece, one byte over a piece boundary.
    singles = {"one_byte.bin": 1, "one_piece.bin": PIECE, "piece_plus_one.bin": PIECE + 1}
    for name, size in singles.items():
        write(os.path.join(content, name), size, size)
    # Multi-file: 0-byte and 1-byte files and sizes one byte over a boundary.
    multi = os.path.join(content, "multi")
    write(os.path.join(multi, "a_empty"), 0, 1)
    write(os.path.join(multi, "b_one"), 1, 2)
    write(os.path.join(multi, "c_over", "x.bin"), 2 * PIECE + 1, 3)
    write(os.path.join(multi, "c_over", "y.bin"), PIECE - 1, 4)
    write(os.path.join(multi, "z_tail"), 3 * PIECE, 5)
    out = []
    kinds = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}
    for src in list(singles) + ["multi"]:
        for kind, flags in kinds.items():
            fs = lt.file_storage()
            lt.add_files(fs, os.path.join(content, src))
            ct = lt.create_torrent(fs, PIECE, flags)
            lt.set_piece_hashes(ct, content)
            data = lt.bencode(ct.generate())
            path = os.path.join(work, f"lt_{src}_{kind}.torrent")
            with open(path, "wb") as f:
                f.write(data)
            v1, v2 = hashes(lt.torrent_info(data))
            out.append({"torrent": path, "kind": kind, "v1": v1, "v2": v2})
    print(json.dumps(out))


def check(torrent, save):
    ti = lt.torrent_info(torrent)
    v1, v2 = hashes(ti)
    settings = {
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": "127.0.0.1:0", "alert_mask": 0,
    }
    ses = lt.session(settings)
    params = lt.add_torrent_params()
    params.ti = ti
    params.save_path = save
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    h = ses.add_torrent(params)
    h.force_recheck()
    start = time.time()
    while time.time() - start < 30:
        st = h.status()
        if st.state == lt.torrent_status.seeding:
            break
        # Checked, and pieces are missing or bad: libtorrent would download.
        if st.state == lt.torrent_status.downloading and time.time() - start > 2:
            break
        time.sleep(0.05)
    st = h.status()
    print(json.dumps({
        "v1": v1, "v2": v2, "num_pieces": ti.num_pieces(), "have": st.num_pieces,
        "seeding": st.state == lt.torrent_status.seeding, "state": str(st.state),
        "error": str(st.errc.message()) if st.errc.value() else None,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: lt_meta.py make WORKDIR | check TORRENT SAVE_PATH")
