#!/usr/bin/env bash
# A fleet on loopback: one origin box (capped, optionally super-seeding,
# running the embedded tracker the torrent names) and 4 edge boxes given
# only the .torrent and an empty data path. Prints how long until every
# edge holds the release and the origin's egress in copies of the file.
#
# usage: loadtest/fleet_loopback.sh [PIECE_LEN=1048576] [SUPER=1] [CAP=20MB/s] [SIZE_MIB=64]
# Uses target/release/ringseed (cargo build --release) and ports 17100-17199.
set -euo pipefail
PIECE=${1:-1048576}; SUPER=${2:-1}; CAP=${3:-20MB/s}; SIZE=${4:-64}
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/ringseed"
W=$(mktemp -d); trap 'kill $(cat "$W/pids") 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"; : > pids
head -c "${SIZE}M" /dev/urandom > rel.bin
"$B" create rel.bin -o rel.torrent --piece-length "$PIECE" --tracker http://127.0.0.1:17199/announce --no-date > /dev/null
SS=(); [ "$SUPER" = 1 ] && SS=(--super-seed)
"$B" serve --torrent rel.torrent --data rel.bin --listen 127.0.0.1:17100 --metrics 127.0.0.1:17190 \
  --tracker-listen 127.0.0.1:17199 --control off --shards 1 "${SS[@]}" --upload-rate-limit "$CAP" \
  --log-level warn > origin.log 2>&1 &
echo $! >> pids
for _ in $(seq 100); do curl -sf 127.0.0.1:17190/metrics > /dev/null && break; sleep 0.05; done
sleep 1
T0=$(date +%s.%N)
for i in 1 2 3 4; do
  "$B" serve --torrent rel.torrent --data "e$i/rel.bin" --listen "127.0.0.1:$((17100 + i))" \
    --metrics "127.0.0.1:$((17190 + i))" --tracker-listen off --control off --shards 1 \
    --log-level warn > "e$i.log" 2>&1 &
  echo $! >> pids
done
n=0
for _ in $(seq 1200); do
  n=0
  for i in 1 2 3 4; do
    c=$(curl -s "127.0.0.1:$((17190 + i))/metrics" | awk '/^ringseed_fetch_complete/ {print $2}' || true)
    [ "$c" = 1 ] && n=$((n + 1))
  done
  [ $n = 4 ] && break
  sleep 0.05
done
T1=$(date +%s.%N)
OUT=$(curl -s 127.0.0.1:17190/metrics | awk '/^ringseed_payload_bytes_total/ {s += $2} END {print s}')
echo "pieces $PIECE super-seed $SUPER origin cap $CAP: $n/4 edges complete after $(echo "$T1 - $T0" | bc) s;" \
  "origin egress $(echo "scale=2; $OUT / ($SIZE * 1048576)" | bc) x the file"
