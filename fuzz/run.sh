#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 s, every target)
#
# Exits non-zero on the first crash, timeout or out-of-memory, printing the
# input's path (fuzz/artifacts/TARGET/) and how to replay it. A summary of
# executions per target is printed at the end. New corpus entries go to
# fuzz/corpus/TARGET/ (git-ignored); the checked-in seeds in
# fuzz/seeds/TARGET/ are read too.
#
# Only a stable toolchain is needed: cargo-fuzz's nightly-only flags
# (-Zsanitizer=address etc.) are enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo fuzz list)
fi

# Release build with debug assertions (integer overflow panics) and ASan.
FLAGS=(-O --debug-assertions)
cargo fuzz build "${FLAGS[@]}"

mkdir -p fuzz/artifacts
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="fuzz/artifacts/$t.log"
  echo "=== fuzz $t for ${SECONDS_EACH}s ($(date -u +%H:%M:%S))"
  if ! cargo fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo
    echo "FUZZ FAILURE in $t (full log: $log)."
    echo "Replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $t fuzz/artifacts/$t/<crash-file>"
    echo "Then add the input to tests/fuzz_regressions.rs."
    exit 1
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  echo "$done_line"
  execs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]*([0-9]+)/\1/p' "$log" | tail -n 1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]*([0-9]+)/\1/p' "$log" | tail -n 1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %12s execs %8s exec/s %6s corpus files' "$t" "${execs:-?}" "${rate:-?}" "$corpus")")
done

echo
echo "=== fuzz summary (${SECONDS_EACH}s per target, no crashes)"
printf '%s\n' "${summary[@]}"
