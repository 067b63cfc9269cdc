#!/usr/bin/env python3
"""libtorrent 2.1.1 side of ringseed's verify interop test.

  lt_verify.py make KIND PIECE_LEN CONTENT OUT.torrent OUT.json
      Make a v1 / v2 / hybrid torrent of CONTENT (a file or a directory) with
      libtorrent and dump its layout and hashes as JSON (so the Rust test can
      build a Torrent before the metainfo parser lands).
  lt_verify.py check TORRENT SAVE_PATH
      Add TORRENT with SAVE_PATH, wait for the full check to finish and print
      a JSON list of the piece indices libtorrent does NOT have.
"""
import json
import os
import sys
import time
import warnings

import libtorrent as lt

# The file_storage API is deprecated in 2.x but is what exposes offsets and pad files.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def make(kind, piece_len, content, out_torrent, out_json):
    fs = lt.file_storage()
    lt.add_files(fs, content)
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[kind]
    ct = lt.create_torrent(fs, int(piece_len), flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(content)))
    entry = ct.generate()
    data = lt.bencode(entry)
    with open(out_torrent, "wb") as f:
        f.write(data)
    ti = lt.torrent_info(lt.bdecode(data))
    files = ti.files()
    multi = os.path.isdir(content)
    layers = entry.get(b"piece layers", {})
    out_files, v2_layers = [], []
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        path = files.file_path(i).split(os.sep)
        if multi:
            path = path[1:]
        root = None
        if kind != "v1" and files.file_size(i) > 0:
            root = bytes(files.root(i).to_bytes()).hex()
        layer = []
        if root is not None and bytes.fromhex(root) in layers:
            raw = layers[bytes.fromhex(root)]
            layer = [raw[j:j + 32].hex() for j in range(0, len(raw), 32)]
        out_files.append({"path": path, "length": files.file_size(i),
                          "offset": files.file_offset(i), "pieces_root": root})
        v2_layers.append(layer)
    v1 = None
    if kind != "v2":
        v1 = [bytes(ti.hash_for_piece(p)).hex() for p in range(ti.num_pieces())]
    doc = {
        "name": ti.name(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "piece_space_len": files.total_size(),
        "multi_file": multi,
        "version": kind,
        "info_hash_v1": str(ti.info_hashes().v1) if kind != "v2" else None,
        "files": out_files,
        "v1_pieces": v1,
        "v2_piece_layers": v2_layers if kind != "v1" else None,
    }
    with open(out_json, "w") as f:
        json.dump(doc, f)


def check(torrent, save_path):
    ses = lt.session({
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "listen_interfaces": "127.0.0.1:0",
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_path
    h = ses.add_torrent(atp)
    h.force_recheck()
    deadline = time.time() + 60
    checked = False
    while time.time() < deadline and not checked:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
    if not checked:
        sys.exit("libtorrent did not finish checking within 60 s")
    pieces = h.status().pieces
    print(json.dumps([i for i, have in enumerate(pieces) if not have]))


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "make":
        make(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
