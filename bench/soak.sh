#!/usr/bin/env bash
# Runs the embedded default at a steady rate for a while and records the
# memory (resident set) of the converge dev process as it goes, to show
# whether it stays bounded:
#
#   bench/soak.sh                          # 300 orders/s for 10 minutes
#   RATE=500 DURATION=30m bench/soak.sh
#   OUT=/tmp/soak bench/soak.sh            # keep the curve, the report and the log
#
# Prints a line per sample (seconds since the load began, RSS in MiB), then
# the load's report and the smallest, largest and last RSS. Linux only
# (reads /proc).
# Needs go and curl. The machine should be otherwise quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-300}
DURATION=${DURATION:-10m}
EVERY=${EVERY:-10}
ADDR=${ADDR:-127.0.0.1:18084}

work=$(mktemp -d /tmp/converge-soak.XXXXXX)
pid=
load=
cleanup() {
  if [ -n "$load" ]; then kill -INT "$load" 2>/dev/null || true; wait "$load" || true; fi
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp -r "$work/report" "$work/rss.tsv" "$work/dev.log" "$OUT"/ 2>/dev/null || true
    echo "curve, report and log in $OUT"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/converge" ./cmd/converge
"$work/converge" dev --data "$work/data" --addr "$ADDR" --broker-port 0 >"$work/dev.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  curl -sf "http://$ADDR/readyz" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || break # it exited: no use waiting
  sleep 0.1
done
curl -sf "http://$ADDR/readyz" >/dev/null || { echo "converge dev did not become ready; its log:"; tail -20 "$work/dev.log"; exit 1; }

"$work/converge" load --url "http://$ADDR" --data "$work/data" --rate "$RATE" --duration "$DURATION" \
  --out "$work/report" >"$work/load.txt" 2>&1 &
load=$!

rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
printf 'seconds\trss_mib\n' | tee "$work/rss.tsv"
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "converge dev exited during the run; its log:"; tail -20 "$work/dev.log"; exit 1; }
  printf '%s\t%s\n' "$(($(date +%s) - start))" "$(rss)" | tee -a "$work/rss.tsv"
  sleep "$EVERY"
done
wait "$load" || { cat "$work/load.txt"; load=; exit 1; }
load=
printf '%s\t%s\n' "$(($(date +%s) - start))" "$(rss)" | tee -a "$work/rss.tsv"
cat "$work/load.txt"
awk -F'\t' 'NR > 1 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; last = $2 }
  END { printf "RSS: min %s MiB, max %s MiB, last %s MiB\n", min, max, last }' "$work/rss.tsv"
