#!/usr/bin/env bash
# Order -> final and the CPU an order costs against the rate offered: runs
# converge bench's open model at each rate in turn (the bare chain, then
# converge, then the raw limits for 1 s each, on fresh data each time) and
# prints one line per rate:
#
#   bench/rates.sh                              # 100 300 500 700 1000 orders/s, 20 s each
#   RATES="200 400" DURATION=60s bench/rates.sh
#   OUT=/tmp/rates bench/rates.sh               # keep each rate's bench.json and bench.svg
#
# Columns: the rate offered and converge's orders converged, a second; its
# order -> final p50 and p99 in ms (the order service's timestamps); the
# machine's CPU per order in ms (every process, the load client included),
# how busy the cores were and the machine's context switches per order,
# for the bare chain and for converge at the same rate; the disk's fsyncs a
# second, measured right after. The bare chain's CPU per order tells a
# slow hour of the machine from a fast one.
# A rate whose run fails (an error, an order left PENDING, an invariant of
# converge check broken) stops the script with its output. Needs go. The
# machine should be otherwise quiet.
set -euo pipefail

RATES=${RATES:-100 300 500 700 1000}
DURATION=${DURATION:-20s}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd) # before the cd below
fi
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/converge-rates.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/converge" ./cmd/converge

# field KEY FILE: the median column of converge bench's summary line KEY.
field() {
  local v
  v=$(awk -v k="$1" 'index($0, k) == 1 { $0 = substr($0, length(k) + 1); print $1; exit }' "$2")
  if [ -z "$v" ]; then
    echo "bench/rates.sh: no line \"$1\" in converge bench's summary:" >&2
    cat "$2" >&2
    exit 1
  fi
  echo "$v"
}

row='%-8s %-10s %-8s %-8s %-13s %-13s %-12s %-8s %-8s %-10s %s\n'
# shellcheck disable=SC2059
printf "$row" offered converged p50_ms p99_ms chain_cpu_ms chain_busy_% chain_sw/ord cpu_ms busy_% sw/ord fsyncs/s
for r in $RATES; do
  args=(bench --rounds 1 --rate "$r" --duration "$DURATION" --limits-time 1s)
  if [ -n "${OUT:-}" ]; then args+=(--out "$OUT/$r"); fi
  if ! "$work/converge" "${args[@]}" >"$work/$r.txt" 2>"$work/$r.err"; then
    echo "bench/rates.sh: converge ${args[*]} failed:" >&2
    cat "$work/$r.txt" >&2
    tail -20 "$work/$r.err" >&2
    exit 1
  fi
  f="$work/$r.txt"
  # One assignment each, so that a missing line stops the script (set -e).
  conv=$(field 'converge embedded' "$f")
  p50=$(field 'converge order -> final p50' "$f")
  p99=$(field 'converge order -> final p99' "$f")
  chain_cpu=$(field 'bare chain: machine CPU per order' "$f")
  chain_busy=$(field 'bare chain: cores busy' "$f")
  chain_switches=$(field 'bare chain: machine context switches per order' "$f")
  cpu=$(field 'converge: machine CPU per order' "$f")
  busy=$(field 'converge: cores busy' "$f")
  switches=$(field 'converge: machine context switches per order' "$f")
  fsyncs=$(field 'disk: 8 KiB append + fsync' "$f")
  # shellcheck disable=SC2059
  printf "$row" "$r" "$conv" "$p50" "$p99" "$chain_cpu" "$chain_busy" "$chain_switches" "$cpu" "$busy" "$switches" "$fsyncs"
done
