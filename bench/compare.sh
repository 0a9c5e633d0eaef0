#!/usr/bin/env bash
# Compares the embedded default of several builds under the same load, in
# one run, rounds alternating between them so that the machine's drift
# falls on all alike. A build is a git revision, optionally followed by
# dev flags after a colon; the load client is always this checkout's.
#
#   bench/compare.sh aa3ac65 HEAD 'HEAD:--access-log=false'
#   ROUNDS=5 ORDERS=10000 bench/compare.sh main HEAD
#
# Prints converged orders/s and the order service's order -> final p50 and
# p99 for every run, then the medians per build.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
ORDERS=${ORDERS:-5000}
CONCURRENCY=${CONCURRENCY:-32}
[ $# -gt 0 ] || { echo "usage: bench/compare.sh REV[:dev flags]..." >&2; exit 2; }

work=$(mktemp -d /tmp/converge-compare.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  git worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/load" ./cmd/converge
builds=()
for spec in "$@"; do
  rev=${spec%%:*}
  bin="$work/converge-$(git rev-parse --short "$rev")"
  if [ ! -x "$bin" ]; then
    git worktree add -q --detach "$work/src" "$rev"
    (cd "$work/src" && go build -o "$bin" ./cmd/converge)
    git worktree remove --force "$work/src"
  fi
  builds+=("$bin")
done

printf '%-40s %6s %10s %8s %8s\n' build round orders/s p50-ms p99-ms
results="$work/results.tsv"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for i in "${!builds[@]}"; do
    spec=${*:i+1:1}
    flags=()
    [[ $spec == *:* ]] && read -r -a flags <<<"${spec#*:}"
    data="$work/data-$i-$round"
    "${builds[$i]}" dev --data "$data" --addr 127.0.0.1:18082 --broker-port 0 "${flags[@]}" >"$data.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do curl -sf http://127.0.0.1:18082/readyz >/dev/null && break; sleep 0.1; done
    "$work/load" load --url http://127.0.0.1:18082 --data "$data" --orders "$ORDERS" --concurrency "$CONCURRENCY" \
      --out "$data-report" >/dev/null 2>&1
    kill -INT "$pid"; wait "$pid" || true; pid=
    line=$(jq -r '[(.Converged / (.ConvergeSpan / 1e9) | floor), (.ToFinal.P50 / 1e6 | floor), (.ToFinal.P99 / 1e6 | floor)] | @tsv' "$data-report/report.json")
    printf '%s\t%s\n' "$spec" "$line" >>"$results"
    printf '%-40s %6s %10s %8s %8s\n' "$spec" "$round" $line
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "== medians of $ROUNDS rounds ($ORDERS orders, $CONCURRENCY clients)"
for spec in "$@"; do
  rows=$(awk -F'\t' -v s="$spec" '$1 == s' "$results")
  printf '%-40s %10s %8s %8s\n' "$spec" "$(cut -f2 <<<"$rows" | median)" "$(cut -f3 <<<"$rows" | median)" "$(cut -f4 <<<"$rows" | median)"
done
