#!/usr/bin/env bash
# Order -> final and the CPU an order costs against the rate offered: runs
# converge bench's open model at each rate in turn (the bare chain, then
# converge, then the raw limits, on fresh data each time) and prints one
# line per rate:
#
#   bench/rates.sh                              # 100 300 500 700 1000 orders/s, 20 s each
#   RATES="200 400" DURATION=60s bench/rates.sh
#   OUT=/tmp/rates bench/rates.sh               # keep each rate's bench.json and bench.svg
#
# Columns: the rate offered and converge's orders converged, a second; its
# order -> final p50 and p99 in ms (the order service's timestamps); the
# machine's CPU per order in ms (every process, the load client included)
# and how busy the cores were, for converge and then for the bare chain at
# the same rate; the disk's fsyncs a second, measured right after (to tell
# a slow hour). Needs go.
# The machine should be otherwise quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-100 300 500 700 1000}
DURATION=${DURATION:-20s}

work=$(mktemp -d /tmp/converge-rates.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/converge" ./cmd/converge

# field KEY FILE: the median column of converge bench's summary line KEY.
field() { awk -v k="$1" 'index($0, k) == 1 { $0 = substr($0, length(k) + 1); print $1; exit }' "$2"; }

row='%-8s %-12s %-8s %-8s %-8s %-8s %-13s %-13s %s\n'
# shellcheck disable=SC2059
printf "$row" offered converged p50_ms p99_ms cpu_ms busy_% chain_cpu_ms chain_busy_% fsyncs/s
for r in $RATES; do
  out=()
  if [ -n "${OUT:-}" ]; then out=(--out "$OUT/$r"); fi
  if ! "$work/converge" bench --rounds 1 --rate "$r" --duration "$DURATION" --limits-time 1s "${out[@]}" >"$work/$r.txt" 2>"$work/$r.err"; then
    echo "converge bench --rate $r failed:"
    tail -20 "$work/$r.txt" "$work/$r.err"
    exit 1
  fi
  f="$work/$r.txt"
  # shellcheck disable=SC2059
  printf "$row" "$r" \
    "$(field 'converge embedded' "$f")" \
    "$(field 'converge order -> final p50' "$f")" \
    "$(field 'converge order -> final p99' "$f")" \
    "$(field 'converge: machine CPU per order' "$f")" \
    "$(field 'converge: cores busy' "$f")" \
    "$(field 'bare chain: machine CPU per order' "$f")" \
    "$(field 'bare chain: cores busy' "$f")" \
    "$(field 'disk: 8 KiB append + fsync' "$f")"
done
